//! What production's copy may do in the rehearsal's cluster: it is restored and migrated
//! by the ordinary login role [`RESTORER`] (no superuser, no CREATEROLE, no BYPASSRLS), a
//! member of each role the dump names (created NOLOGIN, never superuser), so the dump's
//! owners and grants apply and its functions, checks and triggers run with no more than
//! an application's rights. The names that cannot be given to it (the cluster's own
//! superuser, a predefined `pg_*` role as an owner) and the extensions only a superuser
//! may create are refused by name before anything is restored.

use postgres::Client;

use crate::dump::{role_at, roles_in_script};
use crate::sql::quote_ident;
use crate::TempCluster;

/// The role that restores the copy and runs every session on it.
pub(crate) const RESTORER: &str = "rehearsal";

/// The rehearsal cluster's superuser. Not `throwaway_owner`, the superuser of every
/// other throwaway cluster: a dump of a database one of those made names it as an
/// ordinary owner, and here it must be one.
pub(crate) const SUPERUSER: &str = "rehearsal_superuser";

/// Why the copy is refused before anything of it is restored.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error(
        "the copy names `{role}`, the rehearsal cluster's own superuser (`{line}`): owning or holding \
         anything as it would run production's definitions as superuser, so the rehearsal refuses and \
         nothing was restored. Rename that role in production (ALTER ROLE \"{role}\" RENAME TO ...) \
         and take a new backup"
    )]
    ClusterSuperuser { role: String, line: String },
    #[error(
        "the copy makes `{role}`, a PostgreSQL predefined role, an owner (`{line}`): owning as it would \
         need membership in it, which gives rights over the server (its files, programs or every table), \
         so the rehearsal refuses and nothing was restored. Give the object an ordinary owner in \
         production (ALTER ... OWNER TO <role>) and take a new backup"
    )]
    PredefinedOwner { role: String, line: String },
    #[error(
        "the copy creates extension `{name}`, which is not trusted: only a superuser may create it, and \
         the rehearsal restores and migrates as the ordinary role `{RESTORER}`, never running production's \
         copy as superuser; nothing was restored. Rehearse from a backup without it (pg_restore --list FILE \
         > list, delete its line, pg_restore --use-list list --file copy.sql FILE, then rehearse \
         --from-backup copy.sql)"
    )]
    UntrustedExtension { name: String },
    #[error(transparent)]
    Cluster(#[from] crate::ClusterError),
    #[error(
        "{step} in the rehearsal's cluster failed: {}",
        crate::sqlstate::explain(source)
    )]
    Db {
        step: &'static str,
        #[source]
        source: postgres::Error,
    },
}

fn db(step: &'static str) -> impl FnOnce(postgres::Error) -> PrivilegeError {
    move |source| PrivilegeError::Db { step, source }
}

/// The roles the copy's owners and grants name, and its database's owner, that
/// [`RESTORER`] becomes a member of: every one but itself and the predefined roles (a
/// privilege granted to one of those needs no membership). Refuses the cluster's
/// superuser anywhere and a predefined role as an owner.
pub(crate) fn member_roles(
    script: &str,
    database_owner: Option<&str>,
) -> Result<Vec<String>, PrivilegeError> {
    let mut roles = roles_in_script(script);
    if let Some(owner) = database_owner {
        if !roles.iter().any(|r| r == owner) {
            roles.push(owner.to_string());
        }
    }
    if roles.iter().any(|r| r.as_str() == SUPERUSER) {
        let line = match database_owner == Some(SUPERUSER) {
            true => "the database's owner".to_string(),
            false => line_naming(script, SUPERUSER),
        };
        return Err(PrivilegeError::ClusterSuperuser {
            role: SUPERUSER.to_string(),
            line,
        });
    }
    let database_owner_line =
        database_owner.map(|owner| (owner.to_string(), "the database's owner".to_string()));
    for (role, line) in owners(script).into_iter().chain(database_owner_line) {
        // pg_database_owner is whoever owns the database: the restorer already.
        if is_predefined(&role) && role != "pg_database_owner" {
            return Err(PrivilegeError::PredefinedOwner { role, line });
        }
    }
    Ok(roles
        .into_iter()
        .filter(|r| r != RESTORER && !is_predefined(r))
        .collect())
}

/// `pg_` names are reserved for PostgreSQL's predefined roles (CREATE ROLE refuses them).
fn is_predefined(role: &str) -> bool {
    role.starts_with("pg_")
}

/// Each role the script makes an owner (`OWNER TO`, `SET SESSION AUTHORIZATION`), with
/// the line that does.
fn owners(script: &str) -> Vec<(String, String)> {
    script
        .lines()
        .map(str::trim)
        .filter_map(|line| {
            let role = line
                .rsplit_once(" OWNER TO ")
                .map(|(_, role)| role)
                .or_else(|| line.strip_prefix("SET SESSION AUTHORIZATION "))?;
            let role = role_at(role.trim_matches(|c| c == '\'' || c == ';'))?;
            Some((role, line.to_string()))
        })
        .collect()
}

/// The first line of `script` that names `role`, for the message.
fn line_naming(script: &str, role: &str) -> String {
    script
        .lines()
        .map(str::trim)
        .find(|line| !line.starts_with("--") && line.contains(role))
        .unwrap_or_default()
        .to_string()
}

/// Refuses an extension the copy creates that only a superuser may create (PostgreSQL
/// says which in `pg_available_extension_versions.trusted`). One not installed here is
/// left to the restore, which names it.
pub(crate) fn check_extensions(
    client: &mut Client,
    extensions: &[String],
) -> Result<(), PrivilegeError> {
    for name in extensions {
        let trusted: Option<bool> = client
            .query_opt(
                "SELECT v.trusted FROM pg_available_extension_versions v
                   JOIN pg_available_extensions e ON e.name = v.name AND e.default_version = v.version
                  WHERE v.name = $1",
                &[name],
            )
            .map_err(db("looking up the copy's extensions"))?
            .map(|row| row.get(0));
        if trusted == Some(false) {
            return Err(PrivilegeError::UntrustedExtension { name: name.clone() });
        }
    }
    Ok(())
}

/// Creates [`RESTORER`] and each of `roles` (NOLOGIN, no superuser) with [`RESTORER`] a
/// member of it, then database `database` owned by `owner` (production's database
/// owner, one of `roles`) or else by [`RESTORER`]: what `CREATE` in it and in `public`,
/// and trusted extensions, need. Runs as the superuser on the `postgres` database,
/// before anything of production's is in the cluster.
pub(crate) fn create_roles(
    cluster: &TempCluster,
    roles: &[String],
    database: &str,
    owner: Option<&str>,
) -> Result<(), PrivilegeError> {
    let mut client = cluster.client("postgres")?;
    client
        .batch_execute(&format!(
            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS",
            quote_ident(RESTORER)
        ))
        .map_err(db("creating the role that restores the copy"))?;
    for role in roles {
        client
            .batch_execute(&format!(
                "CREATE ROLE {role} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
                 GRANT {role} TO {restorer}",
                role = quote_ident(role),
                restorer = quote_ident(RESTORER)
            ))
            .map_err(db("creating the dump's roles"))?;
    }
    client
        .batch_execute(&format!(
            "CREATE DATABASE {} OWNER {}",
            quote_ident(database),
            quote_ident(owner.unwrap_or(RESTORER))
        ))
        .map_err(db("creating the copy's database"))?;
    Ok(())
}

/// Whether a failed restore's error is PostgreSQL refusing a privilege the restorer
/// lacks: a superuser would have run it.
pub(crate) fn needs_superuser(error: &str) -> bool {
    [
        "permission denied",
        "must be superuser",
        "only superuser",
        "must be owner of",
        "must be member of role",
        "must have admin option",
        "must be able to SET ROLE",
        // Refused in the restore's transaction before the privilege check; it needs
        // superuser all the same.
        "ALTER SYSTEM",
    ]
    .iter()
    .any(|phrase| error.contains(phrase))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dumps_roles_but_not_the_restorer_or_predefined_roles_get_members() {
        let script = "ALTER TABLE public.t OWNER TO app_owner;\n\
                      GRANT SELECT ON TABLE public.t TO pg_read_all_data;\n\
                      GRANT SELECT ON TABLE public.t TO rehearsal;\n\
                      ALTER SCHEMA s OWNER TO pg_database_owner;\n\
                      ALTER FUNCTION public.f() OWNER TO throwaway_owner;\n";
        assert_eq!(
            member_roles(script, None).unwrap(),
            vec!["app_owner".to_string(), "throwaway_owner".to_string()]
        );
    }

    #[test]
    fn the_clusters_superuser_and_a_predefined_owner_are_refused_by_name() {
        let err = member_roles(
            "GRANT SELECT ON TABLE public.t TO rehearsal_superuser;\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`rehearsal_superuser`, the rehearsal cluster's own superuser"));
        let err = member_roles(
            "ALTER FUNCTION public.f() OWNER TO pg_execute_server_program;\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`pg_execute_server_program`, a PostgreSQL predefined role"));
        assert!(err.contains("ALTER FUNCTION public.f() OWNER TO pg_execute_server_program;"));
    }
}
