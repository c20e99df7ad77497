//! Statements prepared once per session and kept by whoever runs them again and again
//! (verify's marks, row checks, relation reads, seeding and checks; the runner's
//! bookkeeping and statement trace when its caller keeps a session): parsing and
//! planning a catalog query cost as much as running it, several times a revision.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use postgres::types::{ToSql, Type};
use postgres::{GenericClient, Row, Statement};

/// The statements prepared on one session, by their text.
///
/// A `Statement` belongs to the session that prepared it; its name is unique in the
/// process, so using one on another session is an error from the server, never another
/// statement. Whoever keeps a `Prepared` starts a new one with each new session.
#[derive(Clone, Default)]
pub(crate) struct Prepared {
    statements: BTreeMap<String, Statement>,
    /// [`DEALLOCATIONS`] when `statements` were prepared.
    deallocations: u64,
}

/// How many statements that may deallocate a session's prepared statements
/// (`DEALLOCATE ALL`, `DISCARD ALL`) migrations have run in this process: a `Prepared`
/// filled before the last one prepares again. Counted for every session at once (a
/// `Prepared` does not know its session's migrations), which costs only a chain with
/// such a statement a few statements prepared twice.
static DEALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Notes that a migration ran `sql` on some session (see [`DEALLOCATIONS`]). By its
/// text, loosely: a false alarm costs a prepare, a miss a failed run.
pub(crate) fn ran_migration_statement(sql: &str) {
    let lower = sql.to_ascii_lowercase();
    if lower.contains("deallocate") || lower.contains("discard") {
        DEALLOCATIONS.fetch_add(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prepared({} statements)", self.statements.len())
    }
}

/// A statement's parameters with their types (as `query_typed` takes them).
pub(crate) type Params<'a> = [(&'a (dyn ToSql + Sync), Type)];

impl Prepared {
    /// The statement for `sql`, prepared with the parameter types `types` the first time.
    pub fn statement(
        &mut self,
        client: &mut impl GenericClient,
        sql: &str,
        types: &[Type],
    ) -> Result<Statement, postgres::Error> {
        let deallocations = DEALLOCATIONS.load(Ordering::SeqCst);
        if deallocations != self.deallocations {
            // Closing a statement the server no longer has is no error.
            self.statements.clear();
            self.deallocations = deallocations;
        }
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare_typed(sql, types)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    /// Runs `sql` through its prepared statement.
    pub fn query(
        &mut self,
        client: &mut impl GenericClient,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Vec<Row>, postgres::Error> {
        let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
        let statement = self.statement(client, sql, &types)?;
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
        client.query(&statement, &values)
    }

    /// Runs `sql`, which returns one row, through its prepared statement.
    pub fn query_one(
        &mut self,
        client: &mut impl GenericClient,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Row, postgres::Error> {
        let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
        let statement = self.statement(client, sql, &types)?;
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
        client.query_one(&statement, &values)
    }
}

/// Runs `sql` through `prepared` when there is one, else once as it is (one round trip,
/// where preparing it first costs another).
pub(crate) fn query(
    client: &mut impl GenericClient,
    prepared: Option<&mut Prepared>,
    sql: &str,
    params: &Params<'_>,
) -> Result<Vec<Row>, postgres::Error> {
    match prepared {
        Some(prepared) => prepared.query(client, sql, params),
        None => client.query_typed(sql, params),
    }
}

/// As [`query`], for a statement that returns exactly one row.
pub(crate) fn query_one(
    client: &mut impl GenericClient,
    prepared: Option<&mut Prepared>,
    sql: &str,
    params: &Params<'_>,
) -> Result<Row, postgres::Error> {
    match prepared {
        Some(prepared) => prepared.query_one(client, sql, params),
        None => client.query_typed_one(sql, params),
    }
}
