//! The password libpq would use when the URL has none: `PGPASSWORD`, then the password
//! file (`PGPASSFILE`, else `~/.pgpass`), so our own connections (which do not go
//! through libpq) log in exactly as `pg_dump` and `psql` beside them do.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

/// What a password-file line is matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login<'a> {
    /// The host name, or the socket directory for a unix-socket connection.
    pub host: &'a str,
    pub unix_socket: bool,
    pub port: u16,
    pub database: &'a str,
    pub user: &'a str,
}

/// `PGPASSWORD`, else the first matching line of the password file. As libpq does, a
/// password file that others may read is ignored.
pub fn ambient_password(login: &Login<'_>) -> Option<String> {
    if let Some(password) = std::env::var("PGPASSWORD").ok().filter(|p| !p.is_empty()) {
        return Some(password);
    }
    let path = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pgpass")))?;
    let metadata = std::fs::metadata(&path).ok()?;
    if !metadata.is_file() || metadata.permissions().mode() & 0o077 != 0 {
        return None;
    }
    find_password(&std::fs::read_to_string(&path).ok()?, login)
}

/// The password of the first line of `text` (a `.pgpass` file) that matches `login`:
/// `hostname:port:database:username:password`, `*` matching anything, `\:` and `\\`
/// escaping. `localhost` also matches a unix-socket connection, as in libpq.
pub fn find_password(text: &str, login: &Login<'_>) -> Option<String> {
    let port = login.port.to_string();
    text.lines().find_map(|line| {
        if line.trim_start().starts_with('#') {
            return None;
        }
        let fields = split_fields(line);
        let [host, port_field, database, user, password] = fields.as_slice() else {
            return None;
        };
        let matches = |field: &str, value: &str| field == "*" || field == value;
        let host_matches =
            matches(host, login.host) || (login.unix_socket && host.as_str() == "localhost");
        (host_matches
            && matches(port_field, &port)
            && matches(database, login.database)
            && matches(user, login.user))
        .then(|| password.clone())
    })
}

/// Splits a line on unescaped `:`; the fifth field takes the rest of the line.
fn split_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGIN: Login<'static> = Login {
        host: "db.internal",
        unix_socket: false,
        port: 5432,
        database: "diagnoleads",
        user: "migrator",
    };

    #[test]
    fn the_first_matching_line_wins_with_wildcards_and_escapes() {
        let text = "# comment\n\
                    other:5432:*:migrator:wrong\n\
                    db.internal:5433:*:*:wrong-port\n\
                    db.internal:*:diagnoleads:migrator:p\\:a\\\\ss:w\n\
                    *:*:*:*:fallback\n";
        assert_eq!(find_password(text, &LOGIN).as_deref(), Some("p:a\\ss:w"));
        let other = Login {
            user: "someone",
            ..LOGIN
        };
        assert_eq!(find_password(text, &other).as_deref(), Some("fallback"));
        assert_eq!(find_password("too:few:fields\n", &LOGIN), None);
    }

    #[test]
    fn localhost_matches_a_unix_socket() {
        let socket = Login {
            host: "/var/run/postgresql",
            unix_socket: true,
            ..LOGIN
        };
        let text = "localhost:5432:diagnoleads:migrator:local\n";
        assert_eq!(find_password(text, &socket).as_deref(), Some("local"));
        assert_eq!(find_password(text, &LOGIN), None);
    }
}
