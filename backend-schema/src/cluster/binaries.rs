//! Locating the PostgreSQL server binaries (`initdb`, `postgres`, `pg_ctl`, `pg_dump`, ...).

use std::path::{Path, PathBuf};

use super::ClusterError;

/// The directory holding one PostgreSQL installation's programs, and its version.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    bin_dir: PathBuf,
    version: String,
}

impl PgBinaries {
    /// Finds the server binaries: `PG_BIN_DIR`, then `pg_config --bindir`, then `PATH`,
    /// then the newest `/usr/lib/postgresql/*/bin`.
    pub fn locate() -> Result<PgBinaries, ClusterError> {
        let bin_dir = candidate_dirs()
            .into_iter()
            .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
            .ok_or(ClusterError::BinariesNotFound)?;
        let version = version_of(&bin_dir, "postgres")?;
        Ok(PgBinaries { bin_dir, version })
    }

    /// Finds PostgreSQL's client programs ([`CLIENT_PROGRAMS`]) where the server's need
    /// not be installed (a runtime image with `postgresql-client-15` only), in the same
    /// places as [`PgBinaries::locate`]. `server_major` names the package to install
    /// when they are missing.
    pub fn locate_clients(server_major: Option<u32>) -> Result<PgBinaries, ClusterError> {
        let dirs = candidate_dirs();
        let Some(bin_dir) = dirs
            .iter()
            .find(|dir| CLIENT_PROGRAMS.iter().all(|p| dir.join(p).is_file()))
        else {
            let nowhere: Vec<&str> = CLIENT_PROGRAMS
                .iter()
                .copied()
                .filter(|p| !dirs.iter().any(|dir| dir.join(p).is_file()))
                .collect();
            let missing = match nowhere.as_slice() {
                [] => "pg_dump, pg_restore and psql together in one directory".to_string(),
                [one] => one.to_string(),
                [init @ .., last] => format!("{} and {last}", init.join(", ")),
            };
            return Err(ClusterError::ClientProgramsNotFound {
                missing,
                server_major,
            });
        };
        let version = version_of(bin_dir, "pg_dump")?;
        Ok(PgBinaries {
            bin_dir: bin_dir.clone(),
            version,
        })
    }

    /// The full server version, e.g. `15.18` (the client programs' for
    /// [`PgBinaries::locate_clients`]).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The major version, e.g. `15`.
    pub fn major_version(&self) -> &str {
        self.version.split('.').next().unwrap_or(&self.version)
    }

    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The path of a program of this installation (`pg_dump`, `psql`, ...).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
}

/// What `backup` and `restore` run.
pub const CLIENT_PROGRAMS: &[&str] = &["pg_dump", "pg_restore", "psql"];

/// The packages that hold the client programs, for a server of `major` when known.
pub(super) fn client_package(major: Option<u32>) -> String {
    let (debian, alpine) = match major {
        Some(major) => (
            format!("postgresql-client-{major}"),
            format!("postgresql{major}-client"),
        ),
        None => (
            "postgresql-client-NN".to_string(),
            "postgresqlNN-client".to_string(),
        ),
    };
    let of = match major {
        Some(_) => String::new(),
        None => ", NN the server's major version".to_string(),
    };
    format!("Debian/Ubuntu: `apt-get install {debian}`; Alpine: `apk add {alpine}`{of}")
}

fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("PG_BIN_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Ok(dir) = duct::cmd!("pg_config", "--bindir").stderr_null().read() {
        dirs.push(PathBuf::from(dir.trim()));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.extend(debian_installations(Path::new("/usr/lib/postgresql")));
    dirs
}

/// `/usr/lib/postgresql/<major>/bin`, newest major first.
fn debian_installations(root: &Path) -> Vec<PathBuf> {
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    majors.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    majors.into_iter().map(|(_, dir)| dir).collect()
}

/// The version `program` in `bin_dir` says it is.
fn version_of(bin_dir: &std::path::Path, program: &str) -> Result<String, ClusterError> {
    let output = duct::cmd!(bin_dir.join(program), "--version")
        .stderr_null()
        .read()
        .map_err(|source| ClusterError::Io {
            action: format!("run {}/{program} --version", bin_dir.display()),
            source,
        })?;
    Ok(crate::pgtool::version_in(&output))
}
