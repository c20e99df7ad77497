//! Throwaway PostgreSQL servers: [`TempCluster`] owns one private server for as long as
//! it lives, and the persistent local dev database reuses the same parts.

mod binaries;
pub mod dev;
mod os_user;
pub mod reaper;
mod template;

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sql::quote_ident;

pub use binaries::PgBinaries;
pub use os_user::{account_name, Access, AccountChoice, RunAs, ServerAccount};
pub use template::cache_root;

/// Server settings of every throwaway cluster. Durability is off because the data is
/// disposable; only a unix socket is opened, so parallel clusters never collide on a port.
pub(crate) const SERVER_SETTINGS: &[(&str, &str)] = &[
    // No TCP, and a socket only the server's account (and root) may use: trust
    // authentication is then no wider than the private directory the socket is in.
    ("listen_addresses", ""),
    ("unix_socket_permissions", "0700"),
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("autovacuum", "off"),
    ("max_connections", "60"),
    ("shared_buffers", "32MB"),
    ("max_wal_size", "1GB"),
];

/// The libpq limit on a unix socket path (`sun_path` minus the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;
/// The port only names the socket file; every cluster has its own directory.
const PORT: u16 = 5432;

/// The superuser of every throwaway cluster (initdb `--username`). Not `postgres`: hosted
/// servers often name their owner otherwise (Heroku, many managed services), so a
/// migration that hard-codes `postgres` must fail here rather than there.
pub const OWNER: &str = "throwaway_owner";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found in PG_BIN_DIR, `pg_config --bindir`, \
         PATH or /usr/lib/postgresql/*/bin; install them with `apt-get install postgresql` \
         (Debian/Ubuntu) or set PG_BIN_DIR to the directory holding initdb"
    )]
    BinariesNotFound,
    #[error(
        "{missing} not found in PG_BIN_DIR, `pg_config --bindir`, PATH or /usr/lib/postgresql/*/bin: \
         backup and restore run PostgreSQL's client programs; install them at the server's major \
         version or newer ({}) or set PG_BIN_DIR to the directory holding pg_dump, pg_restore and psql",
        binaries::client_package(*server_major)
    )]
    ClientProgramsNotFound {
        /// The programs found in none of the places looked in, e.g. `pg_dump and psql`.
        missing: String,
        /// The server's major version, when known: it names the package.
        server_major: Option<u32>,
    },
    #[error(
        "running as root, but `{name}` is not an unprivileged OS account that can run \
         PostgreSQL (it refuses root; neither `postgres` nor `nobody` was found when no \
         account is named); set BACKEND_SCHEMA_PG_USER to an existing account other than \
         root, or create one with `useradd --system --user-group pgrunner`"
    )]
    NoUnprivilegedUser { name: String },
    #[error("{} does not exist; {fix}", path.display())]
    Missing { path: PathBuf, fix: String },
    #[error(
        "{} already exists and is not ours (a link, a file, or a directory of `{owner}`): \
         another account may have put it there; remove it and run the command again",
        path.display()
    )]
    NotOurs { path: PathBuf, owner: String },
    #[error(
        "the OS account `{account}` that runs PostgreSQL cannot reach {}: {} is closed to it; {fix}",
        path.display(),
        blocked.display()
    )]
    ServerCannotReach {
        account: String,
        path: PathBuf,
        blocked: PathBuf,
        fix: String,
    },
    #[error("failed to {action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("initdb failed for {}:\n{output}", data_dir.display())]
    InitdbFailed { data_dir: PathBuf, output: String },
    #[error("socket path {} is longer than {MAX_SOCKET_PATH} bytes; point BACKEND_SCHEMA_TEMP_ROOT (or TMPDIR) at a shorter directory", path.display())]
    SocketPathTooLong { path: PathBuf },
    #[error("PostgreSQL server did not start (log {}):\n{log_tail}", log.display())]
    StartFailed { log: PathBuf, log_tail: String },
    #[error("PostgreSQL server did not stop (log {}):\n{log_tail}", log.display())]
    StopFailed { log: PathBuf, log_tail: String },
    #[error("cannot connect to throwaway database `{database}`: {source}")]
    Connect {
        database: String,
        #[source]
        source: postgres::Error,
    },
    #[error("{action} failed: {source}")]
    Sql {
        action: String,
        #[source]
        source: postgres::Error,
    },
}

/// One private PostgreSQL server in a temp directory, stopped and removed on drop.
///
/// The server listens only on a unix socket inside its directory, runs as an
/// unprivileged user when we are root, and dies with our process (parent-death
/// signal) even when we are killed with SIGKILL; a later start sweeps what is left.
/// Set `BACKEND_SCHEMA_KEEP_CLUSTER=1` to keep the data dir and log of a cluster
/// dropped during a panic (a failing test); their paths are printed.
#[derive(Debug)]
pub struct TempCluster {
    binaries: PgBinaries,
    dir: Option<tempfile::TempDir>,
    server: Option<duct::Handle>,
    pid: u32,
    warm_start: bool,
    run_as: RunAs,
    localhost_port: Option<u16>,
    /// The cluster's superuser: [`OWNER`], or the name a caller chose.
    superuser: &'static str,
}

impl TempCluster {
    /// Starts a new cluster, copying a cached template data dir when there is one.
    pub fn start() -> Result<TempCluster, ClusterError> {
        let binaries = PgBinaries::locate()?;
        TempCluster::start_with(binaries)
    }

    pub fn start_with(binaries: PgBinaries) -> Result<TempCluster, ClusterError> {
        TempCluster::start_inner(binaries, None, OWNER, None)
    }

    /// A cluster on a copy of `data`, a data dir one of ours kept with
    /// [`TempCluster::keep_data`] (its databases, roles and settings as they were).
    pub fn start_from(data: &Path) -> Result<TempCluster, ClusterError> {
        let binaries = PgBinaries::locate()?;
        TempCluster::start_inner(binaries, None, OWNER, Some(data))
    }

    /// A cluster whose superuser is `superuser` instead of [`OWNER`]: for a copy of
    /// someone else's database, whose dump may name `throwaway_owner` as an ordinary role
    /// (a database one of our own clusters made), which must not become this superuser.
    pub fn start_with_superuser(superuser: &'static str) -> Result<TempCluster, ClusterError> {
        let binaries = PgBinaries::locate()?;
        TempCluster::start_inner(binaries, None, superuser, None)
    }

    /// A cluster that also listens on 127.0.0.1, on a free port: for what a unix socket
    /// cannot carry, such as TLS.
    pub fn start_on_localhost() -> Result<TempCluster, ClusterError> {
        let binaries = PgBinaries::locate()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|source| io_err("find a free port on 127.0.0.1".into(), source))?
            .port();
        TempCluster::start_inner(binaries, Some(port), OWNER, None)
    }

    fn start_inner(
        binaries: PgBinaries,
        localhost_port: Option<u16>,
        superuser: &'static str,
        from: Option<&Path>,
    ) -> Result<TempCluster, ClusterError> {
        let run_as = RunAs::for_server()?;
        let root = temp_root(run_as);
        for program in ["initdb", "postgres"] {
            check_reach(
                run_as,
                &binaries.tool(program),
                Access::Execute,
                "set PG_BIN_DIR to an installation every account can run (e.g. /usr/lib/postgresql/15/bin)",
            )?;
        }
        check_reach(
            run_as,
            &root,
            Access::Enter,
            "point BACKEND_SCHEMA_TEMP_ROOT at a directory it can enter, such as /tmp",
        )?;
        reaper::sweep_once(&root);

        let dir = reaper::make_dir(|| {
            tempfile::Builder::new()
                .prefix(reaper::DIR_PREFIX)
                .permissions(fs::Permissions::from_mode(0o700))
                .tempdir_in(&root)
        })
        .map_err(|source| io_err(format!("create a temp dir in {}", root.display()), source))?;
        let base = dir.path().to_path_buf();
        // A failure below drops `dir`, which removes it: its entry then names nothing.
        reaper::write_owner(&base)
            .map_err(|source| io_err(format!("write {}", base.join("owner").display()), source))?;
        run_as.chown(&base).map_err(|source| {
            io_err(
                format!("give {} to the server user", base.display()),
                source,
            )
        })?;
        let socket = base.join(format!(".s.PGSQL.{}", localhost_port.unwrap_or(PORT)));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ClusterError::SocketPathTooLong { path: socket });
        }

        let data = base.join("data");
        let warm_start = match from {
            Some(kept) => {
                template::copy_tree(kept, &data, run_as).map_err(|source| {
                    io_err(
                        format!("copy {} to {}", kept.display(), data.display()),
                        source,
                    )
                })?;
                true
            }
            None => {
                let key = template::cache_key(&binaries, SERVER_SETTINGS, superuser);
                template::provision(&binaries, run_as, &key, &data, superuser)?
            }
        };

        let mut cluster = TempCluster {
            binaries,
            dir: Some(dir),
            server: None,
            pid: 0,
            warm_start,
            run_as,
            localhost_port,
            superuser,
        };
        cluster.spawn_server()?;
        Ok(cluster)
    }

    /// Starts `postgres` on the data dir, as the server user, logging to `server.log`.
    fn spawn_server(&mut self) -> Result<(), ClusterError> {
        let base = self.dir().to_path_buf();
        let log = self.log_path();
        let mut args: Vec<String> = vec!["-D".into(), self.data_dir().display().to_string()];
        args.extend([
            "-c".into(),
            format!("unix_socket_directories={}", base.display()),
        ]);
        args.extend(["-c".into(), format!("port={}", self.port())]);
        for (name, value) in SERVER_SETTINGS {
            args.extend(["-c".into(), format!("{name}={value}")]);
        }
        if self.localhost_port.is_some() {
            // The last -c of a setting wins.
            args.extend(["-c".into(), "listen_addresses=127.0.0.1".into()]);
        }
        let run_as = self.run_as;
        let expression = duct::cmd(self.binaries.tool("postgres"), args)
            .before_spawn(move |command| {
                run_as.apply(command, true);
                Ok(())
            })
            .stdin_null()
            // Outer redirections apply first: stdout goes to the log, then stderr joins it.
            .stderr_to_stdout()
            .stdout_file(
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    // Error lines can quote row values.
                    .mode(0o600)
                    .open(&log)
                    .map_err(|source| io_err(format!("open {}", log.display()), source))?,
            )
            .unchecked();
        let server = reaper::on_spawner_thread(move || expression.start())
            .map_err(|source| io_err(format!("start {}", "postgres"), source))?;
        self.pid = server.pids()[0];
        self.server = Some(server);
        reaper::register(self.pid, &base);
        self.wait_until_ready(Duration::from_secs(60))
    }

    /// Stops the server with a fast shutdown (sessions are terminated, open
    /// transactions roll back) and keeps the data: a server lost in the middle of a run.
    pub fn stop_server(&mut self) {
        self.halt_server(true);
    }

    /// Stops the running `postgres`, if any, and reaps it: a fast shutdown leaves a
    /// data dir that can be started again, an immediate one does not bother.
    fn halt_server(&mut self, fast: bool) {
        let Some(server) = self.server.take() else {
            return;
        };
        if fast {
            // SAFETY: plain signal delivery to our own child.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGINT) };
            reaper::wait_until_gone(self.pid, Duration::from_secs(10));
        } else {
            reaper::stop_process(self.pid, Duration::from_secs(5));
        }
        // Reap it; the exit status of a signalled server is not interesting.
        let _ = server.wait_timeout(Duration::from_millis(100));
        reaper::unregister(self.pid);
    }

    /// Starts the server again on the same data after [`TempCluster::stop_server`].
    pub fn start_server(&mut self) -> Result<(), ClusterError> {
        self.spawn_server()
    }

    /// Polls the status line of `postmaster.pid` ("ready" once connections are accepted)
    /// instead of sleeping a fixed time.
    fn wait_until_ready(&mut self, timeout: Duration) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        let pid_file = self.data_dir().join("postmaster.pid");
        loop {
            if let Ok(contents) = fs::read_to_string(&pid_file) {
                if contents.lines().nth(7).is_some_and(|s| s.trim() == "ready") {
                    return Ok(());
                }
            }
            let exited = matches!(
                self.server.as_ref().map(|s| s.try_wait()),
                Some(Ok(Some(_)))
            );
            if exited || Instant::now() >= deadline {
                let log = self.log_path();
                let text = fs::read_to_string(&log).unwrap_or_default();
                let log_tail = crate::text::tail(&text, 20).join("\n");
                return Err(ClusterError::StartFailed { log, log_tail });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.binaries
    }

    /// Whether the data dir came from the template cache (false: initdb ran).
    pub fn warm_start(&self) -> bool {
        self.warm_start
    }

    pub fn server_pid(&self) -> u32 {
        self.pid
    }

    /// The cluster's private directory, holding the socket, `data/` and `server.log`.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("cluster directory present until drop")
            .path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir().join("server.log")
    }

    /// A libpq URL for `database` as the cluster's superuser ([`OWNER`] unless the
    /// cluster was started with another).
    pub fn url(&self, database: &str) -> String {
        self.url_as(self.superuser, database)
    }

    /// A libpq URL for `database` logging in as `role` (trust on the private socket).
    pub fn url_as(&self, role: &str, database: &str) -> String {
        format!(
            "postgresql://{role}@/{database}?host={}&port={}",
            self.dir().display(),
            self.port()
        )
    }

    /// The cluster's superuser.
    pub fn superuser(&self) -> &'static str {
        self.superuser
    }

    /// The TCP port of a cluster started with [`TempCluster::start_on_localhost`].
    pub fn localhost_port(&self) -> Option<u16> {
        self.localhost_port
    }

    fn port(&self) -> u16 {
        self.localhost_port.unwrap_or(PORT)
    }

    pub fn client(&self, database: &str) -> Result<postgres::Client, ClusterError> {
        self.client_as(self.superuser, database)
    }

    /// A session on `database` as `role`, which must be allowed to log in.
    pub fn client_as(&self, role: &str, database: &str) -> Result<postgres::Client, ClusterError> {
        postgres::Client::connect(&self.url_as(role, database), postgres::NoTls).map_err(|source| {
            ClusterError::Connect {
                database: database.to_string(),
                source,
            }
        })
    }

    /// A session on `database` as the superuser, started with `options` (libpq's
    /// `options`: `-c name=value` settings for the session).
    pub fn client_with_options(
        &self,
        database: &str,
        options: &str,
    ) -> Result<postgres::Client, ClusterError> {
        let connect = || -> Result<postgres::Client, postgres::Error> {
            let mut config: postgres::Config = self.url(database).parse()?;
            config.options(options);
            config.connect(postgres::NoTls)
        };
        connect().map_err(|source| ClusterError::Connect {
            database: database.to_string(),
            source,
        })
    }

    /// Connects to `database` and runs one query: the moment the cluster is usable.
    pub fn ping(&self, database: &str) -> Result<(), ClusterError> {
        self.client(database)?
            .query_one("SELECT 1", &[])
            .map_err(|source| ClusterError::Sql {
                action: "SELECT 1".into(),
                source,
            })?;
        Ok(())
    }

    /// Creates database `name`, as a copy of `template` when given (cheap: a file copy).
    pub fn create_database(&self, name: &str, template: Option<&str>) -> Result<(), ClusterError> {
        let mut client = self.client("postgres")?;
        let mut sql = format!("CREATE DATABASE {}", quote_ident(name));
        if let Some(template) = template {
            sql.push_str(&format!(" TEMPLATE {}", quote_ident(template)));
        }
        client
            .batch_execute(&sql)
            .map_err(|source| ClusterError::Sql {
                action: format!("creating database `{name}`"),
                source,
            })
    }

    /// Stops the server cleanly and puts a copy of its data dir in `into` (written
    /// beside it and renamed into place, replacing what was there), then removes the
    /// cluster: for a later [`TempCluster::start_from`].
    /// `beside` are files written next to the copy (`into/data`), in the same rename.
    pub fn keep_data(mut self, into: &Path, beside: &[(&str, &[u8])]) -> Result<(), ClusterError> {
        // A fast shutdown ends with a checkpoint: the copy starts without recovery.
        self.halt_server(true);
        template::replace_with_copy(&self.data_dir(), into, beside)
            .map_err(|source| io_err(format!("keep the data dir in {}", into.display()), source))?;
        self.shutdown()
    }

    /// Stops the server and removes the directory, reporting what went wrong.
    pub fn stop(mut self) -> Result<(), ClusterError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), ClusterError> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        let keep = std::thread::panicking()
            && std::env::var_os("BACKEND_SCHEMA_KEEP_CLUSTER").is_some_and(|v| v != "0");
        // A kept cluster must be startable again, so it gets a fast shutdown.
        self.halt_server(keep);
        if keep {
            let path = dir.keep();
            reaper::forget_dir(&path);
            let _ = fs::File::create(path.join(reaper::KEEP_FILE))
                .and_then(|mut f| f.write_all(b"kept on failure\n"));
            eprintln!(
                "kept throwaway cluster after a failure: data dir {}, log {}",
                path.join("data").display(),
                path.join("server.log").display()
            );
            return Ok(());
        }
        let path = dir.path().to_path_buf();
        let closed = dir
            .close()
            .map_err(|source| io_err(format!("remove {}", path.display()), source));
        reaper::forget_dir(&path);
        closed
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            eprintln!("warning: {err}");
        }
    }
}

/// Directory for cluster dirs: short enough for the socket path limit, and reachable
/// by the server user (a root-only `TMPDIR` is not). Shared memory comes first: the
/// data is disposable, and creating a data dir's thousand files there costs
/// nothing, where a disk-backed `/tmp` was measured at up to 0.8 ms a file.
pub fn temp_root(run_as: RunAs) -> PathBuf {
    if let Some(dir) = std::env::var_os("BACKEND_SCHEMA_TEMP_ROOT") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if has_room(shm, SHM_ROOM) {
        return shm.to_path_buf();
    }
    let tmp = std::env::temp_dir();
    if run_as.is_current_user() && tmp.as_os_str().len() <= 60 {
        tmp
    } else {
        PathBuf::from("/tmp")
    }
}

/// Free space `/dev/shm` must have to be used: container defaults (64 MiB) do not.
const SHM_ROOM: u64 = 2 << 30;

fn has_room(dir: &Path, bytes: u64) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a properly sized out-parameter.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return false;
    }
    let writable = unsafe { libc::access(path.as_ptr(), libc::W_OK) } == 0;
    writable && (stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64) >= bytes
}

/// [`RunAs::check_reach`] as an error that names the account, the path and the fix: the
/// server would otherwise fail later with a bare "Permission denied".
pub(crate) fn check_reach(
    run_as: RunAs,
    path: &Path,
    access: Access,
    fix: &str,
) -> Result<(), ClusterError> {
    if !path.exists() {
        return Err(ClusterError::Missing {
            path: path.to_path_buf(),
            fix: fix.to_string(),
        });
    }
    run_as
        .check_reach(path, access)
        .map_err(|blocked| ClusterError::ServerCannotReach {
            account: account_name(run_as.uid),
            path: path.to_path_buf(),
            blocked,
            fix: fix.to_string(),
        })
}

fn io_err(action: String, source: std::io::Error) -> ClusterError {
    ClusterError::Io { action, source }
}
