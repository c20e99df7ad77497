//! The servers we start are ours alone: no TCP listener, a socket in a 0700 directory with
//! mode 0700, a private data directory and log; another OS account cannot connect.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

use backend_schema::cluster::dev::{DevDatabase, DEV_OWNER};
use backend_schema::cluster::OWNER;
use backend_schema::TempCluster;

use crate::support::DevGuard;

/// An account that is neither ours nor the server's: it needs no passwd entry.
const STRANGER: u32 = 54321;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o7777
}

/// psql, run as `uid`, against the socket directory `host`: its output on failure.
fn psql_as(
    uid: u32,
    psql: &Path,
    host: &Path,
    user: &str,
    database: &str,
) -> Result<String, String> {
    let output = Command::new(psql)
        .args(["-X", "-A", "-t", "-c", "SELECT current_user"])
        .arg(format!(
            "host={} user={user} dbname={database}",
            host.display()
        ))
        .env("HOME", "/")
        .env_remove("PGPASSWORD")
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[track_caller]
fn assert_private(socket_dir: &Path, psql: &Path, user: &str, database: &str) {
    assert_eq!(mode(socket_dir), 0o700, "{}", socket_dir.display());
    let socket = socket_dir.join(".s.PGSQL.5432");
    assert_eq!(
        mode(&socket) & 0o077,
        0,
        "{} is open to others",
        socket.display()
    );
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        // Only root can try as another account; the modes above are what shuts it out.
        return;
    }
    let refused = psql_as(STRANGER, psql, socket_dir, user, database)
        .expect_err("another OS account connected to our server");
    assert!(refused.contains("Permission denied"), "{refused}");
}

#[test]
fn another_os_account_cannot_connect_to_a_throwaway_server() {
    let cluster = TempCluster::start().unwrap();
    assert_private(
        cluster.dir(),
        &cluster.binaries().tool("psql"),
        OWNER,
        "postgres",
    );
    assert_eq!(mode(&cluster.data_dir()), 0o700);
    assert_eq!(mode(&cluster.log_path()) & 0o077, 0);
    let mut client = cluster.client("postgres").unwrap();
    let listen: String = client
        .query_one("SHOW listen_addresses", &[])
        .unwrap()
        .get(0);
    assert_eq!(listen, "", "a throwaway server listens on TCP");
    // The owner still gets in: the checks above are not a server that refuses everyone.
    assert_eq!(
        psql_as_owner(&cluster.binaries().tool("psql"), cluster.dir(), OWNER),
        OWNER
    );
}

fn psql_as_owner(psql: &Path, host: &Path, user: &str) -> String {
    let output = Command::new(psql)
        .args(["-X", "-A", "-t", "-c", "SELECT current_user"])
        .arg(format!(
            "host={} user={user} dbname=postgres",
            host.display()
        ))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn another_os_account_cannot_connect_to_the_dev_database() {
    let workspace = tempfile::tempdir().unwrap();
    fs::set_permissions(workspace.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let dev = DevGuard(DevDatabase::new(workspace.path()));
    dev.0.start().unwrap();
    let psql = backend_schema::PgBinaries::locate().unwrap().tool("psql");
    assert_private(&dev.0.socket_dir(), &psql, DEV_OWNER, "diagnoleads");
    assert_eq!(mode(dev.0.root()), 0o700);
    assert_eq!(
        psql_as_owner(&psql, &dev.0.socket_dir(), DEV_OWNER),
        DEV_OWNER
    );
}

#[test]
fn a_link_planted_at_the_dev_databases_socket_directory_is_refused_and_its_target_untouched() {
    let workspace = tempfile::tempdir().unwrap();
    fs::set_permissions(workspace.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let dev = DevGuard(DevDatabase::new(workspace.path()));
    let victim = tempfile::tempdir().unwrap();
    fs::set_permissions(victim.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let planted = dev.0.socket_dir();
    std::os::unix::fs::symlink(victim.path(), &planted).unwrap();
    let err = dev.0.start().expect_err("started through a planted link");
    fs::remove_file(&planted).unwrap();
    assert!(err.to_string().contains("is not ours"), "{err}");
    let victim_meta = fs::metadata(victim.path()).unwrap();
    assert_eq!(mode(victim.path()), 0o755, "the link's target was changed");
    // SAFETY: geteuid cannot fail.
    assert_eq!(victim_meta.uid(), unsafe { libc::geteuid() });
}
