//! The persistent local dev database under `target/dev-db`, for everyday work without
//! any configuration. When the server's OS account cannot enter the checkout (root's
//! private home, a 0700 temp dir), it lives in `/var/tmp/backend-schema-dev-<hash>`
//! instead, which survives reboots like `target/` does. Unlike [`super::TempCluster`] it outlives the command that
//! started it, so it is run through `pg_ctl` (which daemonizes) and stopped explicitly.

use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{reaper, template, Access, ClusterError, PgBinaries, RunAs, PORT, SERVER_SETTINGS};

/// Name of the database the dev cluster serves.
pub const DEV_DATABASE: &str = "diagnoleads";
/// The dev cluster's superuser: `postgres`, as a local installation has it, and as the
/// dev databases made before throwaway clusters had their own owner were initialised.
pub const DEV_OWNER: &str = "postgres";

#[derive(Debug, Clone)]
pub struct DevDatabase {
    root: PathBuf,
}

#[derive(Debug, PartialEq, Eq)]
pub enum DevStatus {
    NotCreated,
    Stopped,
    Running { pid: u32 },
}

impl DevDatabase {
    /// The dev database of the workspace at `workspace_root`.
    pub fn new(workspace_root: &Path) -> DevDatabase {
        let target = workspace_root.join("target");
        let reachable = match RunAs::for_server() {
            // A target/ that does not exist yet is judged by the directory it will be in.
            Ok(run_as) => run_as
                .check_reach(
                    if target.exists() {
                        &target
                    } else {
                        workspace_root
                    },
                    Access::Enter,
                )
                .is_ok(),
            Err(_) => true,
        };
        let root = if reachable {
            target.join("dev-db")
        } else {
            let digest = Sha256::digest(workspace_root.as_os_str().as_encoded_bytes());
            let short = crate::text::hex(&digest[..5]);
            PathBuf::from(format!("/var/tmp/backend-schema-dev-{short}"))
        };
        DevDatabase { root }
    }

    /// Where the data directory and the log live.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// A short socket directory in /tmp named after the workspace path: the socket path
    /// under a deep `target/` could exceed the 107-byte limit.
    pub fn socket_dir(&self) -> PathBuf {
        let digest = Sha256::digest(self.root.as_os_str().as_encoded_bytes());
        let short = crate::text::hex(&digest[..5]);
        PathBuf::from(format!("/tmp/bs-dev-{short}"))
    }

    pub fn url(&self) -> String {
        format!(
            "postgresql://{DEV_OWNER}@/{DEV_DATABASE}?host={}&port={PORT}",
            self.socket_dir().display()
        )
    }

    pub fn status(&self) -> DevStatus {
        if !self.data_dir().join("PG_VERSION").is_file() {
            return DevStatus::NotCreated;
        }
        let pid = fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next()?.trim().parse::<u32>().ok());
        match pid {
            Some(pid) if reaper::process_alive(pid) => DevStatus::Running { pid },
            _ => DevStatus::Stopped,
        }
    }

    /// Starts the dev cluster (creating it on first use); returns false when it was
    /// already running.
    pub fn start(&self) -> Result<bool, ClusterError> {
        if matches!(self.status(), DevStatus::Running { .. }) {
            return Ok(false);
        }
        let binaries = PgBinaries::locate()?;
        let run_as = RunAs::for_server()?;
        for program in ["initdb", "postgres", "pg_ctl"] {
            super::check_reach(
                run_as,
                &binaries.tool(program),
                Access::Execute,
                "set PG_BIN_DIR to an installation every account can run (e.g. /usr/lib/postgresql/15/bin)",
            )?;
        }
        let io = |action: String| move |source| ClusterError::Io { action, source };
        if let Some(parent) = self.root.parent() {
            fs::create_dir_all(parent).map_err(io(format!("create {}", parent.display())))?;
        }
        private_dir(&self.root, run_as)?;
        if self.status() == DevStatus::NotCreated {
            let key = template::cache_key(&binaries, SERVER_SETTINGS, DEV_OWNER);
            template::provision(&binaries, run_as, &key, &self.data_dir(), DEV_OWNER)?;
        }
        let socket_dir = self.socket_dir();
        private_dir(&socket_dir, run_as)?;

        // pg_ctl passes -o through /bin/sh; every value here is ours and has no spaces.
        let mut options = format!("-k {} -p {PORT}", socket_dir.display());
        for (name, value) in SERVER_SETTINGS {
            options.push_str(&format!(" -c {name}={value}"));
        }
        self.pg_ctl(
            &binaries,
            run_as,
            &["start", "-w", "-t", "60", "-o", &options],
            |log, log_tail| ClusterError::StartFailed { log, log_tail },
        )?;

        let mut client = postgres::Client::connect(
            &format!(
                "postgresql://{DEV_OWNER}@/postgres?host={}&port={PORT}",
                socket_dir.display()
            ),
            postgres::NoTls,
        )
        .map_err(|source| ClusterError::Connect {
            database: "postgres".into(),
            source,
        })?;
        let sql_err = |action: &str| {
            let action = action.to_string();
            move |source| ClusterError::Sql { action, source }
        };
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&DEV_DATABASE],
            )
            .map_err(sql_err("looking up the dev database"))?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!(
                    "CREATE DATABASE {}",
                    crate::sql::quote_ident(DEV_DATABASE)
                ))
                .map_err(sql_err("creating the dev database"))?;
        }
        Ok(true)
    }

    /// Stops the dev cluster; returns false when it was not running.
    pub fn stop(&self) -> Result<bool, ClusterError> {
        if !matches!(self.status(), DevStatus::Running { .. }) {
            return Ok(false);
        }
        let binaries = PgBinaries::locate()?;
        let run_as = RunAs::for_server()?;
        self.pg_ctl(
            &binaries,
            run_as,
            &["stop", "-w", "-m", "fast"],
            |log, log_tail| ClusterError::StopFailed { log, log_tail },
        )?;
        let _ = fs::remove_dir_all(self.socket_dir());
        Ok(true)
    }

    fn pg_ctl(
        &self,
        binaries: &PgBinaries,
        run_as: RunAs,
        args: &[&str],
        failed: fn(PathBuf, String) -> ClusterError,
    ) -> Result<(), ClusterError> {
        let mut all: Vec<std::ffi::OsString> = vec!["-D".into(), self.data_dir().into()];
        all.extend(["-l".into(), self.log_path().into()]);
        all.extend(args.iter().map(Into::into));
        let output = duct::cmd(binaries.tool("pg_ctl"), all)
            .before_spawn(move |command| {
                run_as.apply(command, false);
                Ok(())
            })
            .stdin_null()
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .run()
            .map_err(|source| ClusterError::Io {
                action: "run pg_ctl".into(),
                source,
            })?;
        if output.status.success() {
            return Ok(());
        }
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        Err(failed(
            self.log_path(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stderr),
                crate::text::tail(&log, 10).join("\n")
            ),
        ))
    }
}

/// Makes `dir` a 0700 directory of the server's account. The dev database trusts whoever
/// reaches its socket, and its log can quote rows, so only that account (and root) may
/// enter. Its names are predictable (`/tmp/bs-dev-<hash>`): what another account put
/// there first (a directory, or a link to one of root's) is refused, never adopted.
fn private_dir(dir: &Path, run_as: RunAs) -> Result<(), ClusterError> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    let io = |action: String| move |source| ClusterError::Io { action, source };
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            let found =
                fs::symlink_metadata(dir).map_err(io(format!("inspect {}", dir.display())))?;
            // SAFETY: geteuid cannot fail.
            let me = unsafe { libc::geteuid() };
            if !found.file_type().is_dir() || (found.uid() != me && found.uid() != run_as.uid) {
                return Err(ClusterError::NotOurs {
                    path: dir.to_path_buf(),
                    owner: super::account_name(found.uid()),
                });
            }
        }
        Err(err) => return Err(io(format!("create {}", dir.display()))(err)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .map_err(io(format!("make {} private", dir.display())))?;
    run_as
        .chown(dir)
        .map_err(io(format!("give {} to the server user", dir.display())))
}
