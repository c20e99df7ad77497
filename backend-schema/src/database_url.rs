//! Database URLs: where one comes from, how it is shown (never with its password), and
//! how it is handed to child processes (password in the environment, not argv).

use std::fmt;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;

use crate::cluster::dev::{DevDatabase, DevStatus};

/// A `postgres://` or `postgresql://` URL. `Display` and `Debug` hide the password,
/// whether it is in the userinfo (`user:secret@`) or a `password=` parameter.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    raw: String,
    /// Byte range of the userinfo password within `raw`, if any.
    password: Option<(usize, usize)>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("malformed database URL from {source_name}: it must start with postgresql:// or postgres:// (e.g. postgresql://user:password@host:5432/diagnoleads); key=value connection strings are not accepted, write them as a URL")]
    Scheme { source_name: String },
    #[error(
        "the database URL from {source_name} has sslmode={mode}; use disable, allow, prefer, require, verify-ca or verify-full"
    )]
    SslMode { source_name: String, mode: String },
    #[error("malformed database URL from {source_name}: {problem}")]
    Malformed {
        source_name: String,
        problem: String,
    },
}

impl DatabaseUrl {
    /// Parses `raw`; `source_name` says where it came from, for the error message (the
    /// URL itself is never echoed, as it may hold a password).
    pub fn parse(raw: &str, source_name: &str) -> Result<DatabaseUrl, UrlError> {
        let raw = raw.trim();
        let malformed = |problem: &str| UrlError::Malformed {
            source_name: source_name.into(),
            problem: problem.into(),
        };
        let rest = ["postgresql://", "postgres://"]
            .iter()
            .find_map(|scheme| raw.strip_prefix(scheme))
            .ok_or_else(|| UrlError::Scheme {
                source_name: source_name.into(),
            })?;
        let start = raw.len() - rest.len();
        // libpq ends the userinfo at the first `@` or `/`: a password holding an unencoded
        // `@ / ? #` would be split there and its tail shown as a host or database name in
        // every error. Refuse it before anything can echo it.
        if let Some(last_at) = rest.rfind('@') {
            let credentials = &rest[..last_at];
            if credentials.contains(':') && credentials.contains(['@', '/', '?', '#']) {
                return Err(malformed(
                    "the user or password holds an unencoded `@`, `/`, `?` or `#`; \
                     percent-encode them (@ is %40, / is %2F, ? is %3F, # is %23, % is %25, : is %3A)",
                ));
            }
        }
        let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_len];
        let password = match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                userinfo
                    .find(':')
                    .map(|colon| (start + colon + 1, start + at))
            }
            None => None,
        };
        if let Some((from, to)) = password {
            percent_decode_str(&raw[from..to])
                .decode_utf8()
                .map_err(|_| malformed("the password is not valid percent-encoded UTF-8"))?;
        }
        let url = DatabaseUrl {
            raw: raw.to_string(),
            password,
        };
        // One spelling per parameter: libpq takes the last of two `password=`, a
        // percent-encoded name, or `sslpassword=`; a redaction that knows one spelling
        // would show the other.
        if let Some((_, query)) = raw.split_once('?') {
            let mut seen = std::collections::BTreeSet::new();
            for pair in query.split('#').next().unwrap_or("").split('&') {
                let key = pair.split('=').next().unwrap_or("");
                if key.contains('%') {
                    return Err(malformed(
                        "a parameter name is percent-encoded; write parameter names plainly",
                    ));
                }
                if !key.is_empty() && !seen.insert(key.to_string()) {
                    return Err(malformed(&format!(
                        "the parameter `{key}` is given twice; keep one"
                    )));
                }
            }
        }
        if query_value(raw, "sslpassword").is_some() {
            return Err(malformed(
                "sslpassword= (the passphrase of a client key) is not supported: client \
                 certificates are not used for our own connections",
            ));
        }
        if query_value(raw, "service").is_some() {
            return Err(malformed(
                "service= names an entry of a libpq service file, which only libpq reads; \
                 write the host, port, user and database in the URL (and keep the password in \
                 PGPASSWORD or ~/.pgpass)",
            ));
        }
        if password.is_some() && url.query_password().is_some() {
            return Err(malformed(
                "it has a password in the userinfo and a password= parameter; keep one",
            ));
        }
        if let Some(mode) = query_value(raw, "sslmode") {
            if SslMode::parse(&mode).is_none() {
                return Err(UrlError::SslMode {
                    source_name: source_name.into(),
                    mode,
                });
            }
        }
        // Let the driver validate the rest (ports, options) now, with a safe message.
        url.config().map_err(|err| UrlError::Malformed {
            source_name: source_name.into(),
            problem: err.to_string(),
        })?;
        Ok(url)
    }

    /// The driver configuration (its `Debug` hides the password too). The driver knows
    /// only disable/prefer/require; the certificate checks libpq's other modes ask for
    /// are made by [`crate::tls`], so here they become `require`.
    pub fn config(&self) -> Result<postgres::Config, postgres::Error> {
        let mut config = self.driver_config()?;
        if config.get_user().is_none() {
            // libpq's default, set here because the driver's ignores PGUSER, and where
            // /etc/passwd is missing (a bare image) fails with a bare "No such file or
            // directory"; the uid's number instead lets the server's refusal name it.
            let user = std::env::var("PGUSER").unwrap_or_else(|_| {
                crate::cluster::account_name(
                    // SAFETY: geteuid cannot fail.
                    unsafe { libc::geteuid() },
                )
            });
            config.user(&user);
        }
        if config.get_password().is_none() {
            if let Some(password) = self.ambient_password(&config) {
                config.password(password);
            }
        }
        Ok(config)
    }

    /// What libpq would log in with when the URL has no password (`PGPASSWORD`, the
    /// password file), for the connection `config` describes.
    fn ambient_password(&self, config: &postgres::Config) -> Option<String> {
        // `config` names the user: the URL's, PGUSER or the OS account's (`config`).
        let user = config.get_user().unwrap_or_default().to_string();
        let database = config.get_dbname().unwrap_or(&user).to_string();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let (host, unix_socket) = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(name)) => (name.clone(), false),
            Some(postgres::config::Host::Unix(dir)) => (dir.display().to_string(), true),
            None => ("localhost".to_string(), true),
        };
        crate::pgpass::ambient_password(&crate::pgpass::Login {
            host: &host,
            unix_socket,
            port,
            database: &database,
            user: &user,
        })
    }

    /// The URL as the driver reads it, libpq-only parameters left out.
    fn driver_config(&self) -> Result<postgres::Config, postgres::Error> {
        let Some((base, query)) = self.raw.split_once('?') else {
            return self.raw.parse();
        };
        let kept: Vec<String> = query
            .split('&')
            .filter(|pair| !LIBPQ_ONLY.contains(&pair.split('=').next().unwrap_or("")))
            .map(|pair| match pair.split_once('=') {
                Some(("sslmode", mode)) => format!(
                    "sslmode={}",
                    SslMode::parse(mode).map_or("prefer", SslMode::driver_mode)
                ),
                _ => pair.to_string(),
            })
            .collect();
        if kept.is_empty() {
            return base.parse();
        }
        format!("{base}?{}", kept.join("&")).parse()
    }

    /// The URL's `sslmode` (libpq's default is `prefer`).
    pub fn ssl_mode(&self) -> SslMode {
        query_value(&self.raw, "sslmode")
            .and_then(|m| SslMode::parse(&m))
            .unwrap_or(SslMode::Prefer)
    }

    /// The URL's `sslrootcert`: a PEM file of trusted roots, or `system`.
    pub fn ssl_root_cert(&self) -> Option<String> {
        query_value(&self.raw, "sslrootcert")
    }

    /// The full URL, password included: only for in-process drivers, never for output.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The decoded password, for a child's `PGPASSWORD`.
    pub fn password(&self) -> Option<String> {
        let (from, to) = self.password.or_else(|| self.query_password())?;
        Some(
            percent_decode_str(&self.raw[from..to])
                .decode_utf8_lossy()
                .into_owned(),
        )
    }

    /// The byte range of a `password=` query parameter's value.
    fn query_password(&self) -> Option<(usize, usize)> {
        let (pair_from, pair_to) = self.query_pair("password")?;
        Some((pair_from + "password=".len(), pair_to))
    }

    /// The byte range of the `key=value` pair named `key` in the query string.
    fn query_pair(&self, key: &str) -> Option<(usize, usize)> {
        let query_from = self.raw.find('?')? + 1;
        let query_to = self.raw[query_from..]
            .find('#')
            .map_or(self.raw.len(), |i| query_from + i);
        let mut from = query_from;
        for pair in self.raw[query_from..query_to].split('&') {
            if pair.split_once('=').is_some_and(|(k, _)| k == key) {
                return Some((from, from + pair.len()));
            }
            from += pair.len() + 1;
        }
        None
    }

    /// The URL without its password, safe for a child's argv (pair with `PGPASSWORD`).
    pub fn without_password(&self) -> String {
        if let Some((from, to)) = self.password {
            return format!("{}{}", &self.raw[..from - 1], &self.raw[to..]);
        }
        let Some((from, to)) = self.query_pair("password") else {
            return self.raw.clone();
        };
        // Drop the pair with one of the separators around it.
        let (from, to) = if self.raw[to..].starts_with('&') {
            (from, to + 1)
        } else {
            (from - 1, to)
        };
        let mut kept = format!("{}{}", &self.raw[..from], &self.raw[to..]);
        if kept.ends_with('?') {
            kept.pop();
        }
        kept.replace("?#", "#")
    }

    /// The same server and credentials, another database (for staging and maintenance).
    pub fn with_database(&self, name: &str) -> DatabaseUrl {
        const PATH_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'_')
            .remove(b'-')
            .remove(b'.');
        let scheme_end = self.raw.find("://").map_or(0, |i| i + 3);
        let rest = &self.raw[scheme_end..];
        let path_start = scheme_end + rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let path_end = path_start
            + self.raw[path_start..]
                .find(['?', '#'])
                .unwrap_or(self.raw.len() - path_start);
        let encoded = percent_encoding::utf8_percent_encode(name, PATH_UNSAFE);
        DatabaseUrl {
            raw: format!(
                "{}/{encoded}{}",
                &self.raw[..path_start],
                &self.raw[path_end..]
            ),
            password: self.password,
        }
    }

    /// Environment for a libpq child process: the password, and never a prompt.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        self.password()
            .map(|p| vec![("PGPASSWORD", p)])
            .unwrap_or_default()
    }

    /// The URL with its password shown as `***`.
    pub fn redacted(&self) -> String {
        match self.password.or_else(|| self.query_password()) {
            Some((from, to)) => format!("{}***{}", &self.raw[..from], &self.raw[to..]),
            None => self.raw.clone(),
        }
    }
}

/// URL parameters libpq (and so pg_dump and psql) reads but the driver does not.
const LIBPQ_ONLY: &[&str] = &["sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword"];

/// libpq's `sslmode`: how much TLS, and how much checking of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    fn driver_mode(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow | SslMode::Prefer => "prefer",
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => "require",
        }
    }
}

/// The value of `key` in the URL's query string, percent-decoded.
fn query_value(raw: &str, key: &str) -> Option<String> {
    let query = raw.split_once('?')?.1.split('#').next()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

/// Where a database URL was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    Flag,
    Environment,
    DotEnv(PathBuf),
    DevDatabase,
}

impl fmt::Display for UrlSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlSource::Flag => f.write_str("--database-url"),
            UrlSource::Environment => f.write_str("the DATABASE_URL environment variable"),
            UrlSource::DotEnv(path) => write!(f, "DATABASE_URL in {}", path.display()),
            UrlSource::DevDatabase => f.write_str("the local dev database (cargo xtask db start)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "no database given; use one of:\n  --database-url postgresql://user:password@host:5432/db\n  \
         DATABASE_URL=... in the environment\n  DATABASE_URL=... in ./.env or backend/.env\n  \
         the local dev database: cargo xtask db start"
    )]
    NoDatabase,
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("failed to read {}: {source}", path.display())]
    ReadDotEnv {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Finds the database URL: `--database-url`, `DATABASE_URL`, `./.env`, `backend/.env`,
/// then the dev database if it is running.
pub fn resolve(
    flag: Option<&str>,
    workspace_root: &Path,
) -> Result<(DatabaseUrl, UrlSource), ResolveError> {
    if let Some(raw) = flag {
        return Ok((DatabaseUrl::parse(raw, "--database-url")?, UrlSource::Flag));
    }
    if let Ok(raw) = std::env::var("DATABASE_URL") {
        if !raw.trim().is_empty() {
            let url = DatabaseUrl::parse(&raw, "the DATABASE_URL environment variable")?;
            return Ok((url, UrlSource::Environment));
        }
    }
    for path in [
        workspace_root.join(".env"),
        workspace_root.join("backend").join(".env"),
    ] {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ResolveError::ReadDotEnv { path, source }),
        };
        let value = dotenv_value(&text, "DATABASE_URL").map_err(|line| UrlError::Malformed {
            source_name: format!("DATABASE_URL in {}", path.display()),
            problem: format!(
                "line {line} cannot be read as a .env assignment (check its quotes: \
                 KEY=\"value\" or KEY='value')"
            ),
        })?;
        if let Some(raw) = value {
            let url = DatabaseUrl::parse(&raw, &format!("DATABASE_URL in {}", path.display()))?;
            return Ok((url, UrlSource::DotEnv(path)));
        }
    }
    let dev = DevDatabase::new(workspace_root);
    if matches!(dev.status(), DevStatus::Running { .. }) {
        let url = DatabaseUrl::parse(&dev.url(), "the dev database")?;
        return Ok((url, UrlSource::DevDatabase));
    }
    Err(ResolveError::NoDatabase)
}

/// The value of `key` in a `.env` file, read by dotenvy (quotes, `export`, comments
/// after values, escapes); the last assignment wins, as in python-dotenv. A line that
/// cannot be parsed is an error only when it assigns `key`, and is named by its number,
/// never its text (it may hold the password).
fn dotenv_value(text: &str, key: &str) -> Result<Option<String>, usize> {
    let mut value = None;
    let mut unparsable = None;
    // Editors on Windows start files with a byte-order mark; dotenvy would read it as
    // part of the first name.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for item in dotenvy::from_read_iter(text.as_bytes()) {
        match item {
            Ok((name, found)) if name == key => {
                value = Some(found);
                unparsable = None;
            }
            Ok(_) => {}
            Err(dotenvy::Error::LineParse(line, _)) => {
                let assigns_key = line
                    .trim_start()
                    .trim_start_matches("export ")
                    .trim_start()
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='));
                if assigns_key {
                    let number = text
                        .find(line.trim_end_matches(['\r', '\n']))
                        .map_or(0, |at| text[..at].matches('\n').count() + 1);
                    unparsable = Some(number);
                }
            }
            Err(_) => {}
        }
    }
    match unparsable {
        Some(line) => Err(line),
        None => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_hidden_and_moved_out_of_the_url() {
        let url = DatabaseUrl::parse(
            "postgresql://app:s%40c%3Ar%2Fe%25t%23@db.internal:5432/prod",
            "test",
        )
        .unwrap();
        assert_eq!(url.redacted(), "postgresql://app:***@db.internal:5432/prod");
        assert_eq!(url.to_string(), url.redacted());
        assert!(!format!("{url:?}").contains("s%40c"));
        assert_eq!(url.password().as_deref(), Some("s@c:r/e%t#"));
        assert_eq!(
            url.without_password(),
            "postgresql://app@db.internal:5432/prod"
        );
    }

    #[test]
    fn another_database_keeps_server_and_credentials() {
        let url = DatabaseUrl::parse(
            "postgresql://app:p%40ss@app:5432/app?sslmode=disable",
            "test",
        )
        .unwrap();
        let staging = url.with_database("app__restore_1");
        assert_eq!(
            staging.expose(),
            "postgresql://app:p%40ss@app:5432/app__restore_1?sslmode=disable"
        );
        assert_eq!(staging.password().as_deref(), Some("p@ss"));
        let socket =
            DatabaseUrl::parse("postgresql://postgres@/app?host=/tmp/app", "test").unwrap();
        assert_eq!(
            socket.with_database("x y").expose(),
            "postgresql://postgres@/x%20y?host=/tmp/app"
        );
        let bare = DatabaseUrl::parse("postgresql://localhost", "test").unwrap();
        assert_eq!(bare.with_database("d").expose(), "postgresql://localhost/d");
    }

    #[test]
    fn libpq_tls_parameters_are_understood_and_kept_from_the_driver() {
        let url = DatabaseUrl::parse(
            "postgresql://u:pw@db/app?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=x",
            "DATABASE_URL",
        )
        .unwrap();
        assert_eq!(url.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(url.ssl_root_cert().as_deref(), Some("/etc/ca.pem"));
        let config = url.config().unwrap();
        assert_eq!(config.get_ssl_mode(), postgres::config::SslMode::Require);
        assert_eq!(config.get_application_name(), Some("x"));
        // Children (pg_dump, psql) get libpq's own parameters untouched.
        assert!(url
            .without_password()
            .contains("sslmode=verify-full&sslrootcert=/etc/ca.pem"));
        let plain = DatabaseUrl::parse("postgresql://db/app", "x").unwrap();
        assert_eq!(plain.ssl_mode(), SslMode::Prefer);
        let err = DatabaseUrl::parse("postgresql://u:pw@db/app?sslmode=strict", "DATABASE_URL")
            .unwrap_err();
        assert!(
            err.to_string().contains("sslmode=strict; use disable"),
            "{err}"
        );
    }

    #[test]
    fn urls_without_password_are_unchanged() {
        let url = DatabaseUrl::parse("postgres://app@/db?host=/tmp/x", "test").unwrap();
        assert_eq!(url.redacted(), "postgres://app@/db?host=/tmp/x");
        assert_eq!(url.password(), None);
        assert!(url.child_env().is_empty());
    }

    #[test]
    fn malformed_urls_name_the_source_and_not_the_url() {
        let err = DatabaseUrl::parse("mysql://root:hunter2@x/db", "DATABASE_URL").unwrap_err();
        let message = err.to_string();
        assert!(message.contains("DATABASE_URL"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
        let err =
            DatabaseUrl::parse("postgresql://u:hunter2@host:notaport/db", "flag").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn a_password_parameter_is_hidden_and_moved_out_of_the_url_too() {
        let url = DatabaseUrl::parse(
            "postgresql://mig@db/app?sslmode=require&password=s%40cret&application_name=x",
            "test",
        )
        .unwrap();
        assert_eq!(
            url.redacted(),
            "postgresql://mig@db/app?sslmode=require&password=***&application_name=x"
        );
        assert_eq!(url.password().as_deref(), Some("s@cret"));
        assert_eq!(
            url.without_password(),
            "postgresql://mig@db/app?sslmode=require&application_name=x"
        );
        for (raw, argv) in [
            (
                "postgresql://mig@db/app?password=pw",
                "postgresql://mig@db/app",
            ),
            (
                "postgresql://mig@db/app?password=pw&port=5433",
                "postgresql://mig@db/app?port=5433",
            ),
            (
                "postgresql://mig@db/app?port=5433&password=pw",
                "postgresql://mig@db/app?port=5433",
            ),
        ] {
            let url = DatabaseUrl::parse(raw, "test").unwrap();
            assert_eq!(url.without_password(), argv);
            assert!(!url.to_string().contains("pw"), "{url}");
            assert_eq!(url.child_env(), [("PGPASSWORD", "pw".to_string())]);
        }
        let err = DatabaseUrl::parse("postgresql://u:uno@db/app?password=dos", "t").unwrap_err();
        assert!(!err.to_string().contains("uno") && !err.to_string().contains("dos"));
    }

    #[test]
    fn a_second_spelling_of_a_secret_is_refused_without_echoing_it() {
        for raw in [
            "postgresql://app@/db?host=/tmp&password=decoy&password=hunter2",
            "postgresql://app@/db?host=/tmp&pass%77ord=hunter2",
            "postgresql://app@/db?host=/tmp&sslpassword=hunter2",
        ] {
            let err = DatabaseUrl::parse(raw, "--database-url").unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{raw}: {err}");
        }
    }

    #[test]
    fn an_unencoded_special_character_in_the_password_is_refused_without_echoing_it() {
        for raw in [
            "postgresql://mig:p#ss@db/app",
            "postgresql://mig:p?ss@db/app",
            "postgresql://mig:p/ss@db/app",
            "postgresql://mig:p@ss@db/app",
            "postgresql://mig:hunter2@x:5432/app@",
        ] {
            let err = DatabaseUrl::parse(raw, "--database-url").unwrap_err();
            let message = err.to_string();
            assert!(message.contains("percent-encode"), "{raw}: {message}");
            for secret in ["p#ss", "p?ss", "p/ss", "ss@db", "hunter2"] {
                assert!(!message.contains(secret), "{raw}: {message}");
            }
        }
    }

    #[test]
    fn dotenv_values_are_read_as_dotenv_reads_them() {
        let text = "# comment\nOTHER=1\nexport DATABASE_URL=\"postgresql://a@b/c\"\n";
        assert_eq!(
            dotenv_value(text, "DATABASE_URL"),
            Ok(Some("postgresql://a@b/c".into()))
        );
        assert_eq!(dotenv_value("X=1", "DATABASE_URL"), Ok(None));
        // A comment after a quoted value, single quotes kept literal, the last one wins.
        let text =
            "DATABASE_URL=\"postgresql://a@b/old\"\nDATABASE_URL='postgresql://a:p$w@b/c' # prod\n";
        assert_eq!(
            dotenv_value(text, "DATABASE_URL"),
            Ok(Some("postgresql://a:p$w@b/c".into()))
        );
        // An unreadable assignment is named by its line, never shown.
        let text = "A=1\nDATABASE_URL=\"postgresql://u:hunter2@b/c\n";
        assert_eq!(dotenv_value(text, "DATABASE_URL"), Err(2));
        // A byte-order mark does not hide the first line.
        assert_eq!(
            dotenv_value("\u{feff}DATABASE_URL=postgresql://a@b/c\n", "DATABASE_URL"),
            Ok(Some("postgresql://a@b/c".into()))
        );
        // Other tools' lines that dotenvy cannot read do not stop ours.
        let text = "not an assignment\nDATABASE_URL=postgresql://a@b/c\n";
        assert_eq!(
            dotenv_value(text, "DATABASE_URL"),
            Ok(Some("postgresql://a@b/c".into()))
        );
    }
}
