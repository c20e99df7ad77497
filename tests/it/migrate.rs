//! `cargo xtask migrate` end to end: the guide's verbs, Alembic compatibility, and the
//! errors of the guide's troubleshooting section.

use std::fs;

use crate::support::{copy_migrations, filtered_snapshot, TestDb};

/// The chain's head, read from the migrations: a new migration moves it, not the tests.
static HEAD: std::sync::LazyLock<&'static str> =
    std::sync::LazyLock::new(crate::support::chain_head);

#[test]
fn upgrade_head_then_current_prints_the_head_like_alembic() {
    let db = TestDb::new();
    let run = db.xtask(&["migrate", "upgrade", "head"]);
    run.success();
    filtered_snapshot!("upgrade_head", run.text());
    let current = db.xtask(&["migrate", "current"]);
    assert_eq!(current.success().stdout(), format!("{} (head)\n", *HEAD));
    assert_eq!(db.heads(), [*HEAD]);

    // Again: nothing to do, and no lock taken (nothing is written either).
    let again = db.xtask(&["migrate", "upgrade", "head"]);
    assert!(
        again
            .success()
            .stderr()
            .contains("already at head: nothing to do"),
        "{}",
        again.text()
    );
    let records: i64 = db
        .client()
        .query_one("SELECT count(*) FROM alembic_version_history", &[])
        .unwrap()
        .get(0);
    assert_eq!(records, crate::support::chain_len() as i64);
}

#[test]
fn history_heads_and_show_follow_alembic_wording() {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "e335"]).success();
    let history = db.xtask(&["migrate", "history", "--indicate-current"]);
    filtered_snapshot!("history_indicate_current", history.success().stdout());
    // heads and show read only the files: they refuse a --database-url.
    let heads = crate::support::xtask(&["migrate", "heads"]);
    assert_eq!(heads.success().stdout(), format!("{} (head)\n", *HEAD));
    let show = crate::support::xtask(&["migrate", "show", "f5a2"]);
    filtered_snapshot!("show_f5a2", show.success().stdout());
    let range = db.xtask(&["migrate", "history", "-r", "f5a2:a1b2"]);
    assert_eq!(
        range.success().stdout().lines().count(),
        3,
        "{}",
        range.text()
    );
}

#[test]
fn show_takes_head_and_heads_and_a_linked_folder_is_followed() {
    let show = crate::support::xtask(&["migrate", "show", "head"]);
    assert!(
        show.success()
            .stdout()
            .starts_with(&format!("Rev: {} (head)\n", *HEAD)),
        "{}",
        show.text()
    );
    let heads = crate::support::xtask(&["migrate", "show", "heads"]);
    assert_eq!(heads.success().stdout(), show.stdout());

    // The newest migration lives elsewhere and is linked in.
    let migrations = copy_migrations();
    let elsewhere = tempfile::tempdir().unwrap();
    let name = "b2c3d4e5f6a7_ab_test_tables";
    fs::rename(migrations.path().join(name), elsewhere.path().join(name)).unwrap();
    std::os::unix::fs::symlink(elsewhere.path().join(name), migrations.path().join(name)).unwrap();
    let db = TestDb::new();
    let dir = migrations.path().to_str().unwrap();
    db.xtask(&["migrate", "upgrade", "head", "--migrations", dir])
        .success();
    assert_eq!(db.heads(), [*HEAD]);
}

#[test]
fn a_session_holding_the_version_table_makes_current_and_upgrade_give_up_naming_it() {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "e335"]).success();
    let mut holder = db.client();
    holder
        .batch_execute(
            "SET application_name = 'hand-held lock'; BEGIN; LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE",
        )
        .unwrap();
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    for args in [
        &["migrate", "current"][..],
        // The old name of --migrator-wait, kept as a hidden alias.
        &["migrate", "upgrade", "head", "--lock-wait", "3s"][..],
    ] {
        let began = std::time::Instant::now();
        let run = db.xtask(args);
        run.failure();
        let stderr = run.stderr();
        assert!(
            stderr.contains("gave up at the lock timeout")
                && stderr.contains(&format!("pid {pid} (hand-held lock")),
            "{args:?}: {}",
            run.text()
        );
        // Bounded by the 5 s lock timeout, not by the holder.
        assert!(began.elapsed() < std::time::Duration::from_secs(30));
    }
    holder.batch_execute("ROLLBACK").unwrap();
    assert_eq!(db.heads(), ["e33568d0d2e9"]);
}

#[test]
fn stamp_takes_label_targets_like_every_other_verb() {
    let migrations = copy_migrations();
    let dir = migrations.path().to_str().unwrap();
    crate::support::xtask(&[
        "migrate",
        "revision",
        "-m",
        "ops branch",
        "--head",
        "base",
        "--branch-label",
        "ops",
        "--migrations",
        dir,
    ])
    .success();
    let ops = fs::read_dir(migrations.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.ends_with("_ops_branch"))
        .expect("the new revision's folder");
    let ops_revision = ops.split('_').next().unwrap().to_string();
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "f5a2", "--migrations", dir])
        .success();
    db.xtask(&["migrate", "stamp", "ops@head", "--migrations", dir])
        .success();
    let mut heads = db.heads();
    heads.sort();
    let mut expected = vec![ops_revision, "f5a2c3d8e9b1".to_string()];
    expected.sort();
    assert_eq!(heads, expected);
}

#[test]
fn relative_and_prefix_targets_walk_the_chain() {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "+2"]).success();
    assert_eq!(db.heads(), ["d724f366bbf2"]);
    db.xtask(&["migrate", "upgrade", "f7e1"]).success();
    assert_eq!(db.heads(), ["f7e1c2d9b3a4"]);
    db.xtask(&["migrate", "downgrade", "-1"]).success();
    assert_eq!(db.heads(), ["f5a2c3d8e9b1"]);
    db.xtask(&["migrate", "downgrade", "base"]).success();
    assert!(db.heads().is_empty());
    assert!(db.snapshot().is_empty(), "{}", db.snapshot());
}

#[test]
fn unknown_and_ambiguous_targets_name_the_candidates() {
    let db = TestDb::new();
    let run = db.xtask(&["migrate", "upgrade", "zzz"]);
    assert!(
        run.failure()
            .stderr()
            .contains("can't locate revision identified by 'zzz'"),
        "{}",
        run.text()
    );
    assert!(
        run.stderr().contains("b2c3d4e5f6a7_ab_test_tables"),
        "{}",
        run.text()
    );
    // Every ID has a unique first character but these two share none; use a real
    // ambiguity from a copy with an extra revision.
    let dir = copy_migrations();
    let extra = dir.path().join("b2c3ffffffff_extra");
    fs::create_dir(&extra).unwrap();
    fs::write(
        extra.join("migration.toml"),
        "revision = \"b2c3ffffffff\"\nrevises = [\"b2c3d4e5f6a7\"]\nmessage = \"extra\"\n",
    )
    .unwrap();
    fs::write(extra.join("up.sql"), "").unwrap();
    fs::write(extra.join("down.sql"), "").unwrap();
    let dir_arg = dir.path().to_str().unwrap();
    let run = db.xtask(&["migrate", "upgrade", "b2c3", "--migrations", dir_arg]);
    assert!(
        run.failure()
            .stderr()
            .contains("ambiguous revision prefix 'b2c3': it matches b2c3d4e5f6a7, b2c3ffffffff"),
        "{}",
        run.text()
    );
    assert!(db.heads().is_empty());
}

/// A database migrated halfway by Alembic (version table created by Alembic's DDL, no
/// side table) is continued, and the result is what Alembic reads: one row, the head.
#[test]
fn a_database_alembic_migrated_halfway_is_continued() {
    let db = TestDb::new();
    let mut client = db.client();
    client
        .batch_execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))")
        .unwrap();
    for dir in [
        "0f18384ca39a_initial_tables",
        "d724f366bbf2_add_assessment_model",
        "e33568d0d2e9_add_lead_model",
    ] {
        let sql = fs::read_to_string(
            crate::support::root()
                .join("migrations")
                .join(dir)
                .join("up.sql"),
        )
        .unwrap();
        client.batch_execute(&sql).unwrap();
    }
    client
        .batch_execute("INSERT INTO alembic_version VALUES ('e33568d0d2e9')")
        .unwrap();

    let current = db.xtask(&["migrate", "current", "--verbose"]);
    let out = current.success().stdout();
    assert!(out.starts_with("e33568d0d2e9\n"), "{out}");
    assert!(
        out.contains("0f18384ca39a  [")
            || out.contains("applied by Alembic (no checksum recorded)"),
        "{out}"
    );
    db.xtask(&["migrate", "upgrade", "head"]).success();
    let rows: Vec<String> = client
        .query("SELECT version_num FROM alembic_version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(rows, [*HEAD]);
}

#[test]
fn an_edited_applied_migration_is_refused_until_rehashed() {
    let db = TestDb::new();
    let dir = copy_migrations();
    let dir_arg = dir.path().to_str().unwrap();
    db.xtask(&["migrate", "upgrade", "f5a2", "--migrations", dir_arg])
        .success();
    let edited = dir
        .path()
        .join("e33568d0d2e9_add_lead_model")
        .join("up.sql");
    let text = fs::read_to_string(&edited).unwrap();
    fs::write(
        &edited,
        text.replace("phone VARCHAR(20)", "phone VARCHAR(30)"),
    )
    .unwrap();

    let before = db.snapshot();
    let run = db.xtask(&["migrate", "upgrade", "head", "--migrations", dir_arg]);
    let err = run.failure().stderr();
    assert!(err.contains("migration e33568d0d2e9"), "{err}");
    assert!(err.contains("e33568d0d2e9_add_lead_model"), "{err}");
    assert!(
        err.contains("was edited after it was applied: recorded sha256"),
        "{err}"
    );
    assert!(
        err.contains("cargo xtask migrate rehash e33568d0d2e9"),
        "{err}"
    );
    assert_eq!(db.heads(), ["f5a2c3d8e9b1"]);
    assert_eq!(db.snapshot(), before);

    db.xtask(&["migrate", "rehash", "e335", "--migrations", dir_arg])
        .success();
    db.xtask(&["migrate", "upgrade", "head", "--migrations", dir_arg])
        .success();
    assert_eq!(db.heads(), [*HEAD]);
}

#[test]
fn an_edited_applied_migration_is_reported_by_current_and_refused_at_head() {
    let db = TestDb::new();
    let dir = copy_migrations();
    let dir_arg = dir.path().to_str().unwrap();
    db.xtask(&["migrate", "upgrade", "head", "--migrations", dir_arg])
        .success();
    let current = db.xtask(&["migrate", "current", "--migrations", dir_arg]);
    let err = current.success().stderr();
    assert!(err.contains("database: postgresql://"), "{err}");
    assert!(err.contains("up to date: no migration pending"), "{err}");
    let edited = dir
        .path()
        .join("e33568d0d2e9_add_lead_model")
        .join("up.sql");
    let text = fs::read_to_string(&edited).unwrap();
    fs::write(
        &edited,
        format!(
            "{text}
-- a comment is an edit too
"
        ),
    )
    .unwrap();

    // `current` says so, naming the file and both checksums; it still exits 0.
    let current = db.xtask(&["migrate", "current", "--migrations", dir_arg]);
    let err = current.success().stderr();
    assert!(
        err.contains("migration e33568d0d2e9")
            && err.contains("e33568d0d2e9_add_lead_model")
            && err.contains("was edited after it was applied: recorded sha256 ")
            && err.contains(", file now "),
        "{err}"
    );
    // At head, `upgrade` refuses instead of "nothing to do", and writes nothing.
    let before = db.snapshot();
    let run = db.xtask(&["migrate", "upgrade", "head", "--migrations", dir_arg]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let err = run.stderr();
    assert!(
        err.contains("was edited after it was applied: recorded sha256")
            && err.contains("cargo xtask migrate rehash e33568d0d2e9")
            && !err.contains("nothing to do"),
        "{err}"
    );
    assert_eq!(db.snapshot(), before);
    db.xtask(&["migrate", "rehash", "e335", "--migrations", dir_arg])
        .success();
    db.xtask(&["migrate", "upgrade", "head", "--migrations", dir_arg])
        .success();
    // Behind head, `current` counts what is pending.
    db.xtask(&[
        "migrate",
        "downgrade",
        "-2",
        "--yes",
        "--migrations",
        dir_arg,
    ])
    .success();
    let current = db.xtask(&["migrate", "current", "--migrations", dir_arg]);
    assert!(
        current
            .success()
            .stderr()
            .contains("2 migration(s) pending"),
        "{}",
        current.text()
    );
}

#[test]
fn a_failing_migration_leaves_the_previous_revision_and_names_file_and_line() {
    let db = TestDb::new();
    let dir = copy_migrations();
    let dir_arg = dir.path().to_str().unwrap();
    let broken = dir
        .path()
        .join("e33568d0d2e9_add_lead_model")
        .join("up.sql");
    let text = fs::read_to_string(&broken).unwrap();
    fs::write(
        &broken,
        text.replace(
            "CREATE INDEX idx_leads_tenant_score ON leads (tenant_id, score);",
            "CREATE INDEX idx_leads_tenant_score ON leads (tenant_id, scroe);",
        ),
    )
    .unwrap();

    let run = db.xtask(&["migrate", "upgrade", "head", "--migrations", dir_arg]);
    let err = run.failure().stderr();
    assert!(err.contains("migration e33568d0d2e9 failed at"), "{err}");
    assert!(
        err.contains("e33568d0d2e9_add_lead_model/up.sql:31 (statement 3)"),
        "{err}"
    );
    assert!(err.contains("column \"scroe\" does not exist"), "{err}");
    assert!(
        err.contains("the database is still at d724f366bbf2"),
        "{err}"
    );
    assert_eq!(db.heads(), ["d724f366bbf2"]);
    assert!(!db.snapshot().objects.contains_key("table leads"));
    let locks: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(locks, 0, "the migration lock is released after a failure");
}

/// `current` is what a person runs first when something is off: a revision this checkout
/// lacks must not turn it into one more error, but say what it knows, with its own status.
#[test]
fn current_on_a_revision_no_file_knows_says_what_it_knows_and_exits_4() {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "d724"]).success();
    // A newer checkout recorded its revision beside ours (a second row, as a branch would).
    db.client()
        .batch_execute(
            "INSERT INTO alembic_version (version_num) VALUES ('c0ffee000000');
             INSERT INTO alembic_version_history (revision, operation, checksum, status, tool_version)
             SELECT 'c0ffee000000', operation, checksum, status, 'a newer checkout' FROM alembic_version_history LIMIT 1",
        )
        .unwrap();
    let before = db.snapshot();
    for args in [
        &["migrate", "current"][..],
        &["migrate", "current", "--check-heads"],
    ] {
        let run = db.xtask(args);
        assert_eq!(run.code(), 4, "{}", run.text());
        let out = run.stdout();
        assert!(out.contains("d724f366bbf2\n"), "{}", run.text());
        assert!(
            out.contains("c0ffee000000 (unknown: no migration defines it)"),
            "{}",
            run.text()
        );
        let err = run.stderr();
        assert!(err.contains("database: "), "{err}");
        assert!(
            err.contains("can't locate revision identified by 'c0ffee000000'"),
            "{err}"
        );
        assert!(
            err.contains("alembic_version_history says it was applied at")
                && err.contains("by a newer checkout"),
            "{err}"
        );
        assert!(err.contains("cargo xtask migrate stamp --detect"), "{err}");
        assert!(
            err.contains("known revision(s) recorded beside it: d724f366bbf2"),
            "{err}"
        );
        assert!(
            err.contains(&format!("this checkout's head(s): {}", *HEAD)),
            "{err}"
        );
    }
    // history still lists the chain, marks the known revision, names the unknown one.
    let run = db.xtask(&["migrate", "history", "--indicate-current"]);
    assert_eq!(run.code(), 4, "{}", run.text());
    assert!(
        run.stdout().contains("d724f366bbf2 (current)")
            || run.stdout().contains("d724f366bbf2 (head) (current)"),
        "{}",
        run.text()
    );
    assert_eq!(
        run.stdout().lines().count(),
        crate::support::chain_len(),
        "every revision listed: {}",
        run.text()
    );
    assert!(
        run.stderr()
            .contains("can't locate revision identified by 'c0ffee000000'"),
        "{}",
        run.text()
    );
    let run = db.xtask(&["migrate", "history", "-r", "base:current"]);
    assert_eq!(run.code(), 4, "{}", run.text());
    assert!(run.stdout().is_empty(), "{}", run.text());
    assert_eq!(db.snapshot(), before, "current and history write nothing");
}

#[test]
fn a_revision_no_file_knows_is_named_with_the_known_files() {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "d724"]).success();
    db.client()
        .batch_execute("UPDATE alembic_version SET version_num = 'c0ffee000000'")
        .unwrap();
    let run = db.xtask(&["migrate", "upgrade", "head"]);
    let err = run.failure().stderr();
    assert!(
        err.contains("can't locate revision identified by 'c0ffee000000'"),
        "{err}"
    );
    assert!(err.contains("0f18384ca39a_initial_tables"), "{err}");
    assert!(err.contains("git pull"), "{err}");
    assert!(err.contains("cargo xtask migrate stamp --detect"), "{err}");
    // Our side table knows when a revision was applied: the message says so.
    db.client()
        .batch_execute(
            "INSERT INTO alembic_version_history (revision, operation, checksum, status, tool_version)
             SELECT 'c0ffee000000', operation, checksum, status, 'a newer checkout' FROM alembic_version_history LIMIT 1",
        )
        .unwrap();
    let run = db.xtask(&["migrate", "current"]);
    let err = run.failure().stderr();
    assert!(
        err.contains("alembic_version_history says it was applied at")
            && err.contains("by a newer checkout"),
        "{err}"
    );
    // The way out: stamp --purge to the revision the schema really is at.
    db.xtask(&["migrate", "stamp", "--purge", "d724"]).success();
    db.xtask(&["migrate", "upgrade", "head"]).success();
    assert_eq!(db.heads(), [*HEAD]);
}

#[test]
fn relation_already_exists_suggests_the_stamp_that_fits() {
    let db = TestDb::new();
    let mut client = db.client();
    for dir in [
        "0f18384ca39a_initial_tables",
        "d724f366bbf2_add_assessment_model",
    ] {
        let sql = fs::read_to_string(
            crate::support::root()
                .join("migrations")
                .join(dir)
                .join("up.sql"),
        )
        .unwrap();
        client.batch_execute(&sql).unwrap();
    }
    let run = db.xtask(&["migrate", "upgrade", "head"]);
    let err = run.failure().stderr();
    assert!(err.contains("relation \"tenants\" already exists"), "{err}");
    assert!(
        err.contains("cargo xtask migrate stamp d724f366bbf2"),
        "{err}"
    );
    // The detector agrees, from the full schema, and stamps it.
    let run = db.xtask(&["migrate", "stamp", "--detect"]);
    assert!(
        run.success()
            .stderr()
            .contains("equals revision d724f366bbf2"),
        "{}",
        run.text()
    );
    assert_eq!(db.heads(), ["d724f366bbf2"]);
}

#[test]
fn could_not_connect_names_the_source_and_hides_the_password() {
    let run = crate::support::xtask(&[
        "migrate",
        "current",
        "--database-url",
        "postgresql://app:s3cr%40t@/app?host=/nonexistent-dir&port=5432",
    ]);
    let err = run.failure().stderr();
    assert!(
        err.contains("could not connect to server at postgresql://app:***@/app"),
        "{err}"
    );
    assert!(err.contains("(from --database-url)"), "{err}");
    assert!(
        err.contains("no server socket at /nonexistent-dir/.s.PGSQL.5432"),
        "{err}"
    );
    assert!(!err.contains("s3cr"), "{err}");
}

#[test]
fn check_heads_says_when_the_target_database_is_not_up_to_date() {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "f5a2"]).success();
    let run = db.xtask(&["migrate", "current", "--check-heads"]);
    assert!(
        run.failure().stderr().contains(&format!(
            "target database is not up to date: it is at f5a2c3d8e9b1, {} migration(s) pending",
            crate::support::chain_len() - 4
        )),
        "{}",
        run.text()
    );
    db.xtask(&["migrate", "upgrade", "head"]).success();
    db.xtask(&["migrate", "current", "--check-heads"]).success();
}

#[test]
fn a_destructive_downgrade_lists_the_loss_and_needs_yes() {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "head"]).success();
    db.client()
        .batch_execute(
            "INSERT INTO tenants (id, name, slug, plan, settings) VALUES ('00000000-0000-0000-0000-000000000001', 'A', 'a', 'free', '{}');
             INSERT INTO users (id, tenant_id, email, password_hash, name, role, password_reset_token)
                  VALUES ('00000000-0000-0000-0000-0000000000a1', '00000000-0000-0000-0000-000000000001', 'a@x', 'h', 'A', 'admin', 'tok');",
        )
        .unwrap();
    let before = db.snapshot();
    let run = db.xtask(&["migrate", "downgrade", "f5a2"]);
    filtered_snapshot!("destructive_downgrade_refused", run.failure().text());
    assert_eq!(db.snapshot(), before);
    assert_eq!(db.heads(), [*HEAD]);
    db.xtask(&["migrate", "downgrade", "f5a2", "--yes"])
        .success();
    assert_eq!(db.heads(), ["f5a2c3d8e9b1"]);
}

#[test]
fn a_held_migration_lock_is_waited_for_then_reported_with_its_holder() {
    let db = TestDb::new();
    let mut holder = db.client();
    holder
        .batch_execute("SET application_name = 'release-script'")
        .unwrap();
    holder
        .query_one(
            "SELECT pg_advisory_lock($1)",
            &[&backend_schema::runner::LOCK_KEY],
        )
        .unwrap();
    let run = db.xtask(&["migrate", "upgrade", "head", "--migrator-wait", "1s"]);
    let err = run.failure().stderr();
    assert!(
        err.contains("waiting for the migration lock, held by pid"),
        "{err}"
    );
    assert!(err.contains("release-script"), "{err}");
    assert!(err.contains("gave up waiting"), "{err}");
    assert!(db.heads().is_empty());
    holder
        .query_one(
            "SELECT pg_advisory_unlock($1)",
            &[&backend_schema::runner::LOCK_KEY],
        )
        .unwrap();
    db.xtask(&["migrate", "upgrade", "head"]).success();
}

#[test]
fn a_lock_timeout_gives_up_retries_and_leaves_the_revision() {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "f5a2"]).success();
    let mut reader = db.client();
    reader
        .batch_execute("SET application_name = 'long report'")
        .unwrap();
    let reader_pid: i32 = reader
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    let mut tx = reader.transaction().unwrap();
    tx.batch_execute("LOCK TABLE users IN ACCESS SHARE MODE")
        .unwrap();
    // A third session keeps reading the table; it may queue behind the migration's
    // lock request, but never for longer than lock_timeout.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let third = {
        let (mut client, done) = (db.client(), done.clone());
        std::thread::spawn(move || {
            let mut longest = std::time::Duration::ZERO;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let began = std::time::Instant::now();
                client.query_one("SELECT count(*) FROM users", &[]).unwrap();
                longest = longest.max(began.elapsed());
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            longest
        })
    };
    let started = std::time::Instant::now();
    let run = db.xtask(&[
        "migrate",
        "upgrade",
        "f7e1",
        "--lock-timeout",
        "200ms",
        "--retries",
        "1",
    ]);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let longest = third.join().unwrap();
    assert!(
        longest < std::time::Duration::from_millis(200 + 800),
        "a plain SELECT waited {longest:?}"
    );
    let err = run.failure().stderr();
    assert!(
        err.contains("canceling statement due to lock timeout"),
        "{err}"
    );
    assert!(err.contains("retry 1 in"), "{err}");
    assert!(err.contains("raise --lock-timeout"), "{err}");
    // Both the retry and the final failure name the session that held the lock.
    let blocker = format!("pid {reader_pid} (long report, connected ");
    assert!(
        err.contains(&format!("lock_timeout reached, blocked by {blocker}"))
            && err.contains(&format!("(held by {blocker}"))
            && err.contains("idle in transaction, holding its locks for "),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    tx.rollback().unwrap();
    assert_eq!(db.heads(), ["f5a2c3d8e9b1"]);
}

#[test]
fn offline_sql_builds_the_same_schema_as_online() {
    let online = TestDb::new();
    online.xtask(&["migrate", "upgrade", "head"]).success();
    let run = crate::support::xtask(&["migrate", "upgrade", "head", "--sql"]);
    let sql = run.success().stdout();
    let offline = TestDb::new();
    offline.client().batch_execute(&sql).unwrap();
    assert_eq!(offline.snapshot(), online.snapshot());
    assert_eq!(offline.heads(), [*HEAD]);
}

#[test]
fn revision_and_merge_write_new_files_with_fresh_ids() {
    let dir = copy_migrations();
    let dir_arg = dir.path().to_str().unwrap();
    crate::support::xtask(&[
        "migrate",
        "revision",
        "-m",
        "Add lead source",
        "--migrations",
        dir_arg,
    ])
    .success();
    crate::support::xtask(&[
        "migrate",
        "revision",
        "-m",
        "Add billing",
        "--head",
        *HEAD,
        "--splice",
        "--migrations",
        dir_arg,
    ])
    .success();
    let heads = crate::support::xtask(&["migrate", "heads", "--migrations", dir_arg]);
    let heads: Vec<String> = heads
        .success()
        .stdout()
        .lines()
        .map(|l| l.trim_end_matches(" (head)").to_string())
        .collect();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads
        .iter()
        .all(|h| h.len() == 12 && h.chars().all(|c| c.is_ascii_hexdigit())));
    let run = crate::support::xtask(&[
        "migrate",
        "upgrade",
        "head",
        "--sql",
        "--migrations",
        dir_arg,
    ]);
    assert!(
        run.failure()
            .stderr()
            .contains("multiple head revisions are present"),
        "{}",
        run.text()
    );
    crate::support::xtask(&[
        "migrate",
        "merge",
        &heads[0],
        &heads[1],
        "-m",
        "merge",
        "--migrations",
        dir_arg,
    ])
    .success();
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "head", "--migrations", dir_arg])
        .success();
    assert_eq!(db.heads().len(), 1);
    db.xtask(&["migrate", "downgrade", *HEAD, "--migrations", dir_arg])
        .success();
    assert_eq!(db.heads(), [*HEAD]);
}

/// An `alembic_version` that is not quite Alembic's (a `version_num` of another type, a
/// NULL row in a table without the key) used to end `current`, `drift` and `stamp` with
/// a panic (exit 101): an integer reads as a revision no migration defines, a NULL row
/// is no revision.
#[test]
fn an_alembic_version_of_another_type_or_with_a_null_row_is_read_without_a_panic() {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "head"]).success();
    db.client()
        .batch_execute(
            "ALTER TABLE alembic_version DROP CONSTRAINT alembic_version_pkc;
             ALTER TABLE alembic_version ALTER COLUMN version_num DROP NOT NULL;
             INSERT INTO alembic_version VALUES (NULL);",
        )
        .unwrap();
    let run = db.xtask(&["migrate", "current", "--check-heads"]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert_eq!(
        run.stdout(),
        format!("{} (head)\n", crate::support::chain_head())
    );

    db.client()
        .batch_execute(
            "DELETE FROM alembic_version;
             ALTER TABLE alembic_version ALTER COLUMN version_num TYPE bigint USING 0;
             INSERT INTO alembic_version VALUES (123);",
        )
        .unwrap();
    let run = db.xtask(&["migrate", "current"]);
    assert_eq!(run.code(), 4, "{}", run.text());
    assert!(
        run.stdout()
            .contains("123 (unknown: no migration defines it)"),
        "{}",
        run.text()
    );
    for (args, code) in [
        (&["migrate", "drift"][..], 2),
        (&["migrate", "stamp", "--detect"], 1),
        (&["migrate", "upgrade", "head"], 1),
    ] {
        let run = db.xtask(args);
        assert_eq!(run.code(), code, "{args:?}: {}", run.text());
        assert!(!run.stderr().contains("panicked"), "{}", run.text());
        assert!(
            ["revision 123", "'123'", "records 123,"]
                .iter()
                .any(|named| run.stderr().contains(named)),
            "{args:?}: {}",
            run.text()
        );
    }
}

/// `stamp --detect` on a database recording a revision no migration defines found the
/// revision the schema equals, then refused with the advice to run `stamp --detect`;
/// it now names both revisions and `--detect --purge`, which records the found one.
#[test]
fn stamp_detect_over_an_unknown_revision_names_the_way_that_works() {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "head"]).success();
    db.client()
        .batch_execute("UPDATE alembic_version SET version_num = 'c0ffee000000'")
        .unwrap();
    let run = db.xtask(&["migrate", "stamp", "--detect"]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let head = crate::support::chain_head();
    for part in [
        format!("the live schema equals revision {head}, but alembic_version records c0ffee000000, which no migration"),
        "nothing was stamped. Replace it with `cargo xtask migrate stamp --detect --purge`".to_string(),
    ] {
        assert!(run.stderr().contains(&part), "{part:?} in {}", run.text());
    }
    assert_eq!(db.heads(), ["c0ffee000000"]);
    db.xtask(&["migrate", "stamp", "--detect", "--purge"])
        .success();
    assert_eq!(db.heads(), [head]);
}
