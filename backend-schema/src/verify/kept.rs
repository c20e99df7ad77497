//! Stairway databases kept between runs, so a re-run starts where the first changed
//! revision begins instead of replaying every revision before it.
//!
//! A run with a cache keeps, in a copy of its cluster's data dir beside the cache file,
//! the stairway database as it stood before the newest revision and after it: the two
//! places a developer's next run starts from (the newest revision edited, a revision
//! added). Each database is named after the cache key of the revisions before it, so
//! a database holds exactly the state its name says, whatever file lists it. Databases
//! are copied with `CREATE DATABASE ... TEMPLATE`, which copies what is inside a
//! database but not what the cluster holds about it; so one is kept only when the
//! cluster's roles, role and database settings, databases and tablespaces are, at the
//! end of the run, what they were when it was copied, and the stairway database has no
//! settings, grants, comment or subscription of its own; nothing is kept after an
//! `ALTER SYSTEM`. Every run climbs the newest revision on a new session (`stairway`),
//! and a kept database is used only there or at the end, so what was left on a session
//! never tells a resumed run from a full one.

use std::path::{Path, PathBuf};

use postgres::Client;
use serde::{Deserialize, Serialize};

use crate::cluster::{RunAs, TempCluster};
use crate::sql::quote_ident;

use super::VerifyError;

/// The listing written beside the kept data dir.
const LISTING: &str = "kept.json";

/// One kept database: the state before the stairway position whose previous key is
/// `key`, and the cluster-wide state it was copied in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct KeptDatabase {
    pub key: String,
    pub database: String,
    cluster: String,
}

/// The database that holds the state before the revision after the one keyed `key`.
pub(crate) fn database_name(key: &str) -> String {
    format!("verify_at_{}", &key[..key.len().min(40)])
}

/// Where a run keeps its stairway databases, and what was kept there before.
#[derive(Debug)]
pub(crate) struct KeepIn {
    pub dir: PathBuf,
    /// What the kept cluster the run started from listed (kept again when still worth it).
    pub listed: Vec<KeptDatabase>,
}

/// Keeps `cluster`, which climbed the stairway to its end (`part` is its report, whose
/// last revision is the newest when it passed), with the databases it `copied` and
/// those listed before that are still worth keeping; a note when it cannot.
pub(crate) fn keep_end(
    cluster: TempCluster,
    keep_in: &KeepIn,
    copied: &[KeptDatabase],
    part: &super::VerifyReport,
    graph: &crate::graph::RevisionGraph,
    keys: &[String],
) -> Option<String> {
    let newest = graph.migrations().last()?;
    let head = part
        .revisions
        .last()
        .filter(|r| r.revision == newest.revision && r.passed())
        .and(keys.last());
    let wanted: Vec<&String> = keys.iter().rev().take(2).collect();
    let mut candidates = keep_in.listed.clone();
    candidates.extend(copied.iter().cloned());
    keep(cluster, &keep_in.dir, &candidates, head.map(String::as_str), &wanted)
        .err()
        .map(|err| {
            format!(
                "cannot keep the stairway databases in {} ({err}): the next run replays the revisions before the first changed one",
                keep_in.dir.display()
            )
        })
}

/// A kept cluster found for this run: its data dir, and the database to start from,
/// the state before the stairway position `position`.
#[derive(Debug)]
pub(crate) struct Found {
    /// The kept directory's device and inode when its listing was read: another run
    /// that replaces it meanwhile changes them.
    identity: Option<(u64, u64)>,
    /// Everything the listing names (what the new run may keep again).
    pub listed: Vec<KeptDatabase>,
    pub data: PathBuf,
    pub position: usize,
    pub database: String,
}

/// The kept database latest in the stairway whose position is at most `upto` (the
/// first revision not from the cache) and is one where every run starts a new session
/// (before the newest revision, or the end), in the kept cluster at `dir`; a kept
/// cluster that cannot be trusted is a note, and none is used.
pub(crate) fn find(dir: &Path, keys: &[String], upto: usize) -> (Option<Found>, Option<String>) {
    let before = identity(dir);
    let listing = match super::cache::read_own(&dir.join(LISTING)) {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(why)) => {
            return (
                None,
                Some(format!(
                    "the kept databases' listing {} {why}: not used, the revisions before the first changed one are replayed",
                    dir.join(LISTING).display()
                )),
            )
        }
        Err(_) => return (None, None),
    };
    if let Some(why) = untrusted(dir) {
        return (
            None,
            Some(format!(
                "the kept databases in {} {why}: not used, the revisions before the first changed one are replayed",
                dir.display()
            )),
        );
    }
    let Ok(kept) = serde_json::from_slice::<Vec<KeptDatabase>>(&listing) else {
        return (None, None);
    };
    if identity(dir) != before {
        return (None, None);
    }
    // Only where every run starts a new session: before the newest revision, and at
    // the end (nothing left to climb).
    let total = keys.len();
    let found = (1..=upto.min(total))
        .rev()
        .filter(|p| *p + 1 >= total)
        .find_map(|position| {
            let key = &keys[position - 1];
            kept.iter()
                .find(|k| k.key == *key && k.database == database_name(key))
                .map(|k| Found {
                    identity: identity(dir),
                    listed: kept.clone(),
                    data: dir.join("data"),
                    position,
                    database: k.database.clone(),
                })
        });
    (found, None)
}

/// The device and inode of `dir`.
fn identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(dir)
        .ok()
        .map(|meta| (meta.dev(), meta.ino()))
}

/// Why the kept cluster's directories cannot be trusted, if they cannot: the directory
/// must be this user's and closed to others, the data dir the server account's and
/// private (whoever can write either could make a re-run pass what a full run fails).
fn untrusted(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(err) => return Some(format!("cannot be read ({err})")),
    };
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Some(format!(
            "is not a directory of this user closed to others (uid {}, mode {:o})",
            meta.uid(),
            meta.mode() & 0o7777
        ));
    }
    let data = dir.join("data");
    let server = match RunAs::for_server() {
        Ok(run_as) => run_as.uid,
        Err(err) => return Some(format!("cannot be checked ({err})")),
    };
    match std::fs::symlink_metadata(&data) {
        Ok(meta) if meta.is_dir() && meta.uid() == server && meta.mode() & 0o077 == 0 => None,
        Ok(meta) => Some(format!(
            "hold a data dir that is not the server account's private directory (uid {}, mode {:o})",
            meta.uid(),
            meta.mode() & 0o7777
        )),
        Err(err) => Some(format!("hold no data dir ({err})")),
    }
}

/// Why the stairway database cannot be copied as it is, if it cannot: what
/// `CREATE DATABASE ... TEMPLATE` leaves behind is set on it.
fn not_copyable(client: &mut Client, database: &str) -> Result<Option<String>, postgres::Error> {
    let row = client.query_one(
        "SELECT d.datacl IS NOT NULL
                OR EXISTS (SELECT 1 FROM pg_db_role_setting s WHERE s.setdatabase = d.oid)
                OR EXISTS (SELECT 1 FROM pg_shdescription c
                            WHERE c.classoid = 'pg_database'::regclass AND c.objoid = d.oid)
                OR EXISTS (SELECT 1 FROM pg_subscription s WHERE s.subdbid = d.oid)
                OR EXISTS (SELECT 1 FROM pg_shseclabel l
                            WHERE l.classoid = 'pg_database'::regclass AND l.objoid = d.oid)
                OR d.datdba <> (SELECT oid FROM pg_roles WHERE rolname = current_user)
           FROM pg_database d WHERE d.datname = $1",
        &[&database],
    )?;
    Ok(row.get::<_, bool>(0).then(|| {
        "a migration set the database's own settings, grants, owner, comment or subscriptions"
            .to_string()
    }))
}

/// What the cluster holds outside any database that a migration can change: its roles,
/// memberships, role and database settings, databases (but the kept ones and the
/// stairway's) and tablespaces.
fn cluster_state(client: &mut Client) -> Result<String, postgres::Error> {
    client
        .query_one(
            "SELECT md5(coalesce(string_agg(x, chr(30) ORDER BY x), '')) FROM (
                       SELECT to_jsonb(a)::text FROM pg_authid a
             UNION ALL SELECT to_jsonb(m)::text FROM pg_auth_members m
             UNION ALL SELECT to_jsonb(s)::text FROM pg_db_role_setting s
             UNION ALL SELECT 'database ' || datname FROM pg_database
                        WHERE datname NOT LIKE 'verify\\_at\\_%' AND datname <> $1
             UNION ALL SELECT to_jsonb(t)::text FROM pg_tablespace t) AS c(x)",
            &[&super::STAIRWAY_DB],
        )
        .map(|row| row.get(0))
}

/// Copies the stairway database as the state before the position after the one keyed
/// `key`; `client` must be its only session on it, and is reconnected. The reason when
/// it cannot be kept (the run goes on either way).
pub(crate) fn copy_stairway(
    cluster: &TempCluster,
    client: &mut Client,
    key: &str,
) -> Result<Result<KeptDatabase, String>, VerifyError> {
    let stairway = super::STAIRWAY_DB;
    let admin = cluster.client("postgres")?;
    // CREATE DATABASE ... TEMPLATE refuses a database anyone is connected to: the
    // stairway's session goes while it copies.
    drop(std::mem::replace(client, admin));
    let copied = match not_copyable(client, stairway)? {
        Some(why) => Err(why),
        None => {
            let database = database_name(key);
            let sql = format!(
                "CREATE DATABASE {} TEMPLATE {}",
                quote_ident(&database),
                quote_ident(stairway)
            );
            match client.batch_execute(&sql) {
                Ok(()) => Ok(KeptDatabase {
                    key: key.to_string(),
                    database,
                    cluster: cluster_state(client)?,
                }),
                Err(err) => Err(format!("copying it failed ({err})")),
            }
        }
    };
    *client = super::stairway_session(cluster)?;
    Ok(copied)
}

/// Starts a cluster on a copy of the kept one, its database `found.database` renamed
/// to the stairway's; why not, when it cannot.
pub(crate) fn start_from(found: &Found) -> Result<TempCluster, String> {
    let cluster = TempCluster::start_from(&found.data).map_err(|err| err.to_string())?;
    // Another run that replaced the kept directory while it was copied may have given
    // the copy files of both: none of it is used.
    let dir = found
        .data
        .parent()
        .expect("the data dir is in the kept directory");
    if identity(dir) != found.identity {
        return Err("another run replaced it while it was copied".into());
    }
    cluster
        .client("postgres")
        .map_err(|err| err.to_string())?
        .batch_execute(&format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(&found.database),
            quote_ident(super::STAIRWAY_DB)
        ))
        .map_err(|err| err.to_string())?;
    Ok(cluster)
}

/// Keeps `cluster` in `dir` with the databases worth keeping: those copied this run or
/// listed before (`listed`) whose key is in `wanted` and whose cluster-wide state is
/// still the cluster's, and the stairway database itself under `head`'s name when it
/// stands where a full run leaves it (else it is dropped). Nothing worth keeping
/// leaves `dir` as it was.
pub(crate) fn keep(
    cluster: TempCluster,
    dir: &Path,
    copied: &[KeptDatabase],
    head: Option<&str>,
    wanted: &[&String],
) -> Result<(), VerifyError> {
    let mut admin = cluster.client("postgres")?;
    // ALTER SYSTEM writes the data dir's settings, which a full run never loads (it
    // never restarts its server) but a cluster started from the kept copy would.
    let altered: bool = admin
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_file_settings
                             WHERE sourcefile LIKE '%/postgresql.auto.conf')",
            &[],
        )?
        .get(0);
    if altered {
        return Err(VerifyError::NotKept(
            "a migration ran ALTER SYSTEM, whose settings a cluster started from the copy would load".into(),
        ));
    }
    let now = cluster_state(&mut admin)?;
    let mut kept: Vec<KeptDatabase> = Vec::new();
    let present: Vec<String> = admin
        .query(
            "SELECT datname::text FROM pg_database WHERE datname LIKE 'verify\\_at\\_%'",
            &[],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for database in present {
        let keep = copied.iter().find(|k| {
            k.database == database
                && k.cluster == now
                && wanted.contains(&&k.key)
                && head.map(database_name) != Some(database.clone())
        });
        match keep {
            Some(k) => kept.push(k.clone()),
            None => admin.batch_execute(&format!("DROP DATABASE {}", quote_ident(&database)))?,
        }
    }
    let stairway = quote_ident(super::STAIRWAY_DB);
    match head {
        Some(key) => {
            let database = database_name(key);
            admin.batch_execute(&format!(
                "ALTER DATABASE {stairway} RENAME TO {}",
                quote_ident(&database)
            ))?;
            kept.push(KeptDatabase {
                key: key.to_string(),
                database,
                cluster: now,
            });
        }
        None => admin.batch_execute(&format!("DROP DATABASE {stairway}"))?,
    }
    drop(admin);
    if kept.is_empty() {
        return Ok(());
    }
    let listing = serde_json::to_vec(&kept).expect("a listing serialises");
    cluster.keep_data(dir, &[(LISTING, &listing)])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_takes_a_kept_database_the_cache_reaches_where_runs_start_a_new_session_named_for_its_key(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        let server = RunAs::for_server().unwrap();
        server.chown(&data).unwrap();
        let keys: Vec<String> = (0..5).map(|i| format!("{i}").repeat(64)).collect();
        let at = |position: usize| KeptDatabase {
            key: keys[position - 1].clone(),
            database: database_name(&keys[position - 1]),
            cluster: String::new(),
        };
        let mut renamed = at(4);
        renamed.database = database_name(&keys[0]);
        let listing = serde_json::to_vec(&vec![at(3), at(5), renamed]).unwrap();
        std::fs::write(dir.path().join(LISTING), listing).unwrap();

        let position = |upto| find(dir.path(), &keys, upto).0.map(|f| f.position);
        assert_eq!(position(5), Some(5));
        // A database named for another key than its entry's is not trusted to hold it.
        assert_eq!(position(4), None);
        // Every run goes on with its session there: a re-run would start a new one.
        assert_eq!(position(3), None);
        assert_eq!(position(0), None);
        let listing = serde_json::to_vec(&vec![at(4)]).unwrap();
        std::fs::write(dir.path().join(LISTING), listing).unwrap();
        assert_eq!(position(5), Some(4));
    }
}
