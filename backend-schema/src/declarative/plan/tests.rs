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

fn sql(plan: &Plan) -> String {
    plan.to_sql()
}

#[test]
fn equal_catalogs_need_nothing() {
    assert!(plan(&base(), &base()).unwrap().is_empty());
}

#[test]
fn a_not_null_column_without_default_goes_through_a_validated_check() {
    let mut to = base();
    let leads = to.tables.get_mut("leads").unwrap();
    leads.columns.push(column("score", "integer", true, None));
    let plan = plan(&base(), &to).unwrap();
    let text = sql(&plan);
    assert!(
        text.contains("ALTER TABLE leads ADD COLUMN score integer;\n"),
        "{text}"
    );
    assert!(
        text.contains("CHECK (score IS NOT NULL) NOT VALID"),
        "{text}"
    );
    assert!(
        text.contains("VALIDATE CONSTRAINT leads_score_not_null"),
        "{text}"
    );
    assert!(text.contains("ALTER COLUMN score SET NOT NULL"), "{text}");
    assert!(
        text.contains("-- NOT NULL without a default fails"),
        "{text}"
    );
    assert!(plan.transactional());
}

#[test]
fn an_index_on_an_existing_table_is_built_concurrently_outside_a_transaction() {
    let mut to = base();
    to.tables.get_mut("leads").unwrap().indexes.insert(
        "ix_leads_email".into(),
        "CREATE INDEX ix_leads_email ON public.leads USING btree (email)".into(),
    );
    let plan = plan(&base(), &to).unwrap();
    assert_eq!(
        sql(&plan),
        "CREATE INDEX CONCURRENTLY ix_leads_email ON public.leads USING btree (email);\n"
    );
    assert!(!plan.transactional());
}

#[test]
fn a_check_on_an_existing_table_is_added_not_valid_then_validated() {
    let mut to = base();
    to.tables.get_mut("leads").unwrap().constraints.insert(
        "leads_email_check".into(),
        Constraint {
            kind: 'c',
            definition: "CHECK ((email <> ''::text))".into(),
            index: None,
            ..Constraint::default()
        },
    );
    let text = sql(&plan(&base(), &to).unwrap());
    assert_eq!(
        text,
        "ALTER TABLE leads ADD CONSTRAINT leads_email_check CHECK ((email <> ''::text)) NOT VALID;\nALTER TABLE leads VALIDATE CONSTRAINT leads_email_check;\n"
    );
}

#[test]
fn enum_values_are_added_in_place_and_removed_by_a_rebuild() {
    let mut to = base();
    to.enums.insert(
        "leadstatus".into(),
        vec!["new".into(), "contacted".into(), "won".into()],
    );
    let text = sql(&plan(&base(), &to).unwrap());
    assert_eq!(
        text,
        "ALTER TYPE leadstatus ADD VALUE 'contacted' AFTER 'new';\n"
    );

    let back = plan(&to, &base()).unwrap();
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
    let plan = plan(&base(), &to).unwrap();
    assert_eq!(plan.drops, ["column leads.email"]);
    assert!(
        plan.notes[0].contains("ALTER TABLE leads RENAME COLUMN email TO email_address;"),
        "{:?}",
        plan.notes
    );
}

#[test]
fn a_new_column_declared_before_existing_ones_is_refused() {
    let mut to = base();
    to.tables
        .get_mut("leads")
        .unwrap()
        .columns
        .insert(0, column("score", "integer", false, None));
    assert_eq!(
        plan(&base(), &to),
        Err(PlanError::ColumnOrder {
            table: "leads".into(),
            columns: "score".into()
        })
    );
}

#[test]
fn a_new_enum_value_used_in_the_same_migration_is_committed_first() {
    let mut to = base();
    to.enums.insert(
        "leadstatus".into(),
        vec!["new".into(), "won".into(), "lost".into()],
    );
    let leads = to.tables.get_mut("leads").unwrap();
    leads.columns[2].default = Some("'lost'::leadstatus".into());
    let plan = plan(&base(), &to).unwrap();
    assert!(!plan.transactional());
    let text = sql(&plan);
    assert!(
        text.starts_with("-- 'lost'::leadstatus is used below"),
        "{text}"
    );
    assert!(text.contains("ALTER TYPE leadstatus ADD VALUE 'lost' AFTER 'won';\nALTER TABLE leads ALTER COLUMN status SET DEFAULT 'lost'::leadstatus;"), "{text}");
}

#[test]
fn ordinary_ddl_and_concurrent_index_builds_go_in_separate_migrations() {
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
    let whole = plan(&base(), &to).unwrap();
    let migrations = into_migrations(&base(), &to, whole);
    assert_eq!(migrations.len(), 2, "a split");
    let (first, _) = &migrations[0];
    assert!(first.transactional());
    assert_eq!(sql(first), "ALTER TABLE leads ADD COLUMN score integer;\n");
    let (second, _) = &migrations[1];
    assert!(!second.transactional());
    let text = sql(second);
    assert!(
        text.contains("CREATE UNIQUE INDEX CONCURRENTLY uq_leads_email"),
        "{text}"
    );
    assert!(
        text.contains("ADD CONSTRAINT uq_leads_email UNIQUE USING INDEX uq_leads_email"),
        "{text}"
    );
    assert!(
        text.contains("CREATE INDEX CONCURRENTLY ix_leads_score"),
        "{text}"
    );

    // Only index work, or only ordinary DDL: one migration is enough.
    let mut only_index = base();
    only_index.tables.get_mut("leads").unwrap().indexes.insert(
        "ix_leads_email".into(),
        "CREATE INDEX ix_leads_email ON public.leads USING btree (email)".into(),
    );
    let whole = plan(&base(), &only_index).unwrap();
    assert_eq!(into_migrations(&base(), &only_index, whole).len(), 1);
}
