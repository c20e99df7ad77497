//! Tenant isolation, tested as the application would run: an ordinary role (not
//! owner, not superuser, no BYPASSRLS) with table privileges, and the tenant set per
//! transaction with `set_config('app.current_tenant_id', ..., true)`.

use postgres::Client;

use super::seed::tenant_uuid;
use crate::catalog::user_tables;
use crate::sql::quote_ident;

const APP_ROLE: &str = "verify_tenant_app";

/// The isolation verdict at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    /// Tables whose policies were exercised.
    pub checked: Vec<String>,
    pub failures: Vec<String>,
    pub warnings: Vec<String>,
}

/// Checks every table that has policies; warns about tenant tables without a policy
/// and RLS tables without FORCE.
pub fn check(client: &mut Client) -> Result<Isolation, postgres::Error> {
    let mut result = Isolation::default();
    // Only `public`: the application role is granted `public`'s tables, and the rows the
    // policies are tried on are the seeded ones, which go there.
    let oids: Vec<u32> = user_tables(client)?
        .into_iter()
        .filter(|t| t.schema == "public")
        .map(|t| t.oid)
        .collect();
    let tables = client.query(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid),
                EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
           FROM pg_class c
          WHERE c.oid = ANY($1)
          ORDER BY 1",
        &[&oids],
    )?;
    if !tables.iter().any(|t| t.get::<_, bool>(3)) {
        return Ok(result);
    }
    // The role is cluster-wide; the grants live in a transaction that is rolled back, so
    // the schema under test is left exactly as the migrations made it.
    client.batch_execute(&format!(
        "DO $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS;
            END IF;
         END $$;"
    ))?;
    let mut outer = client.transaction()?;
    outer.batch_execute(&format!(
        "GRANT USAGE ON SCHEMA public TO {APP_ROLE};
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE};"
    ))?;
    let client = &mut outer;
    let (a, b) = (tenant_uuid(0), tenant_uuid(1));
    for table in &tables {
        let name: String = table.get(0);
        let (rls, force, has_policy, tenant_column): (bool, bool, bool, bool) =
            (table.get(1), table.get(2), table.get(3), table.get(4));
        if tenant_column && !(rls && has_policy) {
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
        if !tenant_column {
            continue;
        }
        result.checked.push(name.clone());
        let quoted = quote_ident(&name);

        // Positive control and isolation: tenant A sees its rows, and only those.
        let (mine, others) = as_tenant(client, Some(&a), |tx| {
            let row = tx.query_one(
                &format!("SELECT count(*) FILTER (WHERE tenant_id = $1::text::uuid), count(*) FILTER (WHERE tenant_id <> $1::text::uuid) FROM {quoted}"),
                &[&a],
            )?;
            Ok((row.get::<_, i64>(0), row.get::<_, i64>(1)))
        })?
        .map_err(|e| e.to_string())
        .unwrap_or((-1, -1));
        if mine <= 0 {
            result.failures.push(format!(
                "{name}: tenant A sees none of its own rows (positive control failed)"
            ));
        }
        if others != 0 {
            result.failures.push(format!(
                "{name}: tenant A sees {others} rows of other tenants"
            ));
        }

        // Writes into tenant B must be refused.
        let moved = as_tenant(client, Some(&a), |tx| {
            tx.execute(&format!("UPDATE {quoted} SET tenant_id = $1::text::uuid WHERE tenant_id = $2::text::uuid"), &[&b, &a])
        })?;
        if moved.is_ok_and(|n| n > 0) {
            result
                .failures
                .push(format!("{name}: tenant A could move its rows to tenant B"));
        }
        let insert = insert_into_other_tenant(client, &name, &a, &b)?;
        if insert.is_ok_and(|n| n > 0) {
            result
                .failures
                .push(format!("{name}: tenant A could insert a row for tenant B"));
        }

        // Without a tenant (absent, or empty after a previous transaction) it fails closed.
        for (label, setting) in [("absent", None), ("empty", Some(""))] {
            let seen = as_tenant(client, setting, |tx| {
                tx.query_one(&format!("SELECT count(*) FROM {quoted}"), &[])
                    .map(|r| r.get::<_, i64>(0))
            })?;
            if let Ok(rows) = seen {
                result.failures.push(format!("{name}: with app.current_tenant_id {label} the query returned {rows} rows instead of an error"));
            }
        }
    }
    outer.rollback()?;
    Ok(result)
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
    a: &str,
    b: &str,
) -> Result<Result<u64, postgres::Error>, postgres::Error> {
    let columns: Vec<String> = client
        .query(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&quote_ident(table)],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let select: Vec<String> = columns
        .iter()
        .map(|c| match c.as_str() {
            "tenant_id" => "$1::text::uuid".to_string(),
            "id" => "gen_random_uuid()".to_string(),
            other => quote_ident(other),
        })
        .collect();
    let names: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let sql = format!(
        "INSERT INTO {table} ({}) SELECT {} FROM {table} WHERE tenant_id = $2::text::uuid LIMIT 1",
        names.join(", "),
        select.join(", "),
        table = quote_ident(table)
    );
    as_tenant(client, Some(a), |tx| tx.execute(&sql, &[&b, &a]))
}
