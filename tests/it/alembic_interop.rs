//! The real Alembic and the xtask take turns on one database: each reads and continues
//! what the other wrote, and Alembic's own `alembic_version` table equals ours.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use backend_schema::source::{parse_source, read_source};

use crate::pinned_alembic::alembic_command;
use crate::support::{root, TestDb};

/// The chain's head, read from the migrations: a new migration moves it, not the tests.
static HEAD: std::sync::LazyLock<&'static str> =
    std::sync::LazyLock::new(crate::support::chain_head);

/// An Alembic project whose revisions run our migrations' SQL files, with our IDs and
/// parents: what the backend's `alembic/versions/` holds.
fn alembic_project() -> tempfile::TempDir {
    let project = tempfile::tempdir().unwrap();
    let versions = project.path().join("versions");
    fs::create_dir(&versions).unwrap();
    fs::copy(
        root().join("tests/alembic/env.py"),
        project.path().join("env.py"),
    )
    .unwrap();
    fs::copy(
        root().join("tests/alembic/script.py.mako"),
        project.path().join("script.py.mako"),
    )
    .unwrap();
    fs::write(
        project.path().join("alembic.ini"),
        format!(
            "[alembic]\nscript_location = {}\n",
            project.path().display()
        ),
    )
    .unwrap();
    let migrations = parse_source(&read_source(&root().join("migrations")).unwrap()).unwrap();
    for migration in migrations {
        let down_revision = match migration.parents.as_slice() {
            [] => "None".to_string(),
            [one] => format!("{one:?}"),
            many => format!(
                "({})",
                many.iter().map(|p| format!("{p:?},")).collect::<String>()
            ),
        };
        let mut script = String::new();
        writeln!(script, "from alembic import op\n").unwrap();
        writeln!(script, "revision = {:?}", migration.revision).unwrap();
        writeln!(script, "down_revision = {down_revision}").unwrap();
        writeln!(script, "branch_labels = None\ndepends_on = None\n").unwrap();
        for (function, file) in [("upgrade", "up.sql"), ("downgrade", "down.sql")] {
            let path = migration.dir.join(file);
            writeln!(
                script,
                "def {function}():\n    with open({:?}, encoding='utf-8-sig') as f:\n        op.get_bind().exec_driver_sql(f.read())\n",
                path.display().to_string()
            )
            .unwrap();
        }
        fs::write(versions.join(format!("{}.py", migration.revision)), script).unwrap();
    }
    project
}

struct Alembic<'a> {
    project: &'a Path,
    url: String,
}

impl Alembic<'_> {
    #[track_caller]
    fn run(&self, args: &[&str]) -> String {
        let output = alembic_command()
            .arg("-c")
            .arg(self.project.join("alembic.ini"))
            .args(args)
            .env("ALEMBIC_URL", &self.url)
            .output()
            .expect("run alembic");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "alembic {args:?} failed:\n{text}");
        text
    }
}

fn version_rows(db: &TestDb) -> Vec<String> {
    db.client()
        .query(
            "SELECT version_num::text FROM alembic_version ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Columns, constraints and indexes of `alembic_version`, from the catalogs (the schema
/// snapshot leaves the version tables out on purpose).
fn version_table_definition(db: &TestDb) -> Vec<String> {
    db.client()
        .query(
            "SELECT format('column %s %s %s', attname, format_type(atttypid, atttypmod), attnotnull)
               FROM pg_attribute WHERE attrelid = 'alembic_version'::regclass AND attnum > 0 AND NOT attisdropped
             UNION ALL
             SELECT format('constraint %s %s', conname, pg_get_constraintdef(oid))
               FROM pg_constraint WHERE conrelid = 'alembic_version'::regclass
             UNION ALL
             SELECT format('index %s', pg_get_indexdef(indexrelid))
               FROM pg_index WHERE indrelid = 'alembic_version'::regclass
             ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn alembic_and_the_xtask_take_turns_on_one_database() {
    let project = alembic_project();
    let db = TestDb::new();
    let alembic = Alembic {
        project: project.path(),
        url: db.url().replace("postgresql://", "postgresql+psycopg2://"),
    };

    // xtask first; Alembic reads where it stopped and continues.
    db.xtask(&["migrate", "upgrade", "f5a2"]).success();
    assert!(alembic.run(&["current"]).contains("f5a2c3d8e9b1"));
    alembic.run(&["upgrade", "head"]);
    assert_eq!(version_rows(&db), [*HEAD]);

    // The xtask reads Alembic's result, shows its revisions as Alembic-applied, and
    // takes the database down past them.
    let current = db.xtask(&["migrate", "current", "--verbose"]);
    let out = current.success().stdout();
    assert!(out.starts_with(&format!("{} (head)\n", *HEAD)), "{out}");
    assert!(out.contains("applied by Alembic"), "{out}");
    db.xtask(&["migrate", "downgrade", "d724", "--yes"])
        .success();
    assert_eq!(version_rows(&db), ["d724f366bbf2"]);

    // Alembic takes it the rest of the way down, and up again halfway; the xtask finishes.
    alembic.run(&["downgrade", "base"]);
    assert!(version_rows(&db).is_empty());
    alembic.run(&["upgrade", "e33568d0d2e9"]);
    db.xtask(&["migrate", "upgrade", "head"]).success();
    assert_eq!(version_rows(&db), [*HEAD]);
    assert!(alembic.run(&["current"]).contains(*HEAD));

    // Built by Alembic alone or by the xtask alone: the same schema, and the same
    // version table down to its constraint name.
    let by_alembic = TestDb::new();
    Alembic {
        project: project.path(),
        url: by_alembic
            .url()
            .replace("postgresql://", "postgresql+psycopg2://"),
    }
    .run(&["upgrade", "head"]);
    let by_xtask = TestDb::new();
    by_xtask.xtask(&["migrate", "upgrade", "head"]).success();
    assert_eq!(
        version_table_definition(&by_alembic),
        version_table_definition(&by_xtask)
    );
    assert!(!version_table_definition(&by_xtask).is_empty());
    let strip_history = |db: &TestDb| {
        let mut snapshot = db.snapshot();
        snapshot
            .objects
            .retain(|key, _| !key.contains("alembic_version_history"));
        snapshot
    };
    assert_eq!(strip_history(&by_alembic), strip_history(&by_xtask));
}
