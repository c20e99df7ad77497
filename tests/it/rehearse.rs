//! `rehearse`: the release on a copy of production's data. The source is only read (its
//! catalog and data fingerprinted before and after), the report is a snapshot, a
//! migration that fails on production's data fails the rehearsal by name.

use crate::support::{copy_migrations, filtered_snapshot, TestDb};

/// A "production" database at `revision` with rows in the tables the later migrations
/// alter, a grant to an application role, and one hand-made index (drift).
fn production_at(revision: &str) -> TestDb {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", revision]).success();
    db.client()
        .batch_execute(
            "INSERT INTO tenants (id, name, slug, plan, settings) VALUES
                 ('00000000-0000-0000-0000-00000000000a', 'Acme', 'acme', 'pro', '{}');
             INSERT INTO users (id, tenant_id, email, password_hash, name, role)
             SELECT ('00000000-0000-0000-0000-0000000001' || lpad(n::text, 2, '0'))::uuid,
                    '00000000-0000-0000-0000-00000000000a', 'user' || n || '@acme.test', 'x', 'User ' || n, 'admin'
               FROM generate_series(1, 3) n;
             INSERT INTO leads (id, tenant_id, name, email, phone, status, score, tags, custom_fields, created_by)
             SELECT ('00000000-0000-0000-0000-0000000002' || lpad(n::text, 2, '0'))::uuid,
                    '00000000-0000-0000-0000-00000000000a', 'Lead ' || n, 'lead' || n || '@x.test',
                    CASE WHEN n % 2 = 0 THEN NULL ELSE '555-0' || n END, 'new', n, '[]', '{}',
                    '00000000-0000-0000-0000-000000000101'
               FROM generate_series(1, 5) n;
             CREATE ROLE diagnoleads_app NOLOGIN;
             GRANT SELECT, INSERT, UPDATE ON leads TO diagnoleads_app;
             CREATE INDEX leads_hand_made_email ON leads (email);",
        )
        .unwrap();
    db
}

/// Everything a rehearsal must not change: the schema, and every table's rows
/// (the version tables included), as text.
fn fingerprint(db: &TestDb) -> String {
    let mut client = db.client();
    let mut text = format!("{:?}", db.snapshot().objects);
    for table in backend_schema::catalog::user_tables(&mut client).unwrap() {
        let name = backend_schema::sql::quote_qualified(&table.schema, &table.name);
        let rows: Option<String> = client
            .query_one(
                &format!("SELECT string_agg(t::text, E'\\n' ORDER BY t::text) FROM {name} t"),
                &[],
            )
            .unwrap()
            .get(0);
        text.push_str(&format!("\n{name}\n{}", rows.unwrap_or_default()));
    }
    text
}

#[test]
fn rehearse_measures_the_release_proves_the_way_back_and_leaves_the_source_untouched() {
    let db = production_at("f5a2c3d8e9b1");
    let before = fingerprint(&db);
    let report = tempfile::tempdir().unwrap();
    let path = report.path().join("release.md");
    let run = db.xtask(&["rehearse", "--report", path.to_str().unwrap()]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert_eq!(fingerprint(&db), before, "the rehearsal changed the source");

    let out = run.stdout();
    let lines: [String; 3] = [
        format!(
            "rehearsal passed: f5a2c3d8e9b1 -> {} on production's data",
            crate::support::chain_head()
        ),
        "the rollback destroys: column users.failed_login_attempts (3 non-null values)".into(),
        "production differs from revision f5a2c3d8e9b1's schema in 2 place(s)".into(),
    ];
    for line in &lines {
        assert!(
            out.contains(line.as_str()),
            "missing {line:?}:\n{}",
            run.text()
        );
    }
    // Progress, so a long restore is not silence.
    assert!(
        run.stderr().contains("restoring production's copy"),
        "{}",
        run.text()
    );
    let markdown = std::fs::read_to_string(&path).unwrap();
    filtered_snapshot!("rehearse_report", markdown);
}

#[test]
fn rehearse_from_a_backup_checks_it_and_passes() {
    let db = production_at("f5a2c3d8e9b1");
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("production.dump");
    db.xtask(&["backup", "--output", dump.to_str().unwrap()])
        .success();
    let run = crate::support::xtask(&["rehearse", "--from-backup", dump.to_str().unwrap()]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert!(
        run.stderr()
            .contains("checking the backup against its manifest"),
        "{}",
        run.text()
    );
    assert!(
        run.stdout().contains("rehearsal passed: f5a2c3d8e9b1 ->"),
        "{}",
        run.text()
    );

    // A backup that no longer matches its manifest is refused before anything runs.
    let mut bytes = std::fs::read(&dump).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&dump, bytes).unwrap();
    let run = crate::support::xtask(&["rehearse", "--from-backup", dump.to_str().unwrap()]);
    assert_eq!(run.code(), 2, "{}", run.text());
    assert!(
        run.stderr().contains("does not match its manifest"),
        "{}",
        run.text()
    );
}

/// NOT NULL on a column production has NULLs in: the release would fail there, so the
/// rehearsal fails, naming the revision and the statement, and the source is untouched.
#[test]
fn rehearse_fails_by_revision_and_statement_when_a_migration_fails_on_production_data() {
    let migrations = copy_migrations();
    let head = crate::support::chain_head();
    // A backfill that runs (its rows counted), then a NOT NULL production's NULLs refuse.
    add_migration(
        migrations.path(),
        "c0ffee000001_backfill_scores",
        head,
        "UPDATE leads SET score = 0 WHERE phone IS NULL;\n",
        "SELECT 1;\n",
    );
    add_migration(
        migrations.path(),
        "c0ffee000002_require_lead_phone",
        "c0ffee000001",
        "ALTER TABLE leads ADD COLUMN source VARCHAR(50);\n\nALTER TABLE leads ALTER COLUMN phone SET NOT NULL;\n",
        "ALTER TABLE leads ALTER COLUMN phone DROP NOT NULL;\n\nALTER TABLE leads DROP COLUMN source;\n",
    );
    let db = production_at("head");
    let before = fingerprint(&db);
    let dir = migrations.path().to_str().unwrap();
    let report = migrations.path().join("release.md");
    let run = db.xtask(&[
        "rehearse",
        "--migrations",
        dir,
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let out = run.stdout();
    let parts: [String; 5] = [
        format!("rehearsal failed: the upgrade {head} -> c0ffee000002 fails on production's data"),
        "migration c0ffee000002 failed at".into(),
        "up.sql:3".into(),
        "(statement 2)".into(),
        "column \"phone\" of relation \"leads\" contains null values".into(),
    ];
    for part in &parts {
        assert!(
            out.contains(part.as_str()),
            "missing {part:?}:\n{}",
            run.text()
        );
    }
    assert_eq!(fingerprint(&db), before, "the rehearsal changed the source");
    // The report says the same, with what ran before the failure measured.
    let markdown = std::fs::read_to_string(&report).unwrap();
    for part in [
        "**failed**: migration c0ffee000002 fails on production's data",
        "| 1 | `UPDATE leads SET score = 0 WHERE phone IS NULL` | ",
        "| leads | leads: 2 |",
        "Not rehearsed: the upgrade failed.",
    ] {
        assert!(markdown.contains(part), "missing {part:?}:\n{markdown}");
    }
}

fn add_migration(dir: &std::path::Path, folder: &str, parent: &str, up: &str, down: &str) {
    let (revision, message) = folder.split_once('_').unwrap();
    let folder = dir.join(folder);
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(
        folder.join("migration.toml"),
        format!(
            "revision = \"{revision}\"\nrevises = [\"{parent}\"]\nmessage = \"{message}\"\ncreate_date = \"2025-11-20 09:00:00\"\ntransactional = true\n"
        ),
    )
    .unwrap();
    std::fs::write(folder.join("up.sql"), up).unwrap();
    std::fs::write(folder.join("down.sql"), down).unwrap();
}

#[test]
fn rehearse_with_nothing_pending_says_so_and_exits_0() {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "head"]).success();
    let run = db.xtask(&["rehearse"]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert!(
        run.stdout().contains(&format!(
            "nothing to rehearse: {} is at {} and --to head adds no migration",
            db.url(),
            crate::support::chain_head()
        )),
        "{}",
        run.text()
    );
}

/// A downgrade that runs but leaves the upgrade's index behind does not prove the way
/// back: the rehearsal fails naming what differs from the starting schema.
#[test]
fn rehearse_fails_when_the_downgrade_does_not_give_back_the_starting_schema() {
    let migrations = copy_migrations();
    let head = crate::support::chain_head();
    add_migration(
        migrations.path(),
        "c0ffee000003_index_lead_phone",
        head,
        "CREATE INDEX idx_leads_phone ON leads (phone);\n",
        "SELECT 1;\n",
    );
    let db = production_at("head");
    let dir = migrations.path().to_str().unwrap();
    let run = db.xtask(&["rehearse", "--migrations", dir]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let out = run.stdout();
    assert!(
        out.contains(&format!(
            "rehearsal failed: the downgrade back to {head} does not give back its schema:"
        )),
        "{}",
        run.text()
    );
    assert!(
        out.contains("  index leads.idx_leads_phone: unexpected"),
        "{}",
        run.text()
    );
}

/// A rehearsal killed while it holds a fresh dump of production leaves that dump in its
/// private directory; the next rehearsal removes it (its owner process is gone) and says
/// so, while a directory whose owner still runs is left alone.
#[test]
fn a_killed_rehearsals_dump_of_production_is_removed_by_the_next_one() {
    let db = production_at("f5a2c3d8e9b1");
    let tmp = tempfile::tempdir().unwrap();
    let dead = tmp.path().join("bsc-rehearsal-killed");
    std::fs::create_dir(&dead).unwrap();
    // A pid above pid_max's default belongs to no process.
    std::fs::write(dead.join("owner"), "4000000 1\n").unwrap();
    std::fs::write(dead.join("source.dump"), "production's rows").unwrap();
    let alive = tmp.path().join("bsc-rehearsal-running");
    std::fs::create_dir(&alive).unwrap();
    let me = std::process::id();
    let started = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
    let started = started
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_owned();
    std::fs::write(alive.join("owner"), format!("{me} {started}\n")).unwrap();

    let url = db.url();
    let output = crate::support::xtask_command(&["rehearse", "--database-url", &url])
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    let run = crate::support::Run { output };
    assert_eq!(run.code(), 0, "{}", run.text());
    assert!(!dead.exists(), "the killed rehearsal's dump is still there");
    assert!(alive.exists(), "a live process's directory was removed");
    assert!(
        run.stderr()
            .contains(&format!("removed {}", dead.display())),
        "{}",
        run.text()
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("bsc-rehearsal-running")]
    );
}

#[test]
fn rehearse_with_a_report_path_it_cannot_write_refuses_before_dumping() {
    let db = production_at("f5a2c3d8e9b1");
    let dir = tempfile::tempdir().unwrap();
    for path in [
        dir.path().to_path_buf(),
        dir.path().join("missing/release.md"),
    ] {
        let run = db.xtask(&["rehearse", "--report", path.to_str().unwrap()]);
        eprintln!("{}", run.text());
        assert_eq!(run.code(), 2, "{}", run.text());
        assert!(
            !run.stderr().contains("dumping the source"),
            "{}",
            run.text()
        );
    }
}

#[test]
fn a_backup_that_fails_to_restore_names_pg_restores_error_once() {
    use crate::restore_safety::{archive_int, crafted_archive};
    // One row for a table the archive never creates: pg_restore's COPY fails.
    let mut row = vec![1u8];
    row.extend(archive_int(7));
    row.extend(archive_int(2));
    row.extend_from_slice(b"1\n");
    row.extend(archive_int(0));
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("production.dump");
    std::fs::write(&dump, crafted_archive(None, &row)).unwrap();
    let run = crate::support::xtask(&["rehearse", "--from-backup", dump.to_str().unwrap()]);
    let err = run.stderr();
    assert_eq!(run.code(), 2, "{}", run.text());
    assert!(
        err.contains("restoring production's copy into the throwaway cluster failed"),
        "{err}"
    );
    assert_eq!(
        err.matches(r#"relation "public.leads" does not exist"#)
            .count(),
        1,
        "{err}"
    );
}

/// PostgreSQL's DETAIL quotes production's values (a duplicated key, a failing row):
/// the console may show them to the one running the rehearsal, the report for the
/// release ticket must not.
#[test]
fn production_values_quoted_by_an_error_stay_out_of_the_report() {
    let migrations = copy_migrations();
    let head = crate::support::chain_head();
    add_migration(
        migrations.path(),
        "c0ffee000003_unique_lead_email_domain",
        head,
        "CREATE UNIQUE INDEX leads_email_domain ON leads ((split_part(email, '@', 2)));\n",
        "DROP INDEX leads_email_domain;\n",
    );
    let db = production_at("head");
    let report = migrations.path().join("release.md");
    let run = db.xtask(&[
        "rehearse",
        "--migrations",
        migrations.path().to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let quoted = "(x.test) is duplicated";
    assert!(run.stdout().contains(quoted), "{}", run.text());
    let markdown = std::fs::read_to_string(&report).unwrap();
    assert!(!markdown.contains("x.test"), "{markdown}");
    assert!(
        markdown.contains(
            "detail: withheld from the report (it quotes production's data; the console showed it)"
        ),
        "{markdown}"
    );
    assert!(
        markdown.contains("could not create unique index \"leads_email_domain\""),
        "{markdown}"
    );
}

/// A directory (sticky, like /tmp) the throwaway clusters' OS account can write in: a command production's
/// copy ran there would leave `marker`, which the tests assert is absent. Also the temp
/// root the rehearsal's clusters and dump go in, so the tests see nothing is left.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        for path in [dir.path().to_path_buf(), dir.path().join("tmp")] {
            std::fs::create_dir_all(&path).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o1777)).unwrap();
        }
        Sandbox { dir }
    }

    fn marker(&self) -> std::path::PathBuf {
        self.dir.path().join("marker")
    }

    /// `cargo xtask ARGS` with its clusters and its dump in the sandbox.
    fn xtask(&self, args: &[&str]) -> crate::support::Run {
        let root = self.dir.path().join("tmp");
        let output = crate::support::xtask_command(args)
            .env("TMPDIR", &root)
            .env("BACKEND_SCHEMA_TEMP_ROOT", &root)
            .output()
            .unwrap();
        crate::support::Run { output }
    }

    /// Nothing ran production's command, and no cluster or dump is left.
    #[track_caller]
    fn assert_untouched(&self, run: &crate::support::Run) {
        assert!(
            !self.marker().exists(),
            "production's copy ran a program on this machine:\n{}",
            run.text()
        );
        let left: Vec<_> = std::fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}\n{}", run.text());
    }
}

/// A plpgsql function that runs a program on the server's machine, but only in the
/// rehearsal's copy: production itself never notices.
fn program_in_the_copy(name: &str, returns: &str, marker: &std::path::Path, tail: &str) -> String {
    format!(
        "CREATE FUNCTION {name} RETURNS {returns} LANGUAGE plpgsql {tail} AS $f$
         BEGIN
           IF current_database() = 'rehearsal' THEN
             EXECUTE format('COPY (SELECT 1) TO PROGRAM %L', 'touch {}');
           END IF;
           RETURN {};
         END $f$;",
        marker.display(),
        if returns == "trigger" { "NEW" } else { "true" },
    )
}

/// A CHECK that calls a function runs for every row pg_restore's COPY loads: pg_dump
/// writes such a dump by itself. Restored as the ordinary role `rehearsal`, the function's
/// `COPY ... TO PROGRAM` is refused, so the rehearsal could not run (exit 2) and says why.
#[test]
fn a_check_that_runs_a_program_during_the_restore_runs_nothing_and_refuses() {
    let sandbox = Sandbox::new();
    let db = production_at("f5a2c3d8e9b1");
    db.client()
        .batch_execute(&format!(
            "{}
             CREATE TABLE audit_marks (id int PRIMARY KEY, note text CHECK (leak(note)));
             INSERT INTO audit_marks VALUES (1, 'a'), (2, 'b');",
            program_in_the_copy("leak(note text)", "boolean", &sandbox.marker(), "")
        ))
        .unwrap();
    let run = sandbox.xtask(&["rehearse", "--database-url", &db.url()]);
    sandbox.assert_untouched(&run);
    assert_eq!(run.code(), 2, "{}", run.text());
    for part in [
        "production's copy holds something only a superuser may run",
        "refuses to run production's definitions as superuser",
        "to COPY to or from an external program",
        "public.leak(",
    ] {
        assert!(
            run.stderr().contains(part),
            "missing {part:?}:\n{}",
            run.text()
        );
    }
}

/// A SECURITY DEFINER trigger owned by production's superuser (here `throwaway_owner`),
/// planted on a table a pending migration updates: in the copy its owner is an ordinary
/// role, so the migration's UPDATE fails on the program (exit 1, as the release run by a
/// non-superuser would) and nothing runs.
#[test]
fn a_planted_trigger_a_pending_migration_fires_runs_nothing() {
    let sandbox = Sandbox::new();
    let migrations = copy_migrations();
    add_migration(
        migrations.path(),
        "c0ffee000005_rescore_leads",
        crate::support::chain_head(),
        "UPDATE leads SET score = score + 1;\n",
        "UPDATE leads SET score = score - 1;\n",
    );
    let db = production_at("head");
    db.client()
        .batch_execute(&format!(
            "{}
             CREATE TRIGGER planted BEFORE UPDATE ON leads FOR EACH ROW EXECUTE FUNCTION plant();",
            program_in_the_copy("plant()", "trigger", &sandbox.marker(), "SECURITY DEFINER")
        ))
        .unwrap();
    let run = sandbox.xtask(&[
        "rehearse",
        "--migrations",
        migrations.path().to_str().unwrap(),
        "--database-url",
        &db.url(),
    ]);
    sandbox.assert_untouched(&run);
    assert_eq!(run.code(), 1, "{}", run.text());
    for part in [
        "migration c0ffee000005 failed at",
        "to COPY to or from an external program",
    ] {
        assert!(
            run.stdout().contains(part),
            "missing {part:?}:\n{}",
            run.text()
        );
    }
}

/// A plain backup someone handed over, with a statement added that only a superuser may
/// run: each fails in the restore, run by the ordinary role `rehearsal`, and nothing of
/// it ran (exit 2, the reason).
#[test]
fn a_backup_with_superuser_statements_is_refused_without_gaining_rights() {
    let sandbox = Sandbox::new();
    let db = production_at("f5a2c3d8e9b1");
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("production.sql");
    db.xtask(&[
        "backup",
        "--format",
        "plain",
        "--output",
        dump.to_str().unwrap(),
    ])
    .success();
    std::fs::remove_file(backend_schema::dump::Manifest::path_for(&dump)).unwrap();
    let original = std::fs::read_to_string(&dump).unwrap();
    let marker = sandbox.marker();
    let marker = marker.display();
    for (statement, says) in [
        ("ALTER ROLE rehearsal SUPERUSER;", "must be superuser"),
        (
            "GRANT pg_execute_server_program TO rehearsal;",
            "must have admin option",
        ),
        (
            "GRANT pg_execute_server_program TO throwaway_owner;",
            "must have admin option",
        ),
        (
            &format!("COPY (SELECT 1) TO PROGRAM 'touch {marker}';") as &str,
            "external program",
        ),
        (
            &format!("SELECT lo_export(lo_from_bytea(0, 'x'), '{marker}');"),
            "permission denied for function lo_export",
        ),
        (
            "CREATE FUNCTION public.f() RETURNS int LANGUAGE c AS 'libc.so.6', 'getpid';",
            "permission denied for language c",
        ),
        (
            "CREATE FUNCTION public.et() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN END$$;\n\
             CREATE EVENT TRIGGER et ON ddl_command_start EXECUTE FUNCTION public.et();",
            "permission denied to create event trigger",
        ),
        (
            &format!("ALTER SYSTEM SET archive_command = 'touch {marker}';"),
            "ALTER SYSTEM",
        ),
    ] {
        // Before the end of the dump, where pg_dump's last statements are.
        let (head, tail) = original.rsplit_once("\n\\unrestrict ").unwrap();
        std::fs::write(&dump, format!("{head}\n{statement}\n\\unrestrict {tail}")).unwrap();
        let run = sandbox.xtask(&["rehearse", "--from-backup", dump.to_str().unwrap()]);
        sandbox.assert_untouched(&run);
        assert_eq!(run.code(), 2, "{statement}\n{}", run.text());
        for part in ["refuses to run production's definitions as superuser", says] {
            assert!(
                run.stderr().contains(part),
                "{statement}: missing {part:?}:\n{}",
                run.text()
            );
        }
    }
}

/// Roles that would give the copy superuser rights are refused by name before any
/// cluster starts: the rehearsal cluster's own superuser, and a predefined role as an
/// owner. (`throwaway_owner`, our other clusters' superuser, is an ordinary role in the
/// copy: every test here dumps databases it owns.)
#[test]
fn a_dump_naming_the_clusters_superuser_or_a_predefined_owner_is_refused_by_name() {
    let sandbox = Sandbox::new();
    let db = production_at("f5a2c3d8e9b1");
    db.client()
        .batch_execute(
            "CREATE ROLE rehearsal_superuser NOLOGIN;
             ALTER TABLE leads OWNER TO rehearsal_superuser;",
        )
        .unwrap();
    let run = sandbox.xtask(&["rehearse", "--database-url", &db.url()]);
    sandbox.assert_untouched(&run);
    assert_eq!(run.code(), 2, "{}", run.text());
    assert!(
        run.stderr().contains(
            "the copy names `rehearsal_superuser`, the rehearsal cluster's own superuser (`ALTER TABLE public.leads OWNER TO rehearsal_superuser;`)"
        ),
        "{}",
        run.text()
    );
    assert!(
        run.stderr()
            .contains("ALTER ROLE \"rehearsal_superuser\" RENAME TO"),
        "{}",
        run.text()
    );

    db.client()
        .batch_execute(
            "ALTER TABLE leads OWNER TO throwaway_owner;
             ALTER TABLE users OWNER TO pg_execute_server_program;",
        )
        .unwrap();
    let run = sandbox.xtask(&["rehearse", "--database-url", &db.url()]);
    sandbox.assert_untouched(&run);
    assert_eq!(run.code(), 2, "{}", run.text());
    assert!(
        run.stderr().contains(
            "the copy makes `pg_execute_server_program`, a PostgreSQL predefined role, an owner (`ALTER TABLE public.users OWNER TO pg_execute_server_program;`)"
        ),
        "{}",
        run.text()
    );
}

/// Trusted extensions (pgcrypto, btree_gist in production, uuid-ossp in a migration) are
/// restored and created by the ordinary role; an untrusted one is refused: by name before
/// the restore when production has it (exit 2), as the migration's failure when a
/// migration creates it (exit 1).
#[test]
fn trusted_extensions_rehearse_and_untrusted_ones_are_refused_by_name() {
    let sandbox = Sandbox::new();
    let migrations = copy_migrations();
    add_migration(
        migrations.path(),
        "c0ffee000006_uuid_ossp",
        crate::support::chain_head(),
        "CREATE EXTENSION IF NOT EXISTS \"uuid-ossp\";\n",
        "DROP EXTENSION \"uuid-ossp\";\n",
    );
    let db = production_at("head");
    db.client()
        .batch_execute("CREATE EXTENSION pgcrypto; CREATE EXTENSION btree_gist;")
        .unwrap();
    let dir = migrations.path().to_str().unwrap();
    let run = sandbox.xtask(&["rehearse", "--migrations", dir, "--database-url", &db.url()]);
    sandbox.assert_untouched(&run);
    assert_eq!(run.code(), 0, "{}", run.text());

    add_migration(
        migrations.path(),
        "c0ffee000007_file_fdw",
        "c0ffee000006",
        "CREATE EXTENSION file_fdw;\n",
        "DROP EXTENSION file_fdw;\n",
    );
    let run = sandbox.xtask(&["rehearse", "--migrations", dir, "--database-url", &db.url()]);
    sandbox.assert_untouched(&run);
    assert_eq!(run.code(), 1, "{}", run.text());
    assert!(
        run.stdout()
            .contains("permission denied to create extension \"file_fdw\""),
        "{}",
        run.text()
    );
    assert!(
        run.stdout()
            .contains("note: the rehearsal migrates as the ordinary role `rehearsal`"),
        "a privilege failure says why it fails here: {}",
        run.text()
    );

    db.client()
        .batch_execute("CREATE EXTENSION file_fdw;")
        .unwrap();
    let run = sandbox.xtask(&["rehearse", "--migrations", dir, "--database-url", &db.url()]);
    sandbox.assert_untouched(&run);
    assert_eq!(run.code(), 2, "{}", run.text());
    assert!(
        run.stderr()
            .contains("the copy creates extension `file_fdw`, which is not trusted"),
        "{}",
        run.text()
    );
}

#[test]
fn default_privileges_grant_options_and_quoted_role_names_reach_the_copy() {
    let db = production_at("f5a2c3d8e9b1");
    db.client()
        .batch_execute(
            "CREATE ROLE app_writer NOLOGIN;
             CREATE ROLE \"Report \"\"Team\"\"\" NOLOGIN;
             CREATE ROLE default_owner NOLOGIN;
             GRANT ALL ON leads TO app_writer WITH GRANT OPTION;
             ALTER DEFAULT PRIVILEGES FOR ROLE default_owner IN SCHEMA public
                 GRANT SELECT ON TABLES TO \"Report \"\"Team\"\"\";",
        )
        .unwrap();
    let before = fingerprint(&db);
    let run = db.xtask(&["rehearse"]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert_eq!(fingerprint(&db), before, "the source is only read");
}
