//! Secrets: with a password-bearing URL, every command (the failing runs too) keeps the
//! password out of its output, its files, the server log and its children's argv.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;

use backend_schema::cluster::OWNER;

use crate::support::{xtask_command, Run, TestDb};

/// Every character the URL syntax cares about.
const PASSWORD: &str = "p@ss:w/rd%#1?";
const ENCODED: &str = "p%40ss%3Aw%2Frd%25%231%3F";
const ROLE: &str = "release_manager";

/// A superuser that must log in with a password (SCRAM), on a cluster that otherwise
/// trusts local connections.
fn require_password(db: &TestDb) {
    let mut client = db.client();
    let create: String = client
        .query_one(
            "SELECT format('CREATE ROLE %I LOGIN SUPERUSER PASSWORD %L', $1::text, $2::text)",
            &[&ROLE, &PASSWORD],
        )
        .unwrap()
        .get(0);
    client.batch_execute(&create).unwrap();
    let hba = db.cluster.data_dir().join("pg_hba.conf");
    let rules = fs::read_to_string(&hba).unwrap();
    fs::write(&hba, format!("local all {ROLE} scram-sha-256\n{rules}")).unwrap();
    client.query_one("SELECT pg_reload_conf()", &[]).unwrap();
}

/// A directory of wrappers around the real PostgreSQL programs that append their
/// command lines to `$ARGV_LOG`: what `ps` would show of every child we start. It lives
/// in the system temp dir, not under the checkout: the server's OS account runs these
/// wrappers, and the checkout may be in a directory it cannot enter.
fn argv_recording_bin_dir(db: &TestDb) -> tempfile::TempDir {
    let temp = tempfile::Builder::new()
        .prefix("argv-recording-bin")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = temp.path();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    let real = db.cluster.binaries().bin_dir();
    for entry in fs::read_dir(real).unwrap() {
        let name = entry.unwrap().file_name();
        let wrapper = dir.join(&name);
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$0 $*\" >> \"${{ARGV_LOG:-/dev/null}}\"\nexec {} \"$@\"\n",
            real.join(&name).display()
        );
        fs::write(&wrapper, script).unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    }
    temp
}

fn leaks(text: &str) -> bool {
    text.contains(PASSWORD) || text.contains(ENCODED) || text.contains("p@ss")
}

#[test]
fn no_command_reveals_the_password() {
    let db = TestDb::new();
    require_password(&db);
    let bin = argv_recording_bin_dir(&db);
    let work = tempfile::tempdir().unwrap();
    // Sticky, like /tmp: the programs' wrappers (other accounts) write the log here,
    // and backup refuses an --output directory anyone could swap files in.
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o1777)).unwrap();
    let argv_log = work.path().join("argv.log");
    fs::write(&argv_log, "").unwrap();
    fs::set_permissions(&argv_log, fs::Permissions::from_mode(0o666)).unwrap();

    let url = |database: &str, password: &str| {
        db.cluster
            .url(database)
            .replace(&format!("{OWNER}@"), &format!("{ROLE}:{password}@"))
    };
    let good = url("app", ENCODED);
    let wrong = url("app", "wr%40ng%3Apass");
    let out = |name: &str| work.path().join(name).to_str().unwrap().to_string();
    db.cluster.create_database("restored", None).unwrap();

    // (arguments, whether it must succeed)
    let runs: Vec<(Vec<String>, bool)> = vec![
        (
            vec!["migrate".into(), "upgrade".into(), "head".into()],
            true,
        ),
        (
            vec!["migrate".into(), "current".into(), "--verbose".into()],
            true,
        ),
        (
            vec![
                "migrate".into(),
                "history".into(),
                "--indicate-current".into(),
            ],
            true,
        ),
        (
            vec!["migrate".into(), "current".into(), "--check-heads".into()],
            true,
        ),
        (
            vec![
                "migrate".into(),
                "downgrade".into(),
                "-1".into(),
                "--yes".into(),
            ],
            true,
        ),
        (
            vec!["migrate".into(), "upgrade".into(), "head".into()],
            true,
        ),
        (vec!["migrate".into(), "stamp".into(), "head".into()], true),
        (
            vec![
                "backup".into(),
                "--output".into(),
                out("b.dump"),
                "--verify".into(),
            ],
            true,
        ),
        (
            vec![
                "backup".into(),
                "--format".into(),
                "plain".into(),
                "--output".into(),
                out("b.sql"),
            ],
            true,
        ),
        (
            vec!["backup".into(), "--output".into(), out("b.dump")],
            false,
        ),
        (vec!["restore".into(), out("b.dump")], false),
        (
            vec![
                "schema-dump".into(),
                "--output".into(),
                out("schema.sql"),
                "--erd".into(),
                out("erd.mmd"),
            ],
            true,
        ),
        (
            vec![
                "schema-dump".into(),
                "--output".into(),
                out("schema.sql"),
                "--check".into(),
            ],
            true,
        ),
        (
            vec!["migrate".into(), "upgrade".into(), "deadbeef".into()],
            false,
        ),
    ];
    let mut outputs = Vec::new();
    let mut record = |run: Run, must_succeed: bool, what: &str| {
        assert_eq!(
            run.output.status.success(),
            must_succeed,
            "{what}:\n{}",
            run.text()
        );
        outputs.push(format!("{what}\n{}", run.text()));
    };
    let command = |args: &[&str]| {
        let mut command = xtask_command(args);
        command
            .env("PG_BIN_DIR", bin.path())
            .env("ARGV_LOG", &argv_log);
        command
    };
    for (args, must_succeed) in &runs {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend(["--database-url", &good]);
        let run = Run {
            output: command(&all).output().unwrap(),
        };
        record(run, *must_succeed, &all[..args.len()].join(" "));
    }
    // The restore target, the environment variable route, and the failures.
    let restored = url("restored", ENCODED);
    let run = Run {
        output: command(&["restore", &out("b.sql"), "--database-url", &restored])
            .output()
            .unwrap(),
    };
    record(run, true, "restore b.sql");
    let run = Run {
        output: command(&["migrate", "current"])
            .env("DATABASE_URL", &good)
            .output()
            .unwrap(),
    };
    record(run, true, "migrate current (DATABASE_URL)");
    for args in [
        vec!["migrate", "current", "--database-url", &wrong],
        vec![
            "backup",
            "--output",
            "/nonexistent/b.dump",
            "--database-url",
            &wrong,
        ],
    ] {
        let run = Run {
            output: command(&args).output().unwrap(),
        };
        assert!(
            run.stderr().contains("password authentication failed"),
            "{}",
            run.text()
        );
        record(run, false, &args.join(" "));
    }
    // libpq's other spelling, a `password=` parameter: shown as ***, kept off argv.
    let as_parameter = format!(
        "{}&password={ENCODED}",
        db.cluster
            .url("app")
            .replace(&format!("{OWNER}@"), &format!("{ROLE}@"))
    );
    for (args, what) in [
        (
            vec!["migrate", "current", "--verbose"],
            "current (password=)",
        ),
        (
            vec!["backup", "--output", &out("p.dump")],
            "backup (password=)",
        ),
    ] {
        let mut all = args.clone();
        all.extend(["--database-url", &as_parameter]);
        let run = Run {
            output: command(&all).output().unwrap(),
        };
        assert!(run.stderr().contains("password=***"), "{}", run.text());
        record(run, true, what);
    }
    // No password in the URL: PGPASSWORD, then a password file, as libpq finds them, for
    // our own connections and for pg_dump alike.
    let bare = crate::support::url_as(&db.cluster.url("app"), ROLE);
    let passfile = work.path().join("pgpass");
    let socket_dir = db.cluster.dir().display().to_string();
    fs::write(
        &passfile,
        format!(
            "{}:*:app:{ROLE}:{}\n",
            socket_dir.replace(':', "\\:"),
            PASSWORD.replace('\\', "\\\\").replace(':', "\\:")
        ),
    )
    .unwrap();
    fs::set_permissions(&passfile, fs::Permissions::from_mode(0o600)).unwrap();
    for (variable, value, what) in [
        ("PGPASSWORD", PASSWORD.to_string(), "PGPASSWORD"),
        ("PGPASSFILE", passfile.display().to_string(), "PGPASSFILE"),
    ] {
        for args in [
            vec!["migrate", "current"],
            vec!["backup", "--output", &out(&format!("{what}.dump"))],
        ] {
            let mut all = args.clone();
            all.extend(["--database-url", &bare]);
            let run = Run {
                output: command(&all)
                    .env_remove("PGPASSWORD")
                    .env(variable, &value)
                    .output()
                    .unwrap(),
            };
            record(run, true, &format!("{} ({what})", args.join(" ")));
        }
    }
    // A service file entry: libpq only, refused by name.
    let run = Run {
        output: command(&[
            "migrate",
            "current",
            "--database-url",
            &format!("{bare}&service=prod"),
        ])
        .output()
        .unwrap(),
    };
    assert!(run.stderr().contains("service="), "{}", run.text());
    record(run, false, "migrate current (service=)");
    // The raw password, unencoded: refused without echoing any part of it.
    let raw = url("app", PASSWORD);
    let run = Run {
        output: command(&["migrate", "current", "--database-url", &raw])
            .output()
            .unwrap(),
    };
    assert!(run.stderr().contains("percent-encode"), "{}", run.text());
    record(run, false, "migrate current (unencoded password)");
    let unreachable = format!("postgresql://{ROLE}:{ENCODED}@127.0.0.1:1/app");
    let run = Run {
        output: command(&["migrate", "upgrade", "head", "--database-url", &unreachable])
            .output()
            .unwrap(),
    };
    record(run, false, "migrate upgrade head (unreachable)");

    for text in &outputs {
        assert!(!leaks(text), "the password leaked in output:\n{text}");
    }
    let argv = fs::read_to_string(&argv_log).unwrap();
    for program in ["pg_dump", "pg_restore", "psql"] {
        assert!(
            argv.contains(&format!("/{program} ")),
            "{program} never ran:\n{argv}"
        );
    }
    assert!(
        !leaks(&argv),
        "a child's command line held the password:\n{argv}"
    );
    for entry in fs::read_dir(work.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|e| e == "json" || e == "mmd" || e == "sql")
        {
            let text = fs::read_to_string(&path).unwrap();
            assert!(!leaks(&text), "{} holds the password", path.display());
        }
    }
    let log = fs::read_to_string(db.cluster.log_path()).unwrap();
    assert!(!leaks(&log), "the server log holds the password");
    assert!(
        log.contains("password authentication failed"),
        "the wrong password was tried"
    );
}
