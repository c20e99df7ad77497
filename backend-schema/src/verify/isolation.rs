//! Tenant isolation, tested as the application would run: an ordinary role (not
//! owner, not superuser, no BYPASSRLS) with table privileges, and the tenant set per
//! transaction with `set_config('app.current_tenant_id', ..., true)`.

use std::collections::BTreeMap;
use std::fmt;

use postgres::Client;
use serde::{Deserialize, Serialize};

use super::seed::tenant_uuid;
use crate::catalog::user_tables_with;
use crate::prepared::Prepared;
use crate::sql::quote_ident;

const APP_ROLE: &str = "verify_tenant_app";

/// The isolation verdict at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    /// Tables whose policies were exercised.
    pub checked: Vec<String>,
    pub failures: Vec<IsolationFailure>,
    pub warnings: Vec<String>,
    /// Tables that refuse every row (an error, or none) when no tenant is set: the
    /// safe way to fail, said once per run.
    pub fail_closed: Vec<String>,
}

/// What went wrong with a table's policies, the worst first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// A tenant sees or writes another tenant's rows.
    Leak,
    /// With no tenant set, rows are visible: the policy fails open.
    FailOpen,
    /// A tenant sees none of its own rows: the policy hides everything.
    OwnRowsHidden,
}

impl Verdict {
    /// The word of the verdict column.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Leak => "LEAK",
            Verdict::FailOpen => "FAIL-OPEN",
            Verdict::OwnRowsHidden => "BROKEN",
        }
    }
}

/// One failed isolation check of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationFailure {
    pub table: String,
    pub verdict: Verdict,
    pub detail: String,
}

impl fmt::Display for IsolationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in {}: {}",
            self.verdict.label(),
            self.table,
            self.detail
        )
    }
}

/// A second session on the same database that never sets `app.current_tenant_id`: only
/// there is it truly absent (`NULL` to `current_setting(..., true)`; once set, a session
/// sees `''` for good). Opened when a check first needs it and kept for the next ones,
/// until a migration changes the defaults a new session starts with (`ALTER DATABASE` or
/// `ALTER ROLE ... SET`): the application's sessions see those, a session opened before
/// them does not, and a segment that replayed the migration opens its session after it.
pub struct UntouchedSession<F> {
    connect: F,
    client: Option<(Client, String)>,
}

/// Every per-database and per-role default a new session starts with.
const SESSION_DEFAULTS: &str = "SELECT coalesce(string_agg(
        setdatabase::text || '/' || setrole::text || '/' || array_to_string(setconfig, chr(31)),
        chr(30) ORDER BY setdatabase, setrole), '')
   FROM pg_db_role_setting";

impl<F: FnMut() -> Result<Client, postgres::Error>> UntouchedSession<F> {
    pub fn new(connect: F) -> UntouchedSession<F> {
        UntouchedSession {
            connect,
            client: None,
        }
    }

    /// Ends the session (the next check opens a new one): a database cannot be copied
    /// while anyone is connected to it.
    pub fn close(&mut self) {
        self.client = None;
    }

    fn client(&mut self) -> Result<&mut Client, postgres::Error> {
        let stale = match &mut self.client {
            Some((client, defaults)) => {
                let now: String = client.query_one(SESSION_DEFAULTS, &[])?.get(0);
                now != *defaults
            }
            None => true,
        };
        if stale {
            let mut client = (self.connect)()?;
            let defaults = client.query_one(SESSION_DEFAULTS, &[])?.get(0);
            self.client = Some((client, defaults));
        }
        Ok(&mut self.client.as_mut().expect("connected above").0)
    }
}

/// Checks every table that has policies; warns about tenant tables without a policy
/// and RLS tables without FORCE.
pub(crate) fn check<F: FnMut() -> Result<Client, postgres::Error>>(
    client: &mut Client,
    prepared: &mut Prepared,
    untouched: &mut UntouchedSession<F>,
) -> Result<Isolation, postgres::Error> {
    let mut result = Isolation::default();
    // Only `public`: the application role is granted `public`'s tables, and the rows the
    // policies are tried on are the seeded ones, which go there.
    let oids: Vec<u32> = user_tables_with(client, Some(prepared))?
        .into_iter()
        .filter(|t| t.schema == "public")
        .map(|t| t.oid)
        .collect();
    let tables = prepared.query(
        client,
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid),
                (SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
           FROM pg_class c
          WHERE c.oid = ANY($1) AND NOT c.relispartition
          ORDER BY 1",
        &[(&oids, postgres::types::Type::OID_ARRAY)],
    )?;
    if !tables.iter().any(|t| t.get::<_, bool>(3)) {
        return Ok(result);
    }
    // The role is cluster-wide; the grants live in transactions that are rolled back, so
    // the schema under test is left exactly as the migrations made it.
    create_app_role(client)?;
    let policy_tables: Vec<String> = tables
        .iter()
        .filter(|t| t.get::<_, bool>(3))
        .map(|t| t.get(0))
        .collect();
    // Before the outer transaction: both grant on the same tables, and the second
    // would wait for the first.
    let absent = rows_without_tenant(untouched.client()?, &policy_tables)?;
    let mut outer = client.transaction()?;
    outer.batch_execute(&grants())?;
    let client = &mut outer;
    let (a, b) = (tenant_uuid(0), tenant_uuid(1));
    for table in &tables {
        let name: String = table.get(0);
        let (rls, force, has_policy): (bool, bool, bool) =
            (table.get(1), table.get(2), table.get(3));
        let tenant_type: Option<String> = table.get(4);
        if tenant_type.is_some() && !(rls && has_policy) {
            result.warnings.push(format!("table {name} has tenant_id but no row-level security policy: every tenant sees every row"));
            continue;
        }
        if !has_policy {
            continue;
        }
        if rls && !force {
            result.warnings.push(format!(
                "table {name} has RLS without FORCE: its owner bypasses the policies"
            ));
        }
        let Some(tenant_type) = tenant_type else {
            // A policy through other tables (a join to a tenant's parent row): which
            // tenant a row belongs to is the policy's to say, but no row may be visible
            // to both tenants.
            by_visibility(
                client,
                &name,
                &a,
                &b,
                absent.get(&name).copied().flatten(),
                &mut result,
            )?;
            continue;
        };
        let quoted = quote_ident(&name);
        // Only tables seeded for both tenants can be judged; one the seeder could not
        // fill is named in its own warning.
        let seeded = client.query_one(
            &format!("SELECT count(*) FILTER (WHERE tenant_id::text = $1), count(*) FILTER (WHERE tenant_id::text = $2) FROM {quoted}"),
            &[&a, &b],
        )?;
        if seeded.get::<_, i64>(0) == 0 || seeded.get::<_, i64>(1) == 0 {
            continue;
        }
        result.checked.push(name.clone());
        let mut fail = |verdict, detail: String| {
            result.failures.push(IsolationFailure {
                table: name.clone(),
                verdict,
                detail,
            })
        };

        // Positive control and isolation: tenant A sees its rows, and only those.
        let (mine, others) = as_tenant(client, Some(&a), |tx| {
            let row = tx.query_one(
                &format!("SELECT count(*) FILTER (WHERE tenant_id::text = $1), count(*) FILTER (WHERE tenant_id::text <> $1) FROM {quoted}"),
                &[&a],
            )?;
            Ok((row.get::<_, i64>(0), row.get::<_, i64>(1)))
        })?
        .unwrap_or((0, 0));
        if mine == 0 {
            fail(
                Verdict::OwnRowsHidden,
                "tenant A sees none of its own rows (positive control failed)".into(),
            );
        }
        if others != 0 {
            fail(
                Verdict::Leak,
                format!("tenant A sees {others} rows of other tenants"),
            );
        }

        // Writes into tenant B must be refused.
        let moved = as_tenant(client, Some(&a), |tx| {
            tx.execute(&format!("UPDATE {quoted} SET tenant_id = $1::text::{tenant_type} WHERE tenant_id::text = $2"), &[&b, &a])
        })?;
        if moved.is_ok_and(|n| n > 0) {
            fail(
                Verdict::Leak,
                "tenant A could move its rows to tenant B".into(),
            );
        }
        let insert = insert_into_other_tenant(client, &name, &tenant_type, &a, &b)?;
        if insert.is_ok_and(|n| n > 0) {
            fail(
                Verdict::Leak,
                "tenant A could insert a row for tenant B".into(),
            );
        }

        // Without a tenant (absent, or empty after a previous transaction): an error or
        // no rows is failing closed; rows are failing open.
        let mut closed = true;
        let empty = as_tenant(client, Some(""), |tx| {
            tx.query_one(&format!("SELECT count(*) FROM {quoted}"), &[])
                .map(|r| r.get::<_, i64>(0))
        })?
        .ok();
        let absent = absent.get(&name).copied().flatten();
        for (label, seen) in [("absent", absent), ("empty", empty)] {
            if let Some(rows @ 1..) = seen {
                closed = false;
                fail(
                    Verdict::FailOpen,
                    format!("with app.current_tenant_id {label}, {rows} rows are visible"),
                );
            }
        }
        if closed {
            result.fail_closed.push(name.clone());
        }
    }
    outer.rollback()?;
    Ok(result)
}

/// Checks a policy table without `tenant_id`: each tenant sees some rows, none of them
/// the other's, and none without a tenant.
fn by_visibility(
    client: &mut postgres::Transaction<'_>,
    name: &str,
    a: &str,
    b: &str,
    absent: Option<i64>,
    result: &mut Isolation,
) -> Result<(), postgres::Error> {
    let quoted = quote_ident(name);
    let rows_of = |client: &mut postgres::Transaction<'_>, tenant: Option<&str>| {
        as_tenant(client, tenant, |tx| {
            tx.query(&format!("SELECT ctid::text FROM {quoted}"), &[])
                .map(|rows| {
                    rows.iter()
                        .map(|r| r.get::<_, String>(0))
                        .collect::<Vec<_>>()
                })
        })
        .map(|r| r.unwrap_or_default())
    };
    let seen_by_a = rows_of(client, Some(a))?;
    let seen_by_b = rows_of(client, Some(b))?;
    if seen_by_a.is_empty() || seen_by_b.is_empty() {
        // Nothing of one tenant is visible: unseeded, or a policy that hides all; a
        // table without tenant_id gives no way to tell which, so it is not judged.
        return Ok(());
    }
    result.checked.push(name.to_string());
    let both = seen_by_a.iter().filter(|r| seen_by_b.contains(r)).count();
    if both > 0 {
        result.failures.push(IsolationFailure {
            table: name.to_string(),
            verdict: Verdict::Leak,
            detail: format!("{both} rows are visible to both tenant A and tenant B"),
        });
    }
    match absent {
        Some(rows @ 1..) => result.failures.push(IsolationFailure {
            table: name.to_string(),
            verdict: Verdict::FailOpen,
            detail: format!("with app.current_tenant_id absent, {rows} rows are visible"),
        }),
        _ => result.fail_closed.push(name.to_string()),
    }
    Ok(())
}

fn grants() -> String {
    format!(
        "GRANT USAGE ON SCHEMA public TO {APP_ROLE};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE};"
    )
}

/// How many rows of each table the app role sees in a session that never set a
/// tenant; `None` where the query fails (failing closed).
fn rows_without_tenant(
    fresh: &mut Client,
    tables: &[String],
) -> Result<BTreeMap<String, Option<i64>>, postgres::Error> {
    let mut seen = BTreeMap::new();
    let mut tx = fresh.transaction()?;
    tx.batch_execute(&grants())?;
    for table in tables {
        let rows = as_tenant(&mut tx, None, |tx| {
            tx.query_one(&format!("SELECT count(*) FROM {}", quote_ident(table)), &[])
                .map(|r| r.get::<_, i64>(0))
        })?;
        seen.insert(table.clone(), rows.ok());
    }
    tx.rollback()?;
    Ok(seen)
}

/// Runs `f` in a savepoint as the app role, with the tenant set (or not); rolls back.
/// The outer error is infrastructure; the inner one is what the role was refused.
fn as_tenant<T>(
    client: &mut postgres::Transaction<'_>,
    tenant: Option<&str>,
    f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, postgres::Error>,
) -> Result<Result<T, postgres::Error>, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!("SET LOCAL ROLE {APP_ROLE}"))?;
    if let Some(tenant) = tenant {
        tx.execute(
            "SELECT set_config('app.current_tenant_id', $1, true)",
            &[&tenant],
        )?;
    }
    let result = f(&mut tx);
    tx.rollback()?;
    Ok(result)
}

fn insert_into_other_tenant(
    client: &mut postgres::Transaction<'_>,
    table: &str,
    tenant_type: &str,
    a: &str,
    b: &str,
) -> Result<Result<u64, postgres::Error>, postgres::Error> {
    let columns: Vec<String> = client
        .query(
            // Generated and identity columns are the server's to fill.
            "SELECT attname::text FROM pg_attribute
              WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped
                AND attgenerated = '' AND attidentity = ''
                AND NOT (attname = 'id' AND atttypid <> 'uuid'::regtype)
              ORDER BY attnum",
            &[&quote_ident(table)],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let select: Vec<String> = columns
        .iter()
        .map(|c| match c.as_str() {
            "tenant_id" => format!("$1::text::{tenant_type}"),
            "id" => "gen_random_uuid()".to_string(),
            other => quote_ident(other),
        })
        .collect();
    let names: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let sql = format!(
        "INSERT INTO {table} ({}) SELECT {} FROM {table} WHERE tenant_id::text = $2 LIMIT 1",
        names.join(", "),
        select.join(", "),
        table = quote_ident(table)
    );
    as_tenant(client, Some(a), |tx| tx.execute(&sql, &[&b, &a]))
}

/// The role the checks run as; cluster-wide, so it outlives the rolled-back checks (and
/// a resumed run creates it where a full run would have).
pub(crate) fn create_app_role(client: &mut Client) -> Result<(), postgres::Error> {
    client.batch_execute(&format!(
        "DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS;
            END IF;
         END $$;"
    ))
}

/// Whether a table of `public` has a policy: the check then runs, and creates its role.
pub(crate) fn has_policies(client: &mut Client) -> Result<bool, postgres::Error> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_policy p
                              JOIN pg_class c ON c.oid = p.polrelid
                              JOIN pg_namespace n ON n.oid = c.relnamespace
                             WHERE n.nspname = 'public' AND NOT c.relispartition)",
            &[],
        )?
        .get(0))
}
