//! `migrate import-alembic` with the real (pinned) Alembic on the fixture project
//! `tests/fixtures/alembic_project`, written the way Alembic projects are: every revision
//! converted and proven, or named with what needs a hand, and nothing written otherwise.

use std::fs;
use std::path::{Path, PathBuf};

use backend_schema::graph::RevisionGraph;

use crate::pinned_alembic::alembic_command;
use crate::support::{copy_dir, root, xtask_command, Run, TestDb};

const FIXTURE: &str = "tests/fixtures/alembic_project";
/// The fixture's revision that reads rows through `op.get_bind()`.
const GET_BIND: &str = "6f7a8b9c0d1e_rescore_leads_in_python.py";

/// The pinned Alembic as `--alembic` takes it: the venv's python (run with `-m alembic`)
/// or the `$ALEMBIC` wrapper.
fn pinned_alembic() -> PathBuf {
    PathBuf::from(alembic_command().get_program())
}

/// A copy of the fixture project, without the revision that needs a hand when `convertible`.
fn fixture_copy(convertible: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join(FIXTURE), dir.path());
    if convertible {
        fs::remove_file(dir.path().join("versions").join(GET_BIND)).unwrap();
    }
    dir
}

fn import(args: &[&Path], alembic: Option<&Path>) -> Run {
    let mut command = xtask_command(&["migrate", "import-alembic"]);
    command.arg(args[0]).arg("--into").arg(args[1]);
    if let Some(alembic) = alembic {
        command.arg("--alembic").arg(alembic);
    }
    Run {
        output: command.output().unwrap(),
    }
}

fn edit(file: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} lacks {from:?}", file.display());
    fs::write(file, text.replace(from, to)).unwrap();
}

/// Every file under `dir`, relative, for "nothing was written or left behind".
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_real_style_project_becomes_our_chain_proven_revision_by_revision() {
    let project = fixture_copy(true);
    let before = listing(&project.path().join("versions"));
    // Alembic found in the project's virtualenv: nothing on PATH, no --alembic.
    let bin = project.path().join(".venv/bin");
    fs::create_dir_all(&bin).unwrap();
    let wrapper = bin.join("alembic");
    fs::write(&wrapper, wrapper_script()).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();

    let out = tempfile::tempdir().unwrap();
    let into = out.path().join("migrations");
    let mut command = xtask_command(&["migrate", "import-alembic"]);
    command
        .arg(project.path())
        .arg("--into")
        .arg(&into)
        .env("PATH", path_without_alembic());
    let run = Run {
        output: command.output().unwrap(),
    };
    run.success();
    let stdout = run.stdout();
    for revision in [
        "1a2b3c4d5e6f",
        "2b3c4d5e6f7a",
        "3c4d5e6f7a8b",
        "4d5e6f7a8b9c",
        "5e6f7a8b9c0d",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(revision))
            .unwrap_or_else(|| panic!("no verdict for {revision}:\n{stdout}"));
        assert!(
            row.contains("equal") && row.contains("returns"),
            "{row}\n{stdout}"
        );
    }
    assert!(
        run.stderr().contains("from the project's virtualenv"),
        "{}",
        run.stderr()
    );

    let graph = RevisionGraph::load(&into).unwrap();
    assert_eq!(graph.heads(), ["5e6f7a8b9c0d"]);
    let merge = graph.get("4d5e6f7a8b9c").unwrap();
    assert_eq!(merge.parents, ["2b3c4d5e6f7a", "3c4d5e6f7a8b"]);
    assert_eq!(
        merge.message,
        "merge leads and billing; backfill billing emails"
    );
    assert_eq!(
        merge.create_date.as_deref(),
        Some("2025-03-07 08:00:00.000000")
    );
    assert!(
        merge.up.contains("WHERE billing_email IS NULL;\n") && !merge.up.contains(";;"),
        "{}",
        merge.up
    );
    assert_eq!(
        graph.get("3c4d5e6f7a8b").unwrap().branch_labels,
        ["billing"]
    );
    let concurrently = graph.get("5e6f7a8b9c0d").unwrap();
    assert!(!concurrently.transactional);
    assert!(
        concurrently.up.contains(
            "-- Imported from Alembic: versions/5e6f7a8b9c0d_index_lead_emails_concurrently.py"
        ),
        "{}",
        concurrently.up
    );
    assert!(concurrently
        .up
        .contains("CREATE INDEX CONCURRENTLY ix_leads_email"));
    let tenants = graph.get("1a2b3c4d5e6f").unwrap();
    assert!(tenants
        .up
        .contains("CREATE TYPE tenant_plan AS ENUM ('free', 'pro', 'enterprise')"));
    assert!(tenants
        .up
        .contains("plan tenant_plan DEFAULT 'free' NOT NULL"));
    for migration in graph.migrations() {
        for sql in [&migration.up, &migration.down] {
            for word in ["BEGIN;", "COMMIT;", "alembic_version"] {
                assert!(!sql.contains(word), "{word} in {}", migration.revision);
            }
        }
    }
    // Loading the revision files wrote nothing into the project (no __pycache__).
    assert_eq!(listing(&project.path().join("versions")), before);
    // Only the chain is left beside it: no staging directory.
    assert_eq!(listing(out.path()), ["migrations"]);

    // A database Alembic migrated needs no stamp: we read its alembic_version as ours.
    let db = TestDb::new();
    let alembic_project = tempfile::tempdir().unwrap();
    copy_dir(
        &project.path().join("versions"),
        &alembic_project.path().join("versions"),
    );
    fs::copy(
        root().join("tests/alembic/env.py"),
        alembic_project.path().join("env.py"),
    )
    .unwrap();
    fs::write(
        alembic_project.path().join("alembic.ini"),
        format!(
            "[alembic]\nscript_location = {}\n",
            alembic_project.path().display()
        ),
    )
    .unwrap();
    let output = alembic_command()
        .arg("-c")
        .arg(alembic_project.path().join("alembic.ini"))
        .args(["upgrade", "head"])
        .env(
            "ALEMBIC_URL",
            db.url().replace("postgresql://", "postgresql+psycopg2://"),
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let into_text = into.display().to_string();
    let current = db.xtask(&["migrate", "current", "--migrations", &into_text]);
    assert!(
        current.success().stdout().contains("5e6f7a8b9c0d (head)"),
        "{}",
        current.text()
    );
    let upgrade = db.xtask(&["migrate", "upgrade", "head", "--migrations", &into_text]);
    upgrade.success();
    assert_eq!(db.heads(), ["5e6f7a8b9c0d"]);
}

/// An `alembic` script that runs the pinned Alembic, as a virtualenv's would.
fn wrapper_script() -> String {
    let pinned = alembic_command();
    let mut line = format!("'{}'", pinned.get_program().to_string_lossy());
    for arg in pinned.get_args() {
        line.push_str(&format!(" '{}'", arg.to_string_lossy()));
    }
    format!("#!/bin/sh\nexec {line} \"$@\"\n")
}

/// PATH without any directory holding an `alembic`.
fn path_without_alembic() -> std::ffi::OsString {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::env::split_paths(&path).filter(|dir| !dir.join("alembic").exists()))
        .unwrap()
}

#[test]
fn a_revision_reading_rows_through_get_bind_is_named_and_nothing_is_written() {
    let project = fixture_copy(false);
    let versions = project.path().join("versions");
    revision_file_with(
        &versions,
        "9c0d1e2f3a4b_offline_aware",
        "9c0d1e2f3a4b",
        "\"5e6f7a8b9c0d\"",
        "from alembic import context\n",
        "if not context.is_offline_mode():\n        op.execute(\"SELECT 1\")",
    );
    revision_file_with(
        &versions,
        "1e2f3a4b5c6d_uses_app",
        "1e2f3a4b5c6d",
        "\"5e6f7a8b9c0d\"",
        "from app.models import Lead  # noqa\n",
        "pass",
    );
    revision_file(
        &versions,
        "0d1e2f3a4b5c_depends",
        "0d1e2f3a4b5c",
        "\"5e6f7a8b9c0d\"",
    );
    edit(
        &versions.join("0d1e2f3a4b5c_depends.py"),
        "depends_on = None",
        "depends_on = \"3c4d5e6f7a8b\"",
    );
    // Alembic found on PATH this time.
    let bin = tempfile::tempdir().unwrap();
    fs::write(bin.path().join("alembic"), wrapper_script()).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(
        bin.path().join("alembic"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let mut path = vec![bin.path().to_path_buf()];
    path.extend(std::env::split_paths(&path_without_alembic()));

    let out = tempfile::tempdir().unwrap();
    let into = out.path().join("migrations");
    let mut command = xtask_command(&["migrate", "import-alembic"]);
    command
        .arg(project.path())
        .arg("--into")
        .arg(&into)
        .env("PATH", std::env::join_paths(path).unwrap());
    let run = Run {
        output: command.output().unwrap(),
    };
    run.failure();
    let stderr = run.stderr();
    assert!(
        stderr.contains("4 revision file(s) need a hand"),
        "{stderr}"
    );
    assert!(
        stderr.contains("upgrade() asks context.is_offline_mode() at line 18"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1e2f3a4b5c6d_uses_app.py")
            && stderr
                .contains("cannot be loaded (line 9: ModuleNotFoundError: No module named 'app')"),
        "{stderr}"
    );
    assert!(
        stderr.contains("depends_on = 3c4d5e6f7a8b: our migrations have no depends_on"),
        "{stderr}"
    );
    assert!(stderr.contains(GET_BIND), "{stderr}");
    assert!(
        stderr.contains("upgrade() calls op.get_bind() at line 22"),
        "{stderr}"
    );
    assert!(
        stderr.contains("fails offline at line 23: AttributeError"),
        "{stderr}"
    );
    assert!(listing(out.path()).is_empty(), "{:?}", listing(out.path()));
}

#[test]
fn a_downgrade_that_does_not_return_fails_the_proof_with_the_diff_and_writes_nothing() {
    let project = fixture_copy(true);
    // An irreversible migration, as Alembic projects often have: the proof must say so.
    edit(
        &project
            .path()
            .join("versions/3c4d5e6f7a8b_billing_invoices.py"),
        "    op.drop_column(\"tenants\", \"billing_email\")\n    op.drop_table(\"invoices\")",
        "    pass",
    );
    let out = tempfile::tempdir().unwrap();
    let into = out.path().join("migrations");
    let run = import(&[project.path(), &into], Some(&pinned_alembic()));
    run.failure();
    let stderr = run.stderr();
    assert!(
        stderr.contains("the imported chain is not what Alembic builds; nothing was written"),
        "{stderr}"
    );
    let row = stderr
        .lines()
        .find(|l| l.starts_with("3c4d5e6f7a8b"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(row.contains("equal") && row.contains("DIFFERS"), "{row}");
    assert!(
        stderr.contains("invoices"),
        "the diff names the table: {stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("4d5e6f7a8b9c") && l.contains("not checked")),
        "{stderr}"
    );
    assert!(listing(out.path()).is_empty(), "{:?}", listing(out.path()));
}

#[test]
fn an_upgrade_whose_offline_sql_is_not_what_it_runs_online_fails_the_proof() {
    let project = fixture_copy(true);
    // Nothing the import can see while rendering: only the proof catches it.
    edit(
        &project.path().join("versions/2b3c4d5e6f7a_add_leads.py"),
        "    op.create_index(\"ix_leads_tenant_id\", \"leads\", [\"tenant_id\"])",
        "    if not op.get_context().as_sql:\n        op.create_index(\"ix_leads_tenant_id\", \"leads\", [\"tenant_id\"])",
    );
    let out = tempfile::tempdir().unwrap();
    let into = out.path().join("migrations");
    let run = import(&[project.path(), &into], Some(&pinned_alembic()));
    run.failure();
    let stderr = run.stderr();
    let row = stderr
        .lines()
        .find(|l| l.starts_with("2b3c4d5e6f7a"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(row.contains("DIFFERS"), "{row}");
    assert!(stderr.contains("ix_leads_tenant_id"), "{stderr}");
    assert!(listing(out.path()).is_empty());
}

/// A minimal revision file as `alembic revision` writes it.
fn revision_file(versions: &Path, name: &str, revision: &str, down: &str) {
    revision_file_with(
        versions,
        name,
        revision,
        down,
        "",
        "op.execute(\"SELECT 1\")",
    );
}

fn revision_file_with(
    versions: &Path,
    name: &str,
    revision: &str,
    down: &str,
    imports: &str,
    upgrade: &str,
) {
    fs::write(
        versions.join(format!("{name}.py")),
        format!(
            "\"\"\"{name}\n\nRevision ID: {revision}\nRevises: {down}\nCreate Date: 2025-04-01 10:00:00\n\n\"\"\"\nfrom alembic import op\n{imports}\nrevision = \"{revision}\"\ndown_revision = {down}\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n    {upgrade}\n\n\ndef downgrade():\n    pass\n"
        ),
    )
    .unwrap();
}

#[test]
fn graph_problems_are_reported_naming_the_alembic_files() {
    let project = fixture_copy(true);
    let versions = project.path().join("versions");
    // A duplicate ID (the upstream project has one), a missing parent.
    revision_file(
        &versions,
        "5e6f7a8b9c0d_twin",
        "5e6f7a8b9c0d",
        "\"4d5e6f7a8b9c\"",
    );
    revision_file(
        &versions,
        "7a8b9c0d1e2f_orphan",
        "7a8b9c0d1e2f",
        "\"ffffffffffff\"",
    );
    let out = tempfile::tempdir().unwrap();
    let run = import(
        &[project.path(), &out.path().join("migrations")],
        Some(&pinned_alembic()),
    );
    run.failure();
    let stderr = run.stderr();
    let twin = versions.join("5e6f7a8b9c0d_twin.py");
    let original = versions.join("5e6f7a8b9c0d_index_lead_emails_concurrently.py");
    assert!(
        stderr.contains(&format!(
            "duplicate revision ID 5e6f7a8b9c0d, claimed by {} and {}",
            original.canonicalize().unwrap().display(),
            twin.canonicalize().unwrap().display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("revision 7a8b9c0d1e2f revises ffffffffffff, which no migration defines"),
        "{stderr}"
    );
    assert!(listing(out.path()).is_empty());

    // Several heads and no branch label: named, not picked from.
    let project = fixture_copy(true);
    let versions = project.path().join("versions");
    revision_file(
        &versions,
        "8b9c0d1e2f3a_side",
        "8b9c0d1e2f3a",
        "\"4d5e6f7a8b9c\"",
    );
    edit(
        &versions.join("3c4d5e6f7a8b_billing_invoices.py"),
        "(\"billing\",)",
        "None",
    );
    let run = import(
        &[project.path(), &out.path().join("migrations")],
        Some(&pinned_alembic()),
    );
    run.failure();
    assert!(
        run.stderr().contains("the graph has 2 heads") && run.stderr().contains("alembic merge"),
        "{}",
        run.stderr()
    );
    assert!(listing(out.path()).is_empty());
}

#[test]
fn a_non_empty_destination_or_no_alembic_is_refused_before_anything_runs() {
    let project = fixture_copy(true);
    let out = tempfile::tempdir().unwrap();
    fs::write(out.path().join("keep.txt"), "mine").unwrap();
    let run = import(
        &[project.path(), out.path()],
        Some(Path::new("/nonexistent/alembic")),
    );
    run.failure();
    assert!(
        run.stderr()
            .contains("is not empty: the import writes only into a new or empty directory"),
        "{}",
        run.stderr()
    );
    assert_eq!(listing(out.path()), ["keep.txt"]);

    let mut command = xtask_command(&["migrate", "import-alembic"]);
    command
        .arg(project.path())
        .arg("--into")
        .arg(out.path().join("new"))
        .env("PATH", path_without_alembic());
    let run = Run {
        output: command.output().unwrap(),
    };
    run.failure();
    let stderr = run.stderr();
    assert!(stderr.contains("no Alembic found"), "{stderr}");
    assert!(stderr.contains("--alembic PATH"), "{stderr}");
    assert!(
        stderr.contains(
            &project
                .path()
                .canonicalize()
                .unwrap()
                .join(".venv/bin/alembic")
                .display()
                .to_string()
        ),
        "names where it looked: {stderr}"
    );
    assert_eq!(listing(out.path()), ["keep.txt"]);
}

/// `version_locations` in alembic.ini can hold revisions the import would not read: it
/// is refused by name (the file, the setting, the way forward) unless it names only the
/// imported versions directory.
#[test]
fn version_locations_beyond_the_versions_directory_are_refused_by_name() {
    let project = fixture_copy(true);
    let ini = project.path().join("alembic.ini");
    edit(
        &ini,
        "version_path_separator = os\n",
        "version_path_separator = os\nversion_locations = %(here)s/versions:%(here)s/billing_versions\n",
    );
    let out = tempfile::tempdir().unwrap();
    let into = out.path().join("migrations");
    let run = import(
        &[project.path(), &into],
        Some(Path::new("/nonexistent/alembic")),
    );
    let stderr = run.failure().stderr();
    assert!(
        stderr.contains(
            "alembic.ini sets version_locations = %(here)s/versions:%(here)s/billing_versions"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("copy every location's revision files into one directory"),
        "{stderr}"
    );
    assert!(!into.exists());

    // Only the imported directory: the import goes on (here to the missing --alembic).
    edit(
        &ini,
        "%(here)s/versions:%(here)s/billing_versions",
        "%(here)s/versions",
    );
    let run = import(
        &[project.path(), &into],
        Some(Path::new("/nonexistent/alembic")),
    );
    let stderr = run.failure().stderr();
    assert!(
        stderr.contains("--alembic /nonexistent/alembic does not exist"),
        "{stderr}"
    );
}

/// A killed import leaves its hidden staging directory (a half-written chain) beside the
/// destination: the next run removes it and says so; a running import's and other
/// files stay.
#[test]
fn a_killed_imports_staging_directory_is_swept_by_the_next_run() {
    let project = fixture_copy(true);
    let out = tempfile::tempdir().unwrap();
    let mut finished = std::process::Command::new("true").spawn().unwrap();
    finished.wait().unwrap();
    let killed = out
        .path()
        .join(format!(".import-alembic-{}-Xy12ab", finished.id()));
    fs::create_dir_all(killed.join("migrations/0f18384ca39a_initial")).unwrap();
    let mut running = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let live = out
        .path()
        .join(format!(".import-alembic-{}-Zz34cd", running.id()));
    fs::create_dir_all(&live).unwrap();
    let other = out.path().join(".import-alembic-notes");
    fs::create_dir_all(&other).unwrap();

    let into = out.path().join("migrations");
    let run = import(
        &[project.path(), &into],
        Some(Path::new("/nonexistent/alembic")),
    );
    running.kill().unwrap();
    running.wait().unwrap();
    let stderr = run.failure().stderr();
    assert!(
        stderr.contains(&format!(
            "removed {}, the staging directory of an import that was killed",
            killed.display()
        )),
        "{stderr}"
    );
    assert!(!killed.exists());
    assert!(live.is_dir() && other.is_dir());
}

/// Alembic reads alembic.ini with Python's configparser: option names in any case, and
/// `[DEFAULT]`'s options in every section. Either spelling of `version_locations`
/// reaching beyond the versions directory is refused as the plain one is.
#[test]
fn version_locations_in_any_case_or_in_the_default_section_are_refused_too() {
    for (from, to) in [
        (
            "version_path_separator = os\n",
            "version_path_separator = os\nVersion_Locations = %(here)s/versions:%(here)s/billing_versions\n",
        ),
        (
            "[alembic]\n",
            "[DEFAULT]\nversion_locations = %(here)s/versions:%(here)s/billing_versions\n\n[alembic]\n",
        ),
    ] {
        let project = fixture_copy(true);
        let ini = project.path().join("alembic.ini");
        edit(&ini, from, to);
        let out = tempfile::tempdir().unwrap();
        let into = out.path().join("migrations");
        let run = import(
            &[project.path(), &into],
            Some(Path::new("/nonexistent/alembic")),
        );
        let stderr = run.failure().stderr();
        assert!(
            stderr.contains(
                "alembic.ini sets version_locations = %(here)s/versions:%(here)s/billing_versions"
            ),
            "{to}: {stderr}"
        );
        assert!(!into.exists());
    }
}
