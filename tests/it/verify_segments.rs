//! The stairway cut into segments that climb at once, each on a cluster of its own:
//! the report is the one a single stairway gives, and what only a cluster of one's own
//! allows (a migration's `CREATE ROLE`) passes.

use backend_schema::verify::{verify_dir, VerifyOptions, VerifyReport};
use serde_json::Value;

use crate::support::{root, xtask};

/// The report without what differs between any two runs (times, also inside messages).
fn comparable(report: &VerifyReport) -> Value {
    let json = serde_json::to_string(report).unwrap();
    let json = regex::Regex::new(r"\d+ ms\b")
        .unwrap()
        .replace_all(&json, "N ms");
    let mut value: Value = serde_json::from_str(&json).unwrap();
    let object = value.as_object_mut().unwrap();
    object.remove("total_ms");
    for revision in object["revisions"].as_array_mut().unwrap() {
        let revision = revision.as_object_mut().unwrap();
        revision.remove("up_ms");
        revision.remove("down_ms");
    }
    value
}

/// Every fixture chain and the shipped one, verified by one stairway and by three
/// segments (on chains this short every boundary falls between two revisions a few
/// steps apart): the same revisions, failures, warnings said once, findings,
/// fail-closed tables and revisions left unchecked.
#[test]
fn segments_climbing_at_once_report_what_one_stairway_reports_on_every_chain() {
    let mut chains: Vec<std::path::PathBuf> = std::fs::read_dir(root().join("tests/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        // Not a migration chain: an Alembic project for import-alembic.
        .filter(|p| !p.ends_with("alembic_project"))
        .collect();
    chains.sort();
    chains.push(root().join("migrations"));
    let mut split = 0;
    for chain in &chains {
        let run = |jobs| {
            let options = VerifyOptions {
                jobs: Some(jobs),
                ..VerifyOptions::default()
            };
            verify_dir(chain, &options, &mut |_| {}).unwrap()
        };
        let one = run(1);
        let three = run(3);
        if one.revisions.len() > 1 {
            split += 1;
        }
        assert_eq!(
            comparable(&one),
            comparable(&three),
            "{}: one stairway (left) and three segments (right) differ",
            chain.display()
        );
    }
    assert!(split > 15, "only {split} chains were cut into segments");
}

/// A revision that creates a role, on a branch that a merge joins: the stairway, base ->
/// head in one go and each merge order run on clusters of their own, so none finds the
/// role another one created (verify used to fail here with `role "report_reader" already
/// exists`).
#[test]
fn a_migration_that_creates_a_role_verifies_with_its_merge_orders() {
    for jobs in ["1", "3"] {
        let run = xtask(&[
            "verify",
            "--no-cache",
            "--jobs",
            jobs,
            "--migrations",
            "tests/fixtures/creates_role",
        ]);
        let out = run.success().stdout();
        assert!(
            out.contains("verify PASSED: 4 revision(s)"),
            "--jobs {jobs}: {}",
            run.text()
        );
    }
}

/// A migration that gives another result when the revisions before it were replayed
/// rather than verified (it requires a second session on the database, which only the
/// stairway's isolation check keeps open once a table has a policy) is a failure that
/// names it and the way to verify in one stairway. Six revisions in two segments:
/// the third is verified in the first and replayed by the second.
#[test]
fn a_revision_the_replay_cannot_repeat_fails_and_names_jobs_one() {
    let chain = table_chain(6);
    let write = |n: usize, up: &str, down: &str| rewrite_step(chain.path(), n, up, down);
    write(
        1,
        "CREATE TABLE notes (id BIGSERIAL PRIMARY KEY, tenant_id UUID NOT NULL, body TEXT NOT NULL);\n",
        "DROP TABLE notes;\n",
    );
    write(
        2,
        "ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY notes_isolation ON notes
    USING (tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid);
",
        "DROP POLICY notes_isolation ON notes;
ALTER TABLE notes NO FORCE ROW LEVEL SECURITY;
ALTER TABLE notes DISABLE ROW LEVEL SECURITY;
",
    );
    write(
        3,
        "DO $$ BEGIN
    IF (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()) < 2 THEN
        RAISE EXCEPTION 'alone on the database';
    END IF;
END $$;
",
        "SELECT 1;\n",
    );
    let path = chain.path().to_str().unwrap();
    let split = xtask(&["verify", "--no-cache", "--jobs", "2", "--migrations", path]);
    let out = split.failure().stdout();
    assert!(
        out.contains("replaying f00000000003 on a second cluster")
            && out.contains("alone on the database")
            && out.contains("run `cargo xtask verify --jobs 1`"),
        "{}",
        split.text()
    );
    // One stairway never replays: there base -> head in one go is what fails.
    let one = xtask(&["verify", "--no-cache", "--jobs", "1", "--migrations", path]);
    let out = one.failure().stdout();
    assert!(
        !out.contains("replaying") && out.contains("base -> head in one go: the upgrade failed"),
        "{}",
        one.text()
    );
}

/// Writes a migration folder `REV_NAME` under `dir` (a chain the test spells out).
fn migration(dir: &std::path::Path, revision: &str, parent: Option<&str>, up: &str, down: &str) {
    let folder = dir.join(format!("{revision}_step"));
    std::fs::create_dir_all(&folder).unwrap();
    let revises = parent.map(|p| format!("\"{p}\"")).unwrap_or_default();
    std::fs::write(
        folder.join("migration.toml"),
        format!(
            "revision = \"{revision}\"\nrevises = [{revises}]\nmessage = \"step\"\ncreate_date = \"2026-11-26 10:00:00\"\ntransactional = true\n"
        ),
    )
    .unwrap();
    std::fs::write(folder.join("up.sql"), up).unwrap();
    std::fs::write(folder.join("down.sql"), down).unwrap();
}

/// Verifies `dir` with one stairway and with three segments: both reports.
fn one_and_three(dir: &std::path::Path) -> (VerifyReport, VerifyReport) {
    let run = |jobs| {
        let options = VerifyOptions {
            jobs: Some(jobs),
            ..VerifyOptions::default()
        };
        verify_dir(dir, &options, &mut |_| {}).unwrap()
    };
    (run(1), run(3))
}

/// A migration that gives the database a default `app.current_tenant_id` (`ALTER
/// DATABASE ... SET`, as teams do so that `current_setting` never errors): every new
/// session of the application sees it, so a policy that fails open only when the setting
/// is truly absent is closed. The session kept for the check that never sets a tenant
/// was opened before the migration and kept its old defaults: one stairway reported a
/// FAIL-OPEN that three segments (whose later ones open it after) did not.
#[test]
fn a_database_default_for_the_tenant_setting_is_seen_by_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    migration(
        dir.path(),
        "a0000000000a",
        None,
        "CREATE TABLE tenants (id UUID PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE items (id UUID PRIMARY KEY, tenant_id UUID NOT NULL REFERENCES tenants (id), qty INT NOT NULL DEFAULT 0);
ALTER TABLE items ENABLE ROW LEVEL SECURITY;
ALTER TABLE items FORCE ROW LEVEL SECURITY;
CREATE POLICY items_isolation ON items
    USING (tenant_id = nullif(current_setting('app.current_tenant_id', true), '')::uuid);
",
        "DROP TABLE items;\nDROP TABLE tenants;\n",
    );
    migration(
        dir.path(),
        "a0000000000b",
        Some("a0000000000a"),
        "DO $$ BEGIN
    EXECUTE format('ALTER DATABASE %I SET app.current_tenant_id = %L', current_database(), '');
END $$;
",
        "DO $$ BEGIN
    EXECUTE format('ALTER DATABASE %I RESET app.current_tenant_id', current_database());
END $$;
",
    );
    migration(
        dir.path(),
        "a0000000000c",
        Some("a0000000000b"),
        "CREATE TABLE notes (id UUID PRIMARY KEY, tenant_id UUID NOT NULL REFERENCES tenants (id), body TEXT NOT NULL);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes FORCE ROW LEVEL SECURITY;
CREATE POLICY notes_isolation ON notes
    USING (tenant_id::text = coalesce(current_setting('app.current_tenant_id', true), tenant_id::text));
",
        "DROP TABLE notes;\n",
    );
    let (one, three) = one_and_three(dir.path());
    assert_eq!(comparable(&one), comparable(&three));
    assert!(one.passed(), "{:#?}", one.revisions[2].isolation_failures);
}

/// A chain of `count` revisions, one table each, in a new directory.
fn table_chain(count: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut parent: Option<String> = None;
    for n in 1..=count {
        let revision = format!("f{n:011}");
        migration(
            dir.path(),
            &revision,
            parent.as_deref(),
            &format!("CREATE TABLE t{n} (id BIGINT PRIMARY KEY, tenant_id UUID NOT NULL);\n"),
            &format!("DROP TABLE t{n};\n"),
        );
        parent = Some(revision);
    }
    dir
}

/// The folder of revision `n` of a `table_chain`.
fn step_dir(chain: &std::path::Path, n: usize) -> std::path::PathBuf {
    chain.join(format!("f{n:011}_step"))
}

/// Replaces the SQL of revision `n` of a `table_chain`.
fn rewrite_step(chain: &std::path::Path, n: usize, up: &str, down: &str) {
    std::fs::write(step_dir(chain, n).join("up.sql"), up).unwrap();
    std::fs::write(step_dir(chain, n).join("down.sql"), down).unwrap();
}

/// The processes whose command line names `dir` (a server started there).
fn processes_under(dir: &std::path::Path) -> Vec<String> {
    let needle = dir.to_str().unwrap().as_bytes().to_vec();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok().map(|c| (e, c)))
        .filter(|(_, c)| c.windows(needle.len()).any(|w| w == needle.as_slice()))
        .map(|(e, c)| format!("{:?}: {}", e.file_name(), String::from_utf8_lossy(&c)))
        .collect()
}

/// Ctrl-C or SIGTERM while the segments' clusters start, some of them still copying
/// their data directory (not yet serving): verify exits 130 and leaves no server and no
/// directory under the cluster temp root. The interrupt handler knew only clusters whose
/// server had started, and left the directories of those still being made.
#[test]
fn an_interrupted_verify_leaves_no_cluster_directory_while_segments_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let chain = table_chain(40);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // Short, and reachable by the server's account.
        let temp_root = tempfile::Builder::new()
            .prefix("rt")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(temp_root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = crate::support::xtask_command(&[
            "verify",
            "--no-cache",
            "--jobs",
            "3",
            "--migrations",
            chain.path().to_str().unwrap(),
        ])
        .env("BACKEND_SCHEMA_TEMP_ROOT", temp_root.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
        // Wait until a cluster serves (the handler is installed) while another is made.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let dirs: Vec<_> = std::fs::read_dir(temp_root.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            let serving = dirs
                .iter()
                .filter(|d| d.join("data/postmaster.pid").exists())
                .count();
            if serving >= 1 && dirs.len() > serving {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never saw a cluster being made beside a serving one"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // SAFETY: plain signal delivery to our child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "signal {signal}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let left = || {
            let dirs: Vec<_> = std::fs::read_dir(temp_root.path())
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            (dirs, processes_under(temp_root.path()))
        };
        while left() != (vec![], vec![]) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(left(), (vec![], vec![]), "signal {signal}: left behind");
    }
}

/// A data migration whose downgrade keeps the row its upgrade inserts (nothing to undo,
/// as Alembic data migrations often say): the stairway's downgrade and upgrade again
/// insert it twice, and a later unique index finds the duplicate. A later segment that
/// replayed only the upgrades met one row and verified that revision as passing: the
/// replay now climbs the round trips too, so both report the same failures.
#[test]
fn a_later_segment_meets_what_the_round_trips_before_it_left() {
    let chain = table_chain(7);
    rewrite_step(
        chain.path(),
        1,
        "CREATE TABLE settings (id UUID PRIMARY KEY DEFAULT gen_random_uuid(), key TEXT NOT NULL, value TEXT NOT NULL);\n",
        "DROP TABLE settings;\n",
    );
    rewrite_step(
        chain.path(),
        2,
        "INSERT INTO settings (key, value) VALUES ('feature_exports', 'on');\n",
        "-- Nothing to undo.\nSELECT 1;\n",
    );
    rewrite_step(
        chain.path(),
        7,
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS settings_feature_once ON settings (key) WHERE key LIKE 'feature_%';\n",
        "DROP INDEX CONCURRENTLY IF EXISTS settings_feature_once;\n",
    );
    let toml = step_dir(chain.path(), 7).join("migration.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace("transactional = true", "transactional = false"),
    )
    .unwrap();
    let (one, three) = one_and_three(chain.path());
    assert_eq!(comparable(&one), comparable(&three));
    assert!(
        one.revisions[6]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("is duplicated")),
        "{:?}",
        one.revisions[6].error
    );
}

/// A table the seeding cannot fill whose identity column draws a new value at every
/// attempt: PostgreSQL's reason quotes the failing row, so its text changes from one
/// revision to the next. The warning is said once, by one stairway and by three
/// segments alike (it used to be said at every revision, twice at some).
#[test]
fn a_table_that_cannot_be_seeded_is_named_once_though_its_reason_changes() {
    let chain = table_chain(6);
    std::fs::write(
        chain.path().join(format!("f{:011}_step/up.sql", 1)),
        "CREATE TABLE t1 (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id UUID NOT NULL, v INT NOT NULL CHECK (v > 10 AND v < 5));\n",
    )
    .unwrap();
    let (one, three) = one_and_three(chain.path());
    assert_eq!(comparable(&one), comparable(&three));
    let about_t1: Vec<_> = one
        .warnings
        .iter()
        .filter(|w| w.contains("table t1 could not be seeded"))
        .collect();
    assert_eq!(about_t1.len(), 1, "{about_t1:#?}");
    assert!(
        about_t1[0].starts_with("at f00000000001: "),
        "{about_t1:#?}"
    );
}

/// A revision whose upgrade advances a sequence its downgrade leaves alone (numbers
/// reserved for imported rows): the stairway's round trip runs it twice, and a later
/// `MAXVALUE` below where it stands fails. A re-run took the passing revisions from the
/// cache, replayed only their upgrades and passed that later revision: the cache made
/// verify pass what a full run fails. Now the re-run fails as the full run does.
#[test]
fn a_rerun_from_the_cache_meets_what_the_round_trips_left() {
    let chain = table_chain(7);
    let write = |n: usize, up: &str, down: &str| rewrite_step(chain.path(), n, up, down);
    write(
        1,
        "CREATE SEQUENCE invoice_numbers;\nCREATE TABLE t1 (id BIGINT PRIMARY KEY, tenant_id UUID NOT NULL);\n",
        "DROP TABLE t1;\nDROP SEQUENCE invoice_numbers;\n",
    );
    write(
        2,
        "-- The first thousand numbers are the imported invoices'.\nSELECT setval('invoice_numbers', nextval('invoice_numbers') + 999);\n",
        "-- Nothing to undo.\nSELECT 1;\n",
    );
    write(
        7,
        "ALTER SEQUENCE invoice_numbers MAXVALUE 1500;\n",
        "ALTER SEQUENCE invoice_numbers NO MAXVALUE;\n",
    );
    let cache = tempfile::tempdir().unwrap();
    let run = |jobs| {
        let options = VerifyOptions {
            jobs: Some(jobs),
            cache_dir: Some(cache.path().to_path_buf()),
            ..VerifyOptions::default()
        };
        verify_dir(chain.path(), &options, &mut |_| {}).unwrap()
    };
    for (n, jobs) in [1, 1, 3].into_iter().enumerate() {
        let report = run(jobs);
        let seventh = report.revisions.get(6).and_then(|r| r.error.clone());
        assert!(
            seventh
                .as_deref()
                .is_some_and(|e| e.contains("cannot be greater than MAXVALUE")),
            "run {n} (--jobs {jobs}, {} from the cache): {seventh:?}",
            report.from_cache.len()
        );
    }
}

/// `--jobs` outside 1..=16 is refused before anything starts: each segment is a cluster
/// of its own in the temp root (about 42 MB), and a thousand would fill a small
/// `/dev/shm` halfway through with an error that does not name `--jobs`.
#[test]
fn jobs_outside_one_to_sixteen_is_refused_by_name() {
    for jobs in ["0", "17", "1000"] {
        let run = xtask(&[
            "verify",
            "--jobs",
            jobs,
            "--migrations",
            "tests/fixtures/creates_role",
        ]);
        let err = run.failure().stderr();
        assert!(
            err.contains(&format!("invalid value '{jobs}' for '--jobs <N>'"))
                && err.contains("1..=16"),
            "{}",
            run.text()
        );
        assert!(!run.stdout().contains("verify"), "{}", run.text());
    }
}
