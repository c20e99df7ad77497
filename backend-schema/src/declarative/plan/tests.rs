//! Unit tests of the planner: hand-built catalogs in, SQL out.

use super::*;
use crate::catalog::{Catalog, Column, Constraint, Table};

fn column(name: &str, data_type: &str, not_null: bool, default: Option<&str>) -> Column {
    Column {
        name: name.into(),
        data_type: data_type.into(),
        not_null,
        default: default.map(Into::into),
        comment: None,
        identity: None,
        generated: false,
        serial: false,
    }
}

/// `leads (id uuid primary key, email text)` with an enum `leadstatus`.
fn base() -> Catalog {
    let mut catalog = Catalog::default();
    catalog
        .enums
        .insert("leadstatus".into(), vec!["new".into(), "won".into()]);
    let mut leads = Table {
        columns: vec![
            column("id", "uuid", true, None),
            column("email", "text", false, None),
            column("status", "leadstatus", true, Some("'new'::leadstatus")),
        ],
        ..Table::default()
    };
    leads.constraints.insert(
        "leads_pkey".into(),
        Constraint {
            kind: 'p',
            definition: "PRIMARY KEY (id)".into(),
            index: Some("CREATE UNIQUE INDEX leads_pkey ON public.leads USING btree (id)".into()),
            ..Constraint::default()
        },
    );
    catalog.tables.insert("leads".into(), leads);
    catalog
}

fn none() -> Renames {
    Renames::default()
}

/// The statements alone, without the lock comments.
fn sql(plan: &Plan) -> String {
    plan.steps.iter().map(|s| format!("{};\n", s.sql)).collect()
}

fn phase_sql(plan: &Plan, phase: Phase) -> String {
    sql(&plan.only(phase))
}

fn with_tenants(mut catalog: Catalog) -> Catalog {
    let mut tenants = Table {
        columns: vec![column("id", "uuid", true, None)],
        ..Table::default()
    };
    tenants.constraints.insert(
        "tenants_pkey".into(),
        Constraint {
            kind: 'p',
            definition: "PRIMARY KEY (id)".into(),
            index: Some(
                "CREATE UNIQUE INDEX tenants_pkey ON public.tenants USING btree (id)".into(),
            ),
            ..Constraint::default()
        },
    );
    catalog.tables.insert("tenants".into(), tenants);
    catalog
        .tables
        .get_mut("leads")
        .unwrap()
        .columns
        .push(column("tenant_id", "uuid", false, None));
    catalog
}

#[test]
fn equal_catalogs_need_nothing() {
    assert!(plan(&base(), &base(), &none()).unwrap().is_empty());
}

#[test]
fn a_new_not_null_column_without_default_is_refused_with_the_expand_backfill_contract_steps() {
    let mut to = base();
    let leads = to.tables.get_mut("leads").unwrap();
    leads.columns.push(column("score", "integer", true, None));
    let err = plan(&base(), &to, &none()).unwrap_err();
    assert_eq!(
        err,
        PlanError::NeedsBackfill {
            table: "leads".into(),
            column: "score".into(),
            data_type: "integer".into()
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("give it a default (`score integer DEFAULT ... NOT NULL`)"),
        "{text}"
    );
    assert!(
        text.contains("ALTER TABLE leads ADD COLUMN score integer;"),
        "{text}"
    );
    assert!(text.contains("UPDATE leads SET score = ... WHERE ctid = ANY (ARRAY(SELECT ctid FROM leads WHERE score IS NULL LIMIT 10000));"), "{text}");
    assert!(
        text.contains("ALTER TABLE leads VALIDATE CONSTRAINT leads_score_not_null;"),
        "{text}"
    );

    // With a default it is one catalog-only statement.
    to.tables.get_mut("leads").unwrap().columns[3].default = Some("0".into());
    let plan = plan(&base(), &to, &none()).unwrap();
    assert_eq!(
        sql(&plan),
        "ALTER TABLE leads ADD COLUMN score integer DEFAULT 0 NOT NULL;\n"
    );
    assert_eq!(plan.steps[0].work, Work::Catalog);
}

#[test]
fn an_existing_column_made_not_null_is_validated_in_its_own_transaction_then_set_without_a_scan() {
    let mut to = base();
    to.tables.get_mut("leads").unwrap().columns[1].not_null = true;
    let plan = plan(&base(), &to, &none()).unwrap();
    assert_eq!(plan.phases(), [Phase::Ddl, Phase::Validate]);
    assert_eq!(
        phase_sql(&plan, Phase::Ddl),
        "ALTER TABLE leads ADD CONSTRAINT leads_email_not_null CHECK (email IS NOT NULL) NOT VALID;\n"
    );
    assert_eq!(
        phase_sql(&plan, Phase::Validate),
        "ALTER TABLE leads VALIDATE CONSTRAINT leads_email_not_null;\n\
         ALTER TABLE leads ALTER COLUMN email SET NOT NULL;\n\
         ALTER TABLE leads DROP CONSTRAINT leads_email_not_null;\n"
    );
    let validate = &plan.only(Phase::Validate).steps[0];
    assert_eq!(
        validate.locks,
        [("leads".to_string(), LockMode::ShareUpdateExclusive)]
    );
    assert_eq!(validate.work, Work::Scan);
    assert!(plan.transactional());
}

#[test]
fn an_index_on_an_existing_table_is_built_concurrently_and_retry_safe() {
    let mut to = base();
    to.tables.get_mut("leads").unwrap().indexes.insert(
        "ix_leads_email".into(),
        "CREATE INDEX ix_leads_email ON public.leads USING btree (email)".into(),
    );
    let plan = plan(&base(), &to, &none()).unwrap();
    assert_eq!(
        sql(&plan),
        "DROP INDEX CONCURRENTLY IF EXISTS ix_leads_email;\n\
         CREATE INDEX CONCURRENTLY ix_leads_email ON public.leads USING btree (email);\n"
    );
    assert!(!plan.transactional());
    assert_eq!(plan.steps[1].work, Work::IndexBuild);
    assert!(plan
        .to_sql()
        .contains("-- a failed earlier run leaves an INVALID index behind"));
    // In a downgrade (one transaction) the same index is built plainly.
    let down = plan.in_one_transaction();
    assert_eq!(
        sql(&down),
        "CREATE INDEX ix_leads_email ON public.leads USING btree (email);\n"
    );
    assert!(down.transactional());
}

#[test]
fn a_check_on_an_existing_table_is_added_not_valid_and_validated_in_a_later_migration() {
    let mut to = base();
    to.tables.get_mut("leads").unwrap().constraints.insert(
        "leads_email_check".into(),
        Constraint {
            kind: 'c',
            definition: "CHECK ((email <> ''::text))".into(),
            ..Constraint::default()
        },
    );
    let plan = plan(&base(), &to, &none()).unwrap();
    assert_eq!(
        phase_sql(&plan, Phase::Ddl),
        "ALTER TABLE leads ADD CONSTRAINT leads_email_check CHECK ((email <> ''::text)) NOT VALID;\n"
    );
    assert_eq!(
        phase_sql(&plan, Phase::Validate),
        "ALTER TABLE leads VALIDATE CONSTRAINT leads_email_check;\n"
    );
    assert!(plan.to_sql().contains(
        "VALIDATE CONSTRAINT leads_email_check; -- ShareUpdateExclusiveLock on leads; scans the table"
    ));
}

#[test]
fn a_foreign_key_locks_both_tables_and_validates_later() {
    let from = with_tenants(base());
    let mut to = from.clone();
    to.tables.get_mut("leads").unwrap().constraints.insert(
        "leads_tenant_id_fkey".into(),
        Constraint {
            kind: 'f',
            definition: "FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE".into(),
            references: Some("tenants".into()),
            columns: vec!["tenant_id".into()],
            ..Constraint::default()
        },
    );
    let plan = plan(&from, &to, &none()).unwrap();
    let add = &plan.only(Phase::Ddl).steps[0];
    assert_eq!(
        add.locks,
        [
            ("leads".to_string(), LockMode::ShareRowExclusive),
            ("tenants".to_string(), LockMode::ShareRowExclusive)
        ]
    );
    let validate = &plan.only(Phase::Validate).steps[0];
    assert_eq!(
        validate.locks,
        [
            ("leads".to_string(), LockMode::ShareUpdateExclusive),
            ("tenants".to_string(), LockMode::RowShare)
        ]
    );
    // Changing its ON DELETE: the old one goes (ACCESS EXCLUSIVE on both), the new one
    // comes NOT VALID and is validated later.
    let mut changed = to.clone();
    changed
        .tables
        .get_mut("leads")
        .unwrap()
        .constraints
        .get_mut("leads_tenant_id_fkey")
        .unwrap()
        .definition = "FOREIGN KEY (tenant_id) REFERENCES tenants(id)".into();
    let plan = super::plan(&to, &changed, &none()).unwrap();
    assert_eq!(plan.phases(), [Phase::Ddl, Phase::Validate]);
    assert_eq!(
        plan.steps[0].locks,
        [
            ("leads".to_string(), LockMode::AccessExclusive),
            ("tenants".to_string(), LockMode::AccessExclusive)
        ]
    );
    let existing: BTreeSet<String> = ["leads".to_string(), "tenants".to_string()].into();
    assert_eq!(
        plan.only(Phase::Validate).lock_profile(&existing),
        [
            "ShareUpdateExclusiveLock on leads",
            "RowShareLock on tenants"
        ]
    );
}

#[test]
fn enum_values_are_added_in_place_and_removed_by_a_rebuild() {
    let mut to = base();
    to.enums.insert(
        "leadstatus".into(),
        vec!["new".into(), "contacted".into(), "won".into()],
    );
    let text = sql(&plan(&base(), &to, &none()).unwrap());
    assert_eq!(
        text,
        "ALTER TYPE leadstatus ADD VALUE 'contacted' AFTER 'new';\n"
    );

    let back = plan(&to, &base(), &none()).unwrap();
    assert_eq!(back.drops, ["enum leadstatus value(s) 'contacted'"]);
    let text = sql(&back);
    assert!(
        text.contains("ALTER TYPE leadstatus RENAME TO leadstatus__old;"),
        "{text}"
    );
    assert!(
        text.contains("CREATE TYPE leadstatus AS ENUM ('new', 'won');"),
        "{text}"
    );
    assert!(
        text.contains("ALTER COLUMN status TYPE leadstatus USING status::text::leadstatus;"),
        "{text}"
    );
    assert!(
        text.contains("ALTER COLUMN status SET DEFAULT 'new'::leadstatus;"),
        "{text}"
    );
    assert!(text.ends_with("DROP TYPE leadstatus__old;\n"), "{text}");
}

#[test]
fn a_dropped_and_an_added_column_of_one_type_may_be_a_rename() {
    let mut to = base();
    let leads = to.tables.get_mut("leads").unwrap();
    leads.columns.retain(|c| c.name != "email");
    leads
        .columns
        .push(column("email_address", "text", false, None));
    let plan = plan(&base(), &to, &none()).unwrap();
    assert_eq!(plan.drops, ["column leads.email"]);
    assert!(
        plan.notes[0].contains("run again with --rename leads.email=email_address"),
        "{:?}",
        plan.notes
    );
}

#[test]
fn renames_turn_a_drop_and_an_add_into_a_rename_with_a_warning() {
    let mut to = base();
    let leads = to.tables.remove("leads").unwrap();
    let mut people = leads.clone();
    people.columns[1].name = "email_address".into();
    // PostgreSQL shows the key's index on the table's new name.
    people.constraints.get_mut("leads_pkey").unwrap().index =
        Some("CREATE UNIQUE INDEX leads_pkey ON public.people USING btree (id)".into());
    to.tables.insert("people".into(), people);
    let mut renames = Renames::default();
    renames.add("leads=people").unwrap();
    renames.add("people.email=email_address").unwrap();
    let plan = plan(&base(), &to, &renames).unwrap();
    assert!(plan.drops.is_empty(), "{:?}", plan.drops);
    assert_eq!(
        sql(&plan),
        "ALTER TABLE leads RENAME TO people;\nALTER TABLE people RENAME COLUMN email TO email_address;\n"
    );
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("application code still running that uses email fails")),
        "{:?}",
        plan.notes
    );
    // And back.
    let back = super::plan(&to, &base(), &renames.reversed()).unwrap();
    assert_eq!(
        sql(&back),
        "ALTER TABLE people RENAME TO leads;\nALTER TABLE leads RENAME COLUMN email_address TO email;\n"
    );
    assert!(matches!(
        Renames::default().add("leads.a.b=c"),
        Err(PlanError::Rename { .. })
    ));
    let mut wrong = Renames::default();
    wrong.add("leads.nope=x").unwrap();
    assert!(super::plan(&base(), &to, &wrong).is_err());
}

#[test]
fn a_new_column_declared_before_existing_ones_is_appended() {
    let mut to = base();
    to.tables
        .get_mut("leads")
        .unwrap()
        .columns
        .insert(0, column("score", "integer", false, None));
    assert_eq!(
        sql(&plan(&base(), &to, &none()).unwrap()),
        "ALTER TABLE leads ADD COLUMN score integer;\n"
    );
}

#[test]
fn identity_generated_and_serial_columns_are_written_as_declared() {
    let mut to = base();
    let mut events = Table::default();
    let mut id = column(
        "id",
        "bigint",
        true,
        Some("nextval('events_id_seq'::regclass)"),
    );
    id.serial = true;
    let mut n = column("n", "integer", true, None);
    n.identity = Some(Identity::Always);
    let mut twice = column("twice", "integer", false, Some("(n * 2)"));
    twice.generated = true;
    events.columns = vec![id, n, twice];
    to.tables.insert("events".into(), events);
    assert_eq!(
        sql(&plan(&base(), &to, &none()).unwrap()),
        "CREATE TABLE events (\n    id bigserial NOT NULL,\n    n integer GENERATED ALWAYS AS IDENTITY,\n    twice integer GENERATED ALWAYS AS ((n * 2)) STORED\n);\n"
    );
    // Turning an existing column into an identity is refused by name.
    let mut identity = base();
    identity.tables.get_mut("leads").unwrap().columns[1].identity = Some(Identity::ByDefault);
    assert!(matches!(
        plan(&base(), &identity, &none()),
        Err(PlanError::Unsupported { .. })
    ));
}

#[test]
fn a_new_enum_value_used_in_the_same_change_is_committed_by_its_own_migration_first() {
    let mut to = base();
    to.enums.insert(
        "leadstatus".into(),
        vec!["new".into(), "won".into(), "lost".into()],
    );
    let leads = to.tables.get_mut("leads").unwrap();
    leads.columns[2].default = Some("'lost'::leadstatus".into());
    let plan = plan(&base(), &to, &none()).unwrap();
    assert!(plan.transactional());
    assert_eq!(plan.phases(), [Phase::EnumValues, Phase::Ddl]);
    assert_eq!(
        phase_sql(&plan, Phase::EnumValues),
        "ALTER TYPE leadstatus ADD VALUE 'lost' AFTER 'won';\n"
    );
    assert_eq!(
        phase_sql(&plan, Phase::Ddl),
        "ALTER TABLE leads ALTER COLUMN status SET DEFAULT 'lost'::leadstatus;\n"
    );
}

#[test]
fn ordinary_ddl_concurrent_builds_key_attachment_and_validation_are_separate_phases() {
    let mut to = base();
    let leads = to.tables.get_mut("leads").unwrap();
    leads.columns.push(column("score", "integer", false, None));
    leads.indexes.insert(
        "ix_leads_score".into(),
        "CREATE INDEX ix_leads_score ON public.leads USING btree (score)".into(),
    );
    leads.constraints.insert(
        "uq_leads_email".into(),
        Constraint {
            kind: 'u',
            definition: "UNIQUE (email)".into(),
            index: Some(
                "CREATE UNIQUE INDEX uq_leads_email ON public.leads USING btree (email)".into(),
            ),
            ..Constraint::default()
        },
    );
    let whole = plan(&base(), &to, &none()).unwrap();
    assert_eq!(
        whole.phases(),
        [Phase::Ddl, Phase::Concurrent, Phase::Attach]
    );
    assert_eq!(
        phase_sql(&whole, Phase::Ddl),
        "ALTER TABLE leads ADD COLUMN score integer;\n"
    );
    let concurrent = phase_sql(&whole, Phase::Concurrent);
    assert!(
        concurrent.contains("CREATE UNIQUE INDEX CONCURRENTLY uq_leads_email"),
        "{concurrent}"
    );
    assert!(
        concurrent.contains("CREATE INDEX CONCURRENTLY ix_leads_score"),
        "{concurrent}"
    );
    assert!(whole
        .only(Phase::Concurrent)
        .steps
        .iter()
        .all(|s| s.strongest_lock() == Some(LockMode::ShareUpdateExclusive)));
    assert_eq!(
        phase_sql(&whole, Phase::Attach),
        "ALTER TABLE leads ADD CONSTRAINT uq_leads_email UNIQUE USING INDEX uq_leads_email;\n"
    );
    let by_phase = whole.to_sql_by_phase();
    assert!(
        by_phase.contains("-- migration 2 of 3: concurrent indexes (outside a transaction)"),
        "{by_phase}"
    );
}

/// One example of every kind of change, as README.md's lock table shows it: the
/// statements, their migration, lock and work come from the planner, so the table
/// cannot say what the planner does not do.
#[test]
fn the_readme_lock_table_is_the_planners() {
    let from = with_tenants(base());
    let mut cases: Vec<(&str, Catalog)> = Vec::new();
    let mut add = |label, change: &dyn Fn(&mut Table)| {
        let mut to = from.clone();
        change(to.tables.get_mut("leads").unwrap());
        cases.push((label, to));
    };
    add("new nullable column, or with a constant default", &|t| {
        t.columns
            .push(column("source", "text", false, Some("'web'::text")))
    });
    add("new column with a volatile default", &|t| {
        t.columns
            .push(column("token", "uuid", false, Some("gen_random_uuid()")))
    });
    add("column type", &|t| {
        t.columns[1].data_type = "character varying(320)".into()
    });
    add("column default", &|t| {
        t.columns[1].default = Some("''::text".into())
    });
    add("existing column made NOT NULL", &|t| {
        t.columns[1].not_null = true
    });
    add("check on an existing table", &|t| {
        t.constraints.insert(
            "leads_email_check".into(),
            Constraint {
                kind: 'c',
                definition: "CHECK ((email <> ''::text))".into(),
                ..Constraint::default()
            },
        );
    });
    add("foreign key on an existing table", &|t| {
        t.constraints.insert(
            "leads_tenant_id_fkey".into(),
            Constraint {
                kind: 'f',
                definition: "FOREIGN KEY (tenant_id) REFERENCES tenants(id)".into(),
                references: Some("tenants".into()),
                ..Constraint::default()
            },
        );
    });
    add("unique key on an existing table", &|t| {
        t.constraints.insert(
            "uq_leads_email".into(),
            Constraint {
                kind: 'u',
                definition: "UNIQUE (email)".into(),
                index: Some(
                    "CREATE UNIQUE INDEX uq_leads_email ON public.leads USING btree (email)".into(),
                ),
                ..Constraint::default()
            },
        );
    });
    add("exclusion constraint on an existing table", &|t| {
        t.constraints.insert(
            "leads_email_excl".into(),
            Constraint {
                kind: 'x',
                definition: "EXCLUDE USING btree (email WITH =)".into(),
                ..Constraint::default()
            },
        );
    });
    add("index on an existing table", &|t| {
        t.indexes.insert(
            "ix_leads_email".into(),
            "CREATE INDEX ix_leads_email ON public.leads USING btree (email)".into(),
        );
    });
    add("row-level security", &|t| t.row_security = true);
    add("comment", &|t| {
        t.comment = Some("people who may buy".into())
    });
    add("comment on an index", &|t| {
        t.index_comments
            .insert("ix_leads_email".into(), "search by address".into());
    });
    add("comment on a constraint", &|t| {
        t.constraint_comments
            .insert("leads_pkey".into(), "leads are found by id".into());
    });
    add("comment on a policy", &|t| {
        t.policy_comments
            .insert("leads_isolation".into(), "a tenant sees its own".into());
    });
    add("trigger", &|t| {
        t.triggers.insert(
            "leads_touch".into(),
            "CREATE TRIGGER leads_touch BEFORE UPDATE ON public.leads FOR EACH ROW EXECUTE FUNCTION touch()".into(),
        );
    });
    let mut with_comment = from.clone();
    with_comment
        .enum_comments
        .insert("leadstatus".into(), "where a lead is".into());
    cases.push(("comment on an enum type", with_comment));
    let mut with_value = from.clone();
    with_value.enums.insert(
        "leadstatus".into(),
        vec!["new".into(), "won".into(), "lost".into()],
    );
    cases.push(("enum value", with_value));
    let mut rows = Vec::new();
    for (label, to) in &cases {
        let plan = plan(&from, to, &none()).unwrap();
        for step in &plan.steps {
            let locks = step
                .locks
                .iter()
                .map(|(table, mode)| format!("{mode} on {table}"))
                .collect::<Vec<_>>()
                .join(", ");
            rows.push(format!(
                "| {label} | `{}` | {} | {} | {} |",
                step.sql,
                step.phase.title(),
                if locks.is_empty() {
                    "none on tables".to_string()
                } else {
                    locks
                },
                step.work
            ));
        }
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let missing: Vec<&String> = rows
        .iter()
        .filter(|r| !readme.contains(r.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's lock table differs from the planner; the table should read:\n{}",
        rows.join("\n")
    );
}
