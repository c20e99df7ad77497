//! Shared test helpers: a throwaway database, running the real `xtask` binary, and the
//! one central list of snapshot filters.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use backend_schema::TempCluster;

/// The workspace root: the checkout these tests were built from, or the copy
/// `BACKEND_SCHEMA_PROJECT_ROOT` names (the xtask binary reads the same variable), as
/// the schema-evolution test runs them.
pub fn root() -> PathBuf {
    if let Some(copy) = std::env::var_os(PROJECT_ROOT_VAR).filter(|copy| !copy.is_empty()) {
        return PathBuf::from(copy);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The variable that points the tests and the xtask at another checkout.
pub const PROJECT_ROOT_VAR: &str = "BACKEND_SCHEMA_PROJECT_ROOT";

/// The one head of the repository's chain, read from `migrations/` (once): tests of
/// this chain derive it instead of naming a revision that the next migration replaces.
pub fn chain_head() -> &'static str {
    static HEAD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HEAD.get_or_init(|| {
        let graph = backend_schema::graph::RevisionGraph::load(&root().join("migrations"))
            .expect("the repository's migrations load");
        match graph.heads().as_slice() {
            [one] => one.to_string(),
            many => panic!("the repository's chain has {} heads: {many:?}", many.len()),
        }
    })
}

/// How many revisions the repository's chain has, read from `migrations/`.
pub fn chain_len() -> usize {
    backend_schema::graph::RevisionGraph::load(&root().join("migrations"))
        .expect("the repository's migrations load")
        .migrations()
        .len()
}

/// A throwaway cluster with one empty database, `app`.
pub struct TestDb {
    pub cluster: TempCluster,
}

impl TestDb {
    pub fn new() -> TestDb {
        let cluster = TempCluster::start().unwrap_or_else(|err| {
            panic!("cannot start a throwaway PostgreSQL ({err}); install the server with `apt-get install postgresql`")
        });
        cluster.create_database("app", None).unwrap();
        TestDb { cluster }
    }

    pub fn url(&self) -> String {
        self.cluster.url("app")
    }

    pub fn client(&self) -> postgres::Client {
        self.cluster.client("app").unwrap()
    }

    /// Runs `cargo xtask ARGS --database-url <this db>`.
    pub fn xtask(&self, args: &[&str]) -> Run {
        let url = self.url();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--database-url", &url]);
        xtask(&all)
    }

    /// The heads in alembic_version.
    pub fn heads(&self) -> Vec<String> {
        let mut client = self.client();
        backend_schema::version_table::read_heads(&mut client).unwrap()
    }

    pub fn snapshot(&self) -> backend_schema::snapshot::SchemaSnapshot {
        backend_schema::snapshot::SchemaSnapshot::capture(&mut self.client()).unwrap()
    }
}

/// The result of running the binary.
pub struct Run {
    pub output: Output,
}

impl Run {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
    pub fn code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }
    #[track_caller]
    pub fn success(&self) -> &Run {
        assert!(
            self.output.status.success(),
            "expected success:\n{}",
            self.text()
        );
        self
    }
    #[track_caller]
    pub fn failure(&self) -> &Run {
        assert!(
            !self.output.status.success(),
            "expected failure:\n{}",
            self.text()
        );
        self
    }
    /// uv-style rendering for snapshots: status, stdout, stderr, filtered.
    pub fn text(&self) -> String {
        format!(
            "success: {}\nexit_code: {}\n----- stdout -----\n{}----- stderr -----\n{}",
            self.output.status.success(),
            self.code(),
            self.stdout(),
            self.stderr()
        )
    }
}

/// Runs the real binary with a clean environment (no DATABASE_URL).
pub fn xtask(args: &[&str]) -> Run {
    let output = xtask_command(args).output().expect("run xtask");
    Run { output }
}

/// The real binary, not started yet: for tests that run several at once or kill one.
pub fn xtask_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env("BACKEND_SCHEMA_VERIFY_CACHE_DIR", fresh_verify_cache())
        .current_dir(root());
    command
}

/// A verify cache directory no other run has used: a test sees its own verify's
/// results, never a cache another test (or an earlier test run) left. The cache's own
/// tests set the variable again to share one between their runs.
pub fn fresh_verify_cache() -> PathBuf {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static SWEPT: std::sync::Once = std::sync::Once::new();
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    // libtest has no teardown, so each test run removes the caches of runs that are over.
    SWEPT.call_once(|| sweep_verify_caches(root));
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    root.join(format!("verify-cache-{}-{run}", std::process::id()))
}

/// Removes `verify-cache-PID-N` directories whose test process is gone.
fn sweep_verify_caches(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("verify-cache-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The one way to assert a snapshot (uv's `uv_snapshot!` is the model): the text goes
/// through every filter of [`FILTERS`] first, so no test filters by hand and a new
/// filter reaches every snapshot at once.
macro_rules! filtered_snapshot {
    ($name:expr, $text:expr) => {
        insta::assert_snapshot!($name, $crate::support::filter(&$text))
    };
}
pub(crate) use filtered_snapshot;

/// The one list of volatile text to normalise in snapshots.
pub const FILTERS: &[(&str, &str)] = &[
    (r"/(tmp|dev/shm)/bsc-[A-Za-z0-9]+", "[CLUSTER]"),
    (r"/tmp/\.tmp[A-Za-z0-9]+", "[TEMP]"),
    (r"\b\d+(\.\d+)? ?(ms|s)\b", "[TIME]"),
    (
        r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}( UTC|Z)?",
        "[TIMESTAMP]",
    ),
    (r"\b[0-9a-f]{64}\b", "[SHA256]"),
    (r"pid \d+", "pid [PID]"),
];

pub fn filter(text: &str) -> String {
    let root = root().display().to_string();
    let mut text = text.replace(&root, "[ROOT]");
    for (pattern, replacement) in FILTERS {
        let re = regex::Regex::new(pattern).expect("valid filter");
        text = re.replace_all(&text, *replacement).into_owned();
    }
    text
}

/// A copy of the repository's migrations in a temp dir, to edit in a test.
pub fn copy_migrations() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("migrations"), dir.path());
    dir
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A dev database for a test: stopped, and its directory removed, even when the test fails.
pub struct DevGuard(pub backend_schema::cluster::dev::DevDatabase);

impl Drop for DevGuard {
    fn drop(&mut self) {
        let _ = self.0.stop();
        if !self.0.root().starts_with(root()) {
            let _ = std::fs::remove_dir_all(self.0.root());
        }
    }
}

/// `url` (a throwaway cluster's, as its superuser) logging in as `role`. Panics when the
/// URL does not name the superuser: a test must never run as it by accident.
#[track_caller]
pub fn url_as(url: &str, role: &str) -> String {
    let owner = format!("{}@", backend_schema::cluster::OWNER);
    assert!(url.contains(&owner), "{url} does not log in as {owner}");
    url.replacen(&owner, &format!("{role}@"), 1)
}
