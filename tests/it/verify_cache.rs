//! `verify`'s cache: a re-run takes the unchanged first revisions from it and verifies
//! the rest, with the report a full run gives; anything the key covers (a revision,
//! anything before it, `roles.toml`, `lint.toml`) misses it; `--no-cache` and a file
//! that cannot be trusted verify everything.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{copy_migrations, fresh_verify_cache, xtask_command, Run};

/// Runs `verify` on `migrations` with the cache in `cache` and the report as JSON.
pub(crate) fn verify(migrations: &Path, cache: &Path, extra: &[&str]) -> (Run, Value) {
    let json = tempfile::NamedTempFile::new().unwrap();
    let mut args = vec![
        "verify",
        "--migrations",
        migrations.to_str().unwrap(),
        "--json",
        json.path().to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let output = xtask_command(&args)
        .env("BACKEND_SCHEMA_VERIFY_CACHE_DIR", cache)
        .output()
        .unwrap();
    let run = Run { output };
    let report = std::fs::read_to_string(json.path())
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| panic!("verify wrote no JSON report\n{}", run.text()));
    (run, report)
}

pub(crate) fn from_cache(report: &Value) -> Vec<String> {
    report["from_cache"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn revisions(report: &Value) -> Vec<String> {
    report["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_str().unwrap().to_string())
        .collect()
}

/// The report without what differs between two equal runs (times, the random UUIDs
/// of seeded rows in an error) and what says where results came from: a resumed run
/// must equal a full one in everything else.
pub(crate) fn verdicts(report: &Value) -> String {
    let mut report = report.clone();
    let object = report.as_object_mut().unwrap();
    for key in [
        "total_ms",
        "from_cache",
        "chain_from_cache",
        "cache_notes",
        "cache_file",
        "resumed_after",
    ] {
        object.remove(key);
    }
    for revision in object["revisions"].as_array_mut().unwrap() {
        let revision = revision.as_object_mut().unwrap();
        revision.remove("up_ms");
        revision.remove("down_ms");
    }
    let text = serde_json::to_string_pretty(&report).unwrap();
    let uuid =
        regex::Regex::new(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").unwrap();
    let ms = regex::Regex::new(r"\d+ ms\b").unwrap();
    ms.replace_all(&uuid.replace_all(&text, "[UUID]"), "[TIME]")
        .into_owned()
}

/// The directory of `revision` in `migrations`.
pub(crate) fn revision_dir(migrations: &Path, revision: &str) -> PathBuf {
    std::fs::read_dir(migrations)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(revision)
        })
        .unwrap()
}

pub(crate) fn append(path: &Path, text: &str) {
    let mut content = std::fs::read_to_string(path).unwrap();
    content.push_str(text);
    std::fs::write(path, content).unwrap();
}

/// The chain's revisions in the stairway's order (the JSON report of a full run).
fn order(report: &Value) -> Vec<String> {
    revisions(report)
}

#[test]
fn a_rerun_with_nothing_changed_takes_every_revision_from_the_cache_with_the_same_verdict() {
    let migrations = copy_migrations();
    let cache = fresh_verify_cache();
    let (first, full) = verify(migrations.path(), &cache, &[]);
    first.success();
    assert!(from_cache(&full).is_empty(), "{}", first.text());
    let (second, again) = verify(migrations.path(), &cache, &[]);
    second.success();
    assert_eq!(from_cache(&again), order(&full));
    assert_eq!(again["chain_from_cache"], Value::Bool(true));
    assert_eq!(verdicts(&again), verdicts(&full));
    let revisions = order(&full);
    assert!(
        second.stdout().contains(&format!(
            "cache: {n} of {n} revision(s) from {}",
            report_cache_file(&again),
            n = revisions.len()
        )),
        "{}",
        second.text()
    );
    assert!(
        second
            .stdout()
            .contains("cache: base -> head, head -> base and the merge orders from the cache"),
        "{}",
        second.text()
    );

    // A failing chain fails the same way from the cache: its failure is never kept.
    let fixture = tempfile::tempdir().unwrap();
    crate::support::copy_dir(
        &crate::support::root().join("tests/fixtures/upstream_like"),
        fixture.path(),
    );
    let (first, full) = verify(fixture.path(), &cache, &[]);
    first.failure();
    let (second, again) = verify(fixture.path(), &cache, &[]);
    second.failure();
    assert_eq!(verdicts(&again), verdicts(&full));
    let failed = full["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .position(|r| !r["error"].is_null() || !r["schema_roundtrip"].is_null())
        .unwrap_or(revisions.len());
    assert!(from_cache(&again).len() <= failed, "{}", second.text());
}

pub(crate) fn report_cache_file(report: &Value) -> String {
    report["cache_file"].as_str().unwrap().to_string()
}

#[test]
fn editing_the_newest_revision_reverifies_only_it_and_a_broken_edit_fails_as_a_full_run_does() {
    let migrations = copy_migrations();
    let cache = fresh_verify_cache();
    let (first, full) = verify(migrations.path(), &cache, &[]);
    first.success();
    let order = order(&full);
    let head = order.last().unwrap();
    let up = revision_dir(migrations.path(), head).join("up.sql");

    append(&up, "-- reworded\n");
    let (run, resumed) = verify(migrations.path(), &cache, &[]);
    run.success();
    assert_eq!(from_cache(&resumed), order[..order.len() - 1]);
    assert_eq!(resumed["chain_from_cache"], Value::Bool(false));
    assert_eq!(resumed["resumed_after"], order[order.len() - 2]);
    assert!(
        run.stdout()
            .contains(&format!("verified now from {head} on (1)")),
        "{}",
        run.text()
    );
    let (_, full_now) = verify(migrations.path(), &fresh_verify_cache(), &["--no-cache"]);
    assert_eq!(verdicts(&resumed), verdicts(&full_now));

    // Fails on the seeded rows a full run has in `users` at this point.
    append(
        &up,
        "ALTER TABLE users ADD COLUMN must_be_set integer NOT NULL;\n",
    );
    let (broken, resumed) = verify(migrations.path(), &cache, &[]);
    broken.failure();
    assert_eq!(from_cache(&resumed), order[..order.len() - 1]);
    assert_eq!(resumed["resumed_after"], order[order.len() - 2]);
    let (full_run, full) = verify(migrations.path(), &fresh_verify_cache(), &["--no-cache"]);
    full_run.failure();
    assert_eq!(verdicts(&resumed), verdicts(&full));
    assert!(broken.stdout().contains("must_be_set"), "{}", broken.text());
}

#[test]
fn editing_an_old_revision_reverifies_everything_after_it() {
    let migrations = copy_migrations();
    let cache = fresh_verify_cache();
    let (first, full) = verify(migrations.path(), &cache, &[]);
    first.success();
    let order = order(&full);
    append(
        &revision_dir(migrations.path(), &order[1]).join("down.sql"),
        "-- reworded\n",
    );
    let (run, resumed) = verify(migrations.path(), &cache, &[]);
    run.success();
    assert_eq!(from_cache(&resumed), order[..1]);
    assert_eq!(revisions(&resumed), order);
    assert_eq!(verdicts(&resumed), verdicts(&full));
}

#[test]
fn the_generated_chain_resumed_after_an_edit_reports_what_a_full_run_does() {
    // Concurrent indexes, added columns and tables by turns: the bench's chain.
    let dir = tempfile::tempdir().unwrap();
    backend_schema::synthetic::write_chain(dir.path(), 12).unwrap();
    let cache = fresh_verify_cache();
    verify(dir.path(), &cache, &[]).0.success();
    backend_schema::synthetic::edit_head(dir.path(), "edited").unwrap();
    let (run, resumed) = verify(dir.path(), &cache, &[]);
    run.success();
    assert_eq!(from_cache(&resumed).len(), 11);
    let (_, full) = verify(dir.path(), &fresh_verify_cache(), &["--no-cache"]);
    assert_eq!(verdicts(&resumed), verdicts(&full));
}

#[test]
fn editing_roles_toml_or_lint_toml_misses_the_cache() {
    let migrations = copy_migrations();
    let cache = fresh_verify_cache();
    verify(migrations.path(), &cache, &[]).0.success();

    append(
        &migrations.path().join("lint.toml"),
        "\n# a comment is an edit too: the file is keyed by its bytes\n",
    );
    let (run, report) = verify(migrations.path(), &cache, &[]);
    run.success();
    assert!(from_cache(&report).is_empty(), "{}", run.text());

    std::fs::write(
        migrations.path().join("roles.toml"),
        "roles = [\"reporting\"]\n",
    )
    .unwrap();
    let (run, report) = verify(migrations.path(), &cache, &[]);
    run.success();
    assert!(from_cache(&report).is_empty(), "{}", run.text());
    assert!(!run.stdout().contains("cache: "), "{}", run.text());

    let (run, report) = verify(migrations.path(), &cache, &[]);
    assert!(!from_cache(&report).is_empty(), "{}", run.text());
}

#[test]
fn no_cache_verifies_every_revision_and_reads_no_cache() {
    let migrations = copy_migrations();
    let cache = fresh_verify_cache();
    verify(migrations.path(), &cache, &[]).0.success();
    let (run, report) = verify(migrations.path(), &cache, &["--no-cache"]);
    run.success();
    assert!(from_cache(&report).is_empty());
    assert_eq!(report["chain_from_cache"], Value::Bool(false));
    assert!(report["cache_file"].is_null());
    assert!(!run.stdout().contains("cache: "), "{}", run.text());
}

#[test]
fn a_corrupt_or_foreign_cache_file_is_ignored_with_a_note_and_replaced() {
    let migrations = copy_migrations();
    let other = copy_migrations();
    let cache = fresh_verify_cache();
    let (_, report) = verify(migrations.path(), &cache, &[]);
    let file = PathBuf::from(report_cache_file(&report));
    let (_, other_report) = verify(other.path(), &cache, &[]);
    let other_file = PathBuf::from(report_cache_file(&other_report));

    // Another directory's results under this directory's name: foreign.
    std::fs::copy(&other_file, &file).unwrap();
    let (run, report) = verify(migrations.path(), &cache, &[]);
    run.success();
    assert!(from_cache(&report).is_empty());
    assert!(
        run.stdout().contains(&format!(
            "cache: the cache file {} holds the results of",
            file.display()
        )),
        "{}",
        run.text()
    );

    // Torn or tampered with: not JSON of the cache.
    std::fs::write(
        &file,
        "{\"format\": \"backend-schema verify cache 1\", \"revisions\": [",
    )
    .unwrap();
    let (run, report) = verify(migrations.path(), &cache, &[]);
    run.success();
    assert!(from_cache(&report).is_empty());
    assert!(
        run.stdout().contains("is not a verify cache"),
        "{}",
        run.text()
    );

    // Each ignored file was replaced by the run's own results.
    let (run, report) = verify(migrations.path(), &cache, &[]);
    assert_eq!(from_cache(&report), revisions(&report), "{}", run.text());
}

#[test]
fn two_verifies_at_once_share_the_cache_and_leave_it_whole() {
    let migrations = copy_migrations();
    let cache = fresh_verify_cache();
    let dir = migrations.path().to_str().unwrap();
    let runs: Vec<_> = (0..2)
        .map(|_| {
            xtask_command(&["verify", "--migrations", dir])
                .env("BACKEND_SCHEMA_VERIFY_CACHE_DIR", &cache)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in runs {
        let run = Run {
            output: child.wait_with_output().unwrap(),
        };
        run.success();
    }
    let (run, report) = verify(migrations.path(), &cache, &[]);
    run.success();
    assert_eq!(from_cache(&report), revisions(&report), "{}", run.text());
    // The results and the kept databases, nothing half-written beside them.
    let mut leftovers: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            path.extension().unwrap().to_string_lossy().into_owned()
        })
        .collect();
    leftovers.sort();
    assert_eq!(leftovers, ["json", "kept"]);
}

#[test]
fn the_cache_lives_in_the_workspace_target_directory() {
    let workspace = tempfile::tempdir().unwrap();
    let migrations = copy_migrations();
    let run = Run {
        output: xtask_command(&[
            "verify",
            "--migrations",
            migrations.path().to_str().unwrap(),
        ])
        .env_remove("BACKEND_SCHEMA_VERIFY_CACHE_DIR")
        .env("BACKEND_SCHEMA_PROJECT_ROOT", workspace.path())
        .output()
        .unwrap(),
    };
    run.success();
    let mut files: Vec<_> = std::fs::read_dir(workspace.path().join("target/verify-cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].extension().is_some_and(|e| e == "json"));
    assert!(files[1].extension().is_some_and(|e| e == "kept"));
}

/// The cache decides which revisions are verified at all, and its keys are computed
/// from what anyone can read: a file another account wrote (a shared
/// `BACKEND_SCHEMA_VERIFY_CACHE_DIR`), or one it may write, or a symbolic link, is
/// ignored with a note naming why, and replaced by this run's own.
#[test]
fn a_cache_file_another_user_owns_or_may_write_is_not_trusted() {
    use std::os::unix::fs::PermissionsExt as _;
    let migrations = copy_migrations();
    let cache = fresh_verify_cache();
    let (_, report) = verify(migrations.path(), &cache, &[]);
    let file = PathBuf::from(report_cache_file(&report));

    let untrusted = |why: &str| {
        let (run, report) = verify(migrations.path(), &cache, &[]);
        run.success();
        assert!(from_cache(&report).is_empty(), "{}", run.text());
        let note = format!("cache: the cache file {} {why}", file.display());
        assert!(run.stdout().contains(&note), "{note:?} in {}", run.text());
        assert!(
            run.stdout().contains(
                "ignored (whoever can write it could make verify pass what a full run fails)"
            ),
            "{}",
            run.text()
        );
    };
    // Written by another account: `nobody` (the tests run as root).
    std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
    untrusted("belongs to another user (uid 65534");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
    untrusted("may be written by other users (mode 666)");
    let aside = cache.join("aside.json");
    std::fs::rename(&file, &aside).unwrap();
    std::os::unix::fs::symlink(&aside, &file).unwrap();
    untrusted("is a symbolic link");

    // Each time the run's own results replaced it: trusted again.
    let (run, report) = verify(migrations.path(), &cache, &[]);
    assert_eq!(from_cache(&report), revisions(&report), "{}", run.text());
}
