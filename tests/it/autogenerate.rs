//! The declarative schema: `migrate check` and `migrate revision --autogenerate`, one
//! test per kind of object. Each edits a copy of `backend-schema/schema/`, generates a
//! migration (which the command proves up, down and up again), and then requires
//! `migrate check` to find the chain's new head equal to the edited schema.

use std::fs;
use std::path::PathBuf;

use crate::support::{copy_dir, root, xtask, Run};

/// Copies of the migrations and the declarative schema, to edit.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&root().join("migrations"), &dir.path().join("m"));
        copy_dir(&root().join("backend-schema/schema"), &dir.path().join("s"));
        Workspace { dir }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    #[track_caller]
    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.path("s").join(file);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        fs::write(path, text.replacen(from, to, 1)).unwrap();
    }

    fn append(&self, file: &str, text: &str) {
        let path = self.path("s").join(file);
        let old = fs::read_to_string(&path).unwrap_or_default();
        fs::write(path, old + text).unwrap();
    }

    fn run(&self, args: &[&str]) -> Run {
        let (m, s) = (self.path("m"), self.path("s"));
        let mut all = args.to_vec();
        all.extend([
            "--migrations",
            m.to_str().unwrap(),
            "--schema",
            s.to_str().unwrap(),
        ]);
        xtask(&all)
    }

    fn autogenerate(&self, extra: &[&str]) -> Run {
        let mut args = vec![
            "migrate",
            "revision",
            "--autogenerate",
            "-m",
            "schema change",
        ];
        args.extend(extra);
        self.run(&args)
    }

    fn migration_count(&self) -> usize {
        fs::read_dir(self.path("m")).unwrap().count()
    }

    /// Generates, then checks the chain's head equals the schema; returns the up, down
    /// and metadata files of the new migration(s), one after the other.
    #[track_caller]
    fn generate_and_check(&self, extra: &[&str]) -> (String, String, String) {
        let generated = self.generate_and_check_each(extra);
        let join = |pick: fn(&(String, String, String)) -> &String| {
            generated
                .iter()
                .map(pick)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        };
        (join(|g| &g.0), join(|g| &g.1), join(|g| &g.2))
    }

    /// Like `generate_and_check`, per new migration.
    #[track_caller]
    fn generate_and_check_each(&self, extra: &[&str]) -> Vec<(String, String, String)> {
        let run = self.autogenerate(extra);
        let revisions: Vec<String> = run.success().stdout().lines().map(str::to_string).collect();
        assert!(run.stderr().contains("proven"), "{}", run.text());
        let check = self.run(&["migrate", "check"]);
        check.success();
        revisions
            .iter()
            .map(|revision| {
                let folder = fs::read_dir(self.path("m"))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .find(|p| {
                        p.file_name()
                            .unwrap()
                            .to_string_lossy()
                            .starts_with(revision.as_str())
                    })
                    .expect("the new migration's folder");
                let read = |f: &str| fs::read_to_string(folder.join(f)).unwrap();
                (read("up.sql"), read("down.sql"), read("migration.toml"))
            })
            .collect()
    }
}

#[test]
fn check_passes_as_committed_and_names_the_object_after_a_one_line_edit() {
    xtask(&["migrate", "check"]).success();
    let ws = Workspace::new();
    ws.run(&["migrate", "check"]).success();
    ws.edit(
        "leads.sql",
        "score             integer NOT NULL,",
        "score             integer DEFAULT 0 NOT NULL,",
    );
    let run = ws.run(&["migrate", "check"]);
    let err = run.failure().stderr();
    assert!(err.contains("~ table leads"), "{err}");
    assert!(
        err.contains("+ column score integer not null default 0"),
        "{err}"
    );
    assert!(
        err.contains("ALTER TABLE leads ALTER COLUMN score SET DEFAULT 0;"),
        "the SQL that closes the gap: {err}"
    );
}

#[test]
fn no_difference_writes_nothing() {
    let ws = Workspace::new();
    let before = ws.migration_count();
    let run = ws.autogenerate(&[]);
    assert!(
        run.success().stderr().contains("no difference"),
        "{}",
        run.text()
    );
    assert_eq!(ws.migration_count(), before);
}

#[test]
fn a_new_table_with_keys_index_row_level_security_and_a_policy() {
    let ws = Workspace::new();
    fs::write(
        ws.path("s").join("lead_notes.sql"),
        "CREATE TABLE lead_notes (
    id         uuid NOT NULL PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    lead_id    uuid NOT NULL REFERENCES leads(id) ON DELETE CASCADE,
    body       text NOT NULL CHECK (body <> ''),
    created_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE INDEX idx_lead_notes_lead ON lead_notes (lead_id);
ALTER TABLE lead_notes ENABLE ROW LEVEL SECURITY;
ALTER TABLE lead_notes FORCE ROW LEVEL SECURITY;
CREATE POLICY lead_notes_tenant_isolation ON lead_notes
    USING (tenant_id = (current_setting('app.current_tenant_id'))::uuid);
",
    )
    .unwrap();
    let (up, down, metadata) = ws.generate_and_check(&[]);
    assert!(up.contains("CREATE TABLE lead_notes ("), "{up}");
    assert!(
        up.contains(
            "ADD CONSTRAINT lead_notes_lead_id_fkey FOREIGN KEY (lead_id) REFERENCES leads(id)"
        ),
        "{up}"
    );
    assert!(
        up.contains("ALTER TABLE lead_notes FORCE ROW LEVEL SECURITY;"),
        "{up}"
    );
    assert!(
        up.contains("CREATE POLICY lead_notes_tenant_isolation ON lead_notes"),
        "{up}"
    );
    // A new, empty table needs no CONCURRENTLY: the migration stays transactional.
    assert!(up.contains("CREATE INDEX idx_lead_notes_lead"), "{up}");
    assert!(metadata.contains("transactional = true"), "{metadata}");
    assert!(down.contains("DROP TABLE lead_notes;"), "{down}");
    // And the whole chain still verifies, the new revision included.
    let m = ws.path("m");
    xtask(&["verify", "--migrations", m.to_str().unwrap()]).success();
}

#[test]
fn columns_added_retyped_defaulted_and_made_not_null() {
    let ws = Workspace::new();
    ws.edit(
        "leads.sql",
        "    updated_at        timestamp with time zone DEFAULT now() NOT NULL,",
        "    updated_at        timestamp with time zone DEFAULT now() NOT NULL,\n    source            character varying(50) DEFAULT 'web'::character varying NOT NULL,",
    );
    ws.edit(
        "leads.sql",
        "email             character varying(255) NOT NULL",
        "email             character varying(320) NOT NULL",
    );
    ws.edit(
        "leads.sql",
        "status            character varying(50) NOT NULL",
        "status            character varying(50) DEFAULT 'new'::character varying NOT NULL",
    );
    ws.edit(
        "leads.sql",
        "company           character varying(255),",
        "company           character varying(255) NOT NULL,",
    );
    ws.edit(
        "leads.sql",
        "tags              json NOT NULL,",
        "tags              json,",
    );
    let generated = ws.generate_and_check_each(&[]);
    assert_eq!(
        generated.len(),
        2,
        "schema changes, then validation: {generated:?}"
    );
    let (up, down, _) = &generated[0];
    assert!(up.contains("ALTER TABLE leads ADD COLUMN source character varying(50) DEFAULT 'web'::character varying NOT NULL; -- AccessExclusiveLock on leads; catalog only"), "{up}");
    assert!(
        up.contains("ALTER TABLE leads ALTER COLUMN email TYPE character varying(320)"),
        "{up}"
    );
    assert!(
        up.contains("ALTER TABLE leads ALTER COLUMN status SET DEFAULT 'new'::character varying;"),
        "{up}"
    );
    assert!(
        up.contains("ADD CONSTRAINT leads_company_not_null CHECK (company IS NOT NULL) NOT VALID;"),
        "{up}"
    );
    assert!(
        up.contains("ALTER TABLE leads ALTER COLUMN tags DROP NOT NULL;"),
        "{up}"
    );
    assert!(
        !up.contains("VALIDATE"),
        "validation waits for its own migration: {up}"
    );
    assert!(
        down.contains("ALTER TABLE leads DROP COLUMN source;"),
        "{down}"
    );
    let (validate, _, metadata) = &generated[1];
    assert!(metadata.contains("(validate constraints)"), "{metadata}");
    assert!(metadata.contains("transactional = true"), "{metadata}");
    assert!(
        validate.contains("ALTER TABLE leads VALIDATE CONSTRAINT leads_company_not_null; -- ShareUpdateExclusiveLock on leads; scans the table\n-- no scan: the validated leads_company_not_null already proves it\nALTER TABLE leads ALTER COLUMN company SET NOT NULL;"),
        "{validate}"
    );
}

#[test]
fn a_not_null_column_without_default_is_refused_with_the_expand_backfill_contract_steps() {
    let ws = Workspace::new();
    ws.edit(
        "leads.sql",
        "    updated_at        timestamp with time zone DEFAULT now() NOT NULL,",
        "    updated_at        timestamp with time zone DEFAULT now() NOT NULL,\n    rating            integer NOT NULL,",
    );
    let before = ws.migration_count();
    let run = ws.autogenerate(&[]);
    let err = run.failure().stderr();
    assert!(
        err.contains("table leads: new column rating is NOT NULL without a default, which cannot be added to a table that has rows"),
        "{err}"
    );
    assert!(err.contains("give it a default"), "{err}");
    assert!(err.contains("1. expand"), "{err}");
    assert!(err.contains("UPDATE leads SET rating = ..."), "{err}");
    assert!(err.contains("3. contract"), "{err}");
    assert_eq!(ws.migration_count(), before, "nothing written");
}

#[test]
fn a_new_check_that_existing_rows_break_fails_at_generation_time() {
    let ws = Workspace::new();
    // The seeded leads have small scores: this check fails on them, as it would on
    // production rows.
    ws.edit(
        "leads.sql",
        "    CONSTRAINT leads_pkey",
        "    CONSTRAINT leads_score_huge CHECK (score > 1000000),\n    CONSTRAINT leads_pkey",
    );
    let before = ws.migration_count();
    let run = ws.autogenerate(&[]);
    let err = run.failure().stderr();
    assert!(
        err.contains("fails on a copy of head with rows in every table"),
        "{err}"
    );
    assert!(err.contains("leads_score_huge"), "{err}");
    assert!(!err.contains("please report"), "{err}");
    assert_eq!(ws.migration_count(), before, "nothing kept");
}

#[test]
fn keys_checks_and_foreign_keys_on_existing_tables_are_added_without_long_locks() {
    let ws = Workspace::new();
    ws.edit(
        "users.sql",
        "CREATE TABLE users (",
        "CREATE TABLE users (\n    CONSTRAINT users_attempts_non_negative CHECK (failed_login_attempts >= 0),\n    CONSTRAINT uq_users_reset_token UNIQUE (password_reset_token),",
    );
    // A CONSTRAINT line before the columns is not valid SQL: move them after.
    let path = ws.path("s").join("users.sql");
    let text = fs::read_to_string(&path).unwrap();
    let moved: String = text.replacen(
        "\n    CONSTRAINT users_attempts_non_negative CHECK (failed_login_attempts >= 0),\n    CONSTRAINT uq_users_reset_token UNIQUE (password_reset_token),",
        "",
        1,
    );
    fs::write(
        &path,
        moved.replacen(
            "    CONSTRAINT users_pkey",
            "    CONSTRAINT users_attempts_non_negative CHECK (failed_login_attempts >= 0),\n    CONSTRAINT uq_users_reset_token UNIQUE (password_reset_token),\n    CONSTRAINT users_pkey",
            1,
        ),
    )
    .unwrap();
    ws.append(
        "sms_messages.sql",
        "\nALTER TABLE sms_messages ADD CONSTRAINT sms_messages_campaign_tenant_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id);\n",
    );
    let generated = ws.generate_and_check_each(&[]);
    let phases: Vec<&str> = generated.iter().map(|(_, _, meta)| meta.as_str()).collect();
    assert_eq!(generated.len(), 4, "{phases:?}");
    let (ddl, concurrent, attach, validate) = (
        &generated[0].0,
        &generated[1].0,
        &generated[2].0,
        &generated[3].0,
    );
    assert!(ddl.contains("ADD CONSTRAINT users_attempts_non_negative CHECK ((failed_login_attempts >= 0)) NOT VALID; -- AccessExclusiveLock on users; catalog only"), "{ddl}");
    assert!(ddl.contains("FOREIGN KEY (tenant_id) REFERENCES tenants(id) NOT VALID; -- ShareRowExclusiveLock on sms_messages, ShareRowExclusiveLock on tenants; catalog only"), "{ddl}");
    assert!(generated[0].2.contains("transactional = true"));
    assert!(
        concurrent.contains("DROP INDEX CONCURRENTLY IF EXISTS uq_users_reset_token;"),
        "{concurrent}"
    );
    assert!(concurrent.contains("\nCREATE UNIQUE INDEX CONCURRENTLY uq_users_reset_token ON public.users USING btree (password_reset_token);"), "{concurrent}");
    assert!(generated[1].2.contains("transactional = false"));
    assert!(attach.contains("ALTER TABLE users ADD CONSTRAINT uq_users_reset_token UNIQUE USING INDEX uq_users_reset_token;"), "{attach}");
    assert!(validate.contains("ALTER TABLE users VALIDATE CONSTRAINT users_attempts_non_negative; -- ShareUpdateExclusiveLock on users; scans the table"), "{validate}");
    assert!(validate.contains("ALTER TABLE sms_messages VALIDATE CONSTRAINT sms_messages_campaign_tenant_fkey; -- ShareUpdateExclusiveLock on sms_messages, RowShareLock on tenants; scans the table"), "{validate}");
    assert!(generated[3].2.contains("transactional = true"));
    assert_locks_as_planned(&ws, &generated);
}

/// The strongest lock per table each new migration's comments claim,
/// against what `verify` saw in pg_locks while it ran each of them on seeded tables.
#[track_caller]
fn assert_locks_as_planned(
    ws: &Workspace,
    generated: &[(String, String, String)],
) -> backend_schema::verify::VerifyReport {
    let graph = backend_schema::RevisionGraph::load(&ws.path("m")).unwrap();
    let report = backend_schema::verify::verify(&graph, &mut |_| {}).unwrap();
    assert!(report.passed(), "{report:#?}");
    let new = &report.revisions[report.revisions.len() - generated.len()..];
    // Non-transactional migrations too: verify watches their locks from a second session.
    for ((up, _, _), revision) in generated.iter().zip(new) {
        // verify traces the tables that existed before: not the ones this creates.
        let created: Vec<&str> = up
            .lines()
            .filter_map(|l| l.strip_prefix("CREATE TABLE "))
            .filter_map(|rest| rest.split_whitespace().next())
            .collect();
        let mut claimed: std::collections::BTreeMap<
            String,
            (backend_schema::declarative::plan::LockMode, String),
        > = Default::default();
        for line in up.lines() {
            let Some((_, comment)) = line.split_once("; -- ") else {
                continue;
            };
            let locks = comment.split(';').next().unwrap();
            for lock in locks.split(", ") {
                let (mode, table) = lock.split_once(" on ").unwrap();
                if created.contains(&table) {
                    continue;
                }
                let rank = backend_schema::declarative::plan::LockMode::from_pg_name(mode)
                    .unwrap_or_else(|| panic!("{mode} is not a table lock mode"));
                let entry = claimed
                    .entry(table.to_string())
                    .or_insert((rank, mode.to_string()));
                if rank > entry.0 {
                    *entry = (rank, mode.to_string());
                }
            }
        }
        let claimed: Vec<String> = claimed
            .iter()
            .map(|(table, (_, mode))| format!("{mode} on {table}"))
            .collect();
        let mut observed = revision.locks_up.clone();
        observed.sort_by_key(|l| l.rsplit(" on ").next().unwrap().to_string());
        assert_eq!(observed, claimed, "{}:\n{up}", revision.revision);
    }
    report
}

#[test]
fn an_index_on_an_existing_table_is_built_concurrently_outside_a_transaction() {
    let ws = Workspace::new();
    ws.append(
        "leads.sql",
        "\nCREATE INDEX idx_leads_tenant_created ON leads (tenant_id, created_at);\n",
    );
    ws.edit(
        "leads.sql",
        "CREATE INDEX idx_leads_tenant_score ON leads USING btree (tenant_id, score);\n",
        "",
    );
    let (up, down, metadata) = ws.generate_and_check(&[]);
    assert!(
        up.contains("CREATE INDEX CONCURRENTLY idx_leads_tenant_created ON public.leads"),
        "{up}"
    );
    assert!(
        up.contains("DROP INDEX CONCURRENTLY IF EXISTS idx_leads_tenant_score;"),
        "{up}"
    );
    assert!(
        down.contains("CREATE INDEX CONCURRENTLY idx_leads_tenant_score"),
        "{down}"
    );
    assert!(metadata.contains("transactional = false"), "{metadata}");
    // Only statements that cannot run in a transaction, each safe to run again.
    for statement in up.lines().filter(|l| !l.starts_with("--") && !l.is_empty()) {
        assert!(
            statement.starts_with("DROP INDEX CONCURRENTLY IF EXISTS ")
                || statement.starts_with("CREATE INDEX CONCURRENTLY "),
            "{up}"
        );
    }
}

#[test]
fn enum_values_are_appended_in_place_and_removed_by_a_rebuild() {
    let ws = Workspace::new();
    ws.edit(
        "types.sql",
        "'failed', 'undelivered'",
        "'failed', 'undelivered', 'expired'",
    );
    let (up, down, metadata) = ws.generate_and_check(&[]);
    assert!(
        up.contains("ALTER TYPE smsstatus ADD VALUE 'expired' AFTER 'undelivered';"),
        "{up}"
    );
    assert!(metadata.contains("transactional = true"), "{metadata}");
    assert!(
        down.contains("ALTER TYPE smsstatus RENAME TO smsstatus__old;"),
        "{down}"
    );

    // Removing a value (and reordering) rebuilds the type, and may destroy data.
    ws.edit(
        "types.sql",
        "'draft', 'running', 'paused'",
        "'draft', 'paused', 'running'",
    );
    ws.edit("types.sql", ", 'archived'", "");
    let refused = ws.autogenerate(&[]);
    assert!(
        refused
            .failure()
            .stderr()
            .contains("enum abteststatus value(s) 'archived'"),
        "{}",
        refused.text()
    );
    let (up, _, _) = ws.generate_and_check(&["--allow-drop"]);
    assert!(
        up.contains(
            "CREATE TYPE abteststatus AS ENUM ('draft', 'paused', 'running', 'completed');"
        ),
        "{up}"
    );
    assert!(up.contains("ALTER TABLE ab_tests ALTER COLUMN status TYPE abteststatus USING status::text::abteststatus;"), "{up}");
}

#[test]
fn row_level_security_flags_and_policies_follow_the_schema() {
    let ws = Workspace::new();
    ws.edit(
        "leads.sql",
        "ALTER TABLE leads ENABLE ROW LEVEL SECURITY;",
        "ALTER TABLE leads ENABLE ROW LEVEL SECURITY;\nALTER TABLE leads FORCE ROW LEVEL SECURITY;",
    );
    ws.edit(
        "leads.sql",
        "    WITH CHECK (tenant_id = (current_setting('app.current_tenant_id'::text))::uuid);",
        "    WITH CHECK (tenant_id = (current_setting('app.current_tenant_id'::text))::uuid AND score >= 0);",
    );
    ws.append(
        "ab_tests.sql",
        "\nALTER TABLE ab_tests ENABLE ROW LEVEL SECURITY;\nCREATE POLICY ab_test_tenant_isolation ON ab_tests USING (tenant_id = (current_setting('app.current_tenant_id'))::uuid);\n",
    );
    let (up, down, _) = ws.generate_and_check(&[]);
    assert!(
        up.contains("ALTER TABLE leads FORCE ROW LEVEL SECURITY;"),
        "{up}"
    );
    assert!(
        up.contains("DROP POLICY lead_tenant_isolation ON leads;"),
        "{up}"
    );
    assert!(up.contains("AND (score >= 0)"), "{up}");
    assert!(
        up.contains("ALTER TABLE ab_tests ENABLE ROW LEVEL SECURITY;"),
        "{up}"
    );
    assert!(
        down.contains("ALTER TABLE leads NO FORCE ROW LEVEL SECURITY;"),
        "{down}"
    );
    assert!(
        down.contains("DROP POLICY ab_test_tenant_isolation ON ab_tests;"),
        "{down}"
    );
}

#[test]
fn comments_on_tables_and_columns() {
    let ws = Workspace::new();
    ws.append(
        "tenants.sql",
        "\nCOMMENT ON TABLE tenants IS 'Customer organisations; every row of every table belongs to one';\nCOMMENT ON COLUMN tenants.slug IS 'URL name, unique';\n",
    );
    let (up, down, _) = ws.generate_and_check(&[]);
    assert!(up.contains("COMMENT ON TABLE tenants IS 'Customer organisations; every row of every table belongs to one';"), "{up}");
    assert!(
        up.contains("COMMENT ON COLUMN tenants.slug IS 'URL name, unique';"),
        "{up}"
    );
    assert!(
        down.contains("COMMENT ON COLUMN tenants.slug IS NULL;"),
        "{down}"
    );
}

/// Comments on indexes, keys, policies and enum types are part of the schema: `check`
/// fails when the chain lacks one, and autogenerate writes each after the statement
/// that creates its object (after a concurrent build: in the next, transactional
/// migration), or alone for an object that stays.
#[test]
fn comments_on_indexes_constraints_policies_and_enum_types() {
    let ws = Workspace::new();
    ws.append(
        "leads.sql",
        "\nCOMMENT ON INDEX idx_leads_tenant_score IS 'the leads board, best first';\n",
    );
    let run = ws.run(&["migrate", "check"]);
    let err = run.failure().stderr();
    assert!(err.contains("~ table leads"), "{err}");
    assert!(
        err.contains("+ comment on index idx_leads_tenant_score: the leads board, best first"),
        "{err}"
    );
    ws.append(
        "leads.sql",
        "COMMENT ON CONSTRAINT uq_leads_tenant_email ON leads IS 'one lead per address and tenant';\n\
         COMMENT ON POLICY lead_tenant_isolation ON leads IS 'a tenant sees its own leads';\n\
         CREATE INDEX idx_leads_tenant_created ON leads (tenant_id, created_at);\n\
         COMMENT ON INDEX idx_leads_tenant_created IS 'newest leads';\n",
    );
    ws.append(
        "types.sql",
        "\nCOMMENT ON TYPE smsstatus IS 'what the SMS gateway said';\n",
    );
    fs::write(
        ws.path("s").join("lead_labels.sql"),
        "CREATE TABLE lead_labels (
    id      uuid PRIMARY KEY,
    lead_id uuid NOT NULL REFERENCES leads(id) ON DELETE CASCADE,
    label   text NOT NULL,
    CONSTRAINT lead_labels_label_check CHECK (label <> '')
);
CREATE INDEX idx_lead_labels_lead_id ON lead_labels (lead_id);
COMMENT ON INDEX idx_lead_labels_lead_id IS 'labels of a lead';
COMMENT ON CONSTRAINT lead_labels_label_check ON lead_labels IS 'no empty labels';
COMMENT ON INDEX lead_labels_pkey IS 'by id';
",
    )
    .unwrap();
    let generated = ws.generate_and_check_each(&[]);
    assert_eq!(generated.len(), 3, "{generated:#?}");
    let (ddl, concurrent, attach) = (&generated[0].0, &generated[1].0, &generated[2].0);
    for line in [
        "COMMENT ON INDEX idx_leads_tenant_score IS 'the leads board, best first';",
        "COMMENT ON CONSTRAINT uq_leads_tenant_email ON leads IS 'one lead per address and tenant'; -- AccessShareLock on leads; catalog only",
        "COMMENT ON POLICY lead_tenant_isolation ON leads IS 'a tenant sees its own leads'; -- AccessShareLock on leads; catalog only",
        "COMMENT ON TYPE smsstatus IS 'what the SMS gateway said';",
        "COMMENT ON INDEX idx_lead_labels_lead_id IS 'labels of a lead';",
        "COMMENT ON INDEX lead_labels_pkey IS 'by id';",
        "COMMENT ON CONSTRAINT lead_labels_label_check ON lead_labels IS 'no empty labels';",
    ] {
        assert!(ddl.contains(line), "{line}\n{ddl}");
    }
    // The new table's objects exist before their comments.
    let at = |text: &str| ddl.find(text).unwrap_or_else(|| panic!("{text}\n{ddl}"));
    assert!(
        at("CREATE INDEX idx_lead_labels_lead_id") < at("COMMENT ON INDEX idx_lead_labels_lead_id")
    );
    assert!(at("ADD CONSTRAINT lead_labels_pkey") < at("COMMENT ON INDEX lead_labels_pkey"));
    assert!(
        concurrent.contains("CREATE INDEX CONCURRENTLY idx_leads_tenant_created"),
        "{concurrent}"
    );
    assert!(!concurrent.contains("COMMENT"), "{concurrent}");
    assert!(
        attach.contains("COMMENT ON INDEX idx_leads_tenant_created IS 'newest leads';"),
        "{attach}"
    );
    let downs: Vec<&String> = generated.iter().map(|g| &g.1).collect();
    assert!(
        downs[0].contains("COMMENT ON INDEX idx_leads_tenant_score IS NULL;")
            && downs[0].contains("COMMENT ON TYPE smsstatus IS NULL;")
            && downs[2].contains("COMMENT ON INDEX idx_leads_tenant_created IS NULL;"),
        "{downs:#?}"
    );
    assert_locks_as_planned(&ws, &generated);
}

#[test]
fn dropping_a_column_needs_allow_drop_and_suggests_a_rename() {
    let ws = Workspace::new();
    ws.edit(
        "leads.sql",
        "    phone             character varying(20),\n",
        "",
    );
    ws.edit(
        "leads.sql",
        "    updated_at        timestamp with time zone DEFAULT now() NOT NULL,",
        "    updated_at        timestamp with time zone DEFAULT now() NOT NULL,\n    phone_number      character varying(20),",
    );
    let before = ws.migration_count();
    let run = ws.autogenerate(&[]);
    let err = run.failure().stderr();
    assert!(
        err.contains("this change drops data: column leads.phone; nothing was written"),
        "{err}"
    );
    assert!(
        err.contains("if this is a rename, run again with --rename leads.phone=phone_number"),
        "{err}"
    );
    assert_eq!(ws.migration_count(), before);
    let (up, down, _) = ws.generate_and_check(&["--allow-drop"]);
    assert!(
        up.contains("-- NOTE: leads.phone is dropped and leads.phone_number added"),
        "{up}"
    );
    assert!(up.contains("ALTER TABLE leads DROP COLUMN phone;"), "{up}");
    assert!(
        down.contains("-- NOTE: leads.phone come(s) back as the last column(s) of leads"),
        "{down}"
    );
    // verify agrees: the moved column is a warning, not a failed round trip.
    let m = ws.path("m");
    let run = xtask(&["verify", "--migrations", m.to_str().unwrap()]);
    assert!(
        run.success().stdout().contains("re-adds column(s)"),
        "{}",
        run.text()
    );
}

#[test]
fn a_new_column_among_existing_ones_is_appended_and_order_is_not_compared() {
    let ws = Workspace::new();
    ws.edit(
        "leads.sql",
        "    notes             text,",
        "    notes             text,\n    source            text,",
    );
    let (up, _, _) = ws.generate_and_check(&[]);
    assert!(
        up.contains("ALTER TABLE leads ADD COLUMN source text;"),
        "{up}"
    );
    let run = ws.run(&["migrate", "check"]);
    let err = run.success().stderr();
    assert_eq!(
        err.matches("PostgreSQL cannot reorder columns").count(),
        1,
        "{err}"
    );
    assert!(
        err.contains("the columns of leads are in another order"),
        "{err}"
    );

    // Swapping two declarations is no difference at all.
    let ws = Workspace::new();
    ws.edit("leads.sql", "    notes             text,\n", "");
    ws.edit(
        "leads.sql",
        "    phone             character varying(20),",
        "    notes             text,\n    phone             character varying(20),",
    );
    let run = ws.run(&["migrate", "check"]);
    assert!(
        run.success()
            .stderr()
            .contains("PostgreSQL cannot reorder columns"),
        "{}",
        run.text()
    );
    let run = ws.autogenerate(&[]);
    assert!(
        run.success().stderr().contains("no difference"),
        "{}",
        run.text()
    );
}

#[test]
fn rename_turns_a_drop_and_an_add_into_a_rename() {
    let ws = Workspace::new();
    ws.edit(
        "leads.sql",
        "    phone             character varying(20),",
        "    phone_number      character varying(20),",
    );
    let run = ws.autogenerate(&["--rename", "leads.nope=phone_number"]);
    assert!(
        run.failure().stderr().contains(
            "--rename leads.nope=phone_number: the migrations' head has no column leads.nope"
        ),
        "{}",
        run.text()
    );
    let (up, down, _) = ws.generate_and_check(&["--rename", "leads.phone=phone_number"]);
    assert!(
        up.contains("ALTER TABLE leads RENAME COLUMN phone TO phone_number;"),
        "{up}"
    );
    assert!(!up.contains("DROP COLUMN"), "{up}");
    assert!(
        up.contains("application code still running that uses phone fails"),
        "{up}"
    );
    assert!(
        down.contains("ALTER TABLE leads RENAME COLUMN phone_number TO phone;"),
        "{down}"
    );
}

#[test]
fn a_new_enum_value_used_as_a_default_is_committed_before_its_use() {
    let ws = Workspace::new();
    ws.edit(
        "types.sql",
        "'failed', 'undelivered'",
        "'failed', 'undelivered', 'queued'",
    );
    ws.edit(
        "sms_messages.sql",
        "status        smsstatus DEFAULT 'pending'::smsstatus NOT NULL",
        "status        smsstatus DEFAULT 'queued'::smsstatus NOT NULL",
    );
    // Proven on PostgreSQL: in one transaction this would fail with "unsafe use of new value".
    let generated = ws.generate_and_check_each(&[]);
    assert_eq!(generated.len(), 2, "{generated:?}");
    let (first, _, first_meta) = &generated[0];
    assert!(
        first.contains("ALTER TYPE smsstatus ADD VALUE 'queued' AFTER 'undelivered';"),
        "{first}"
    );
    assert!(!first.contains("ALTER TABLE"), "{first}");
    assert!(
        first_meta.contains("(new enum values, committed before their use)"),
        "{first_meta}"
    );
    let (second, _, second_meta) = &generated[1];
    assert!(
        second.contains("SET DEFAULT 'queued'::smsstatus"),
        "{second}"
    );
    // Both transactional: nothing of either is left half-applied.
    assert!(first_meta.contains("transactional = true"), "{first_meta}");
    assert!(
        second_meta.contains("transactional = true"),
        "{second_meta}"
    );
}

#[test]
fn ordinary_changes_and_concurrent_index_builds_become_two_migrations() {
    let ws = Workspace::new();
    ws.edit(
        "leads.sql",
        "    updated_at        timestamp with time zone DEFAULT now() NOT NULL,",
        "    updated_at        timestamp with time zone DEFAULT now() NOT NULL,\n    source            text,",
    );
    ws.append(
        "leads.sql",
        "\nCREATE INDEX idx_leads_tenant_source ON leads (tenant_id, source);\n",
    );
    let generated = ws.generate_and_check_each(&[]);
    assert_eq!(generated.len(), 2, "{generated:?}");
    let (first_up, _, first_meta) = &generated[0];
    assert!(
        first_up.contains("ALTER TABLE leads ADD COLUMN source text;"),
        "{first_up}"
    );
    assert!(!first_up.contains("CONCURRENTLY"), "{first_up}");
    assert!(first_meta.contains("transactional = true"), "{first_meta}");
    let (second_up, second_down, second_meta) = &generated[1];
    assert!(
        second_up.contains("CREATE INDEX CONCURRENTLY idx_leads_tenant_source"),
        "{second_up}"
    );
    assert!(
        second_down.contains("DROP INDEX CONCURRENTLY IF EXISTS idx_leads_tenant_source;"),
        "{second_down}"
    );
    assert!(
        second_meta.contains("transactional = false"),
        "{second_meta}"
    );
    assert!(
        second_meta.contains("(concurrent indexes)"),
        "{second_meta}"
    );
}

#[test]
fn a_failed_concurrent_index_migration_runs_again_after_the_rows_are_fixed() {
    let ws = Workspace::new();
    let m = ws.path("m");
    let m = m.to_str().unwrap();
    let old_head = xtask(&["migrate", "heads", "--migrations", m])
        .success()
        .stdout()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    ws.append(
        "users.sql",
        "\nCREATE UNIQUE INDEX ix_users_reset_token ON users (password_reset_token);\n",
    );
    let generated = ws.generate_and_check_each(&[]);
    assert_eq!(generated.len(), 1);
    assert!(generated[0].2.contains("transactional = false"));

    let db = crate::support::TestDb::new();
    db.xtask(&["migrate", "upgrade", &old_head, "--migrations", m])
        .success();
    let mut client = db.client();
    backend_schema::verify::seed::seed_empty_tables(&mut client).unwrap();
    client
        .batch_execute("UPDATE users SET password_reset_token = 'same'")
        .unwrap();
    let run = db.xtask(&["migrate", "upgrade", "heads", "--migrations", m]);
    assert!(
        run.failure()
            .stderr()
            .contains("could not create unique index"),
        "{}",
        run.text()
    );
    let invalid = "SELECT count(*) FROM pg_index WHERE NOT indisvalid";
    let count: i64 = client.query_one(invalid, &[]).unwrap().get(0);
    assert_eq!(count, 1, "the failed build left an INVALID index");

    // Fix the rows, record that nothing of the migration counts, run it again: it drops
    // the INVALID leftover itself.
    client
        .batch_execute("UPDATE users SET password_reset_token = NULL")
        .unwrap();
    db.xtask(&["migrate", "stamp", &old_head, "--migrations", m])
        .success();
    db.xtask(&["migrate", "upgrade", "heads", "--migrations", m])
        .success();
    let count: i64 = client.query_one(invalid, &[]).unwrap().get(0);
    assert_eq!(count, 0);
}

#[test]
fn circular_foreign_keys_across_files_load_in_any_order() {
    let ws = Workspace::new();
    // `a_members.sql` sorts first and needs `teams`; `teams.sql` needs `members`.
    fs::write(
        ws.path("s").join("a_members.sql"),
        "CREATE TABLE members (
    id      uuid NOT NULL PRIMARY KEY,
    team_id uuid REFERENCES teams(id)
);
",
    )
    .unwrap();
    fs::write(
        ws.path("s").join("teams.sql"),
        "CREATE TABLE teams (
    id         uuid NOT NULL PRIMARY KEY,
    captain_id uuid
);
ALTER TABLE teams ADD CONSTRAINT teams_captain_id_fkey FOREIGN KEY (captain_id) REFERENCES members(id);
",
    )
    .unwrap();
    let (up, _, _) = ws.generate_and_check(&[]);
    assert!(up.contains("CREATE TABLE members ("), "{up}");
    assert!(
        up.contains(
            "ADD CONSTRAINT teams_captain_id_fkey FOREIGN KEY (captain_id) REFERENCES members(id)"
        ),
        "{up}"
    );
}

#[test]
fn schema_file_errors_name_file_and_line_without_a_cascade() {
    let ws = Workspace::new();
    ws.edit(
        "tenants.sql",
        "settings   json NOT NULL",
        "settings   jsn NOT NULL",
    );
    let run = ws.run(&["migrate", "check"]);
    let err = run.failure().stderr();
    assert!(
        err.contains("tenants.sql: line 6: type \"jsn\" does not exist"),
        "{err}"
    );
    // The tables that need tenants are counted, not reported one by one.
    assert!(
        !err.contains("relation \"tenants\" does not exist"),
        "{err}"
    );
    assert!(
        err.contains(
            "other statement(s) did not run because they need what the statement(s) above create"
        ),
        "{err}"
    );

    let ws = Workspace::new();
    ws.append(
        "leads.sql",
        "\nCREATE INDEX idx_leads_nope ON leads (nope);\n",
    );
    let run = ws.run(&["migrate", "check"]);
    let err = run.failure().stderr();
    assert!(
        err.contains("leads.sql: line 39: column \"nope\" does not exist"),
        "{err}"
    );
}

/// Views: created after what they read (a view of a view, declared first), replaced
/// in place when columns are only appended, dropped and created again with the views
/// that read them otherwise, and around a type change of a column they read, which
/// PostgreSQL refuses under a view. Each step is proven on seeded rows and passes
/// `check`, and `verify` with the locks claimed (but the type change, whose rewrite of
/// the table verify rightly reports).
#[test]
fn views_are_created_in_dependency_order_replaced_or_rebuilt_with_their_dependants() {
    let ws = Workspace::new();
    let dependant = "CREATE VIEW hot_lead_emails AS SELECT id, email FROM hot_leads;\n\
                     COMMENT ON VIEW hot_lead_emails IS 'whom to mail first';\n";
    fs::write(ws.path("s").join("a_hot_lead_emails.sql"), dependant).unwrap();
    fs::write(
        ws.path("s").join("hot_leads.sql"),
        "CREATE VIEW hot_leads AS SELECT id, tenant_id, email, score FROM leads WHERE score > 50;\n",
    )
    .unwrap();
    let generated = ws.generate_and_check_each(&[]);
    let up = &generated[0].0;
    let at = |text: &str| up.find(text).unwrap_or_else(|| panic!("{text}\n{up}"));
    assert!(
        at("CREATE VIEW hot_leads AS") < at("CREATE VIEW hot_lead_emails AS"),
        "{up}"
    );
    assert!(
        up.contains("COMMENT ON VIEW hot_lead_emails IS 'whom to mail first';"),
        "{up}"
    );
    assert!(
        up.contains("; -- AccessShareLock on leads; catalog only"),
        "{up}"
    );
    assert!(
        generated[0].1.find("DROP VIEW hot_lead_emails").unwrap()
            < generated[0].1.find("DROP VIEW hot_leads").unwrap(),
        "{}",
        generated[0].1
    );
    assert_locks_as_planned(&ws, &generated);

    // A column appended: replaced in place, the dependant untouched.
    fs::write(
        ws.path("s").join("hot_leads.sql"),
        "CREATE VIEW hot_leads AS SELECT id, tenant_id, email, score, name FROM leads WHERE score > 50;\n",
    )
    .unwrap();
    let generated = ws.generate_and_check_each(&[]);
    let up = &generated[0].0;
    assert!(up.contains("CREATE OR REPLACE VIEW hot_leads AS"), "{up}");
    assert!(!up.contains("DROP VIEW"), "{up}");
    assert!(
        generated[0].1.contains("DROP VIEW hot_leads"),
        "the way back removes a column: {}",
        generated[0].1
    );
    assert_locks_as_planned(&ws, &generated);

    // A column removed: dropped with its dependant and both created again.
    fs::write(
        ws.path("s").join("hot_leads.sql"),
        "CREATE VIEW hot_leads AS SELECT id, email, score FROM leads WHERE score > 50;\n",
    )
    .unwrap();
    let generated = ws.generate_and_check_each(&[]);
    let up = &generated[0].0;
    let at = |text: &str| up.find(text).unwrap_or_else(|| panic!("{text}\n{up}"));
    assert!(
        at("DROP VIEW hot_lead_emails") < at("DROP VIEW hot_leads"),
        "{up}"
    );
    assert!(
        at("DROP VIEW hot_leads") < at("CREATE VIEW hot_leads AS"),
        "{up}"
    );
    assert!(
        at("CREATE VIEW hot_leads AS") < at("CREATE VIEW hot_lead_emails AS"),
        "{up}"
    );
    assert!(
        at("CREATE VIEW hot_lead_emails AS") < at("COMMENT ON VIEW hot_lead_emails"),
        "{up}"
    );
    assert_locks_as_planned(&ws, &generated);

    // A column the views read changes type: they go before and come back after.
    ws.edit(
        "leads.sql",
        "score             integer NOT NULL,",
        "score             bigint NOT NULL,",
    );
    let generated = ws.generate_and_check_each(&[]);
    let up = &generated[0].0;
    let at = |text: &str| up.find(text).unwrap_or_else(|| panic!("{text}\n{up}"));
    assert!(
        at("DROP VIEW hot_leads") < at("ALTER COLUMN score TYPE bigint"),
        "{up}"
    );
    assert!(
        at("ALTER COLUMN score TYPE bigint") < at("CREATE VIEW hot_leads AS"),
        "{up}"
    );
    // (verify would report the type change's rewrite of leads, as it should.)
}

/// Functions and triggers are written whole, as PostgreSQL shows them: a function
/// before the trigger that calls it, replaced in place when its body changes; a changed
/// trigger dropped and created again. Each step passes `check` and `verify`.
#[test]
fn functions_and_triggers_are_written_whole_and_replaced() {
    let ws = Workspace::new();
    let declare = |body: &str, events: &str| {
        fs::write(
            ws.path("s").join("lead_audit.sql"),
            format!(
                "CREATE TRIGGER leads_score_floor BEFORE {events} ON leads FOR EACH ROW EXECUTE FUNCTION leads_score_floor();\n\
                 CREATE FUNCTION leads_score_floor() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n    {body}\n    RETURN NEW;\nEND\n$$;\n"
            ),
        )
        .unwrap();
    };
    declare("NEW.score := greatest(NEW.score, 0);", "INSERT");
    let generated = ws.generate_and_check_each(&[]);
    let up = &generated[0].0;
    let at = |text: &str| up.find(text).unwrap_or_else(|| panic!("{text}\n{up}"));
    assert!(
        at("CREATE OR REPLACE FUNCTION public.leads_score_floor()")
            < at("CREATE TRIGGER leads_score_floor BEFORE INSERT ON public.leads FOR EACH ROW EXECUTE FUNCTION leads_score_floor(); -- ShareRowExclusiveLock on leads; catalog only"),
        "{up}"
    );
    let down = &generated[0].1;
    let at_down = |text: &str| down.find(text).unwrap_or_else(|| panic!("{text}\n{down}"));
    assert!(
        at_down("DROP TRIGGER leads_score_floor ON leads;")
            < at_down("DROP FUNCTION public.leads_score_floor();"),
        "{down}"
    );
    assert_locks_as_planned(&ws, &generated);

    // A new body: replaced in place. New events: the trigger dropped and created again.
    declare("NEW.score := greatest(NEW.score, 1);", "INSERT OR UPDATE");
    let generated = ws.generate_and_check_each(&[]);
    let up = &generated[0].0;
    assert!(
        up.contains("CREATE OR REPLACE FUNCTION public.leads_score_floor()"),
        "{up}"
    );
    assert!(up.contains("greatest(NEW.score, 1)"), "{up}");
    assert!(!up.contains("DROP FUNCTION"), "{up}");
    let at = |text: &str| up.find(text).unwrap_or_else(|| panic!("{text}\n{up}"));
    assert!(
        at("DROP TRIGGER leads_score_floor ON leads; -- AccessExclusiveLock on leads")
            < at("CREATE TRIGGER leads_score_floor BEFORE INSERT OR UPDATE ON public.leads"),
        "{up}"
    );
    assert_locks_as_planned(&ws, &generated);
}

#[test]
fn materialized_views_sequences_and_grants_are_refused_by_name_before_anything_is_written() {
    let ws = Workspace::new();
    ws.append(
        "leads.sql",
        "\nCOMMENT ON TABLE leads IS 'people who may buy';\n\
         CREATE MATERIALIZED VIEW hot_leads AS SELECT id, score FROM leads WHERE score > 50;\n\
         CREATE SEQUENCE lead_numbers;\n\
         GRANT SELECT ON leads TO PUBLIC;\n",
    );
    let before = ws.migration_count();
    let run = ws.autogenerate(&[]);
    let err = run.failure().stderr();
    assert!(
        err.contains("autogenerate does not write these differences"),
        "{err}"
    );
    for name in [
        "materialized view hot_leads",
        "sequence lead_numbers",
        "grant SELECT to PUBLIC",
    ] {
        assert!(err.contains(name), "names {name}: {err}");
    }
    assert!(!err.contains("please report"), "{err}");
    assert!(
        !err.contains("COMMENT ON TABLE leads"),
        "the supported part is not the problem: {err}"
    );
    assert_eq!(ws.migration_count(), before, "nothing written");
}

#[test]
fn identity_serial_and_generated_columns_and_partial_expression_and_include_indexes() {
    let ws = Workspace::new();
    fs::write(
        ws.path("s").join("lead_events.sql"),
        "CREATE TABLE lead_events (
    id         bigserial NOT NULL PRIMARY KEY,
    seq        integer GENERATED ALWAYS AS IDENTITY,
    lead_id    uuid NOT NULL REFERENCES leads(id) ON DELETE CASCADE,
    kind       text NOT NULL,
    kind_upper text GENERATED ALWAYS AS (upper(kind)) STORED
);
COMMENT ON TABLE lead_events IS 'what happened to a lead';
COMMENT ON COLUMN lead_events.kind IS 'call, mail, meeting';
",
    )
    .unwrap();
    ws.append(
        "leads.sql",
        "\nCREATE INDEX idx_leads_open ON leads USING btree (tenant_id) INCLUDE (score) WHERE ((status)::text <> 'closed'::text);\n\
         CREATE INDEX idx_leads_email_lower ON leads USING btree (lower((email)::text));\n",
    );
    let (up, _, _) = ws.generate_and_check(&[]);
    assert!(up.contains("    id bigserial NOT NULL,"), "{up}");
    assert!(
        up.contains("    seq integer GENERATED ALWAYS AS IDENTITY,"),
        "{up}"
    );
    assert!(
        up.contains("    kind_upper text GENERATED ALWAYS AS (upper(kind)) STORED"),
        "{up}"
    );
    assert!(
        up.contains("CREATE INDEX CONCURRENTLY idx_leads_open ON public.leads USING btree (tenant_id) INCLUDE (score) WHERE"),
        "{up}"
    );
    assert!(
        up.contains("CREATE INDEX CONCURRENTLY idx_leads_email_lower ON public.leads USING btree (lower((email)::text))"),
        "{up}"
    );
    assert!(
        up.contains("COMMENT ON COLUMN lead_events.kind IS 'call, mail, meeting';"),
        "{up}"
    );
}

#[test]
fn exclusion_constraints_on_a_new_and_an_existing_table() {
    let ws = Workspace::new();
    fs::write(
        ws.path("s").join("lead_bookings.sql"),
        "CREATE TABLE lead_bookings (
    id      bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    lead_id uuid NOT NULL REFERENCES leads(id) ON DELETE CASCADE,
    during  tstzrange NOT NULL,
    CONSTRAINT lead_bookings_no_overlap EXCLUDE USING gist (during WITH &&)
);
",
    )
    .unwrap();
    ws.append(
        "leads.sql",
        "\nALTER TABLE leads ADD CONSTRAINT leads_phone_excl EXCLUDE USING btree (phone WITH =);\n",
    );
    let generated = ws.generate_and_check_each(&[]);
    assert_eq!(generated.len(), 1, "{generated:?}");
    let up = &generated[0].0;
    assert!(up.contains("ALTER TABLE lead_bookings ADD CONSTRAINT lead_bookings_no_overlap EXCLUDE USING gist (during WITH &&); -- AccessExclusiveLock on lead_bookings; catalog only"), "{up}");
    // No concurrent way exists for an exclusion constraint: said, not hidden.
    // verify's finding is allowed with the reason, so verify passes and still lists it.
    assert!(up.contains("-- PostgreSQL cannot build an exclusion constraint concurrently nor attach one to an index built beforehand: its index is built under ACCESS EXCLUSIVE, blocking reads and writes for as long as the build takes; on a big table, run it in a quiet hour\n-- xtask:allow exclusion-built-in-place generated: there is no concurrent way to add an exclusion constraint; run this migration in a quiet window\nALTER TABLE leads ADD CONSTRAINT leads_phone_excl EXCLUDE USING btree (phone WITH =); -- AccessExclusiveLock on leads; builds an index"), "{up}");
    assert!(
        generated[0]
            .1
            .contains("ALTER TABLE leads DROP CONSTRAINT leads_phone_excl;"),
        "{}",
        generated[0].1
    );
    let report = assert_locks_as_planned(&ws, &generated);
    let new = &report.revisions.last().unwrap().revision;
    let allowed: Vec<(&str, &str)> = report
        .allowed
        .iter()
        .filter(|a| &a.finding.revision == new)
        .map(|a| (a.finding.rule.id(), a.reason.as_str()))
        .collect();
    assert_eq!(
        allowed,
        [("exclusion-built-in-place", "generated: there is no concurrent way to add an exclusion constraint; run this migration in a quiet window")],
        "{report:#?}"
    );
}

#[test]
fn an_exclusion_constraint_needing_btree_gist_is_refused_by_name_until_a_migration_creates_it() {
    let ws = Workspace::new();
    fs::write(
        ws.path("s").join("lead_bookings.sql"),
        "CREATE TABLE lead_bookings (
    id      bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    lead_id uuid NOT NULL REFERENCES leads(id) ON DELETE CASCADE,
    during  tstzrange NOT NULL,
    CONSTRAINT lead_bookings_no_double_booking
        EXCLUDE USING gist (lead_id WITH =, during WITH &&)
);
",
    )
    .unwrap();
    let before = ws.migration_count();
    // Not declared: the file, the line and the extension, with the way forward.
    let err = ws.autogenerate(&[]).failure().stderr();
    assert!(err.contains("lead_bookings.sql: line 6:"), "{err}");
    assert!(
        err.contains("needs the btree_gist extension; autogenerate does not write extensions"),
        "{err}"
    );
    assert!(
        err.contains("CREATE EXTENSION IF NOT EXISTS btree_gist;"),
        "{err}"
    );
    // Declared, but no migration creates it: refused by name before any statement runs.
    fs::write(
        ws.path("s").join("extensions.sql"),
        "CREATE EXTENSION IF NOT EXISTS btree_gist;\n",
    )
    .unwrap();
    let err = ws.autogenerate(&[]).failure().stderr();
    assert!(
        err.contains("autogenerate does not write these differences"),
        "{err}"
    );
    assert!(err.contains("extension btree_gist"), "{err}");
    assert!(!err.contains("generated statement failed"), "{err}");
    assert_eq!(ws.migration_count(), before, "nothing written");

    // The way forward: a hand-written migration creates it, then autogenerate goes on.
    let run = ws.run(&["migrate", "revision", "-m", "btree_gist"]);
    run.success();
    let folder = fs::read_dir(ws.path("m"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("_btree_gist"))
        .unwrap();
    let append = |file: &str, line: &str| {
        let path = folder.join(file);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(path, text + line).unwrap();
    };
    append("up.sql", "CREATE EXTENSION IF NOT EXISTS btree_gist;\n");
    append("down.sql", "DROP EXTENSION IF EXISTS btree_gist;\n");
    let generated = ws.generate_and_check_each(&[]);
    assert!(
        generated[0]
            .0
            .contains("EXCLUDE USING gist (lead_id WITH =, during WITH &&)"),
        "{}",
        generated[0].0
    );
    assert_locks_as_planned(&ws, &generated);
}

#[test]
fn a_column_collation_is_refused_by_name_and_check_sees_it() {
    let ws = Workspace::new();
    ws.edit(
        "leads.sql",
        "    phone             character varying(20),",
        "    phone             character varying(20) COLLATE \"C\",",
    );
    let before = ws.migration_count();
    let err = ws.autogenerate(&[]).failure().stderr();
    assert!(
        err.contains("autogenerate does not write these differences"),
        "{err}"
    );
    assert!(err.contains("column collations"), "{err}");
    assert!(
        err.contains("+ column phone character varying(20) collate \"C\""),
        "{err}"
    );
    assert_eq!(ws.migration_count(), before, "nothing written");
    // `check` does not pass a schema whose collation the chain does not have.
    let check = ws.run(&["migrate", "check"]);
    let out = check.failure().stderr();
    assert!(out.contains("collate \"C\""), "{out}");
}

/// A migration written by hand, modelled on the upstream project's next revision (the AI
/// usage log) plus a lead source enum: the schema files are left as they were.
fn write_hand_migration(ws: &Workspace) -> &'static str {
    const REVISION: &str = "h7a8b9c0d1e2";
    let dir = ws
        .path("m")
        .join(format!("{REVISION}_ai_usage_logs_and_lead_source"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("migration.toml"),
        format!(
            "revision = \"{REVISION}\"\nrevises = [\"{}\"]\nmessage = \"AI usage logs and lead source\"\n\
             create_date = \"2025-11-19 14:00:00\"\ntransactional = true\n",
            crate::support::chain_head()
        ),
    )
    .unwrap();
    fs::write(
        dir.join("up.sql"),
        "CREATE TYPE leadsource AS ENUM ('web', 'referral', 'import');\n\n\
         ALTER TABLE leads ADD COLUMN source leadsource;\n\n\
         CREATE TABLE ai_usage_logs (\n    id UUID NOT NULL,\n    tenant_id UUID NOT NULL,\n    \
         user_id UUID,\n    operation VARCHAR(100) NOT NULL,\n    model VARCHAR(100) NOT NULL,\n    \
         total_tokens INTEGER DEFAULT 0 NOT NULL,\n    cost_usd FLOAT,\n    lead_id UUID,\n    \
         created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,\n    PRIMARY KEY (id),\n    \
         FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,\n    \
         FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE SET NULL,\n    \
         FOREIGN KEY (lead_id) REFERENCES leads (id) ON DELETE SET NULL\n);\n\n\
         CREATE INDEX idx_ai_usage_logs_tenant_created ON ai_usage_logs (tenant_id, created_at);\n\n\
         ALTER TABLE ai_usage_logs ENABLE ROW LEVEL SECURITY;\n\n\
         CREATE POLICY ai_usage_log_tenant_isolation ON ai_usage_logs\n    \
         USING (tenant_id = current_setting('app.current_tenant_id')::uuid);\n",
    )
    .unwrap();
    fs::write(
        dir.join("down.sql"),
        "DROP TABLE ai_usage_logs;\n\nALTER TABLE leads DROP COLUMN source;\n\nDROP TYPE leadsource;\n",
    )
    .unwrap();
    REVISION
}

#[test]
fn migrations_ahead_of_the_schema_files_are_named_and_write_schema_brings_check_to_a_pass() {
    let ws = Workspace::new();
    let revision = write_hand_migration(&ws);
    let read_all = || -> Vec<(String, String)> {
        let mut files: Vec<(String, String)> = fs::read_dir(ws.path("s"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let text = fs::read_to_string(&p).unwrap();
                (p.file_name().unwrap().to_string_lossy().into_owned(), text)
            })
            .collect();
        files.sort();
        files
    };
    let untouched = read_all();

    let run = ws.run(&["migrate", "check"]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let err = run.stderr();
    assert!(
        err.contains("the migrations are ahead of the schema files"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "describes revision {}, and {revision} after it is not in the files",
            crate::support::chain_head()
        )),
        "{err}"
    );
    assert!(
        err.contains("cargo xtask migrate check --write-schema"),
        "{err}"
    );
    let prose = err.split(":\n").next().unwrap();
    assert!(!prose.contains("  "), "one space between words: {prose}");
    assert!(
        !err.contains("DROP "),
        "no statement undoing the work: {err}"
    );
    assert!(
        !err.contains("`cargo xtask migrate revision --autogenerate"),
        "autogenerate is not the advice: {err}"
    );
    assert_eq!(read_all(), untouched, "check alone writes nothing");

    let run = ws.run(&["migrate", "check", "--write-schema"]);
    let err = run.success().stderr();
    assert!(err.contains("ai_usage_logs.sql"), "{err}");
    assert!(err.contains("now matches the migrations' head"), "{err}");
    // Written beside and renamed into place: no staging file left, the mode kept.
    for entry in fs::read_dir(ws.path("s")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".write-schema-"), "left behind: {name}");
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&entry.metadata().unwrap().permissions());
        assert_eq!(mode & 0o777, 0o644, "{name} keeps its mode");
    }
    let types = fs::read_to_string(ws.path("s/types.sql")).unwrap();
    assert!(
        types.contains("CREATE TYPE leadsource AS ENUM ('web', 'referral', 'import');")
            && types.contains("CREATE TYPE abteststatus"),
        "the new enum beside the old ones: {types}"
    );
    let logs = fs::read_to_string(ws.path("s/ai_usage_logs.sql")).unwrap();
    assert!(
        logs.contains("CREATE POLICY ai_usage_log_tenant_isolation"),
        "{logs}"
    );
    let leads = fs::read_to_string(ws.path("s/leads.sql")).unwrap();
    assert!(leads.contains("source public.leadsource"), "{leads}");
    let unchanged: Vec<_> = untouched
        .iter()
        .filter(|(name, _)| !["types.sql", "leads.sql"].contains(&name.as_str()))
        .collect();
    let after = read_all();
    for file in unchanged {
        assert!(after.contains(file), "{} was rewritten", file.0);
    }
    ws.run(&["migrate", "check"]).success();
    let run = ws.autogenerate(&[]);
    assert!(
        run.success().stderr().contains("no difference"),
        "{}",
        run.text()
    );

    // Files with changes of their own are never overwritten.
    ws.edit(
        "leads.sql",
        "score integer NOT NULL,",
        "score integer DEFAULT 0 NOT NULL,",
    );
    let edited = read_all();
    let run = ws.run(&["migrate", "check", "--write-schema"]);
    assert_eq!(run.code(), 1, "{}", run.text());
    assert!(run.stderr().contains("equals none"), "{}", run.text());
    let stderr = run.stderr();
    let prose = stderr.split(":\n").next().unwrap();
    assert!(!prose.contains("  "), "one space between words: {prose}");
    assert_eq!(read_all(), edited, "nothing written");
}

#[test]
fn write_schema_replaces_an_enum_type_in_place_and_refuses_other_objects_by_name() {
    let ws = Workspace::new();
    let dir = ws.path("m").join("c1d2e3f4a5b6_sms_queued_and_touch");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("migration.toml"),
        format!(
            "revision = \"c1d2e3f4a5b6\"\nrevises = [\"{}\"]\nmessage = \"queued SMS\"\n\
             create_date = \"2025-11-20 09:00:00\"\ntransactional = true\n",
            crate::support::chain_head()
        ),
    )
    .unwrap();
    let enum_value = "ALTER TYPE smsstatus ADD VALUE 'queued';\n";
    let function = "CREATE FUNCTION touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$\n\
                    BEGIN NEW.updated_at := now(); RETURN NEW; END $$;\n";
    fs::write(dir.join("up.sql"), format!("{enum_value}\n{function}")).unwrap();
    fs::write(dir.join("down.sql"), "DROP FUNCTION touch_updated_at();\n").unwrap();
    let types_before = fs::read_to_string(ws.path("s/types.sql")).unwrap();

    let run = ws.run(&["migrate", "check", "--write-schema"]);
    assert_eq!(run.code(), 1, "{}", run.text());
    let err = run.stderr();
    assert!(
        err.contains("touch_updated_at") && err.contains("nothing was written"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(ws.path("s/types.sql")).unwrap(),
        types_before
    );

    // Without the function, the enum's statement is replaced where it stands.
    fs::write(dir.join("up.sql"), enum_value).unwrap();
    ws.run(&["migrate", "check", "--write-schema"]).success();
    let types = fs::read_to_string(ws.path("s/types.sql")).unwrap();
    assert_eq!(
        types,
        types_before.replace(
            "'failed', 'undelivered');",
            "'failed', 'undelivered', 'queued');"
        ),
        "only the one statement changed"
    );
    ws.run(&["migrate", "check"]).success();
}

/// A schema file that is a symbolic link (to a file another checkout or directory
/// shares) is read as the file it names, but `--write-schema` used to write through
/// it, changing the file outside the schema directory; it is refused by name before
/// anything is written.
#[test]
fn write_schema_refuses_to_write_through_a_symbolic_link() {
    let ws = Workspace::new();
    write_hand_migration(&ws);
    let shared = ws.path("shared");
    fs::create_dir_all(&shared).unwrap();
    fs::rename(ws.path("s/leads.sql"), shared.join("leads.sql")).unwrap();
    std::os::unix::fs::symlink(shared.join("leads.sql"), ws.path("s/leads.sql")).unwrap();
    let before = fs::read_to_string(shared.join("leads.sql")).unwrap();
    let types = fs::read_to_string(ws.path("s/types.sql")).unwrap();

    let run = ws.run(&["migrate", "check", "--write-schema"]);
    assert_eq!(run.code(), 1, "{}", run.text());
    assert!(
        run.stderr().contains(&format!(
            "{} is a symbolic link (to {}): --write-schema writes only the files of the schema directory itself; nothing was written",
            ws.path("s/leads.sql").display(),
            shared.join("leads.sql").display()
        )),
        "{}",
        run.text()
    );
    assert_eq!(
        fs::read_to_string(shared.join("leads.sql")).unwrap(),
        before
    );
    assert_eq!(fs::read_to_string(ws.path("s/types.sql")).unwrap(), types);
    assert!(!ws.path("s/ai_usage_logs.sql").exists());
}
