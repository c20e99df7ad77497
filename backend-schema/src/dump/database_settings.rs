//! What a database carries outside its contents: owner, grants, `ALTER DATABASE ... SET`
//! and `ALTER ROLE ... IN DATABASE ... SET`, connection limit and comment. pg_restore
//! (without `--create`) restores none of it, so the staging copy renamed over a target
//! is given the target's, in the same transaction as the renames.

use postgres::Client;

use crate::sql::{literal, quote_ident};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `None`: PUBLIC.
    pub grantee: Option<String>,
    /// `CREATE`, `TEMPORARY` or `CONNECT`, as `aclexplode` names them.
    pub privilege: String,
    pub grantable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// `None`: for every role (`ALTER DATABASE ... SET`).
    pub role: Option<String>,
    /// `name=value`, as `pg_db_role_setting` stores it.
    pub entry: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSettings {
    pub owner: String,
    /// `None`: the default privileges (`datacl` is null).
    pub grants: Option<Vec<Grant>>,
    pub settings: Vec<Setting>,
    pub connection_limit: i32,
    pub comment: Option<String>,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
}

impl DatabaseSettings {
    pub fn read(admin: &mut Client, database: &str) -> Result<DatabaseSettings, postgres::Error> {
        let row = admin.query_one(
            "SELECT oid, pg_get_userbyid(datdba)::text, datacl IS NULL, datconnlimit,
                    shobj_description(oid, 'pg_database'), pg_encoding_to_char(encoding)::text,
                    datcollate::text, datctype::text
               FROM pg_database WHERE datname = $1",
            &[&database],
        )?;
        let oid: u32 = row.get(0);
        let grants = match row.get::<_, bool>(2) {
            true => None,
            false => Some(
                admin
                    .query(
                        "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee)::text END,
                                a.privilege_type, a.is_grantable
                           FROM pg_database d, aclexplode(d.datacl) a
                          WHERE d.oid = $1 ORDER BY 1 NULLS FIRST, 2",
                        &[&oid],
                    )?
                    .iter()
                    .map(|r| Grant {
                        grantee: r.get(0),
                        privilege: r.get(1),
                        grantable: r.get(2),
                    })
                    .collect(),
            ),
        };
        let mut settings = Vec::new();
        for r in admin.query(
            "SELECT CASE WHEN setrole = 0 THEN NULL ELSE pg_get_userbyid(setrole)::text END, setconfig
               FROM pg_db_role_setting WHERE setdatabase = $1 ORDER BY 1 NULLS FIRST",
            &[&oid],
        )? {
            let role: Option<String> = r.get(0);
            for entry in r.get::<_, Vec<String>>(1) {
                settings.push(Setting {
                    role: role.clone(),
                    entry,
                });
            }
        }
        Ok(DatabaseSettings {
            owner: row.get(1),
            grants,
            settings,
            connection_limit: row.get(3),
            comment: row.get(4),
            encoding: row.get(5),
            collate: row.get(6),
            ctype: row.get(7),
        })
    }

    /// `CREATE DATABASE` for a copy with this database's encoding and locale.
    pub fn create_sql(&self, database: &str) -> String {
        format!(
            "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_ident(database),
            literal(&self.encoding),
            literal(&self.collate),
            literal(&self.ctype)
        )
    }

    /// The statements that give `database` these settings (it starts with the defaults
    /// of a database the restoring role just created).
    pub fn apply_sql(&self, database: &str) -> Vec<String> {
        let db = quote_ident(database);
        let owner = quote_ident(&self.owner);
        let mut sql = vec![format!("ALTER DATABASE {db} OWNER TO {owner}")];
        if let Some(grants) = &self.grants {
            sql.push(format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"));
            sql.push(format!("REVOKE ALL ON DATABASE {db} FROM {owner}"));
            for grant in grants {
                sql.push(format!(
                    "GRANT {} ON DATABASE {db} TO {}{}",
                    grant.privilege,
                    grant
                        .grantee
                        .as_deref()
                        .map_or("PUBLIC".to_string(), quote_ident),
                    if grant.grantable {
                        " WITH GRANT OPTION"
                    } else {
                        ""
                    }
                ));
            }
        }
        sql.push(format!(
            "ALTER DATABASE {db} CONNECTION LIMIT {}",
            self.connection_limit
        ));
        for setting in &self.settings {
            let Some((name, value)) = setting.entry.split_once('=') else {
                continue;
            };
            let value = setting_value(name, value);
            let name = name
                .split('.')
                .map(quote_ident)
                .collect::<Vec<_>>()
                .join(".");
            sql.push(match &setting.role {
                None => format!("ALTER DATABASE {db} SET {name} TO {value}"),
                Some(role) => format!(
                    "ALTER ROLE {} IN DATABASE {db} SET {name} TO {value}",
                    quote_ident(role)
                ),
            });
        }
        sql.push(format!(
            "COMMENT ON DATABASE {db} IS {}",
            self.comment.as_deref().map_or("NULL".to_string(), literal)
        ));
        sql
    }
}

/// A stored setting's value as SQL: one literal, or (for the settings PostgreSQL stores
/// as a quoted list, as pg_dump knows them) one literal per element.
fn setting_value(name: &str, value: &str) -> String {
    const LISTS: [&str; 6] = [
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    ];
    if !LISTS.contains(&name.to_ascii_lowercase().as_str()) {
        return literal(value);
    }
    let mut elements = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                current.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => elements.push(std::mem::take(&mut current)),
            c if c.is_whitespace() && !quoted => {}
            c => current.push(c),
        }
    }
    elements.push(current);
    elements
        .iter()
        .map(|e| literal(e))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_settings_become_one_literal_per_element() {
        assert_eq!(
            setting_value("search_path", "\"$user\", public, \"a,b\"\"c\""),
            "'$user', 'public', 'a,b\"c'"
        );
        assert_eq!(setting_value("statement_timeout", "5min"), "'5min'");
    }

    #[test]
    fn grants_settings_and_comment_become_statements() {
        let settings = DatabaseSettings {
            owner: "app owner".into(),
            grants: Some(vec![Grant {
                grantee: Some("reader".into()),
                privilege: "CONNECT".into(),
                grantable: false,
            }]),
            settings: vec![
                Setting {
                    role: None,
                    entry: "statement_timeout=5min".into(),
                },
                Setting {
                    role: Some("reader".into()),
                    entry: "app.tenant=x".into(),
                },
            ],
            connection_limit: -1,
            comment: None,
            encoding: "UTF8".into(),
            collate: "C".into(),
            ctype: "C".into(),
        };
        assert_eq!(
            settings.apply_sql("t"),
            [
                "ALTER DATABASE \"t\" OWNER TO \"app owner\"",
                "REVOKE ALL ON DATABASE \"t\" FROM PUBLIC",
                "REVOKE ALL ON DATABASE \"t\" FROM \"app owner\"",
                "GRANT CONNECT ON DATABASE \"t\" TO \"reader\"",
                "ALTER DATABASE \"t\" CONNECTION LIMIT -1",
                "ALTER DATABASE \"t\" SET \"statement_timeout\" TO '5min'",
                "ALTER ROLE \"reader\" IN DATABASE \"t\" SET \"app\".\"tenant\" TO 'x'",
                "COMMENT ON DATABASE \"t\" IS NULL",
            ]
        );
    }
}
