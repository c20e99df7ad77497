//! `cargo xtask dist`: the shipped binary, built once for this test binary, run from a
//! directory outside the checkout after the migrations it was built from are gone, and
//! in a tree holding nothing but itself (no /lib, no /usr, no PostgreSQL programs).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::support::{copy_migrations, xtask_command, Run, TestDb};

/// One release build per run of the suite, shared by the tests here: `target/dist`'s
/// binary and `dist`'s stderr, or why the build failed.
fn shipped() -> (PathBuf, String) {
    static BUILT: Mutex<Option<Result<(PathBuf, String), String>>> = Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    built
        .get_or_insert_with(build_shipped)
        .clone()
        .unwrap_or_else(|failed| panic!("{failed}"))
}

/// Built from a copy of the chain that is deleted before the binary runs: whatever it
/// needs of the migrations is inside it.
fn build_shipped() -> Result<(PathBuf, String), String> {
    let chain = copy_migrations();
    let chain_dir = chain.path().to_str().unwrap().to_string();
    let output = xtask_command(&["dist", "--migrations", &chain_dir])
        .output()
        .expect("run xtask dist");
    let dist = Run { output };
    if dist.code() != 0 {
        return Err(format!("dist failed:\n{}", dist.text()));
    }
    let built = dist.stdout().lines().last().unwrap_or_default().to_string();
    if !built.ends_with("target/dist/backend-schema-cli") {
        return Err(format!(
            "dist's last line is not the binary:\n{}",
            dist.text()
        ));
    }
    Ok((PathBuf::from(built), dist.stderr()))
}

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
    let (built, _) = shipped();
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

/// A directory tree holding only the shipped binary, where it runs as the root of the
/// file system: no /lib, no /usr, no PostgreSQL programs, no /etc unless a test puts one.
struct Jail {
    root: tempfile::TempDir,
}

impl Jail {
    fn new() -> Jail {
        let (built, _) = shipped();
        assert!(
            !backend_schema::elf::needs_dynamic_loader(&built).unwrap(),
            "{} is dynamically linked: a tree without /lib cannot run it",
            built.display()
        );
        let root = tempfile::tempdir().unwrap();
        std::fs::copy(&built, root.path().join("backend-schema-cli")).unwrap();
        Jail { root }
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    /// What the tree holds, relative paths sorted: what a command wrote shows here.
    fn contents(&self) -> Vec<String> {
        let mut found = Vec::new();
        let mut stack = vec![self.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let relative = path.strip_prefix(self.path()).unwrap();
                found.push(relative.display().to_string());
                if path.is_dir() {
                    stack.push(path);
                }
            }
        }
        found.sort();
        found
    }

    /// `/backend-schema-cli ARGS` with the tree as `/` and as the working directory,
    /// in an empty environment.
    fn run(&self, args: &[&str]) -> Run {
        // Made before the fork: between fork and exec only async-signal-safe calls.
        let root = CString::new(self.path().as_os_str().as_bytes()).unwrap();
        let mut command = Command::new("/backend-schema-cli");
        command.args(args).env_clear();
        // SAFETY: chroot and chdir are async-signal-safe and use memory made before fork.
        unsafe {
            command.pre_exec(move || {
                if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Run {
            output: command
                .output()
                .expect("run the shipped binary in its tree"),
        }
    }
}

fn am_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A throwaway server that also listens on 127.0.0.1, where its owner logs in with a
/// password (SCRAM): the jail shares the network, not the socket directory. Its `app`
/// database's URL with `host` in it.
struct TcpDb {
    db: TestDb,
    port: u16,
}

const PASSWORD: &str = "shipped-binary-secret";

impl TcpDb {
    fn new() -> TcpDb {
        let cluster = backend_schema::TempCluster::start_on_localhost().unwrap();
        cluster.create_database("app", None).unwrap();
        let hba = cluster.data_dir().join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).unwrap();
        std::fs::write(
            &hba,
            format!(
                "host all {} 127.0.0.1/32 scram-sha-256\n{rules}",
                backend_schema::cluster::OWNER
            ),
        )
        .unwrap();
        let mut client = cluster.client("postgres").unwrap();
        let set_password: String = client
            .query_one(
                "SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)",
                &[&backend_schema::cluster::OWNER, &PASSWORD],
            )
            .unwrap()
            .get(0);
        client.batch_execute(&set_password).unwrap();
        client.query_one("SELECT pg_reload_conf()", &[]).unwrap();
        let port = cluster.localhost_port().unwrap();
        TcpDb {
            db: TestDb { cluster },
            port,
        }
    }

    fn url(&self, host: &str) -> String {
        format!(
            "postgresql://{}:{PASSWORD}@{host}:{}/app",
            backend_schema::cluster::OWNER,
            self.port
        )
    }
}

#[test]
fn the_static_binary_migrates_in_a_tree_holding_only_itself() {
    if !am_root() {
        eprintln!("skipped: entering a tree with chroot needs root");
        return;
    }
    let (_, dist_said) = shipped();
    assert!(
        dist_said.contains("statically linked"),
        "dist did not say how it linked:\n{dist_said}"
    );
    let jail = Jail::new();
    let tcp = TcpDb::new();
    let url = tcp.url("127.0.0.1");
    let head = crate::support::chain_head();
    let graph =
        backend_schema::graph::RevisionGraph::load(&crate::support::root().join("migrations"))
            .unwrap();
    let before_head = graph.get(head).unwrap().parents.clone();

    let run = jail.run(&["migrate", "current", "--database-url", &url]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert_eq!(run.stdout().trim(), "", "{}", run.text());
    assert!(run.stderr().contains("127.0.0.1"), "{}", run.text());
    assert!(!run.text().contains(PASSWORD), "{}", run.text());

    let run = jail.run(&["migrate", "upgrade", "head", "--database-url", &url]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert_eq!(tcp.db.heads(), vec![head.to_string()]);

    let run = jail.run(&["migrate", "drift", "--database-url", &url]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert!(run.text().contains("no drift"), "{}", run.text());

    let run = jail.run(&["migrate", "downgrade", "-1", "--database-url", &url]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert_eq!(tcp.db.heads(), before_head);
    let run = jail.run(&["migrate", "current", "--database-url", &url]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert_eq!(run.stdout().trim(), before_head[0], "{}", run.text());

    // Host names resolve from /etc/hosts (glibc's files source is inside the static
    // binary); without one, a name does not resolve and the error says so.
    let named = tcp.url("db.internal");
    let run = jail.run(&["migrate", "current", "--database-url", &named]);
    assert_eq!(run.code(), 1, "{}", run.text());
    assert!(
        run.stderr().contains("host db.internal does not resolve"),
        "{}",
        run.text()
    );
    std::fs::create_dir(jail.path().join("etc")).unwrap();
    std::fs::write(
        jail.path().join("etc/hosts"),
        "127.0.0.1 localhost\n127.0.0.1 db.internal\n",
    )
    .unwrap();
    for host in ["localhost", "db.internal"] {
        let run = jail.run(&["migrate", "current", "--database-url", &tcp.url(host)]);
        assert_eq!(run.code(), 0, "{host}: {}", run.text());
        assert_eq!(run.stdout().trim(), before_head[0], "{}", run.text());
    }
    // Sources nsswitch.conf names that are not inside the binary (they would be loaded
    // with dlopen) are skipped: a host's usual file changes nothing.
    std::fs::write(
        jail.path().join("etc/nsswitch.conf"),
        "passwd: files systemd\nhosts: files mymachines mdns4_minimal dns\n",
    )
    .unwrap();
    let run = jail.run(&["migrate", "current", "--database-url", &named]);
    assert_eq!(run.code(), 0, "{}", run.text());

    // A URL that names no user logs in as PGUSER or the OS account, whose name comes
    // from /etc/passwd (getpwuid): without the file, the uid's number, which the
    // server's refusal names (it once failed with a bare "No such file or directory").
    let anonymous = format!("postgresql://127.0.0.1:{}/app", tcp.port);
    let run = jail.run(&["migrate", "current", "--database-url", &anonymous]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let without_passwd = run.stderr();
    std::fs::write(
        jail.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
    )
    .unwrap();
    let run = jail.run(&["migrate", "current", "--database-url", &anonymous]);
    assert_eq!(run.code(), 1, "{}", run.text());
    assert!(
        run.stderr().contains("user \"root\""),
        "without /etc/passwd:\n{without_passwd}\nwith it:\n{}",
        run.text()
    );
    assert!(without_passwd.contains("user \"0\""), "{without_passwd}");

    assert_eq!(
        jail.contents(),
        [
            "backend-schema-cli",
            "etc",
            "etc/hosts",
            "etc/nsswitch.conf",
            "etc/passwd"
        ],
        "the migrate commands wrote nothing"
    );
}

#[test]
fn the_shipped_binary_refuses_backup_restore_and_rehearse_without_postgresql_programs() {
    if !am_root() {
        eprintln!("skipped: entering a tree with chroot needs root");
        return;
    }
    let jail = Jail::new();
    let tcp = TcpDb::new();
    tcp.db
        .xtask(&["migrate", "upgrade", "f5a2c3d8e9b1"])
        .success();
    // A real backup, made outside, for restore to be given.
    let dump = jail.path().join("app.dump");
    tcp.db
        .xtask(&["backup", "--output", dump.to_str().unwrap()])
        .success();
    let url = tcp.url("127.0.0.1");
    let schema = tcp.db.snapshot();
    let databases = || -> Vec<String> {
        tcp.db
            .client()
            .query("SELECT datname FROM pg_database ORDER BY 1", &[])
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect()
    };
    let databases_before = databases();
    let contents = jail.contents();
    let major = tcp.db.cluster.binaries().major_version().to_string();

    let run = jail.run(&["backup", "--database-url", &url]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let err = run.stderr();
    assert!(
        err.contains("pg_dump, pg_restore and psql not found"),
        "{}",
        run.text()
    );
    assert!(
        err.contains(&format!("apt-get install postgresql-client-{major}")),
        "{}",
        run.text()
    );
    assert!(
        err.contains(&format!("apk add postgresql{major}-client")),
        "{}",
        run.text()
    );

    let run = jail.run(&[
        "restore",
        "/app.dump",
        "--clean",
        "--yes",
        "--database-url",
        &url,
    ]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let err = run.stderr();
    assert!(
        err.contains("pg_dump, pg_restore and psql not found")
            && err.contains("apt-get install postgresql-client-NN")
            && err
                .trim_end()
                .ends_with("restore failed; the target is unchanged"),
        "{}",
        run.text()
    );

    let run = jail.run(&[
        "rehearse",
        "--report",
        "/release.md",
        "--database-url",
        &url,
    ]);
    assert_eq!(run.code(), 2, "{}", run.text());
    let err = run.stderr();
    assert!(
        err.contains("`rehearse` needs PostgreSQL's server programs (initdb, postgres")
            && err.contains("apt-get install postgresql-"),
        "{}",
        run.text()
    );

    assert_eq!(jail.contents(), contents, "a refused command wrote a file");
    assert_eq!(databases(), databases_before);
    assert_eq!(tcp.db.snapshot(), schema);
    assert_eq!(tcp.db.heads(), vec!["f5a2c3d8e9b1".to_string()]);
}
