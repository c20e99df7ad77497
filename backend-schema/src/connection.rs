//! Finding and connecting to the database a command works on, with errors that say
//! where the URL came from and what answers there (never the password).

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::database_url::{resolve, DatabaseUrl, ResolveError, UrlSource};
use crate::tls::ConnectError;

/// A database a command works on: its URL, and where the URL came from.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: DatabaseUrl,
    pub source: UrlSource,
}

/// A failed connection, explained: the redacted URL and its source, the server's own
/// words or what answers at the address, and what to do next.
#[derive(Debug, thiserror::Error)]
#[error("could not connect to server at {target}: {reason}{}", next.as_ref().map(|n| format!("\n  {n}")).unwrap_or_default())]
pub struct ConnectionError {
    /// The redacted URL and its source.
    pub target: String,
    pub reason: String,
    pub next: Option<String>,
    /// The SQLSTATE, when the server answered.
    pub code: Option<String>,
}

impl Target {
    /// `--database-url`, `DATABASE_URL`, `.env`, then the running dev database of the
    /// workspace at `workspace_root`.
    pub fn resolve(flag: Option<&str>, workspace_root: &Path) -> Result<Target, ResolveError> {
        let (url, source) = resolve(flag, workspace_root)?;
        Ok(Target { url, source })
    }

    /// The redacted URL and where it came from, for messages.
    pub fn describe(&self) -> String {
        format!("{} (from {})", self.url, self.source)
    }

    /// Connects, or explains: the URL source, the redacted URL, whether anything
    /// answers there, and the server's own message.
    pub fn connect(&self, application_name: &str) -> Result<postgres::Client, ConnectionError> {
        let fail = |reason: String, next: Option<String>, code: Option<String>| ConnectionError {
            target: self.describe(),
            reason,
            next,
            code,
        };
        let mut config = self
            .url
            .config()
            .map_err(|err| fail(format!("invalid database URL: {err}"), None, None))?;
        config.application_name(application_name);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let mut client = crate::tls::connect(&self.url, &config).map_err(|err| {
            let err = match err {
                ConnectError::Db(err) => err,
                other => return fail(other.to_string(), None, None),
            };
            // postgres::Error's Display is just "db error"; the server's words are in the source.
            match err.as_db_error() {
                // The server answered: the URL's host is right, its user, password or
                // database name is not.
                Some(db) => fail(
                    format!("{} (SQLSTATE {})", db.message(), db.code().code()),
                    Some(
                        match db.code().code() {
                            "3D000" => "create the database (or `cargo xtask restore --create`), or fix its name in the URL",
                            "28000" if db.message().contains("no encryption") => "the server accepts only TLS connections: use sslmode=require (or verify-full with sslrootcert) in the URL",
                            "28P01" | "28000" => "check the user and password in the URL (special characters must be percent-encoded)",
                            _ => "check the URL",
                        }
                        .to_string(),
                    ),
                    Some(db.code().code().to_string()),
                ),
                // sslmode=require (or verify-*) against a server without TLS: it
                // answered, so "is it running?" would send the user the wrong way.
                None if format!("{err:?}").contains("server does not support TLS") => fail(
                    "the server does not accept TLS connections".into(),
                    Some(
                        "the URL's sslmode (require, verify-ca or verify-full) demands TLS: turn it on at the server (ssl = on, with a certificate), or use sslmode=prefer (TLS when offered) on a network you trust".into(),
                    ),
                    None,
                ),
                None => fail(
                    std::error::Error::source(&err)
                        .map_or_else(|| err.to_string(), |source| format!("{err}: {source}")),
                    Some(
                        probe(&config)
                            + match self.source {
                                UrlSource::DevDatabase => "; start it with `cargo xtask db start`",
                                _ => "; check the URL and that the server is running (`pg_isready`)",
                            },
                    ),
                    None,
                ),
            }
        })?;
        // Every statement we run gets a lock timeout: a session holding a lock on
        // alembic_version must not make `current` (or anything) hang. A timeout the
        // URL's options or PGOPTIONS already set is kept; migrations set their own.
        client
            .execute(
                "SELECT set_config('lock_timeout', $1, false) WHERE current_setting('lock_timeout') = '0'",
                &[&DEFAULT_LOCK_TIMEOUT],
            )
            .map_err(|err| fail(format!("setting lock_timeout failed: {err}"), None, None))?;
        Ok(client)
    }
}

/// The lock timeout of every session we open to a user's database, unless it has one.
pub const DEFAULT_LOCK_TIMEOUT: &str = "5s";

/// Whether anything accepts connections at the configured host(s).
fn probe(config: &postgres::Config) -> String {
    let ports = config.get_ports();
    let mut findings = Vec::new();
    for (i, host) in config.get_hosts().iter().enumerate() {
        let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
        match host {
            postgres::config::Host::Tcp(name) => {
                let answered = (name.as_str(), port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut addrs| addrs.next())
                    .map(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok());
                findings.push(match answered {
                    Some(true) => format!("something accepts TCP connections on {name}:{port}"),
                    Some(false) => format!("nothing answers on {name}:{port}"),
                    None => format!("host {name} does not resolve"),
                });
            }
            postgres::config::Host::Unix(dir) => {
                let socket = dir.join(format!(".s.PGSQL.{port}"));
                findings.push(if socket.exists() {
                    format!("the socket {} exists", socket.display())
                } else {
                    format!("no server socket at {}", socket.display())
                });
            }
        }
    }
    if findings.is_empty() {
        "no host in the URL (libpq would use the default socket)".into()
    } else {
        findings.join("; ")
    }
}
