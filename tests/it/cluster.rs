//! Throwaway cluster lifecycle: start, query, and never a leak: on drop, on panic, on
//! Ctrl-C, when the owner is SIGKILLed (and the next start sweeps what is left).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend_schema::TempCluster;

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[track_caller]
fn wait_gone(pid: u32, dir: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while (alive(pid) || dir.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "postgres {pid} still running");
    assert!(!dir.exists(), "{} still exists", dir.display());
}

/// `xtask hold-cluster`: a separate process owning a cluster; returns (child, dir, pid).
fn hold_cluster(args: &[&str], env: &[(&str, &str)]) -> (Child, PathBuf, u32) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("hold-cluster")
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (dir, pid) = line
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("unexpected output {line:?}"));
    (child, PathBuf::from(dir), pid.parse().unwrap())
}

#[test]
fn a_cluster_answers_queries_and_is_removed_on_drop() {
    let cluster = TempCluster::start().expect("start a throwaway cluster");
    let dir = cluster.dir().to_path_buf();
    let pid = cluster.server_pid();
    let mut client = cluster.client("postgres").unwrap();
    let one: i32 = client.query_one("SELECT 1", &[]).unwrap().get(0);
    assert_eq!(one, 1);
    assert!(!cluster.binaries().version().is_empty());
    // Unix socket only.
    let listen: String = client
        .query_one("SHOW listen_addresses", &[])
        .unwrap()
        .get(0);
    assert_eq!(listen, "");
    let fsync: String = client.query_one("SHOW fsync", &[]).unwrap().get(0);
    assert_eq!(fsync, "off");
    drop(client);
    drop(cluster);
    wait_gone(pid, &dir, Duration::from_secs(1));
}

#[test]
fn clusters_cloned_databases_and_parallel_clusters_work() {
    let threads: Vec<_> = (0..4)
        .map(|n| {
            std::thread::spawn(move || {
                let cluster = TempCluster::start().unwrap();
                cluster.create_database("base", None).unwrap();
                cluster
                    .client("base")
                    .unwrap()
                    .batch_execute(&format!("CREATE TABLE t{n} (x int)"))
                    .unwrap();
                cluster.create_database("copy", Some("base")).unwrap();
                let found: bool = cluster
                    .client("copy")
                    .unwrap()
                    .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("t{n}")])
                    .unwrap()
                    .get(0);
                assert!(found);
                (cluster.dir().to_path_buf(), cluster.server_pid())
            })
        })
        .collect();
    for thread in threads {
        let (dir, pid) = thread.join().unwrap();
        wait_gone(pid, &dir, Duration::from_secs(1));
    }
}

#[test]
fn a_panicking_owner_still_stops_and_removes_its_cluster() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let cluster = TempCluster::start().unwrap();
        tx.send((cluster.dir().to_path_buf(), cluster.server_pid()))
            .unwrap();
        panic!("test failure while holding a cluster");
    })
    .join();
    assert!(result.is_err());
    let (dir, pid) = rx.recv().unwrap();
    wait_gone(pid, &dir, Duration::from_secs(1));
}

#[test]
fn a_sigkilled_owner_takes_its_server_along_and_the_next_start_sweeps_the_dir() {
    let (mut child, dir, pid) = hold_cluster(&[], &[]);
    assert!(alive(pid));
    child.kill().unwrap(); // SIGKILL: no destructor runs.
    child.wait().unwrap();
    // The parent-death signal makes the server shut down by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "server {pid} outlived its SIGKILLed owner");
    assert!(dir.exists(), "nothing removed the dir yet");
    let swept = backend_schema::cluster::reaper::sweep(dir.parent().unwrap());
    assert!(swept.contains(&dir), "{swept:?}");
    assert!(!dir.exists());
}

#[test]
fn ctrl_c_stops_the_server_and_removes_the_dir() {
    let (mut child, dir, pid) = hold_cluster(&[], &[]);
    // SAFETY: plain signal delivery to our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    wait_gone(pid, &dir, Duration::from_secs(2));
}

#[test]
fn a_failed_cluster_is_kept_on_request_and_its_paths_printed() {
    let (child, dir, pid) = hold_cluster(&["--panic"], &[("BACKEND_SCHEMA_KEEP_CLUSTER", "1")]);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "kept throwaway cluster after a failure: data dir {}/data",
            dir.display()
        )),
        "{stderr}"
    );
    assert!(dir.join("data").join("PG_VERSION").exists());
    assert!(!alive(pid));
    // The sweep leaves kept clusters alone; this test removes its own.
    backend_schema::cluster::reaper::sweep(dir.parent().unwrap());
    assert!(dir.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_sweep_never_touches_directories_that_are_not_ours() {
    let root = tempfile::tempdir().unwrap();
    let foreign = root.path().join("bsc-foreign");
    std::fs::create_dir(&foreign).unwrap();
    let other = root.path().join("someone-elses-cluster");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("owner"), "1 1\n").unwrap();
    let dead = root.path().join("bsc-dead");
    std::fs::create_dir(&dead).unwrap();
    std::fs::write(dead.join("owner"), "4000000 1\n").unwrap();
    let live = root.path().join("bsc-live");
    std::fs::create_dir(&live).unwrap();
    let me = std::fs::read_to_string("/proc/self/stat").unwrap();
    let start = me
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    std::fs::write(
        live.join("owner"),
        format!("{} {start}\n", std::process::id()),
    )
    .unwrap();

    let swept = backend_schema::cluster::reaper::sweep(root.path());
    assert_eq!(swept, [dead]);
    assert!(foreign.exists() && other.exists() && live.exists());
}

#[test]
fn a_long_tmpdir_never_produces_a_socket_path_over_the_limit() {
    let long = std::env::temp_dir().join("x".repeat(120));
    std::fs::create_dir_all(&long).unwrap();
    let (mut child, dir, pid) = hold_cluster(&[], &[("TMPDIR", long.to_str().unwrap())]);
    assert!(
        dir.join(".s.PGSQL.5432").as_os_str().len() <= 107,
        "{}",
        dir.display()
    );
    assert!(alive(pid));
    // SAFETY: plain signal delivery to our child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait().unwrap();
    wait_gone(pid, &dir, Duration::from_secs(2));

    // A root forced past the limit is refused up front, naming the fix.
    let forced = crate::support::xtask_command(&["hold-cluster"])
        .env("BACKEND_SCHEMA_TEMP_ROOT", &long)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&forced.stderr);
    assert!(!forced.status.success());
    assert!(err.contains("longer than 107 bytes"), "{err}");
    std::fs::remove_dir_all(long).unwrap();
}
