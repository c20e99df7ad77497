//! `cargo xtask dist`: the shipped binary, built once, run from a directory outside the
//! checkout after the migrations it was built from are gone, against a throwaway server.

use std::path::Path;
use std::process::Command;

use crate::support::{copy_migrations, xtask_command, Run, TestDb};

fn run_shipped(binary: &Path, cwd: &Path, args: &[&str]) -> Run {
    let output = Command::new(binary)
        .args(args)
        .current_dir(cwd)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run the shipped binary");
    Run { output }
}

#[test]
fn the_shipped_binary_migrates_and_checks_drift_without_the_source_tree() {
    // Built from a copy of the chain that is deleted before the binary runs: whatever it
    // needs of the migrations is inside it.
    let chain = copy_migrations();
    let chain_dir = chain.path().to_str().unwrap().to_string();
    let output = xtask_command(&["dist", "--migrations", &chain_dir])
        .output()
        .expect("run xtask dist");
    let dist = Run { output };
    assert_eq!(dist.code(), 0, "{}", dist.text());
    let built = dist.stdout().lines().last().unwrap().to_string();
    assert!(
        built.ends_with("target/dist/backend-schema-cli"),
        "{}",
        dist.text()
    );
    drop(chain);

    let elsewhere = tempfile::tempdir().unwrap();
    let binary = elsewhere.path().join("backend-schema-cli");
    std::fs::copy(&built, &binary).unwrap();
    let cwd = elsewhere.path();

    let run = run_shipped(&binary, cwd, &["--version"]);
    assert!(
        run.stdout().starts_with("backend-schema-cli "),
        "{}",
        run.text()
    );
    let run = run_shipped(&binary, cwd, &["--help"]);
    assert!(
        run.stdout().contains("Usage: backend-schema-cli <COMMAND>"),
        "{}",
        run.text()
    );
    assert!(!run.stdout().contains("verify"), "{}", run.text());
    assert!(run.stdout().contains("rehearse"), "{}", run.text());
    let run = run_shipped(&binary, cwd, &["migrate", "--help"]);
    assert!(run.stdout().contains("drift"), "{}", run.text());
    assert!(!run.stdout().contains("import-alembic"), "{}", run.text());

    let db = TestDb::new();
    let url = db.url();
    let head = crate::support::chain_head();
    let run = run_shipped(
        &binary,
        cwd,
        &["migrate", "upgrade", "head", "--database-url", &url],
    );
    assert_eq!(run.code(), 0, "{}", run.text());
    assert_eq!(db.heads(), vec![head.to_string()]);

    let run = run_shipped(
        &binary,
        cwd,
        &["migrate", "current", "--database-url", &url],
    );
    assert_eq!(run.code(), 0, "{}", run.text());
    assert_eq!(run.stdout().trim(), format!("{head} (head)"));
    assert!(run.stderr().contains("up to date"), "{}", run.text());

    // The checksums the binary recorded are the checkout's: `cargo xtask` sees no edit.
    let run = db.xtask(&["migrate", "current", "--verbose"]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert!(!run.text().contains("EDITED"), "{}", run.text());

    let run = run_shipped(&binary, cwd, &["migrate", "drift", "--database-url", &url]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert!(
        run.stderr().contains("its catalog built into this binary"),
        "{}",
        run.text()
    );
    db.client()
        .batch_execute("DROP INDEX idx_leads_tenant_score")
        .unwrap();
    let run = run_shipped(&binary, cwd, &["migrate", "drift", "--database-url", &url]);
    assert_eq!(run.code(), 1, "{}", run.text());
    assert!(
        run.stdout()
            .contains("  index leads.idx_leads_tenant_score: missing"),
        "{}",
        run.text()
    );

    let run = run_shipped(&binary, cwd, &["backup", "--database-url", &url]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert!(cwd.join("backups").is_dir(), "{}", run.text());

    // Without --database-url: DATABASE_URL of the `.env` where it runs.
    std::fs::write(cwd.join(".env"), format!("DATABASE_URL='{url}'\n")).unwrap();
    let run = run_shipped(&binary, cwd, &["migrate", "current"]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert!(
        run.stderr().contains("(from DATABASE_URL in"),
        "{}",
        run.text()
    );

    // With PostgreSQL's server programs on the machine, it rehearses a release too, and
    // the report's commands are its own.
    let older = TestDb::new();
    older
        .xtask(&["migrate", "upgrade", "f5a2c3d8e9b1"])
        .success();
    let report = cwd.join("release.md");
    let run = run_shipped(
        &binary,
        cwd,
        &[
            "rehearse",
            "--report",
            "release.md",
            "--database-url",
            &older.url(),
        ],
    );
    assert_eq!(run.code(), 0, "{}", run.text());
    assert!(
        run.stdout()
            .contains(&format!("rehearsal passed: f5a2c3d8e9b1 -> {head}")),
        "{}",
        run.text()
    );
    let markdown = std::fs::read_to_string(&report).unwrap();
    assert!(
        markdown.contains(&format!(
            "backend-schema-cli migrate upgrade {head} --database-url"
        )),
        "{markdown}"
    );

    // What needs the source tree or server programs is refused by name.
    for (name, args) in [
        ("verify", &["verify"][..]),
        ("lint", &["lint"]),
        ("schema-dump", &["schema-dump"]),
        ("db", &["db", "status"]),
        ("bench", &["bench"]),
        ("migrate revision", &["migrate", "revision", "-m", "x"]),
        ("migrate merge", &["migrate", "merge", "a", "b", "-m", "x"]),
        ("migrate check", &["migrate", "check"]),
        (
            "migrate import-alembic",
            &["migrate", "import-alembic", "x"],
        ),
    ] {
        let run = run_shipped(&binary, cwd, args);
        assert_eq!(run.code(), 1, "{}", run.text());
        let refusal = format!("`{name}` is not in the shipped binary");
        assert!(run.stderr().contains(&refusal), "{}", run.text());
        let way = format!("run `cargo xtask {name}` from a checkout");
        assert!(run.stderr().contains(&way), "{}", run.text());
    }
}

/// A chain with a problem is refused before anything is built, naming the file.
#[test]
fn dist_refuses_a_broken_chain_before_building() {
    let broken = crate::support::root().join("tests/fixtures/duplicate_ids");
    let output = xtask_command(&["dist", "--migrations", broken.to_str().unwrap()])
        .output()
        .expect("run xtask dist");
    let run = Run { output };
    assert_eq!(run.code(), 1, "{}", run.text());
    assert!(
        run.stderr().contains("duplicate revision ID"),
        "{}",
        run.text()
    );
    assert!(
        run.stderr().contains("tests/fixtures/duplicate_ids/"),
        "{}",
        run.text()
    );
    assert!(!run.stderr().contains("Compiling"), "{}", run.text());
}
