//! Roles a chain may name that no revision creates: the ones the real databases have,
//! declared in `roles.toml` in the migrations directory and created on the throwaway
//! server before the chain runs; and the advice when a migration names another one.

use std::path::{Path, PathBuf};

use postgres::GenericClient;
use serde::Deserialize;

use crate::runner::MigrateError;
use crate::sql::quote_ident;

/// The roles file, beside the migrations.
pub const ROLES_FILE: &str = "roles.toml";

#[derive(Debug, thiserror::Error)]
pub enum RolesError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}; it holds one key, e.g. roles = [\"app_readonly\"]", path.display())]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    roles: Vec<String>,
}

/// The roles `dir/roles.toml` declares; none when there is no such file.
pub fn declared_roles(dir: &Path) -> Result<Vec<String>, RolesError> {
    let path = dir.join(ROLES_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(RolesError::Read { path, source }),
    };
    let file: RolesFile = toml::from_str(&text).map_err(|err| RolesError::Invalid {
        path: path.clone(),
        message: err.message().to_string(),
    })?;
    if let Some(bad) = file
        .roles
        .iter()
        .find(|r| r.is_empty() || r.len() > 63 || r.contains('\0'))
    {
        return Err(RolesError::Invalid {
            path,
            message: format!("`{bad}` is not a role name (1 to 63 bytes)"),
        });
    }
    Ok(file.roles)
}

/// Creates each declared role that does not exist yet, without login: migrations grant
/// to them and make them owners, nobody connects as them.
pub fn create(client: &mut impl GenericClient, roles: &[String]) -> Result<(), postgres::Error> {
    for role in roles {
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[role])?
            .is_some();
        if !exists {
            client.batch_execute(&format!("CREATE ROLE {} NOLOGIN", quote_ident(role)))?;
        }
    }
    Ok(())
}

/// The fix for a migration that names a role the server lacks (SQLSTATE 42704 with
/// `role "…" does not exist`), or `None` for any other error.
pub fn missing_role_advice(error: &MigrateError, dir: &Path) -> Option<String> {
    let MigrateError::Statement(failure) = error else {
        return None;
    };
    if failure.code.as_deref() != Some("42704") {
        return None;
    }
    let role = failure
        .message
        .strip_prefix("role \"")?
        .strip_suffix("\" does not exist")?;
    Some(format!(
        "fix: no revision creates role {role}, and servers differ in the roles they have (the throwaway server's owner is {owner}, not postgres); \
         write CURRENT_USER (or CURRENT_ROLE) where the migration means whoever runs it, or, if every real database has role {role}, \
         declare it in {} (roles = [\"{role}\"]) and verify creates it before the chain runs",
        dir.join(ROLES_FILE).display(),
        owner = crate::cluster::OWNER,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roles_file_is_optional_strict_and_named_in_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(declared_roles(dir.path()).unwrap().is_empty());
        std::fs::write(
            dir.path().join(ROLES_FILE),
            "roles = [\"postgres\", \"app_readonly\"]\n",
        )
        .unwrap();
        assert_eq!(
            declared_roles(dir.path()).unwrap(),
            ["postgres", "app_readonly"]
        );
        std::fs::write(dir.path().join(ROLES_FILE), "role = [\"postgres\"]\n").unwrap();
        let err = declared_roles(dir.path()).unwrap_err().to_string();
        assert!(err.contains("roles.toml: unknown field `role`"), "{err}");
        assert!(err.contains("roles = [\"app_readonly\"]"), "{err}");
    }
}
