//! Finding and connecting to the database a command works on, with errors that say
//! where the URL came from and what answers there (never the password).

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context as _;
use backend_schema::database_url::{resolve, DatabaseUrl, UrlSource};

use crate::flags::ConnectOpts;

/// The resolved URL, and where it came from.
pub(crate) struct Target {
    pub url: DatabaseUrl,
    pub source: UrlSource,
}

impl ConnectOpts {
    pub(crate) fn resolve(&self) -> anyhow::Result<Target> {
        let (url, source) = resolve(self.database_url.as_deref(), &crate::project_root())?;
        Ok(Target { url, source })
    }
}

impl Target {
    /// Connects, or explains: the URL source, the redacted URL, whether anything
    /// answers there, and the server's own message.
    pub(crate) fn connect(&self, application_name: &str) -> anyhow::Result<postgres::Client> {
        let mut config = self.url.config().context("invalid database URL")?;
        config.application_name(application_name);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        backend_schema::tls::connect(&self.url, &config).map_err(|err| {
            let err = match err {
                backend_schema::tls::ConnectError::Db(err) => err,
                other => {
                    return anyhow::format_err!(
                        "could not connect to server at {} (from {}): {other}",
                        self.url,
                        self.source
                    )
                }
            };
            // postgres::Error's Display is just "db error"; the server's words are in the source.
            let (reason, next) = match err.as_db_error() {
                // The server answered: the URL's host is right, its user, password or
                // database name is not.
                Some(db) => (
                    format!("{} (SQLSTATE {})", db.message(), db.code().code()),
                    match db.code().code() {
                        "3D000" => "create the database (or `cargo xtask restore --create`), or fix its name in the URL".to_string(),
                        "28000" if db.message().contains("no encryption") => "the server accepts only TLS connections: use sslmode=require (or verify-full with sslrootcert) in the URL".to_string(),
                        "28P01" | "28000" => "check the user and password in the URL (special characters must be percent-encoded)".to_string(),
                        _ => "check the URL".to_string(),
                    },
                ),
                None => (
                    std::error::Error::source(&err)
                        .map_or_else(|| err.to_string(), |source| format!("{err}: {source}")),
                    probe(&config)
                        + match self.source {
                            UrlSource::DevDatabase => "; start it with `cargo xtask db start`",
                            _ => "; check the URL and that the server is running (`pg_isready`)",
                        },
                ),
            };
            anyhow::format_err!(
                "could not connect to server at {} (from {}): {reason}\n  {next}",
                self.url,
                self.source,
            )
        })
    }

    pub(crate) fn describe(&self) -> String {
        format!("{} (from {})", self.url, self.source)
    }
}

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
