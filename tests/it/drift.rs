//! `migrate drift`: every kind of hand-made change named with the SQL that brings it
//! back, none on a clean database, read-only as a role that can only read.

use std::time::{Duration, Instant};

use crate::support::{url_as, TestDb};

fn at_head() -> TestDb {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "head"]).success();
    db
}

#[test]
fn a_database_at_its_revision_has_no_drift() {
    let db = at_head();
    let run = db.xtask(&["migrate", "drift"]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert!(
        run.stdout().contains(&format!(
            "no drift: the schema equals revision {}",
            crate::support::chain_head()
        )),
        "{}",
        run.text()
    );
}

/// One hand-made change of each kind, all found at once, each with its way back.
#[test]
fn drift_names_each_kind_of_hand_made_change_and_the_sql_back() {
    let db = at_head();
    db.client()
        .batch_execute(
            "CREATE TABLE hand_made (id integer);
             ALTER TABLE leads ADD COLUMN note text;
             DROP INDEX idx_leads_tenant_score;
             ALTER TABLE users ADD CONSTRAINT users_email_len CHECK (length(email) > 3);
             DROP POLICY lead_tenant_isolation ON leads;
             ALTER TYPE smsstatus ADD VALUE 'queued';
             CREATE FUNCTION hand_fn() RETURNS integer LANGUAGE sql AS 'SELECT 1';
             CREATE EXTENSION pg_trgm;
             COMMENT ON INDEX idx_leads_tenant_status IS 'hand-made';
             COMMENT ON CONSTRAINT leads_pkey ON leads IS 'hand-made too';",
        )
        .unwrap();
    let run = db.xtask(&["migrate", "drift"]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let out = run.stdout();
    for line in [
        "drift: 10 difference(s) from the schema of revision",
        "  table hand_made: unexpected",
        "  column leads.note: unexpected (found: column note text)",
        "  index leads.idx_leads_tenant_score: missing",
        "  constraint users.users_email_len: unexpected",
        "  policy leads.lead_tenant_isolation: missing",
        "  type smsstatus: changed",
        "  function hand_fn(): unexpected",
        "  extension pg_trgm: unexpected",
        "  comment leads.idx_leads_tenant_status: unexpected (found: comment on index idx_leads_tenant_status: hand-made)",
        "  comment leads.leads_pkey: unexpected",
        "COMMENT ON INDEX idx_leads_tenant_status IS NULL;",
        "COMMENT ON CONSTRAINT leads_pkey ON leads IS NULL;",
        // The way back: the planner's SQL for tables and types, one statement for the rest.
        "CREATE INDEX CONCURRENTLY idx_leads_tenant_score ON public.leads USING btree (tenant_id, score);",
        "CREATE POLICY lead_tenant_isolation ON leads",
        "ALTER TABLE users DROP CONSTRAINT users_email_len;",
        "DROP FUNCTION public.hand_fn();",
        "DROP EXTENSION pg_trgm;",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{}", run.text());
    }

    run_the_printed_sql_then_drift_is_clean(&db, &out);
}

/// The SQL drift printed, run statement by statement, brings the schema back: drift
/// then finds nothing.
fn run_the_printed_sql_then_drift_is_clean(db: &TestDb, out: &str) {
    let mut client = db.client();
    for statement in backend_schema::sql_split::split_statements(&printed_sql(out)) {
        client
            .batch_execute(&statement.sql)
            .unwrap_or_else(|err| panic!("{}: {err}", statement.sql));
    }
    let run = db.xtask(&["migrate", "drift"]);
    assert_eq!(run.code(), 0, "{}", run.text());
}

/// The statements of drift's report: the planner's block and the by-hand block, the
/// two-space indent removed.
fn printed_sql(report: &str) -> String {
    let mut sql = String::new();
    let mut inside = false;
    for line in report.lines() {
        if line.starts_with("SQL that brings it back")
            || line.starts_with("not written by the planner")
        {
            inside = true;
        } else if line.is_empty() {
            inside = false;
        } else if inside {
            sql.push_str(line.strip_prefix("  ").unwrap_or(line));
            sql.push('\n');
        }
    }
    sql
}

/// A role that may connect and read `alembic_version`, nothing else: drift works, and
/// its session is read-only, so it could not have written even with the privileges.
#[test]
fn drift_needs_only_connect_and_the_version_table_and_writes_nothing() {
    let db = at_head();
    db.client()
        .batch_execute(
            "CREATE ROLE auditor LOGIN NOSUPERUSER;
             REVOKE ALL ON DATABASE app FROM PUBLIC;
             GRANT CONNECT ON DATABASE app TO auditor;
             GRANT SELECT ON alembic_version TO auditor;",
        )
        .unwrap();
    let before = write_counters(&db);
    let url = url_as(&db.url(), "auditor");
    let run = crate::support::xtask(&["migrate", "drift", "--database-url", &url]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert_eq!(write_counters(&db), before, "drift wrote to the database");

    // Without SELECT on alembic_version it cannot tell the revision: exit 2, and why.
    db.client()
        .batch_execute("REVOKE SELECT ON alembic_version FROM auditor")
        .unwrap();
    let run = crate::support::xtask(&["migrate", "drift", "--database-url", &url]);
    assert_eq!(run.code(), 2, "{}", run.text());
    assert!(
        run.stderr()
            .contains("reading alembic_version failed: permission denied"),
        "{}",
        run.text()
    );
}

/// What the database's tables saw written (inserts, updates, deletes) and the catalog's.
fn write_counters(db: &TestDb) -> Vec<i64> {
    let mut client = db.client();
    // A session flushes its counters as its backend exits, which may be just after its
    // client has gone: wait until this is the database's only session.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
        > 0
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .unwrap();
    let row = client
        .query_one(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint FROM pg_stat_all_tables",
            &[],
        )
        .unwrap();
    vec![row.get(0)]
}

/// A migration holding ACCESS EXCLUSIVE on a table: drift gives up after its lock
/// timeout (exit 2, could not tell) rather than queue behind it.
#[test]
fn drift_is_bounded_by_its_lock_timeout() {
    let db = at_head();
    let mut holder = db.client();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE leads IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let started = Instant::now();
    let run = db.xtask(&["migrate", "drift", "--lock-timeout", "1s"]);
    let took = started.elapsed();
    tx.rollback().unwrap();
    assert!(
        took < Duration::from_secs(20),
        "drift waited {took:?}: {}",
        run.text()
    );
    assert_eq!(run.code(), 2, "{}", run.text());
    assert!(
        run.stderr()
            .contains("reading the catalogs failed: canceling statement due to lock timeout"),
        "{}",
        run.text()
    );
}

/// A role whose own search_path puts another schema before public (with an
/// `alembic_version` of its own there, or none) would have read another revision, or
/// "base" and every table unexpected with `DROP TABLE` as the way back: drift, current
/// and upgrade refuse by name, and a search_path with public first compares as usual.
#[test]
fn a_role_whose_search_path_misses_public_is_refused_by_name() {
    let db = at_head();
    db.client()
        .batch_execute(
            "CREATE ROLE auditor LOGIN NOSUPERUSER;
             GRANT SELECT ON alembic_version TO auditor;
             CREATE SCHEMA audit;
             GRANT USAGE ON SCHEMA audit TO auditor;
             CREATE TABLE audit.alembic_version (version_num varchar(32) PRIMARY KEY);
             INSERT INTO audit.alembic_version VALUES ('0ther0app000');
             GRANT SELECT ON audit.alembic_version TO auditor;
             ALTER ROLE auditor SET search_path = audit;",
        )
        .unwrap();
    let url = url_as(&db.url(), "auditor");
    let refused = |args: &[&str], code: i32, table: bool| {
        let mut all = args.to_vec();
        all.extend(["--database-url", &url]);
        let run = crate::support::xtask(&all);
        assert_eq!(run.code(), code, "{}", run.text());
        for part in [
            "the session's search_path is `audit` (set for the role with ALTER ROLE ... SET search_path): unqualified names resolve to schema audit, not public",
            "ALTER ROLE auditor RESET search_path",
        ] {
            assert!(run.stderr().contains(part), "{part:?} in {}", run.text());
        }
        assert_eq!(
            run.stderr()
                .contains("(alembic_version would be read from audit.alembic_version)"),
            table,
            "{}",
            run.text()
        );
        assert!(!run.stdout().contains("DROP"), "{}", run.text());
    };
    refused(&["migrate", "drift"], 2, true);
    refused(&["migrate", "current"], 1, true);
    db.client()
        .batch_execute("DROP TABLE audit.alembic_version")
        .unwrap();
    refused(&["migrate", "drift"], 2, false);
    refused(&["migrate", "upgrade", "head"], 1, false);

    // public first, another schema after it: definitions read as the expected ones.
    db.client()
        .batch_execute("ALTER ROLE auditor SET search_path = public, audit")
        .unwrap();
    let run = crate::support::xtask(&["migrate", "drift", "--database-url", &url]);
    assert_eq!(run.code(), 0, "{}", run.text());
}

/// A table renamed by hand (its rows, keys and the foreign keys pointing at it kept)
/// is renamed back: the way back used to create an empty table, drop the one holding
/// the rows, and fail on the key's index name the renamed table still had.
#[test]
fn a_renamed_table_is_renamed_back_with_its_rows_not_dropped() {
    let db = at_head();
    db.client()
        .batch_execute(
            "INSERT INTO tenants (id, name, slug, plan, settings)
               VALUES ('00000000-0000-0000-0000-000000000001', 'Acme', 'acme', 'free', '{}');
             ALTER TABLE tenants RENAME TO tenants_old;",
        )
        .unwrap();
    let run = db.xtask(&["migrate", "drift"]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let out = run.stdout();
    assert!(
        out.contains("ALTER TABLE tenants_old RENAME TO tenants;"),
        "{}",
        run.text()
    );
    assert!(!out.contains("DROP TABLE"), "{}", run.text());
    assert!(!out.contains("CREATE TABLE"), "{}", run.text());

    run_the_printed_sql_then_drift_is_clean(&db, &out);
    let mut client = db.client();
    let rows: i64 = client
        .query_one("SELECT count(*) FROM tenants", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);
}

/// A unique index rebuilt by hand with `CONCURRENTLY` that failed on duplicate rows is
/// left INVALID: drift names it, and its SQL back drops and builds it again (it used
/// to print no SQL for it, so running the SQL left the drift).
#[test]
fn an_index_left_invalid_by_a_failed_concurrent_build_is_built_again() {
    let db = at_head();
    let mut client = db.client();
    client
        .batch_execute(
            "DROP INDEX ix_tenants_slug;
             INSERT INTO tenants (id, name, slug, plan, settings) VALUES
               ('00000000-0000-0000-0000-000000000001', 'Acme', 'acme', 'free', '{}'),
               ('00000000-0000-0000-0000-000000000002', 'Acme', 'acme', 'free', '{}');",
        )
        .unwrap();
    client
        .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY ix_tenants_slug ON tenants (slug)")
        .unwrap_err();
    client
        .batch_execute("DELETE FROM tenants WHERE id = '00000000-0000-0000-0000-000000000002'")
        .unwrap();
    let run = db.xtask(&["migrate", "drift"]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let out = run.stdout();
    for line in [
        "  index tenants.ix_tenants_slug: changed (expected: index ix_tenants_slug unique btree (slug); found: index ix_tenants_slug unique btree (slug) INVALID)",
        "DROP INDEX CONCURRENTLY IF EXISTS ix_tenants_slug;",
        "CREATE UNIQUE INDEX CONCURRENTLY ix_tenants_slug ON public.tenants USING btree (slug);",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{}", run.text());
    }
    run_the_printed_sql_then_drift_is_clean(&db, &out);
}
