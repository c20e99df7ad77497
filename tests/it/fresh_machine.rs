//! A fresh machine: the servers' OS account, and a checkout in a directory that account
//! cannot enter (root's 0700 home in a CI container, a `mktemp -d` directory).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Stdio;

use backend_schema::cluster::dev::{DevDatabase, DevStatus};
use backend_schema::cluster::RunAs;

use crate::support::{copy_dir, root, xtask_command, DevGuard, Run};

fn am_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid a process runs as, from /proc.
fn uid_of(pid: u32) -> u32 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A directory only root can enter, like root's home in a container.
fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("private-checkout")
        .tempdir()
        .unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

#[test]
fn the_servers_run_as_the_account_the_variable_names() {
    let mut child = xtask_command(&["hold-cluster"])
        .env("BACKEND_SCHEMA_PG_USER", "nobody")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let pid: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let uid = uid_of(pid);
    // SIGINT: the holder stops its server and removes its directory.
    // SAFETY: plain signal delivery to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait().unwrap();
    let expected = if am_root() {
        65534 // nobody
    } else {
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() }
    };
    assert_eq!(uid, expected, "the server ran as uid {uid}");
}

#[test]
fn binaries_the_server_account_cannot_reach_are_refused_by_name() {
    for linked in [false, true] {
        refuse_binaries_in_a_private_dir(linked);
    }
}

/// Copies of the programs, or links to the real ones, in a directory only root enters.
fn refuse_binaries_in_a_private_dir(linked: bool) {
    let private = private_dir();
    let bin = private.path().join("bin");
    fs::create_dir(&bin).unwrap();
    let real = backend_schema::PgBinaries::locate().unwrap();
    for program in ["initdb", "postgres", "pg_ctl"] {
        if linked {
            std::os::unix::fs::symlink(real.tool(program), bin.join(program)).unwrap();
        } else {
            fs::copy(real.tool(program), bin.join(program)).unwrap();
        }
    }
    let run = Run {
        output: xtask_command(&["verify"])
            .env("PG_BIN_DIR", &bin)
            .output()
            .unwrap(),
    };
    if !am_root() {
        // Our own account can reach anything we created: nothing to refuse.
        return;
    }
    run.failure();
    let stderr = run.stderr();
    assert!(
        stderr.contains("cannot reach") && stderr.contains(&private.path().display().to_string()),
        "{stderr}"
    );
    assert!(stderr.contains("PG_BIN_DIR"), "{stderr}");
    assert!(!stderr.contains("Permission denied"), "{stderr}");
}

#[test]
fn a_temp_root_the_server_account_cannot_enter_is_refused_by_name() {
    let private = private_dir();
    let run = Run {
        output: xtask_command(&["verify"])
            .env("BACKEND_SCHEMA_TEMP_ROOT", private.path())
            .output()
            .unwrap(),
    };
    if !am_root() {
        run.success();
        return;
    }
    run.failure();
    let stderr = run.stderr();
    assert!(
        stderr.contains("cannot reach") && stderr.contains("BACKEND_SCHEMA_TEMP_ROOT"),
        "{stderr}"
    );
}

#[test]
fn a_checkout_in_a_private_directory_gets_a_working_dev_database() {
    let private = private_dir();
    let checkout = private.path().join("checkout");
    copy_dir(&root().join("migrations"), &checkout.join("migrations"));
    let dev = DevGuard(DevDatabase::new(&checkout));
    let data_root = dev.0.root().to_path_buf();
    if am_root() {
        let account = RunAs::for_server().unwrap();
        assert!(
            account
                .check_reach(&checkout, backend_schema::cluster::Access::Enter)
                .is_err(),
            "the test's directory is not private"
        );
        assert!(
            !data_root.starts_with(private.path()),
            "the dev database was put where its server cannot reach: {}",
            data_root.display()
        );
    } else {
        assert!(data_root.starts_with(&checkout), "{}", data_root.display());
    }

    assert!(dev.0.start().unwrap());
    assert!(matches!(dev.0.status(), DevStatus::Running { .. }));
    let migrations = checkout.join("migrations");
    let url = dev.0.url();
    let up = Run {
        output: xtask_command(&["migrate", "upgrade", "head", "--database-url", &url])
            .arg("--migrations")
            .arg(&migrations)
            .output()
            .unwrap(),
    };
    up.success();
    let current = Run {
        output: xtask_command(&["migrate", "current", "--database-url", &url])
            .arg("--migrations")
            .arg(&migrations)
            .output()
            .unwrap(),
    };
    assert!(
        current.success().stdout().contains("(head)"),
        "{}",
        current.text()
    );
    assert!(dev.0.stop().unwrap());
    // Where it was first put is where it is found again.
    assert_eq!(DevDatabase::new(&checkout).root(), data_root.as_path());
    assert!(Path::new(&data_root).join("data/PG_VERSION").is_file());
}
