//! Failures PostgreSQL reports with a known SQLSTATE get a hint saying what to do, and
//! a location on the failing statement's own first line.

use std::fs;
use std::path::Path;

use crate::support::{xtask, TestDb};

/// A one-migration chain in `dir` whose up.sql is `up`.
fn one_migration(dir: &Path, up: &str) {
    let folder = dir.join("1a2b3c4d5e6f_hinted");
    fs::create_dir_all(&folder).unwrap();
    fs::write(
        folder.join("migration.toml"),
        "revision = \"1a2b3c4d5e6f\"\nrevises = []\nmessage = \"hinted\"\ncreate_date = \"2026-01-01 00:00:00\"\ntransactional = true\n",
    )
    .unwrap();
    fs::write(folder.join("up.sql"), up).unwrap();
    fs::write(folder.join("down.sql"), "DROP TABLE IF EXISTS hinted;\n").unwrap();
}

#[test]
fn a_concurrent_index_in_a_transactional_migration_names_its_line_and_transactional_false() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    one_migration(
        dir.path(),
        "CREATE TABLE hinted (id int);\n\n-- the index the lookups need\nCREATE INDEX CONCURRENTLY hinted_id ON hinted (id);\n",
    );
    let run = db.xtask(&[
        "migrate",
        "upgrade",
        "head",
        "--migrations",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let err = run.stderr();
    assert!(err.contains("1a2b3c4d5e6f_hinted/up.sql:4"), "{err}");
    assert!(err.contains("[SQLSTATE 25001]"), "{err}");
    assert!(err.contains("`transactional = false`"), "{err}");
}

#[test]
fn a_role_without_create_on_public_is_told_which_privilege_and_how_to_get_it() {
    let db = TestDb::new();
    // PostgreSQL 15 gives CREATE on public to the database's owner only.
    db.client()
        .batch_execute(
            "CREATE ROLE app_reader LOGIN NOSUPERUSER;
             REVOKE CREATE ON SCHEMA public FROM PUBLIC",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    one_migration(dir.path(), "CREATE TABLE hinted (id int);\n");
    let url = crate::support::url_as(&db.url(), "app_reader");
    let run = xtask(&[
        "migrate",
        "upgrade",
        "head",
        "--migrations",
        dir.path().to_str().unwrap(),
        "--database-url",
        &url,
    ]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let err = run.stderr();
    assert!(err.contains("permission denied for schema public"), "{err}");
    assert!(err.contains("[SQLSTATE 42501]"), "{err}");
    assert!(
        err.contains("GRANT CREATE ON SCHEMA public TO <role>")
            && err.contains("ALTER DATABASE <db> OWNER TO <role>"),
        "{err}"
    );
}

#[test]
fn sslmode_require_against_a_server_without_tls_says_so_not_that_it_is_down() {
    let cluster = backend_schema::TempCluster::start_on_localhost().unwrap();
    let hba = cluster.data_dir().join("pg_hba.conf");
    let rules = fs::read_to_string(&hba).unwrap();
    fs::write(&hba, format!("host all all 127.0.0.1/32 trust\n{rules}")).unwrap();
    cluster
        .client("postgres")
        .unwrap()
        .query_one("SELECT pg_reload_conf()", &[])
        .unwrap();
    let port = cluster.localhost_port().unwrap();
    let url = format!("postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=require");
    let run = xtask(&["migrate", "current", "--database-url", &url]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let err = run.stderr();
    assert!(
        err.contains("the server does not accept TLS connections")
            && err.contains("ssl = on")
            && !err.contains("pg_isready"),
        "{err}"
    );
}
