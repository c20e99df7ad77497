//! Drift (`migrate drift`): how a live database's schema differs from the schema its
//! recorded revision should have, one difference per object part, and the SQL that
//! brings it back where the declarative planner can write it. Data is ignored; the live
//! database is only read, in a read-only transaction under a lock timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::catalog::objects::Objects;
use crate::catalog::Catalog;
use crate::declarative::plan::{plan, Plan, PlanError, Renames};
use crate::graph::RevisionGraph;
use crate::snapshot::SchemaSnapshot;

/// What the live database holds: its recorded heads and its objects, read in one snapshot.
#[derive(Debug, Clone)]
pub struct LiveSchema {
    pub heads: Vec<String>,
    pub objects: Objects,
    /// `server_version_num`, e.g. 150004.
    pub server_version_num: i32,
}

/// Reads the recorded heads and the schema in one read-only, repeatable-read
/// transaction, so the two agree even while a migration commits; every statement gives
/// up after `lock_timeout` rather than queue behind an `ACCESS EXCLUSIVE` lock, and the
/// transaction is rolled back: nothing is ever written.
pub fn read_live(
    client: &mut postgres::Client,
    lock_timeout: Duration,
) -> Result<LiveSchema, DriftError> {
    let mut tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .start()
        .map_err(DriftError::live("starting a read-only transaction"))?;
    let millis = format!("{}ms", lock_timeout.as_millis().max(1));
    tx.execute("SELECT set_config('lock_timeout', $1, true)", &[&millis])
        .map_err(DriftError::live("setting lock_timeout"))?;
    crate::search_path::check(&mut tx, None)
        .map_err(DriftError::live("reading the search_path"))?
        .map_err(Box::new)?;
    let heads = crate::version_table::read_heads(&mut tx)
        .map_err(DriftError::live("reading alembic_version"))?;
    // Definitions name what is not on the search_path with its schema: read them as
    // the expected schema was read, with public alone.
    tx.execute(
        "SELECT set_config('search_path', $1, true)",
        &[&crate::search_path::SCHEMA],
    )
    .map_err(DriftError::live("setting search_path"))?;
    let objects = Objects::read(&mut tx).map_err(DriftError::live("reading the catalogs"))?;
    let server_version_num =
        server_version_num(&mut tx).map_err(DriftError::live("reading server_version_num"))?;
    tx.rollback()
        .map_err(DriftError::live("ending the read-only transaction"))?;
    Ok(LiveSchema {
        heads,
        objects,
        server_version_num,
    })
}

/// The server's `server_version_num` (150004 for 15.4).
pub fn server_version_num(
    client: &mut impl postgres::GenericClient,
) -> Result<i32, postgres::Error> {
    let row = client.query_one("SELECT current_setting('server_version_num')::int", &[])?;
    Ok(row.get(0))
}

/// A warning when the expected schema was built on another major version than the
/// live server's: each version words some definitions (`pg_get_*def`) its own way, so
/// those may show as differences that are not drift.
pub fn version_note(expected: i32, live: i32) -> Option<String> {
    let (built, runs) = (expected / 10000, live / 10000);
    (built != runs).then(|| {
        format!(
            "the expected schema was built on PostgreSQL {built} and the database runs {runs}: \
             a definition the two versions word differently shows as a difference; for an exact \
             comparison build it on {runs} (`cargo xtask migrate drift` with PostgreSQL {runs}'s \
             server programs installed, or `cargo xtask dist` there)"
        )
    })
}

/// The schema a revision should have, and the server version it was built on.
#[derive(Debug, Clone)]
pub struct Expected {
    pub objects: Objects,
    pub server_version_num: i32,
}

/// The schema right after `heads`, built from the chain in a throwaway cluster.
pub fn expected(graph: &RevisionGraph, heads: &[String]) -> Result<Expected, DriftError> {
    if let Some(unknown) = heads.iter().find(|h| graph.get(h).is_none()) {
        return Err(DriftError::UnknownRevision {
            revision: unknown.clone(),
            dir: graph.dir().to_path_buf(),
        });
    }
    let cluster = crate::cluster::TempCluster::start()?;
    cluster.create_database("drift", None)?;
    let mut client = cluster.client("drift")?;
    for head in heads {
        let mut migrator =
            crate::runner::Migrator::new(&mut client, graph, crate::runner::RunOptions::default());
        migrator.upgrade(head)?;
    }
    let objects =
        Objects::read(&mut client).map_err(DriftError::live("reading the expected schema"))?;
    let server_version_num =
        server_version_num(&mut client).map_err(DriftError::live("reading server_version_num"))?;
    Ok(Expected {
        objects,
        server_version_num,
    })
}

/// How the live schema differs from the expected one.
#[derive(Debug)]
pub struct Drift {
    pub differences: Vec<Difference>,
    /// SQL turning the live `public` schema back into the expected one, from the
    /// declarative planner; `Err` when the planner refuses the change.
    pub repair: Result<Plan, PlanError>,
    /// Differences of kinds the planner does not write, each with SQL when it is one
    /// obvious statement (`CREATE EXTENSION`, the function's own definition).
    pub by_hand: Vec<(Difference, Option<String>)>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.differences.is_empty()
    }
}

/// One part of one object that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// `table`, `column`, `index`, `constraint`, `policy`, `type`, `function`,
    /// `extension`, `trigger`, `grant`, `sequence`, `view`, `row level security`, `comment`.
    pub kind: String,
    /// The object's name, schema-qualified outside `public`: `leads`, `leads.score`,
    /// `leads.ix_leads_email`, `audit.events`.
    pub name: String,
    pub change: Change,
    /// Whether the declarative planner writes it back (`Drift::repair`): tables of
    /// `public` and their columns, constraints, indexes, row level security, policies
    /// and comments, and `public`'s enum types.
    pub planner: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The revision has it; the database does not.
    Missing {
        expected: String,
    },
    /// The database has it; the revision does not.
    Unexpected {
        found: String,
    },
    Changed {
        expected: String,
        found: String,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, name) = (&self.kind, &self.name);
        match &self.change {
            Change::Missing { expected } => {
                write!(f, "{kind} {name}: missing (expected: {expected})")
            }
            Change::Unexpected { found } => write!(f, "{kind} {name}: unexpected (found: {found})"),
            Change::Changed { expected, found } => {
                write!(
                    f,
                    "{kind} {name}: changed (expected: {expected}; found: {found})"
                )
            }
        }
    }
}

/// Compares `live` with `expected`.
pub fn compare(expected: &Objects, live: &Objects) -> Drift {
    let want = SchemaSnapshot::render(expected);
    let have = SchemaSnapshot::render(live);
    let mut differences = Vec::new();
    let keys: std::collections::BTreeSet<&String> =
        want.objects.keys().chain(have.objects.keys()).collect();
    for key in keys {
        let (kind, name) = split_key(key);
        // Snapshot names are unqualified in `public` only.
        let planner =
            !name.contains('.') && ["table", "type", "view", "function"].contains(&kind.as_str());
        match (want.objects.get(key), have.objects.get(key)) {
            (Some(lines), None) => differences.push(Difference {
                kind,
                name,
                change: Change::Missing {
                    expected: summary(lines),
                },
                planner,
            }),
            (None, Some(lines)) => differences.push(Difference {
                kind,
                name,
                change: Change::Unexpected {
                    found: summary(lines),
                },
                planner,
            }),
            (Some(a), Some(b)) if a != b => parts(&kind, &name, planner, a, b, &mut differences),
            _ => {}
        }
    }
    let (from, to) = (Catalog::public(live), Catalog::public(expected));
    let repair = plan(
        &without_invalid_indexes(from, live, &to),
        &to,
        &renamed_tables(&want, &have),
    );
    let by_hand = differences
        .iter()
        .filter(|d| !d.planner)
        .map(|d| (d.clone(), hand_sql(d, expected)))
        .collect();
    Drift {
        differences,
        repair,
        by_hand,
    }
}

/// `live` without the INVALID indexes (a failed `CREATE INDEX CONCURRENTLY`'s) the
/// expected schema has by the same name: the planner compares definitions only, so it
/// took such an index for the valid one and wrote nothing; as missing, it is dropped
/// and built again (`DROP INDEX CONCURRENTLY IF EXISTS`, then `CREATE ... CONCURRENTLY`).
/// An INVALID index the expected schema lacks stays, so the planner drops it.
fn without_invalid_indexes(mut live: Catalog, objects: &Objects, expected: &Catalog) -> Catalog {
    for index in objects
        .indexes
        .iter()
        .filter(|i| !i.valid && i.schema == "public")
    {
        let expected_has = expected
            .tables
            .get(&index.table)
            .is_some_and(|t| t.indexes.contains_key(&index.name));
        if let Some(table) = live.tables.get_mut(&index.table).filter(|_| expected_has) {
            table.indexes.remove(&index.name);
        }
    }
    live
}

/// Tables of `public` the live database holds under another name: a missing table and
/// an unexpected one with the same columns, keys, indexes and policies, each the only
/// match of the other. Without this the planner's way back creates an empty table and
/// drops the one holding the rows (and fails on the index names the old one still has).
fn renamed_tables(want: &SchemaSnapshot, have: &SchemaSnapshot) -> Renames {
    let only_in = |a: &SchemaSnapshot, b: &SchemaSnapshot| -> Vec<(String, Vec<String>)> {
        a.objects
            .iter()
            .filter(|(key, _)| !b.objects.contains_key(*key))
            .filter_map(|(key, lines)| {
                let name = key.strip_prefix("table ")?;
                (!name.contains('.')).then(|| (name.to_string(), lines.clone()))
            })
            .collect()
    };
    let (missing, unexpected) = (only_in(want, have), only_in(have, want));
    let mut renames = Renames::default();
    for (new, lines) in &missing {
        let same = |list: &[(String, Vec<String>)]| -> Vec<String> {
            list.iter()
                .filter(|(_, other)| other == lines)
                .map(|(name, _)| name.clone())
                .collect()
        };
        if let ([old], [_]) = (same(&unexpected).as_slice(), same(&missing).as_slice()) {
            renames.tables.insert(old.clone(), new.clone());
        }
    }
    renames
}

/// `table public.leads` -> (`table`, `public.leads`); `materialized view x` keeps both words.
fn split_key(key: &str) -> (String, String) {
    for word in [
        "materialized view",
        "table",
        "view",
        "type",
        "function",
        "sequence",
        "extension",
    ] {
        if let Some(rest) = key.strip_prefix(word).and_then(|r| r.strip_prefix(' ')) {
            return (word.to_string(), rest.to_string());
        }
    }
    ("object".into(), key.to_string())
}

fn summary(lines: &[String]) -> String {
    lines.join("; ")
}

/// The differing parts of one object present on both sides, each named by its kind
/// and name (a column, an index, a policy...), paired when both sides have it.
fn parts(
    object_kind: &str,
    object: &str,
    planner: bool,
    expected: &[String],
    found: &[String],
    out: &mut Vec<Difference>,
) {
    let index = |lines: &[String]| -> BTreeMap<(String, String), Vec<String>> {
        let mut map: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for line in lines {
            map.entry(part_of(line)).or_default().push(line.clone());
        }
        map
    };
    let (want, have) = (index(expected), index(found));
    let keys: std::collections::BTreeSet<&(String, String)> =
        want.keys().chain(have.keys()).collect();
    for key in keys {
        let (kind, part) = key;
        let name = match part.is_empty() {
            true => object.to_string(),
            false => format!("{object}.{part}"),
        };
        let change = match (want.get(key), have.get(key)) {
            (Some(a), None) => Change::Missing {
                expected: summary(a),
            },
            (None, Some(b)) => Change::Unexpected { found: summary(b) },
            (Some(a), Some(b)) if a != b => Change::Changed {
                expected: summary(a),
                found: summary(b),
            },
            _ => continue,
        };
        out.push(Difference {
            // The planner writes neither grants nor comments on functions or view columns.
            planner: planner
                && kind != "grant"
                && !(kind == "comment"
                    && (object_kind == "function" || (object_kind == "view" && !part.is_empty()))),
            // A type's values, a view's query, a function's body: the object itself.
            kind: match kind.as_str() {
                "definition" => object_kind.to_string(),
                _ => kind.clone(),
            },
            name,
            change,
        });
    }
}

/// The kind and name of a snapshot line: `column score integer` -> (`column`, `score`).
fn part_of(line: &str) -> (String, String) {
    let word = |prefix: &str| {
        line.strip_prefix(prefix)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default()
            .trim_end_matches(':')
            .to_string()
    };
    for kind in ["column", "constraint", "index", "policy", "trigger"] {
        if line.starts_with(&format!("{kind} ")) {
            return (kind.into(), word(&format!("{kind} ")));
        }
    }
    if line.starts_with("grant ") {
        let grantee = line.rsplit(" to ").next().unwrap_or_default();
        return ("grant".into(), format!("grant to {grantee}"));
    }
    // `comment on index ix: text` names its part; `comment on table: text` is the
    // object's own.
    if let Some(rest) = line.strip_prefix("comment on ") {
        let target = rest.split(':').next().unwrap_or_default();
        let mut words = target.split_whitespace();
        let part = match words.next() {
            Some("column" | "index" | "constraint" | "policy" | "trigger") => {
                words.next().unwrap_or_default()
            }
            _ => "",
        };
        return ("comment".into(), part.to_string());
    }
    if line.starts_with("row level security") {
        return ("row level security".into(), String::new());
    }
    // A type's values, a view's query, a function's body, a sequence's options.
    ("definition".into(), String::new())
}

/// The one statement that restores a difference the planner does not write, when there
/// is an obvious one.
fn hand_sql(difference: &Difference, expected: &Objects) -> Option<String> {
    match (difference.kind.as_str(), &difference.change) {
        ("extension", Change::Missing { .. }) => Some(format!(
            "CREATE EXTENSION IF NOT EXISTS {};",
            crate::sql::ident(&difference.name)
        )),
        ("extension", Change::Unexpected { .. }) => Some(format!(
            "DROP EXTENSION {};  -- check nothing uses it first",
            crate::sql::ident(&difference.name)
        )),
        ("function", Change::Unexpected { .. }) => {
            Some(format!("DROP FUNCTION {};", difference.name))
        }
        ("function", _) => expected
            .functions
            .iter()
            .find(|f| crate::sql::display_name(&f.schema, &f.signature) == difference.name)
            .map(|f| format!("{};", f.definition.trim_end())),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    #[error("{step} failed: {}", crate::sqlstate::explain(source))]
    Live {
        step: &'static str,
        source: postgres::Error,
    },
    #[error(
        "the database records revision {revision}, which no migration in {} has; \
         drift compares against the chain that recorded it: run from the release that applied it, or pass its --migrations",
        dir.display()
    )]
    UnknownRevision {
        revision: String,
        dir: std::path::PathBuf,
    },
    #[error(transparent)]
    SearchPath(#[from] Box<crate::search_path::ForeignSearchPath>),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Migrate(#[from] crate::runner::MigrateError),
}

impl DriftError {
    fn live(step: &'static str) -> impl FnOnce(postgres::Error) -> DriftError {
        move |source| DriftError::Live { step, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_major_version_is_named_and_a_minor_one_is_not() {
        assert_eq!(version_note(150004, 150010), None);
        let note = version_note(150004, 160002).unwrap();
        assert!(
            note.contains("built on PostgreSQL 15 and the database runs 16"),
            "{note}"
        );
        assert!(note.contains("PostgreSQL 16's server programs"), "{note}");
    }
}
