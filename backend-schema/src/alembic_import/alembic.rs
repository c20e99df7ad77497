//! The real Alembic the import runs: where it is found (`--alembic`, `alembic` on PATH,
//! the project's virtualenv), and a private script directory holding our own `env.py`
//! whose `versions` is the project's, to render one revision offline or upgrade a
//! throwaway database online.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use super::ImportError;

/// Our env.py: see the file for what it does in each mode.
const ENV_PY: &str = include_str!("env.py");

/// Where the Alembic in use was found, said in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Path,
    Virtualenv,
}

/// An Alembic to run: an `alembic` executable (or wrapper script), or a python with
/// Alembic installed (run as `python -m alembic`).
#[derive(Debug, Clone)]
pub struct Alembic {
    pub program: PathBuf,
    pub origin: Origin,
    /// The program is a python interpreter: its file name starts with `python`.
    pub python: bool,
    /// What `alembic --version` said.
    pub version: String,
}

impl fmt::Display for Alembic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = match self.origin {
            Origin::Flag => "--alembic",
            Origin::Path => "PATH",
            Origin::Virtualenv => "the project's virtualenv",
        };
        write!(
            f,
            "{} at {} (from {origin})",
            self.version,
            self.program.display()
        )
    }
}

/// The virtualenv directories looked for beside the Alembic project and its parent.
const VIRTUALENVS: &[&str] = &[".venv", "venv"];

impl Alembic {
    /// `flag`, else `alembic` on PATH, else `.venv`/`venv` in the versions directory's
    /// project or the directory above it (a backend's virtualenv); checked by running it.
    pub fn find(flag: Option<&Path>, versions: &Path) -> Result<Alembic, ImportError> {
        let (program, origin) = match flag {
            Some(path) => {
                if !path.is_file() {
                    return Err(ImportError::AlembicMissing {
                        path: path.to_path_buf(),
                    });
                }
                (path.to_path_buf(), Origin::Flag)
            }
            None => match on_path("alembic") {
                Some(path) => (path, Origin::Path),
                None => {
                    let project = versions.parent().unwrap_or(versions);
                    let candidates: Vec<PathBuf> = [Some(project), project.parent()]
                        .into_iter()
                        .flatten()
                        .flat_map(|dir| VIRTUALENVS.iter().map(move |v| dir.join(v)))
                        .map(|venv| venv.join("bin").join("alembic"))
                        .collect();
                    match candidates.iter().find(|c| c.is_file()) {
                        Some(path) => (path.clone(), Origin::Virtualenv),
                        None => {
                            return Err(ImportError::AlembicNotFound {
                                looked_in: candidates,
                            })
                        }
                    }
                }
            },
        };
        let python = program
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("python"));
        let mut alembic = Alembic {
            program,
            origin,
            python,
            version: String::new(),
        };
        let output = alembic.run(vec!["--version".into()])?;
        if !output.status.success() {
            return Err(ImportError::AlembicBroken {
                program: alembic.program,
                stderr: crate::pgtool::stderr_tail(&output.stderr),
            });
        }
        alembic.version = String::from_utf8_lossy(&output.stdout).trim().to_string();
        Ok(alembic)
    }

    fn run(&self, args: Vec<OsString>) -> Result<std::process::Output, ImportError> {
        let mut all: Vec<OsString> = Vec::new();
        if self.python {
            all.extend(["-m".into(), "alembic".into()]);
        }
        all.extend(args);
        duct::cmd(&self.program, all)
            // Loading the project's revision files must not write into it.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .map_err(|source| ImportError::AlembicRun {
                program: self.program.clone(),
                source,
            })
    }
}

/// The first executable `name` in `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A private Alembic script directory: our env.py, an alembic.ini naming it, and
/// `versions` linked to the project's versions directory.
pub struct Workspace {
    alembic: Alembic,
    dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new(alembic: Alembic, versions: &Path) -> Result<Workspace, ImportError> {
        let dir = tempfile::Builder::new()
            .prefix("import-alembic-")
            .tempdir()
            .map_err(|source| ImportError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let io = |path: PathBuf| move |source| ImportError::Io { path, source };
        let env = dir.path().join("env.py");
        std::fs::write(&env, ENV_PY).map_err(io(env.clone()))?;
        let link = dir.path().join("versions");
        std::os::unix::fs::symlink(versions, &link).map_err(io(link.clone()))?;
        // configparser reads `%` as interpolation.
        let location = dir.path().display().to_string().replace('%', "%%");
        let ini = dir.path().join("alembic.ini");
        std::fs::write(&ini, format!("[alembic]\nscript_location = {location}\n"))
            .map_err(io(ini.clone()))?;
        Ok(Workspace { alembic, dir })
    }

    pub fn alembic(&self) -> &Alembic {
        &self.alembic
    }

    fn args(&self, x: &[(&str, &OsString)], command: &[&str]) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["-c".into(), self.dir.path().join("alembic.ini").into()];
        for (key, value) in x {
            let mut pair = OsString::from(format!("{key}="));
            pair.push(value);
            args.extend(["-x".into(), pair]);
        }
        args.extend(command.iter().map(OsString::from));
        args
    }

    /// Renders one revision file offline; the JSON our env.py wrote, or why there is none.
    pub fn render(&self, file: &Path) -> Result<String, String> {
        let output_path = self.dir.path().join("rendered.json");
        let _ = std::fs::remove_file(&output_path);
        let args = self.args(
            &[
                ("render", &file.as_os_str().to_owned()),
                ("output", &output_path.as_os_str().to_owned()),
            ],
            &["upgrade", "head", "--sql"],
        );
        let output = self.alembic.run(args).map_err(|err| err.to_string())?;
        if !output.status.success() {
            return Err(format!(
                "alembic failed rendering it ({}):\n  {}",
                output.status,
                crate::pgtool::stderr_tail(&output.stderr)
            ));
        }
        std::fs::read_to_string(&output_path)
            .map_err(|err| format!("alembic wrote no result ({err})"))
    }

    /// Alembic's own `upgrade REV`, online, on the database at `url` (a throwaway one).
    pub fn upgrade(&self, url: &str, revision: &str) -> Result<(), String> {
        let url = OsString::from(url);
        let args = self.args(&[("url", &url)], &["upgrade", revision]);
        let output = self.alembic.run(args).map_err(|err| err.to_string())?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "alembic upgrade {revision} failed ({}):\n  {}",
                output.status,
                crate::pgtool::stderr_tail(&output.stderr)
            ))
        }
    }
}
