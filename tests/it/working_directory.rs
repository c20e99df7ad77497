//! Paths on the command line are the caller's, relative to the directory the command
//! was run from; the workspace root only locates the project (its default files).

use std::path::Path;
use std::process::Command;

use crate::support::{root, Run, TestDb};

/// Runs the real binary from `cwd`, against `db`.
fn xtask_from(cwd: &Path, db: &TestDb, args: &[&str]) -> Run {
    let url = db.url();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .args(["--database-url", &url])
        .env_remove("DATABASE_URL")
        .current_dir(cwd)
        .output()
        .expect("run xtask");
    Run { output }
}

#[test]
fn paths_are_relative_to_the_directory_the_command_was_run_from() {
    let db = TestDb::new();
    let elsewhere = tempfile::tempdir().unwrap();
    let cwd = elsewhere.path();
    std::fs::create_dir(cwd.join("work")).unwrap();
    let work = cwd.join("work");

    // The checkout's migrations are found from anywhere; --migrations is the caller's.
    xtask_from(&work, &db, &["migrate", "upgrade", "head"]).success();
    crate::support::copy_dir(&root().join("migrations"), &cwd.join("chain"));
    let run = xtask_from(
        &work,
        &db,
        &[
            "migrate",
            "current",
            "--verbose",
            "--migrations",
            "../chain",
        ],
    );
    assert!(
        run.success()
            .stdout()
            .contains(&cwd.join("chain").display().to_string()),
        "{}",
        run.text()
    );

    // backup -o writes where the caller said, not into the checkout.
    let run = xtask_from(&work, &db, &["backup", "-o", "../x.dump"]);
    run.success();
    assert!(cwd.join("x.dump").is_file(), "{}", run.text());
    assert!(!root().join("x.dump").exists() && !root().join("../x.dump").exists());
    let run = xtask_from(&work, &db, &["backup", "--output-dir", "mine"]);
    run.success();
    assert_eq!(
        std::fs::read_dir(work.join("mine")).unwrap().count(),
        2,
        "{}",
        run.text()
    );

    // restore reads it back from the same relative path.
    let target = db.cluster.url("copy");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "restore",
            "../x.dump",
            "--create",
            "--database-url",
            &target,
        ])
        .current_dir(&work)
        .output()
        .unwrap();
    Run { output }.success();

    // schema-dump's output and diagram land beside the caller.
    xtask_from(&work, &db, &["schema-dump", "-o", "s.sql", "--erd", "erd"]).success();
    assert!(work.join("s.sql").is_file() && work.join("erd.mmd").is_file());

    // From a directory of the checkout, too: docs/ is where the guide sends people.
    let run = xtask_from(&root().join("docs"), &db, &["migrate", "current"]);
    run.success();
}

/// import-alembic's project, `--into` and `--alembic` are the caller's paths too.
#[test]
fn import_alembic_paths_are_the_callers() {
    let elsewhere = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["migrate", "import-alembic", "nothere", "--into", "out"])
        .current_dir(elsewhere.path())
        .output()
        .expect("run xtask");
    let run = Run { output };
    assert_eq!(run.code(), 1, "{}", run.text());
    let cwd = elsewhere.path().display().to_string();
    assert!(
        run.stderr()
            .contains(&format!("importing {cwd}/nothere into {cwd}/out")),
        "{}",
        run.text()
    );
    assert!(!root().join("nothere").exists() && !root().join("out").exists());
}
