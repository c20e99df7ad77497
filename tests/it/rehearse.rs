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
