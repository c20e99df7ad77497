//! TLS: `sslmode` means what it means to libpq, for our own connections and for the
//! pg_dump, pg_restore and psql we start. The server here rejects every connection that
//! is not encrypted, so each success below went over TLS.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use backend_schema::cluster::OWNER;
use backend_schema::TempCluster;

use crate::support::{xtask_command, Run};

#[track_caller]
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the TLS test needs the openssl command: apt-get install openssl");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA, and a server certificate it signed for the name `localhost` only.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=someone else",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    fs::write(dir.join("san.cnf"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ],
    );
}

/// A cluster on 127.0.0.1 that accepts only TLS connections there.
fn tls_only_cluster(certs: &Path) -> TempCluster {
    let cluster = TempCluster::start_on_localhost().unwrap();
    cluster.create_database("app", None).unwrap();
    let owner = fs::metadata(cluster.data_dir()).unwrap();
    for file in ["server.crt", "server.key"] {
        let target = cluster.dir().join(file);
        fs::copy(certs.join(file), &target).unwrap();
        std::os::unix::fs::chown(&target, Some(owner.uid()), Some(owner.gid())).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
    }
    let hba = cluster.data_dir().join("pg_hba.conf");
    let rules = fs::read_to_string(&hba).unwrap();
    fs::write(
        &hba,
        format!(
            "hostnossl all all 127.0.0.1/32 reject\nhostssl all all 127.0.0.1/32 trust\n{rules}"
        ),
    )
    .unwrap();
    let mut client = cluster.client("postgres").unwrap();
    for (name, value) in [
        ("ssl_cert_file", cluster.dir().join("server.crt")),
        ("ssl_key_file", cluster.dir().join("server.key")),
    ] {
        let sql: String = client
            .query_one(
                "SELECT format('ALTER SYSTEM SET %I = %L', $1::text, $2::text)",
                &[&name, &value.to_str().unwrap()],
            )
            .unwrap()
            .get(0);
        client.batch_execute(&sql).unwrap();
    }
    client.batch_execute("ALTER SYSTEM SET ssl = on").unwrap();
    client.query_one("SELECT pg_reload_conf()", &[]).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut fresh = cluster.client("postgres").unwrap();
        if fresh
            .query_one("SHOW ssl", &[])
            .unwrap()
            .get::<_, String>(0)
            == "on"
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ssl never came on: see {}",
            cluster.log_path().display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cluster
}

/// Runs xtask with a HOME holding no `~/.postgresql/root.crt`.
fn run(home: &Path, args: &[&str]) -> Run {
    Run {
        output: xtask_command(args).env("HOME", home).output().unwrap(),
    }
}

#[test]
fn sslmode_means_what_it_means_to_libpq() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let cluster = tls_only_cluster(certs.path());
    let port = cluster.localhost_port().unwrap();
    let home = tempfile::tempdir().unwrap();
    let ca = certs.path().join("ca.crt");
    let other = certs.path().join("other-ca.crt");
    let url = |host: &str, query: &str| format!("postgresql://{OWNER}@{host}:{port}/app{query}");
    let current = |url: &str| run(home.path(), &["migrate", "current", "--database-url", url]);

    // Plain text is refused by the server, and the message says what to do.
    let plain = current(&url("localhost", "?sslmode=disable"));
    assert!(
        plain.failure().stderr().contains("no encryption"),
        "{}",
        plain.text()
    );
    assert!(
        plain.stderr().contains("use sslmode=require"),
        "{}",
        plain.text()
    );

    // prefer (the default) and require: encrypted, certificate not checked.
    current(&url("localhost", "")).success();
    current(&url("localhost", "?sslmode=require")).success();

    // verify-full: needs a root, checks the chain and the name.
    let no_root = current(&url("localhost", "?sslmode=verify-full"));
    assert!(
        no_root
            .failure()
            .stderr()
            .contains("no root certificate was given"),
        "{}",
        no_root.text()
    );
    let verified = format!("?sslmode=verify-full&sslrootcert={}", ca.display());
    current(&url("localhost", &verified)).success();
    let wrong_name = current(&url("127.0.0.1", &verified));
    assert!(
        wrong_name.failure().stderr().contains("certificate"),
        "{}",
        wrong_name.text()
    );
    let wrong_ca = current(&url(
        "localhost",
        &format!("?sslmode=verify-full&sslrootcert={}", other.display()),
    ));
    assert!(
        wrong_ca.failure().stderr().contains("certificate"),
        "{}",
        wrong_ca.text()
    );
    // verify-ca: the chain only, so the IP address is fine.
    current(&url(
        "127.0.0.1",
        &format!("?sslmode=verify-ca&sslrootcert={}", ca.display()),
    ))
    .success();

    // The real work over verified TLS, children included.
    let target = url("localhost", &verified);
    run(
        home.path(),
        &["migrate", "upgrade", "head", "--database-url", &target],
    )
    .success();
    let out = tempfile::tempdir().unwrap();
    let dump = out.path().join("b.dump");
    let backup = run(
        home.path(),
        &[
            "backup",
            "--output",
            dump.to_str().unwrap(),
            "--database-url",
            &target,
        ],
    );
    assert!(
        backup.success().stderr().contains("backup written"),
        "{}",
        backup.text()
    );
    cluster.create_database("restored", None).unwrap();
    let restored = format!("postgresql://{OWNER}@localhost:{port}/restored{verified}");
    let restore = run(
        home.path(),
        &[
            "restore",
            dump.to_str().unwrap(),
            "--database-url",
            &restored,
        ],
    );
    assert_eq!(
        restore.success().stdout(),
        format!("{}\n", crate::support::chain_head()),
        "{}",
        restore.text()
    );
}
