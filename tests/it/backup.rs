//! `backup`, `restore` and `schema-dump`: round trips in every format, damaged
//! archives rejected up front, private files, and the pre-flight refusals.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use backend_schema::cluster::OWNER;
use backend_schema::verify::data::TableData;

use crate::support::{chain_head, filtered_snapshot, xtask, TestDb};

/// A database at head with rows for two tenants in every table.
pub(crate) fn seeded() -> TestDb {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "head"]).success();
    backend_schema::verify::seed::seed_empty_tables(&mut db.client()).unwrap();
    db
}

fn rows(db: &TestDb, database: &str) -> Vec<(String, Vec<String>)> {
    let data = TableData::capture(&mut db.cluster.client(database).unwrap()).unwrap();
    data.tables
        .into_iter()
        .map(|(table, (_, rows))| {
            let mut rows: Vec<String> = rows
                .iter()
                .map(|r| serde_json::to_string(r).unwrap())
                .collect();
            rows.sort();
            (table, rows)
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn backup_then_restore_is_identical_in_every_format() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    for (format, ext) in [("custom", "dump"), ("plain", "sql"), ("directory", "dir")] {
        let path = out.path().join("private").join(format!("backup.{ext}"));
        let run = db.xtask(&[
            "backup",
            "--format",
            format,
            "--output",
            path.to_str().unwrap(),
            "--jobs",
            "2",
        ]);
        assert!(
            run.success().stderr().contains("backup written"),
            "{}",
            run.text()
        );
        assert_eq!(mode(path.parent().unwrap()), 0o700, "{format}");
        assert_eq!(
            mode(&path),
            if format == "directory" { 0o700 } else { 0o600 },
            "{format}"
        );
        let manifest = backend_schema::dump::Manifest::path_for(&path);
        assert_eq!(mode(&manifest), 0o600);
        let manifest = backend_schema::dump::Manifest::read(&manifest).unwrap();
        assert_eq!(manifest.revision, [chain_head()]);
        assert_eq!(manifest.tables["leads"], 4);

        let target = format!("restored_{format}");
        let url = db.cluster.url(&target);
        let run = xtask(&[
            "restore",
            path.to_str().unwrap(),
            "--create",
            "--database-url",
            &url,
        ]);
        assert_eq!(
            run.success().stdout(),
            format!("{}\n", chain_head()),
            "{}",
            run.text()
        );
        assert!(
            run.stderr().contains("row counts match the manifest"),
            "{}",
            run.text()
        );
        let restored = backend_schema::snapshot::SchemaSnapshot::capture(
            &mut db.cluster.client(&target).unwrap(),
        )
        .unwrap();
        assert_eq!(restored, db.snapshot(), "{format}");
        assert_eq!(rows(&db, &target), rows(&db, "app"), "{format}");
    }
}

#[test]
fn backup_verify_restores_into_a_throwaway_cluster() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("b.dump");
    let run = db.xtask(&["backup", "--output", path.to_str().unwrap(), "--verify"]);
    assert!(
        run.success()
            .stderr()
            .contains("verified: the dump restores, with the same schema and row counts"),
        "{}",
        run.text()
    );
    let again = db.xtask(&["backup", "--output", path.to_str().unwrap()]);
    assert!(
        again
            .failure()
            .stderr()
            .contains("already exists; backups never overwrite"),
        "{}",
        again.text()
    );
}

#[test]
fn a_parallel_restore_replaces_the_target_through_a_staging_database() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("backup.dir");
    db.xtask(&[
        "backup",
        "--format",
        "directory",
        "--jobs",
        "2",
        "--output",
        path.to_str().unwrap(),
    ])
    .success();
    db.cluster.create_database("target", None).unwrap();
    db.cluster
        .client("target")
        .unwrap()
        .batch_execute("CREATE TABLE old_stuff (x int)")
        .unwrap();
    let url = db.cluster.url("target");
    let run = xtask(&[
        "restore",
        path.to_str().unwrap(),
        "--jobs",
        "2",
        "--clean",
        "--yes",
        "--database-url",
        &url,
    ]);
    assert_eq!(
        run.success().stdout(),
        format!("{}\n", chain_head()),
        "{}",
        run.text()
    );
    let restored = backend_schema::snapshot::SchemaSnapshot::capture(
        &mut db.cluster.client("target").unwrap(),
    )
    .unwrap();
    assert_eq!(restored, db.snapshot());
    assert_eq!(rows(&db, "target"), rows(&db, "app"));
    let databases: Vec<String> = db
        .client()
        .query(
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'target%' ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        databases,
        ["target"],
        "no staging or replaced copy is left behind"
    );
}

#[test]
fn damaged_archives_are_rejected_and_the_target_is_untouched() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let good = out.path().join("good.dump");
    db.xtask(&["backup", "--output", good.to_str().unwrap()])
        .success();
    let bytes = std::fs::read(&good).unwrap();
    let manifest = std::fs::read(backend_schema::dump::Manifest::path_for(&good)).unwrap();
    // Tampered: a valid archive of different data, passed off under the first one's manifest.
    db.client()
        .batch_execute("DELETE FROM sms_messages")
        .unwrap();
    let other = out.path().join("other.dump");
    db.xtask(&["backup", "--output", other.to_str().unwrap()])
        .success();
    let tampered = std::fs::read(&other).unwrap();

    let target = TestDb::new();
    target
        .client()
        .batch_execute("CREATE TABLE keep_me (x int); INSERT INTO keep_me VALUES (1)")
        .unwrap();
    let before = target.snapshot();

    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let cases: [(&str, Vec<u8>, bool, &str); 4] = [
        (
            "tampered.dump",
            tampered,
            true,
            "does not match its manifest",
        ),
        (
            "truncated.dump",
            bytes[..bytes.len() / 2].to_vec(),
            true,
            "does not match its manifest",
        ),
        ("flipped.dump", flipped, true, "does not match its manifest"),
        // Without a manifest the full read still catches a cut. (A flipped byte in the
        // uncompressed TOC has no checksum to fail: the manifest's hash is what catches it.)
        (
            "truncated-bare.dump",
            bytes[..bytes.len() / 2].to_vec(),
            false,
            "cannot be read in full",
        ),
    ];
    for (name, content, with_manifest, expected) in cases {
        let path = out.path().join(name);
        std::fs::write(&path, content).unwrap();
        if with_manifest {
            std::fs::write(backend_schema::dump::Manifest::path_for(&path), &manifest).unwrap();
        }
        let run = target.xtask(&["restore", path.to_str().unwrap(), "--clean", "--yes"]);
        assert!(
            run.failure().stderr().contains(expected),
            "{name}: {}",
            run.text()
        );
        assert_eq!(target.snapshot(), before, "{name}");
    }
}

#[test]
fn a_failed_dump_leaves_no_file() {
    let db = seeded();
    let mut holder = db.client();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE leads IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("b.dump");
    let run = db.xtask(&[
        "backup",
        "--output",
        path.to_str().unwrap(),
        "--table-lock-timeout",
        "300ms",
    ]);
    assert!(
        run.failure().stderr().contains("no backup was written"),
        "{}",
        run.text()
    );
    tx.rollback().unwrap();
    let left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_role_that_row_level_security_filters_cannot_back_up() {
    let db = seeded();
    // A reader with every privilege but the policies apply to it: pg_dump refuses.
    db.client()
        .batch_execute(
            "CREATE ROLE app_user LOGIN NOSUPERUSER NOBYPASSRLS;
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_user",
        )
        .unwrap();
    let url = db.url().replace(&format!("{OWNER}@"), "app_user@");
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("b.dump");
    let run = xtask(&[
        "backup",
        "--output",
        path.to_str().unwrap(),
        "--database-url",
        &url,
    ]);
    assert!(
        run.failure()
            .stderr()
            .contains("role app_user cannot see every row of table "),
        "{}",
        run.text()
    );
    assert!(run.stderr().contains("BYPASSRLS"), "{}", run.text());
    assert!(!path.exists());

    // The owner of the tables is not subject to their policies, unless they are FORCEd.
    db.client()
        .batch_execute(
            "CREATE ROLE owner_role LOGIN NOSUPERUSER NOBYPASSRLS;
             ALTER TABLE leads OWNER TO owner_role;
             ALTER TABLE assessments OWNER TO owner_role;
             ALTER TABLE leads FORCE ROW LEVEL SECURITY;
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO owner_role",
        )
        .unwrap();
    let owner_url = crate::support::url_as(&db.url(), "owner_role");
    let run = xtask(&[
        "backup",
        "--output",
        path.to_str().unwrap(),
        "--database-url",
        &owner_url,
    ]);
    assert!(
        run.failure()
            .stderr()
            .contains("role owner_role cannot see every row of table leads"),
        "{}",
        run.text()
    );
    assert!(!path.exists());
}

#[test]
fn a_target_lacking_a_role_is_refused_before_any_change() {
    let db = seeded();
    db.client()
        .batch_execute("CREATE ROLE ghost_owner; ALTER TABLE leads OWNER TO ghost_owner")
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("b.dump");
    db.xtask(&["backup", "--output", path.to_str().unwrap()])
        .success();

    let target = TestDb::new();
    let run = target.xtask(&["restore", path.to_str().unwrap()]);
    let err = run.failure().stderr();
    assert!(
        err.contains("the archive needs roles the target lacks: ghost_owner"),
        "{err}"
    );
    assert!(err.contains("--no-owner"), "{err}");
    assert!(target.snapshot().is_empty());
    // With --create, the database made for the refused restore does not stay behind.
    let fresh = target.cluster.url("fresh");
    let run = crate::support::xtask(&[
        "restore",
        path.to_str().unwrap(),
        "--create",
        "--database-url",
        &fresh,
    ]);
    assert!(
        run.failure().stderr().contains("was dropped again"),
        "{}",
        run.text()
    );
    let exists: bool = target
        .client()
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'fresh')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!exists);
    target
        .xtask(&["restore", path.to_str().unwrap(), "--no-owner"])
        .success();
    assert!(target.snapshot().objects.contains_key("table leads"));
}

#[test]
fn a_non_empty_target_needs_clean_and_yes() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("b.sql");
    db.xtask(&[
        "backup",
        "--format",
        "plain",
        "--output",
        path.to_str().unwrap(),
    ])
    .success();
    let before = db.snapshot();
    let tables: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .unwrap()
        .get(0);
    let run = db.xtask(&["restore", path.to_str().unwrap()]);
    assert!(
        run.failure().stderr().contains(&format!(
            "already holds {tables} table(s) (public.ab_test_variants"
        )),
        "{}",
        run.text()
    );
    assert!(run.stderr().contains("--clean --yes"), "{}", run.text());
    let run = db.xtask(&["restore", path.to_str().unwrap(), "--clean"]);
    run.failure();
    assert_eq!(db.snapshot(), before);
}

#[test]
fn schema_sql_is_current() {
    let run = xtask(&["schema-dump", "--check"]);
    assert!(
        run.success().stderr().contains("schema.sql is up to date"),
        "{}",
        run.text()
    );
}

#[test]
fn the_er_diagram_shows_tables_keys_and_rls() {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "head"]).success();
    let diagram = backend_schema::erd::Diagram::capture(&mut db.client()).unwrap();
    filtered_snapshot!("erd_mermaid", diagram.mermaid());
    let committed = std::fs::read_to_string(crate::support::root().join("docs/erd.mmd")).unwrap();
    assert_eq!(
        committed,
        diagram.mermaid(),
        "docs/erd.mmd is stale: run `cargo xtask schema-dump --erd docs/erd.mmd`"
    );
}

/// The SVG needs no Graphviz: laid out in-process, well-formed, every table named,
/// written by `schema-dump --erd` and committed.
#[test]
fn the_er_diagram_as_svg_is_well_formed_names_every_table_and_is_committed() {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "head"]).success();
    let diagram = backend_schema::erd::Diagram::capture(&mut db.client()).unwrap();
    let svg = diagram.svg().unwrap();
    let document = roxmltree::Document::parse(&svg)
        .unwrap_or_else(|err| panic!("the SVG is not well-formed XML: {err}\n{svg}"));
    assert_eq!(document.root_element().tag_name().name(), "svg");
    let text: String = document
        .descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect::<Vec<_>>()
        .join("\n");
    let mut client = db.client();
    let tables = backend_schema::catalog::user_tables(&mut client).unwrap();
    let tables: Vec<_> = tables.iter().filter(|t| !t.is_version_table()).collect();
    assert!(tables.len() >= 8, "{tables:?}");
    for table in tables {
        assert!(
            text.lines()
                .any(|l| l.trim() == table.name || l.trim() == format!("{} (RLS)", table.name)),
            "table {} is not named in the SVG's text:\n{text}",
            table.name
        );
    }

    // `schema-dump --erd` writes the same SVG beside the Mermaid file.
    let out = tempfile::tempdir().unwrap();
    let erd = out.path().join("erd.mmd");
    let sql = out.path().join("schema.sql");
    crate::support::xtask(&[
        "schema-dump",
        "-o",
        sql.to_str().unwrap(),
        "--erd",
        erd.to_str().unwrap(),
    ])
    .success();
    let written = std::fs::read_to_string(out.path().join("erd.svg")).unwrap();
    assert_eq!(written, svg, "schema-dump wrote another SVG");
    let committed = std::fs::read_to_string(crate::support::root().join("docs/erd.svg")).unwrap();
    assert!(
        committed == svg,
        "docs/erd.svg is stale: run `cargo xtask schema-dump --erd docs/erd.mmd`"
    );
}

#[test]
fn a_backup_killed_halfway_leaves_no_file_and_the_next_run_sweeps_its_leftovers() {
    let db = seeded();
    // Hold a lock so pg_dump is parked mid-dump, its partial file already open.
    let mut holder = db.client();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE leads IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("b.dump");
    let url = db.url();
    let mut child = crate::support::xtask_command(&[
        "backup",
        "--output",
        path.to_str().unwrap(),
        "--lock-wait-timeout",
        "60s",
        "--database-url",
        &url,
    ])
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut monitor = db.client();
    while !monitor
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock')", &[])
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(std::time::Instant::now() < deadline, "pg_dump never started waiting");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!path.exists());
    // pg_dump died with its parent (parent-death signal): its session goes away.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while monitor
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'pg_dump')",
            &[],
        )
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "pg_dump outlived the killed backup"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    tx.rollback().unwrap();
    let next = out.path().join("c.dump");
    db.xtask(&["backup", "--output", next.to_str().unwrap()])
        .success();
    let mut left: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["c.dump", "c.dump.manifest.json"]);
}

#[test]
fn a_dump_that_hits_the_file_size_limit_leaves_no_file() {
    let db = seeded();
    db.client()
        .batch_execute(
            "INSERT INTO leads (id, tenant_id, name, email, status, score, tags, custom_fields, created_by)
             SELECT gen_random_uuid(), tenant_id, md5(g::text), md5(g::text) || '@example.com', 'new', 1, '[]', '{}', created_by
               FROM generate_series(1, 20000) AS g, (SELECT tenant_id, created_by FROM leads LIMIT 1) AS l",
        )
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("b.dump");
    // prlimit applies to xtask and the pg_dump it starts: like a full disk, mid-dump.
    let output = std::process::Command::new("prlimit")
        .arg("--fsize=65536")
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "backup",
            "--output",
            path.to_str().unwrap(),
            "--database-url",
            &db.url(),
        ])
        .current_dir(crate::support::root())
        .output()
        .expect("prlimit (util-linux) runs");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{err}");
    assert!(err.contains("no backup was written"), "{err}");
    let left: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_streamed_custom_backup_restores_with_parallel_jobs() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("backup.dump");
    db.xtask(&["backup", "--output", path.to_str().unwrap()])
        .success();
    let url = db.cluster.url("copy");
    let run = xtask(&[
        "restore",
        path.to_str().unwrap(),
        "--jobs",
        "2",
        "--create",
        "--database-url",
        &url,
    ]);
    run.success();
    assert_eq!(rows(&db, "copy"), rows(&db, "app"));
}

#[test]
fn backup_and_restore_print_no_progress_when_stderr_is_not_a_terminal() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("b.dump");
    let backup = db.xtask(&["backup", "--output", path.to_str().unwrap()]);
    let restore = xtask(&[
        "restore",
        path.to_str().unwrap(),
        "--create",
        "--database-url",
        &db.cluster.url("copy"),
    ]);
    for run in [backup.success(), restore.success()] {
        let err = run.stderr();
        assert!(
            !err.contains('\r') && !err.contains('\x1b'),
            "a status line on a pipe: {err:?}"
        );
        // The tables and bytes are the terminal's status line; a log gets the phases.
        assert!(
            !err.lines().any(|l| l.trim() == "public.leads"
                || l.contains("tables started")
                || l.contains("reading the archive:")),
            "{err}"
        );
    }
    assert!(backup.stderr().contains("pg_dump finished in"));
    // A custom archive into a new database is checked as pg_restore reads it.
    assert!(restore.stderr().contains("read in full as it was restored"));
}
