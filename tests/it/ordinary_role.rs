//! Backup and restore as the roles production really uses: the tables' owner without
//! superuser, restoring as that role, `--create` giving the new database its original
//! owner (or `--owner`), and an old dump without the side table restored with `--clean`.

use crate::support::{xtask, Run, TestDb};

const OWNER: &str = "app_owner";

/// `url` (a superuser's) as `role`.
fn as_role(url: &str, role: &str) -> String {
    crate::support::url_as(url, role)
}

fn database_owner(db: &TestDb, name: &str) -> String {
    db.client()
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .unwrap()
        .get(0)
}

fn run(args: &[&str]) -> Run {
    xtask(args)
}

#[test]
fn the_whole_backup_restore_cycle_works_as_a_non_superuser_owner() {
    let db = TestDb::new();
    let mut admin = db.client();
    admin
        .batch_execute(&format!(
            "CREATE ROLE {OWNER} LOGIN NOSUPERUSER NOBYPASSRLS CREATEDB;
             CREATE ROLE no_createdb LOGIN NOSUPERUSER"
        ))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE prod OWNER {OWNER}"))
        .unwrap();
    let prod = as_role(&db.cluster.url("prod"), OWNER);
    run(&["migrate", "upgrade", "head", "--database-url", &prod]).success();
    backend_schema::verify::seed::seed_empty_tables(&mut db.cluster.client("prod").unwrap())
        .unwrap();
    let leads: i64 = db
        .cluster
        .client("prod")
        .unwrap()
        .query_one("SELECT count(*) FROM leads", &[])
        .unwrap()
        .get(0);
    assert!(leads > 0);

    // The owner backs up: policies do not apply to it (they are not FORCEd).
    let out = tempfile::tempdir().unwrap();
    let dump = out.path().join("prod.dump");
    let dump_text = dump.to_str().unwrap();
    let backup = run(&["backup", "-o", dump_text, "--database-url", &prod]);
    assert!(
        backup.success().stderr().contains("backup written"),
        "{}",
        backup.text()
    );

    // Restored as that role over its own database, --clean: exit 0, counts match.
    let restore = run(&[
        "restore",
        dump_text,
        "--clean",
        "--yes",
        "--database-url",
        &prod,
    ]);
    assert!(
        restore
            .success()
            .stderr()
            .contains("row counts match the manifest"),
        "{}",
        restore.text()
    );

    // --create as that role (it has CREATEDB): the database is its own.
    let mine = as_role(&db.cluster.url("mine"), OWNER);
    run(&["restore", dump_text, "--create", "--database-url", &mine]).success();
    assert_eq!(database_owner(&db, "mine"), OWNER);

    // --create as a superuser: the original owner, with what owning gives (CREATE in
    // public on PostgreSQL 15), so the owner's next migration works.
    let copy = db.cluster.url("copy");
    let restore = run(&["restore", dump_text, "--create", "--database-url", &copy]);
    assert!(
        restore
            .success()
            .stderr()
            .contains(&format!("owned by {OWNER}")),
        "{}",
        restore.text()
    );
    assert_eq!(database_owner(&db, "copy"), OWNER);
    let copy_as_owner = as_role(&copy, OWNER);
    let mut owner_client = postgres::Client::connect(&copy_as_owner, postgres::NoTls).unwrap();
    owner_client
        .batch_execute("CREATE TABLE public.next_migration_probe (id int)")
        .unwrap();
    run(&[
        "migrate",
        "current",
        "--check-heads",
        "--database-url",
        &copy_as_owner,
    ])
    .success();

    // --owner names another.
    let other = db.cluster.url("other");
    run(&[
        "restore",
        dump_text,
        "--create",
        "--owner",
        "no_createdb",
        "--database-url",
        &other,
    ])
    .success();
    assert_eq!(database_owner(&db, "other"), "no_createdb");

    // A role without CREATEDB is told so, and what to do.
    let refused = as_role(&db.cluster.url("refused"), "no_createdb");
    let restore = run(&["restore", dump_text, "--create", "--database-url", &refused]);
    assert_eq!(restore.code(), 1, "{}", restore.text());
    assert!(restore.stderr().contains("CREATEDB"), "{}", restore.text());
}

#[test]
fn an_old_dump_without_the_side_table_restores_with_clean_and_says_what_it_did() {
    let db = TestDb::new();
    // The production database as Alembic left it: no alembic_version_history.
    db.xtask(&["migrate", "upgrade", "head"]).success();
    db.client()
        .batch_execute("DROP TABLE alembic_version_history")
        .unwrap();
    backend_schema::verify::seed::seed_empty_tables(&mut db.client()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let dump = out.path().join("old.dump");
    db.xtask(&["backup", "-o", dump.to_str().unwrap()])
        .success();

    // A database the xtask has migrated since: it has the side table.
    db.cluster.create_database("since", None).unwrap();
    let since = db.cluster.url("since");
    run(&["migrate", "upgrade", "head", "--database-url", &since]).success();
    let restore = run(&[
        "restore",
        dump.to_str().unwrap(),
        "--clean",
        "--yes",
        "--database-url",
        &since,
    ]);
    let err = restore.success().stderr();
    assert!(
        err.contains("the dump has no alembic_version_history")
            && err.contains("dropped the target's"),
        "{}",
        restore.text()
    );
    assert!(
        err.contains("row counts match the manifest"),
        "{}",
        restore.text()
    );
    let current = run(&["migrate", "current", "--verbose", "--database-url", &since]);
    assert!(
        current.success().stdout().contains("no checksum recorded"),
        "{}",
        current.text()
    );
}
