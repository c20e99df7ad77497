//! What each statement of a migration really did to the tables that existed before it
//! (`verify`'s trace): the locks it took, by mode and table, whether it rewrote a table
//! (its file node changed), whether it read one from end to end (a sequential scan
//! counted in `pg_stat_xact_user_tables`), how many rows it inserted, updated or deleted
//! there (the same view's counters, so only inside a migration's transaction), and how
//! long it ran.

use std::collections::BTreeMap;
use std::time::Duration;

use postgres::GenericClient;

use crate::declarative::plan::LockMode;
use crate::prepared::Prepared;

/// One statement, as the server saw it run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementTrace {
    /// 1-based line of the statement's first keyword in its file.
    pub line: usize,
    pub sql: String,
    pub elapsed: Duration,
    /// Locks on pre-existing tables this statement took or strengthened.
    pub locks: Vec<(String, LockMode)>,
    /// The strongest lock held on each pre-existing table when it ended (taken by it
    /// or earlier in the transaction): what its work ran under.
    pub held: Vec<(String, LockMode)>,
    /// Pre-existing tables whose file node it changed.
    pub rewritten: Vec<String>,
    /// Pre-existing tables it read with a sequential scan.
    pub scanned: Vec<String>,
    /// Rows it inserted, updated or deleted in each pre-existing table (counted within
    /// the migration's transaction: a statement run on its own shows none).
    pub rows: Vec<(String, i64)>,
}

/// The state of every traced table at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableStates(BTreeMap<u32, TableState>);

#[derive(Debug, Clone)]
struct TableState {
    name: String,
    file_node: u32,
    seq_scans: i64,
    rows: i64,
    strongest: Option<LockMode>,
}

/// The tables a trace watches: the ones of the user schemas before the migration runs.
pub(crate) fn existing_tables(
    client: &mut impl GenericClient,
    prepared: Option<&mut Prepared>,
) -> Result<Vec<u32>, postgres::Error> {
    Ok(crate::catalog::user_tables_with(client, prepared)?
        .into_iter()
        .filter(|t| !t.is_version_table())
        .map(|t| t.oid)
        .collect())
}

impl TableStates {
    pub(crate) fn capture(
        client: &mut impl GenericClient,
        prepared: Option<&mut Prepared>,
        tables: &[u32],
    ) -> Result<TableStates, postgres::Error> {
        // Partitions are tables of their own (a partitioned parent has no storage).
        // `pg_locks` is read once and grouped (a per-table subquery read it once per
        // table), and the counters come from the functions behind
        // `pg_stat_xact_user_tables` (the view reads every relation of the database):
        // this runs after every statement, so its cost must not grow with the schema.
        let rows = crate::prepared::query(
            client,
            prepared,
            "WITH traced AS (
                  SELECT unnest($1::oid[]) AS oid
                  UNION SELECT inhrelid FROM pg_inherits WHERE inhparent = ANY($1)),
                  held AS (
                  SELECT l.relation, array_agg(l.mode::text) AS modes FROM pg_locks l
                   WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
                   GROUP BY l.relation)
             SELECT c.oid, c.relname::text, c.relfilenode,
                    pg_stat_get_xact_numscans(c.oid)::int8,
                    (pg_stat_get_xact_tuples_inserted(c.oid) + pg_stat_get_xact_tuples_updated(c.oid)
                     + pg_stat_get_xact_tuples_deleted(c.oid))::int8,
                    COALESCE(h.modes, ARRAY[]::text[])
               FROM traced t
               JOIN pg_class c ON c.oid = t.oid
               LEFT JOIN held h ON h.relation = c.oid",
            &[(&tables, postgres::types::Type::OID_ARRAY)],
        )?;
        Ok(TableStates(
            rows.iter()
                .map(|r| {
                    let modes: Vec<String> = r.get(5);
                    let strongest = modes.iter().filter_map(|m| LockMode::from_pg_name(m)).max();
                    (
                        r.get(0),
                        TableState {
                            name: r.get(1),
                            file_node: r.get(2),
                            seq_scans: r.get(3),
                            rows: r.get(4),
                            strongest,
                        },
                    )
                })
                .collect(),
        ))
    }

    /// The strongest lock held on each of `tables` (not their partitions) at this
    /// moment, as "Mode on table": the migration's lock profile, read from the trace's
    /// last state instead of asking `pg_locks` once more.
    pub(crate) fn held_on(&self, tables: &[u32]) -> Vec<String> {
        let mut strongest: BTreeMap<&str, LockMode> = BTreeMap::new();
        for state in tables.iter().filter_map(|oid| self.0.get(oid)) {
            if let Some(mode) = state.strongest {
                let entry = strongest.entry(&state.name).or_insert(mode);
                *entry = (*entry).max(mode);
            }
        }
        strongest
            .into_iter()
            .map(|(table, mode)| format!("{mode} on {table}"))
            .collect()
    }

    /// What changed from `before` to `self`, as one statement's trace.
    pub(crate) fn since(
        &self,
        before: &TableStates,
        statement: &crate::sql_split::Statement,
        elapsed: Duration,
    ) -> StatementTrace {
        let mut trace = StatementTrace {
            line: statement.line,
            sql: statement.sql.clone(),
            elapsed,
            locks: Vec::new(),
            held: Vec::new(),
            rewritten: Vec::new(),
            scanned: Vec::new(),
            rows: Vec::new(),
        };
        for (oid, now) in &self.0 {
            let Some(old) = before.0.get(oid) else {
                continue;
            };
            if let Some(mode) = now.strongest.filter(|m| Some(*m) > old.strongest) {
                trace.locks.push((now.name.clone(), mode));
            }
            if let Some(mode) = now.strongest {
                trace.held.push((now.name.clone(), mode));
            }
            // A relfilenode of 0 is a mapped or storage-less relation: never a rewrite.
            if now.file_node != old.file_node && old.file_node != 0 {
                trace.rewritten.push(now.name.clone());
            }
            if now.seq_scans > old.seq_scans {
                trace.scanned.push(now.name.clone());
            }
            if now.rows > old.rows {
                trace.rows.push((now.name.clone(), now.rows - old.rows));
            }
        }
        trace
    }
}
