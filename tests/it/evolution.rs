//! Schema evolution: one harmless migration added to a copy of the workspace breaks no
//! test of the tool, and the tests of this chain pass again after README's "Adding a
//! migration" refresh (`schema-dump`, then `INSTA_UPDATE=always`).

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::{chain_head, root, PROJECT_ROOT_VAR};

/// Tests of the tool that broke when a migration was added (they named the head, the
/// chain's length or its table count): they must pass on the longer chain untouched.
const TOOL_TESTS: &[&str] = &[
    "backup::a_non_empty_target_needs_clean_and_yes",
    "backup::a_parallel_restore_replaces_the_target_through_a_staging_database",
    "backup::backup_then_restore_is_identical_in_every_format",
    "bad_input::crlf_and_bom_files_work_and_keep_their_checksums",
    "lint::lint_runs_the_static_rules_without_a_server",
    "migrate::check_heads_says_when_the_target_database_is_not_up_to_date",
    "reliability::eight_migrators_at_once_apply_every_migration_exactly_once",
    "tls::sslmode_means_what_it_means_to_libpq",
    "verify::verify_command_passes_and_writes_a_json_report",
];

/// Tests of this chain's reviewed artefacts (snapshots, `schema.sql`, the diagram): a
/// new migration changes them on purpose, so they fail until the documented refresh.
const CHAIN_TESTS: &[&str] = &[
    "backup::schema_sql_is_current",
    "docs::the_readme_shows_the_committed_diagram",
    "backup::the_er_diagram_shows_tables_keys_and_rls",
    "migrate::history_heads_and_show_follow_alembic_wording",
    "migrate::upgrade_head_then_current_prints_the_head_like_alembic",
    "verify::the_chain_verifies_with_a_schema_snapshot_per_revision",
    "verify::no_snapshot_is_unreferenced",
];

const NEW_REVISION: &str = "c7d8e9f0a1b2";

#[test]
fn a_new_migration_breaks_no_test_of_the_tool_and_one_refresh_fixes_the_chain_tests() {
    let copy = tempfile::tempdir().unwrap();
    copy_sources(&root(), copy.path());
    add_harmless_migration(copy.path());

    let tool = run_tests(copy.path(), TOOL_TESTS, "no");
    assert!(
        tool.0,
        "tests of the tool broke on a longer chain:\n{}",
        tool.1
    );

    let stale = run_tests(copy.path(), CHAIN_TESTS, "no");
    assert!(
        !stale.0,
        "the chain's snapshots should differ before the refresh:\n{}",
        stale.1
    );

    // README "Adding a migration", steps 5 and 6.
    let dump = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["schema-dump", "--erd", "docs/erd.mmd"])
        .env(PROJECT_ROOT_VAR, copy.path())
        .env_remove("DATABASE_URL")
        .current_dir(copy.path())
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    paste_diagram_into_readme(copy.path());
    let refresh = run_tests(copy.path(), CHAIN_TESTS, "always");
    assert!(refresh.0, "the refresh itself failed:\n{}", refresh.1);

    let after = run_tests(copy.path(), CHAIN_TESTS, "no");
    assert!(
        after.0,
        "the chain tests fail after the refresh:\n{}",
        after.1
    );
    let snapshot = copy.path().join(format!(
        "tests/it/snapshots/it__verify__schema@{NEW_REVISION}.snap"
    ));
    let text = fs::read_to_string(&snapshot).unwrap();
    assert!(text.contains("ai_usage_logs"), "{text}");
    assert!(fs::read_to_string(copy.path().join("schema.sql"))
        .unwrap()
        .contains("ai_usage_logs"));
}

/// Step 5's hand edit: the README's mermaid block becomes the new `docs/erd.mmd`.
fn paste_diagram_into_readme(copy: &Path) {
    let readme = fs::read_to_string(copy.join("README.md")).unwrap();
    let erd = fs::read_to_string(copy.join("docs/erd.mmd")).unwrap();
    let (before, rest) = readme.split_once("```mermaid\n").unwrap();
    let (_, after) = rest.split_once("```").unwrap();
    fs::write(
        copy.join("README.md"),
        format!("{before}```mermaid\n{erd}```{after}"),
    )
    .unwrap();
}

/// Runs this test binary's `names` on the copy; whether they passed, and the output.
fn run_tests(copy: &Path, names: &[&str], insta_update: &str) -> (bool, String) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "--test-threads", "2"])
        .args(names)
        .env(PROJECT_ROOT_VAR, copy)
        .env("INSTA_WORKSPACE_ROOT", copy)
        .env("INSTA_UPDATE", insta_update)
        .env_remove("CI")
        .env_remove("INSTA_FORCE_PASS")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let ran = names
        .iter()
        .all(|name| text.contains(&format!("test {name} ...")));
    assert!(ran, "not every test ran (renamed?):\n{text}");
    (output.status.success(), text)
}

/// The workspace's sources: everything but build output and git's own files.
pub(crate) fn copy_sources(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            copy_sources(&entry.path(), &target);
        } else if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A new table on top of the head, declared in the schema files as well, modelled on
/// the upstream project's next revision (`ai_usage_logs`).
fn add_harmless_migration(copy: &Path) {
    let dir = copy.join(format!("migrations/{NEW_REVISION}_ai_usage_logs"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("migration.toml"),
        format!(
            "revision = \"{NEW_REVISION}\"\nrevises = [\"{}\"]\nmessage = \"AI usage log table\"\n\
             create_date = \"2025-11-19 14:00:00\"\ntransactional = true\n",
            chain_head()
        ),
    )
    .unwrap();
    fs::write(
        dir.join("up.sql"),
        "CREATE TABLE ai_usage_logs (\n    id UUID NOT NULL,\n    tenant_id UUID NOT NULL,\n    \
         operation VARCHAR(100) NOT NULL,\n    total_tokens INTEGER DEFAULT 0 NOT NULL,\n    \
         created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,\n    PRIMARY KEY (id),\n    \
         FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE\n);\n\n\
         CREATE INDEX idx_ai_usage_logs_tenant_id ON ai_usage_logs (tenant_id);\n",
    )
    .unwrap();
    fs::write(dir.join("down.sql"), "DROP TABLE ai_usage_logs;\n").unwrap();
    fs::write(
        copy.join("backend-schema/schema/ai_usage_logs.sql"),
        "CREATE TABLE ai_usage_logs (\n    id uuid NOT NULL,\n    tenant_id uuid NOT NULL,\n    \
         operation character varying(100) NOT NULL,\n    total_tokens integer DEFAULT 0 NOT NULL,\n    \
         created_at timestamp with time zone DEFAULT now() NOT NULL,\n    \
         CONSTRAINT ai_usage_logs_pkey PRIMARY KEY (id),\n    \
         CONSTRAINT ai_usage_logs_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants(id) ON DELETE CASCADE\n);\n\n\
         CREATE INDEX idx_ai_usage_logs_tenant_id ON ai_usage_logs USING btree (tenant_id);\n",
    )
    .unwrap();
}
