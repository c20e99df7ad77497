//! The pinned real Alembic (`tests/alembic/requirements.txt`) for the interop tests,
//! provisioned into `target/alembic-venv` by the first test that needs it (and any other
//! pinned Python tool the same way, see `provision_venv`): once, under a
//! file lock (test threads and processes may race), built in a temporary directory and
//! renamed into place, so an interrupted install leaves nothing that looks finished.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::support::root;

/// The name of the finished virtualenv under the target directory.
const VENV: &str = "alembic-venv";
/// Prefix of the directories an install is built in; leftovers of a killed one are swept.
const STAGING_PREFIX: &str = ".alembic-venv-";
/// Written last into a finished virtualenv: the requirements it was built from.
const STAMP: &str = ".requirements";

/// A command running the pinned Alembic (`$ALEMBIC` when set), provisioning it first.
pub fn alembic_command() -> Command {
    if let Some(program) = std::env::var_os("ALEMBIC") {
        return Command::new(program);
    }
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    let python = PYTHON.get_or_init(|| {
        provision(
            &root().join("target"),
            &root().join("tests/alembic/requirements.txt"),
            Path::new("python3"),
        )
        .unwrap_or_else(|err| panic!("cannot provision the pinned Alembic: {err}"))
    });
    let mut command = Command::new(python);
    // `python -m alembic` rather than the `alembic` script: the script's #! line names the
    // directory the virtualenv was built in, which the rename leaves behind.
    command.args(["-m", "alembic"]);
    command
}

/// Makes `<target>/alembic-venv` hold the packages of `requirements`, built with
/// `python3`, and returns the virtualenv's python.
pub fn provision(target: &Path, requirements: &Path, python3: &Path) -> Result<PathBuf, String> {
    provision_venv(target, VENV, requirements, python3)
}

/// Makes `<target>/<name>` a virtualenv holding the packages of `requirements` (the same
/// way: file lock, staging directory `.<name>-*`, rename), and returns its python.
pub fn provision_venv(
    target: &Path,
    name: &str,
    requirements: &Path,
    python3: &Path,
) -> Result<PathBuf, String> {
    let wanted = fs::read_to_string(requirements)
        .map_err(|err| format!("cannot read {}: {err}", requirements.display()))?;
    let staging_prefix = format!(".{name}-");
    let venv = target.join(name);
    let python = venv.join("bin").join("python");
    let finished = || fs::read_to_string(venv.join(STAMP)).is_ok_and(|built| built == wanted);
    if finished() {
        return Ok(python);
    }

    fs::create_dir_all(target)
        .map_err(|err| format!("cannot create {}: {err}", target.display()))?;
    let lock_path = target.join(format!("{name}.lock"));
    let lock = fs::File::create(&lock_path)
        .map_err(|err| format!("cannot create {}: {err}", lock_path.display()))?;
    lock.lock()
        .map_err(|err| format!("cannot lock {}: {err}", lock_path.display()))?;
    // Someone else may have finished while we waited for the lock.
    if finished() {
        return Ok(python);
    }
    sweep_interrupted_installs(target, &staging_prefix)?;
    check_venv_module(python3)?;

    let staging = tempfile::Builder::new()
        .prefix(&staging_prefix)
        .tempdir_in(target)
        .map_err(|err| format!("cannot create a directory in {}: {err}", target.display()))?;
    let built = staging.path().join(name);
    run(Command::new(python3).arg("-m").arg("venv").arg(&built))?;
    run(Command::new(built.join("bin").join("python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(requirements))
    .map_err(|err| {
        format!("{err}\n(pip needs to reach PyPI, or a mirror set with PIP_INDEX_URL)")
    })?;
    fs::write(built.join(STAMP), &wanted)
        .map_err(|err| format!("cannot write {}: {err}", built.join(STAMP).display()))?;

    // A virtualenv of other requirements goes aside first; the staging dir takes it away.
    if venv.exists() {
        fs::rename(&venv, staging.path().join("replaced"))
            .map_err(|err| format!("cannot move the old {} aside: {err}", venv.display()))?;
    }
    fs::rename(&built, &venv)
        .map_err(|err| format!("cannot rename {} into place: {err}", built.display()))?;
    Ok(python)
}

/// Removes the staging directories of installs that were killed: only called under the
/// lock, so none of them is in use.
fn sweep_interrupted_installs(target: &Path, staging_prefix: &str) -> Result<(), String> {
    let entries =
        fs::read_dir(target).map_err(|err| format!("cannot list {}: {err}", target.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(staging_prefix) {
            fs::remove_dir_all(entry.path()).map_err(|err| {
                format!(
                    "cannot remove the interrupted install {}: {err}",
                    entry.path().display()
                )
            })?;
        }
    }
    Ok(())
}

/// Debian and Ubuntu ship `venv`'s pip bootstrap in a separate package: say which.
fn check_venv_module(python3: &Path) -> Result<(), String> {
    let output = Command::new(python3)
        .args(["-c", "import venv, ensurepip"])
        .output();
    match output {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "{} cannot create virtualenvs (the venv module or its ensurepip is missing: {}); \
             on Debian or Ubuntu install it with `apt-get install python3-venv`",
            python3.display(),
            last_line(&output)
        )),
        Err(err) => Err(format!(
            "cannot run {} ({err}); the interop and squawk tests need Python 3 with venv: \
             `apt-get install python3 python3-venv`",
            python3.display()
        )),
    }
}

fn run(command: &mut Command) -> Result<Output, String> {
    let shown = format!(
        "{} {}",
        command.get_program().to_string_lossy(),
        command
            .get_args()
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = command
        .output()
        .map_err(|err| format!("cannot run {shown}: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "`{shown}` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(output)
}

fn last_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .last()
        .unwrap_or("no message")
        .to_string()
}

#[test]
fn provisioning_survives_a_race_and_an_interrupted_install() {
    let target = tempfile::tempdir().unwrap();
    // What a SIGKILLed install leaves: a half-built staging directory.
    let leftover = target.path().join(format!("{STAGING_PREFIX}killed"));
    fs::create_dir_all(leftover.join("alembic-venv/bin")).unwrap();
    let requirements = target.path().join("requirements.txt");
    fs::write(&requirements, "# nothing to install\n").unwrap();

    let pythons: Vec<PathBuf> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| provision(target.path(), &requirements, Path::new("python3"))))
            .collect();
        racers
            .into_iter()
            .map(|racer| racer.join().unwrap().unwrap())
            .collect()
    });
    assert!(pythons.iter().all(|p| *p == pythons[0]), "{pythons:?}");
    assert!(!leftover.exists(), "the interrupted install was not swept");
    let prefix = Command::new(&pythons[0])
        .args(["-c", "import sys; print(sys.prefix)"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&prefix.stdout).trim(),
        target.path().join(VENV).to_str().unwrap(),
        "the renamed virtualenv is not the one its python runs in"
    );
    let staging_left = fs::read_dir(target.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(STAGING_PREFIX))
        .count();
    assert_eq!(staging_left, 0);
}

#[test]
fn a_python_without_venv_is_named_with_the_package_that_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("python3");
    fs::write(
        &fake,
        "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'ensurepip'\" >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let requirements = dir.path().join("requirements.txt");
    fs::write(&requirements, "").unwrap();

    let err = provision(&dir.path().join("target"), &requirements, &fake).unwrap_err();
    assert!(err.contains("apt-get install python3-venv"), "{err}");
    assert!(err.contains("ensurepip"), "{err}");
    assert!(!dir.path().join("target").join(VENV).exists());
}
