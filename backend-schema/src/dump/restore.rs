//! Restoring an archive all or nothing: the archive check against its manifest, the
//! pre-flight on the target, the restore in one transaction or in a staging database
//! renamed in, and the maintenance-database work around it (create, drop, swap, and the
//! sweep of what killed restores left).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use postgres::Client;

use super::archive::{check_complete, hash_and_read, ArchiveError};
use super::database_settings::DatabaseSettings;
use super::leftovers::{self, Kind, Swept};
use super::meta_commands::{check_plain_dump, MetaCommandError};
use super::psql_restore::{check_psql, restore_plain, PsqlRestoreError};
use super::{extensions_in_script, roles_in_script, DumpFormat, Manifest};
use crate::database_url::DatabaseUrl;
use crate::pgtool::{libpq, stderr_tail};
use crate::sql::quote_ident;
use crate::PgBinaries;

/// How to run pg_restore (or psql, for a plain dump).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Leave out owners and grants (`--no-owner --no-privileges`), for a target without
    /// the source's roles.
    pub no_owner: bool,
    /// Drop what the archive creates before creating it (`--clean --if-exists`).
    pub clean: bool,
    /// Parallel pg_restore jobs; above 1 the restore is no longer one transaction, so
    /// `restore` runs it in a staging database.
    pub jobs: usize,
    /// Build a new database from the archive and swap it in by rename, even with one
    /// job: for a target holding tables the archive lacks ([`tables_beyond`]), which
    /// `pg_restore --clean` would leave behind or fail to drop around.
    pub replace_database: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            no_owner: false,
            clean: false,
            jobs: 1,
            replace_database: false,
        }
    }
}

/// What the archive check found before its verdict, for the caller to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveCheck {
    /// The archive's SHA-256 equals its manifest's.
    HashMatches,
    /// There is no manifest: only the full read can be done.
    NoManifest,
    /// The full read has read this many bytes of the archive's `total`.
    Read { bytes: u64, total: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Hash(ArchiveError),
    #[error("{} does not match its manifest: sha256 {sha256}, manifest says {expected}; the file was changed or damaged, nothing was restored", path.display())]
    HashMismatch {
        path: PathBuf,
        sha256: String,
        expected: String,
    },
    #[error("the archive is damaged; nothing was restored")]
    Damaged(#[source] ArchiveError),
    #[error(transparent)]
    MetaCommand(#[from] MetaCommandError),
    #[error(transparent)]
    Psql(#[from] PsqlRestoreError),
}

/// The archive before anything is touched: its hash against the manifest (when there is
/// one), then a full read. `progress` hears about the hash before the read's verdict.
pub fn check_archive(
    binaries: &PgBinaries,
    format: DumpFormat,
    path: &Path,
    manifest: Option<&Manifest>,
    progress: &mut dyn FnMut(ArchiveCheck),
) -> Result<(), CheckError> {
    let total = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let complete = match manifest {
        Some(manifest) => {
            let (hash, complete) =
                hash_and_read(binaries, format, path, &manifest.tables, &mut |bytes| {
                    progress(ArchiveCheck::Read { bytes, total })
                });
            let (sha256, _) = hash.map_err(CheckError::Hash)?;
            if sha256 != manifest.sha256 {
                return Err(CheckError::HashMismatch {
                    path: path.to_path_buf(),
                    sha256,
                    expected: manifest.sha256.clone(),
                });
            }
            progress(ArchiveCheck::HashMatches);
            complete
        }
        None => {
            progress(ArchiveCheck::NoManifest);
            check_complete(binaries, format, path, &Default::default(), &mut |bytes| {
                progress(ArchiveCheck::Read { bytes, total })
            })
        }
    };
    complete.map_err(CheckError::Damaged)?;
    if format == DumpFormat::Plain {
        let script = std::fs::read_to_string(path).map_err(|source| {
            CheckError::Hash(ArchiveError::Unreadable {
                path: path.to_path_buf(),
                source,
            })
        })?;
        check_plain_dump(path, &script)?;
        check_psql(binaries)?;
    }
    Ok(())
}

/// Why the target refuses the archive; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("the archive needs roles the target lacks: {}; nothing was changed. Create them, or restore without owners and grants with --no-owner", .0.join(", "))]
    MissingRoles(Vec<String>),
    #[error("the archive needs extensions the target server does not have: {}; nothing was changed", .0.join(", "))]
    MissingExtensions(Vec<String>),
    #[error(
        "the target database already holds {} table(s) ({}{}); nothing was changed. To replace them, pass --clean --yes (take a backup first)",
        .0.len(),
        .0.iter().take(10).map(String::as_str).collect::<Vec<_>>().join(", "),
        if .0.len() > 10 { ", ..." } else { "" }
    )]
    NotEmpty(Vec<String>),
    #[error(transparent)]
    Db(#[from] postgres::Error),
}

/// The pre-flight on the target: the roles (unless `no_owner`) and extensions `script`
/// needs, and an empty target unless `replace` allows replacing what is there. Returns
/// the tables the target holds.
pub fn preflight(
    client: &mut Client,
    script: &str,
    no_owner: bool,
    replace: bool,
) -> Result<Vec<String>, PreflightError> {
    if !no_owner {
        let needed = roles_in_script(script);
        let missing: Vec<String> = needed
            .into_iter()
            .filter(|role| {
                client
                    .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[role])
                    .map(|r| r.is_none())
                    .unwrap_or(true)
            })
            .collect();
        if !missing.is_empty() {
            return Err(PreflightError::MissingRoles(missing));
        }
    }
    let extensions: Vec<String> = extensions_in_script(script)
        .into_iter()
        .filter(|e| {
            client
                .query_opt(
                    "SELECT 1 FROM pg_available_extensions WHERE name = $1",
                    &[e],
                )
                .map(|r| r.is_none())
                .unwrap_or(true)
        })
        .collect();
    if !extensions.is_empty() {
        return Err(PreflightError::MissingExtensions(extensions));
    }
    let existing: Vec<String> = crate::catalog::user_tables(client)?
        .into_iter()
        .map(|t| format!("{}.{}", t.schema, t.name))
        .collect();
    if !existing.is_empty() && !replace {
        return Err(PreflightError::NotEmpty(existing));
    }
    Ok(existing)
}

/// The target's tables (as `preflight` lists them, `schema.name`) that the archive's
/// script does not create. `pg_restore --clean` drops only what the archive holds, so
/// with these present the restored database would not be the backup: tables of a later
/// release would stay, and their foreign keys stop the drop of the tables they reference.
pub fn tables_beyond(existing: &[String], script: &str) -> Vec<String> {
    let created: std::collections::BTreeSet<String> = script
        .lines()
        .filter_map(|line| {
            let rest = line
                .strip_prefix("CREATE TABLE ")
                .or_else(|| line.strip_prefix("CREATE UNLOGGED TABLE "))?;
            let name = rest.split(" (").next()?.trim();
            Some(name.replace('"', ""))
        })
        .collect();
    // The version tables are ours: a dump from before the side table existed is handled
    // after the restore (`drop_replaced_history`), in place.
    existing
        .iter()
        .filter(|table| !created.contains(table.as_str()))
        .filter(|table| {
            let name = table
                .rsplit_once('.')
                .map_or(table.as_str(), |(_, name)| name);
            !crate::catalog::is_bookkeeping(name)
        })
        .cloned()
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{program} failed; the target was left as it was:\n  {stderr_tail}")]
    Failed {
        program: &'static str,
        stderr_tail: String,
    },
    #[error("the URL names no database")]
    NoDatabase,
    #[error("cannot connect to the maintenance database `postgres`")]
    Maintenance(#[source] crate::tls::ConnectError),
    #[error(
        "cannot create database {name}{}: {}",
        owner.as_ref().map(|o| format!(" owned by {o}")).unwrap_or_default(),
        crate::sqlstate::explain(source)
    )]
    Create {
        name: String,
        owner: Option<String>,
        #[source]
        source: postgres::Error,
    },
    #[error("database {0} already exists; drop --create to restore into it")]
    Exists(String),
    #[error("cannot swap the restored copy in for database {name} (in use? close its sessions and retry), or give it the database's owner, grants and settings; the target was left as it was")]
    Swap {
        name: String,
        #[source]
        source: postgres::Error,
    },
    #[error(transparent)]
    Plain(#[from] PsqlRestoreError),
    #[error(transparent)]
    Db(#[from] postgres::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The restore after the pre-flight: with several `jobs` (and an archive pg_restore can
/// parallelise) into a staging database swapped in by rename, else in one transaction.
pub fn restore(
    binaries: &PgBinaries,
    format: DumpFormat,
    path: &Path,
    url: &DatabaseUrl,
    options: &RestoreOptions,
) -> Result<Restored, RestoreError> {
    if (options.jobs > 1 || options.replace_database) && format != DumpFormat::Plain {
        restore_via_staging(binaries, format, path, url, options)
    } else {
        run_restore(
            binaries,
            format,
            path,
            url,
            &RestoreOptions {
                jobs: 1,
                ..*options
            },
        )
        .map(|()| Restored::default())
    }
}

/// Restores `path` into `url` atomically: `pg_restore --single-transaction`, or a plain
/// dump through `psql_restore` (checked for meta-commands, one transaction).
pub fn run_restore(
    binaries: &PgBinaries,
    format: DumpFormat,
    path: &Path,
    url: &DatabaseUrl,
    options: &RestoreOptions,
) -> Result<(), RestoreError> {
    if format == DumpFormat::Plain {
        return Ok(restore_plain(binaries, path, url)?);
    }
    let mut args = pg_restore_args(options);
    args.push(path.into());
    let output = libpq(binaries, "pg_restore", args, url)
        .stdout_null()
        .stderr_capture()
        .unchecked()
        .run()?;
    if !output.status.success() {
        return Err(RestoreError::Failed {
            program: "pg_restore",
            stderr_tail: stderr_tail(&output.stderr),
        });
    }
    Ok(())
}

/// pg_restore's flags for `options`, without the archive (a path, or stdin).
pub(crate) fn pg_restore_args(options: &RestoreOptions) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["--exit-on-error".into()];
    if options.jobs > 1 {
        args.push(format!("--jobs={}", options.jobs).into());
    } else {
        args.push("--single-transaction".into());
    }
    if options.no_owner {
        args.extend(["--no-owner".into(), "--no-privileges".into()]);
    }
    if options.clean {
        args.extend(["--clean".into(), "--if-exists".into()]);
    }
    args
}

/// The maintenance database of the same server, for CREATE/ALTER DATABASE, and the name
/// of the database `url` points at.
fn maintenance(url: &DatabaseUrl) -> Result<(Client, String), RestoreError> {
    let config = url.config()?;
    let name = config
        .get_dbname()
        .ok_or(RestoreError::NoDatabase)?
        .to_string();
    let mut admin = config.clone();
    admin.dbname("postgres");
    admin.application_name("cargo xtask restore");
    let client = crate::tls::connect(url, &admin).map_err(RestoreError::Maintenance)?;
    Ok((client, name))
}

/// Drops the leftovers of killed restores on `url`'s server whose makers are provably
/// gone (`leftovers::sweep`), and says what it did with each marked database.
pub fn sweep_leftovers(url: &DatabaseUrl) -> Result<Vec<Swept>, RestoreError> {
    let (mut admin, _) = maintenance(url)?;
    let mut holds_tables = |database: &str| {
        let Ok(config) = url.with_database(database).config() else {
            return true;
        };
        crate::tls::connect(url, &config)
            .ok()
            .and_then(|mut client| crate::catalog::user_tables(&mut client).ok())
            .is_none_or(|tables| !tables.is_empty())
    };
    Ok(leftovers::sweep(&mut admin, &mut holds_tables)?)
}

/// Creates the database `url` names (from template0), marked as ours until
/// `finish_create`; refuses one that exists. Returns its name.
pub fn create_database(url: &DatabaseUrl, owner: Option<&str>) -> Result<String, RestoreError> {
    let (mut admin, name) = maintenance(url)?;
    if admin
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])?
        .is_some()
    {
        return Err(RestoreError::Exists(name));
    }
    // The owner gets what owning gives: from PostgreSQL 15, CREATE in `public` (owned by
    // pg_database_owner), which the application's next migration needs.
    let owner_clause = owner
        .map(|owner| format!(" OWNER {}", quote_ident(owner)))
        .unwrap_or_default();
    admin
        .batch_execute(&format!(
            "CREATE DATABASE {}{owner_clause} TEMPLATE template0",
            quote_ident(&name)
        ))
        .map_err(|source| RestoreError::Create {
            name: name.clone(),
            owner: owner.map(str::to_string),
            source,
        })?;
    if let Err(err) = leftovers::mark(&mut admin, &name, Kind::Create) {
        let _ = admin.batch_execute(&format!("DROP DATABASE {}", quote_ident(&name)));
        return Err(err.into());
    }
    Ok(name)
}

/// The restore into the database `create_database` made is done: it is no longer a
/// leftover to sweep.
pub fn finish_create(url: &DatabaseUrl) -> Result<(), RestoreError> {
    let (mut admin, name) = maintenance(url)?;
    leftovers::unmark(&mut admin, &name)?;
    Ok(())
}

/// Drops the database `url` names, if it exists: what `create_database` made for a
/// restore that then failed.
pub fn drop_database(url: &DatabaseUrl) -> Result<(), RestoreError> {
    let (mut admin, name) = maintenance(url)?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(&name)))?;
    Ok(())
}

/// What a committed restore left to say.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The replaced database, renamed aside, that could not be dropped afterwards.
    pub replaced_copy_left: Option<(String, String)>,
}

/// Parallel restore into a staging database (marked as ours, with the target's encoding
/// and locale), swapped in by rename only when complete; the target's owner, grants,
/// settings and comment move to it in the transaction of the renames.
pub fn restore_via_staging(
    binaries: &PgBinaries,
    format: DumpFormat,
    path: &Path,
    url: &DatabaseUrl,
    options: &RestoreOptions,
) -> Result<Restored, RestoreError> {
    let (mut admin, name) = maintenance(url)?;
    let settings = DatabaseSettings::read(&mut admin, &name)?;
    let staging = format!("{name}__restore_{}", std::process::id());
    admin.batch_execute(&settings.create_sql(&staging))?;
    let drop_staging = |admin: &mut Client| {
        let _ = admin.batch_execute(&format!("DROP DATABASE {}", quote_ident(&staging)));
    };
    if let Err(err) = leftovers::mark(&mut admin, &staging, Kind::Staging) {
        drop_staging(&mut admin);
        return Err(err.into());
    }
    let staging_url = url.with_database(&staging);
    // The staging database is empty: nothing to clean.
    let into_staging = RestoreOptions {
        clean: false,
        ..*options
    };
    if let Err(err) = run_restore(binaries, format, path, &staging_url, &into_staging) {
        drop_staging(&mut admin);
        return Err(err);
    }
    let old = format!("{name}__replaced_{}", std::process::id());
    // One transaction: the target name always points at a whole database, and the
    // database it points at always has the target's settings.
    let mut swap = vec![
        "BEGIN".to_string(),
        format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(&name),
            quote_ident(&old)
        ),
        format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote_ident(&staging),
            quote_ident(&name)
        ),
    ];
    swap.extend(settings.apply_sql(&name));
    swap.push("COMMIT".to_string());
    if let Err(source) = admin.batch_execute(&swap.join(";\n")) {
        let _ = admin.batch_execute("ROLLBACK");
        drop_staging(&mut admin);
        return Err(RestoreError::Swap { name, source });
    }
    Ok(
        match admin.batch_execute(&format!("DROP DATABASE {}", quote_ident(&old))) {
            Ok(()) => Restored::default(),
            Err(err) => Restored {
                replaced_copy_left: Some((old, err.to_string())),
            },
        },
    )
}

#[derive(Debug, thiserror::Error)]
pub enum AfterRestoreError {
    #[error("ANALYZE panicked")]
    AnalyzePanicked,
    #[error("ANALYZE after the restore failed")]
    Analyze(#[source] postgres::Error),
    #[error(transparent)]
    Counts(#[from] postgres::Error),
    #[error("restored row counts differ from the manifest: restored {restored:?}, manifest {manifest:?}")]
    CountsDiffer {
        restored: BTreeMap<String, i64>,
        manifest: BTreeMap<String, i64>,
    },
}

/// ANALYZE of every table and materialized view of the user schemas and, when `count`
/// is set, each table's exact row count, shared out by size over `client` and
/// `analyze_on` so the two largest tables are worked on at once. On each connection a
/// table is counted right after its ANALYZE, which has read its pages (a first read
/// after a bulk load also sets each row's hint bits: the count then finds them set).
pub fn analyze_and_count(
    client: &mut Client,
    mut analyze_on: Client,
    count: bool,
) -> Result<Option<BTreeMap<String, i64>>, AfterRestoreError> {
    let mut tables: Vec<(i64, crate::catalog::UserTable)> = Vec::new();
    for table in crate::catalog::user_tables(client)? {
        let size: i64 = client
            .query_one("SELECT pg_total_relation_size($1::oid)", &[&table.oid])?
            .get(0);
        tables.push((size, table));
    }
    tables.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
    let mut shares: [(i64, Vec<crate::catalog::UserTable>); 2] = Default::default();
    for (size, table) in tables {
        let lighter = if shares[0].0 <= shares[1].0 { 0 } else { 1 };
        shares[lighter].0 += size.max(1);
        shares[lighter].1.push(table);
    }
    let [(_, first), (_, second)] = shares;
    let views = materialized_views(client)?;
    std::thread::scope(|scope| {
        let other = scope.spawn(move || analyze_then_count(&mut analyze_on, &second, &[], count));
        let mut counts = analyze_then_count(client, &first, &views, count)?;
        let others = other
            .join()
            .map_err(|_| AfterRestoreError::AnalyzePanicked)??;
        counts.extend(others);
        Ok(count.then_some(counts))
    })
}

/// ANALYZE of each of `tables` (each counted right after, when `count` is set), then of
/// `views`.
fn analyze_then_count(
    client: &mut Client,
    tables: &[crate::catalog::UserTable],
    views: &[String],
    count: bool,
) -> Result<BTreeMap<String, i64>, AfterRestoreError> {
    let mut counts = BTreeMap::new();
    for table in tables {
        client
            .batch_execute(&format!("ANALYZE {}", table.quoted()))
            .map_err(AfterRestoreError::Analyze)?;
        if count {
            let sql = format!("SELECT count(*) FROM {}", table.quoted());
            let rows: i64 = client.query_one(&sql, &[])?.get(0);
            counts.insert(table.display_name(), rows);
        }
    }
    for view in views {
        client
            .batch_execute(&format!("ANALYZE {view}"))
            .map_err(AfterRestoreError::Analyze)?;
    }
    Ok(counts)
}

/// The materialized views of the user schemas, quoted: ANALYZE covers them too.
fn materialized_views(client: &mut Client) -> Result<Vec<String>, postgres::Error> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'm' AND {}",
        crate::catalog::USER_SCHEMAS
    );
    Ok(client
        .query(&sql, &[])?
        .iter()
        .map(|row| crate::sql::quote_qualified(row.get(0), row.get(1)))
        .collect())
}

/// After a `--clean` restore of a dump that has no `alembic_version_history` (taken
/// before the xtask recorded history), the target's own side table is still there,
/// describing the replaced database: its checksums and times are not this data's. Drops
/// it; returns whether there was one.
pub fn drop_replaced_history(client: &mut Client) -> Result<bool, postgres::Error> {
    let table = crate::version_table::HISTORY_TABLE;
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])?
        .get(0);
    if exists {
        client.batch_execute(&format!("DROP TABLE {}", quote_ident(table)))?;
    }
    Ok(exists)
}

/// The restored row counts against the manifest's.
pub fn compare_counts(
    restored: &BTreeMap<String, i64>,
    manifest: &Manifest,
) -> Result<(), AfterRestoreError> {
    if *restored != manifest.tables {
        return Err(AfterRestoreError::CountsDiffer {
            restored: restored.clone(),
            manifest: manifest.tables.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_beyond_the_archive_are_the_targets_tables_it_does_not_create() {
        let script = "CREATE TABLE public.users (\n    id uuid\n);\nCREATE TABLE \"Odd\".\"Mixed\" (\n);\n-- CREATE TABLE public.commented (\n";
        let existing = [
            "public.users",
            "Odd.Mixed",
            "public.ab_tests",
            "public.commented",
        ]
        .map(String::from);
        assert_eq!(
            tables_beyond(&existing, script),
            ["public.ab_tests", "public.commented"].map(String::from)
        );
    }
}
