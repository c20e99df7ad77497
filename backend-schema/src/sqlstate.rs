//! What to do about an error PostgreSQL reports, by its SQLSTATE: the one table of hints
//! every command's messages draw on.

/// The hint for an error with SQLSTATE `code` and PostgreSQL's `message`, when we know
/// a better next step than the message itself.
pub fn hint(code: &str, message: &str) -> Option<String> {
    let hint = match code {
        // active_sql_transaction: CREATE INDEX CONCURRENTLY, VACUUM, CREATE DATABASE...
        "25001" => "this statement cannot run inside a transaction block: set `transactional = false` in the migration's migration.toml (it then runs statement by statement, and a failure halfway is recorded for you to resolve)".to_string(),
        // insufficient_privilege
        "42501" => return privilege_hint(message),
        // lock_not_available
        "55P03" => "another session holds a lock this needs; see which with SELECT pid, application_name, state FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(<our pid>)), or retry when it is quiet".to_string(),
        // query_canceled (statement_timeout)
        "57014" if message.contains("statement timeout") => {
            "the statement ran longer than statement_timeout: raise --statement-timeout, or split the work".to_string()
        }
        _ => return None,
    };
    Some(hint)
}

/// 42501 says "permission denied"; which privilege is missing, on what, and who can
/// grant it.
fn privilege_hint(message: &str) -> Option<String> {
    if message.contains("permission denied to create database") {
        return Some("this role lacks CREATEDB: a superuser can grant it (ALTER ROLE <role> CREATEDB), or create the database for it (CREATE DATABASE <name> OWNER <role>) and restore without --create".into());
    }
    if message.contains("row-level security") {
        return Some("row-level security applies to this role: run as the table's owner (unless it has FORCE ROW LEVEL SECURITY), a superuser, or a role with BYPASSRLS".into());
    }
    if let Some(object) = message.strip_prefix("permission denied for schema ") {
        return Some(format!(
            "this role may not create in schema {object}: since PostgreSQL 15 only the database's owner may create in `public`; make the role the database's owner (ALTER DATABASE <db> OWNER TO <role>) or, as the owner or a superuser, GRANT CREATE ON SCHEMA {object} TO <role>"
        ));
    }
    for kind in [
        "table", "sequence", "function", "view", "type", "database", "relation",
    ] {
        if let Some(object) = message.strip_prefix(&format!("permission denied for {kind} ")) {
            return Some(format!(
                "this role lacks a privilege on {kind} {object}: as its owner or a superuser, GRANT the privilege ON {} {object} TO <role>, or run as the owner",
                kind.to_uppercase()
            ));
        }
    }
    if let Some(object) = message.strip_prefix("must be owner of ") {
        return Some(format!(
            "only the owner of {object} (or a member of the owning role, or a superuser) may do this: run as that role, or have it GRANT its role to this one"
        ));
    }
    Some("this role lacks a privilege the statement needs: run as the objects' owner, or have their owner or a superuser GRANT it".into())
}

/// A database error as one line: PostgreSQL's message, its SQLSTATE and our hint.
pub fn explain(err: &postgres::Error) -> String {
    let Some(db) = err.as_db_error() else {
        return match std::error::Error::source(err) {
            Some(source) => format!("{err}: {source}"),
            None => err.to_string(),
        };
    };
    let mut text = format!("{} [SQLSTATE {}]", db.message(), db.code().code());
    if let Some(hint) = hint(db.code().code(), db.message()) {
        text.push_str(&format!("\n  hint: {hint}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::hint;

    #[test]
    fn each_known_sqlstate_gets_its_hint() {
        let concurrent = hint(
            "25001",
            "CREATE INDEX CONCURRENTLY cannot run inside a transaction block",
        )
        .unwrap();
        assert!(concurrent.contains("transactional = false"), "{concurrent}");
        let schema = hint("42501", "permission denied for schema public").unwrap();
        assert!(schema.contains("GRANT CREATE ON SCHEMA public"), "{schema}");
        assert!(schema.contains("database's owner"), "{schema}");
        let table = hint("42501", "permission denied for table leads").unwrap();
        assert!(table.contains("ON TABLE leads"), "{table}");
        let owner = hint("42501", "must be owner of table leads").unwrap();
        assert!(owner.contains("owner of table leads"), "{owner}");
        let createdb = hint("42501", "permission denied to create database").unwrap();
        assert!(createdb.contains("CREATEDB"), "{createdb}");
        assert_eq!(hint("42P01", "relation \"x\" does not exist"), None);
    }
}
