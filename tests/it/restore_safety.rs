//! `restore` against hostile files and faults: psql meta-commands in a plain dump,
//! database-level settings kept through the staging swap, leftovers of a killed restore,
//! and a final line and exit status that say what state the target is in.

use std::path::Path;

use crate::support::TestDb;

/// A database at head with rows for two tenants in every table.
fn seeded() -> TestDb {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "head"]).success();
    backend_schema::verify::seed::seed_empty_tables(&mut db.client()).unwrap();
    db
}

fn plain_backup(db: &TestDb, dir: &Path) -> String {
    let path = dir.join("b.sql");
    db.xtask(&[
        "backup",
        "--format",
        "plain",
        "--output",
        path.to_str().unwrap(),
    ])
    .success();
    std::fs::read_to_string(path).unwrap()
}

/// `text` with `insert` placed as the line after the first line `after` matches.
fn with_line_after(text: &str, after: impl Fn(&str) -> bool, insert: &str) -> String {
    let mut out = String::new();
    let mut done = false;
    for line in text.split_inclusive('\n') {
        out.push_str(line);
        if !done && after(line.trim_end()) {
            out.push_str(insert);
            out.push('\n');
            done = true;
        }
    }
    assert!(done, "no line to insert after");
    out
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn a_plain_dump_with_psql_meta_commands_is_refused_before_anything_runs() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let dump = plain_backup(&db, out.path());
    let mark = out.path().join("pwned");
    let shell = format!("\\! touch {}", mark.display());
    let first_copy_end = |l: &str| l == "\\.";
    let after_restrict = |l: &str| l.starts_with("\\restrict ");
    let after_unrestrict = |l: &str| l.starts_with("\\unrestrict ");
    let unrestricted: String = dump
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .map(|l| format!("{l}\n"))
        .collect();
    // (file, its text, the text of the line the refusal must name)
    let cases: Vec<(&str, String, String)> = vec![
        (
            "shell-without-restrict.sql",
            with_line_after(&unrestricted, first_copy_end, &shell),
            shell.clone(),
        ),
        (
            "shell-after-unrestrict.sql",
            with_line_after(&dump, after_unrestrict, &shell),
            shell.clone(),
        ),
        (
            "mid-line.sql",
            with_line_after(&unrestricted, first_copy_end, &format!("SELECT 1; {shell}")),
            shell.clone(),
        ),
        (
            "pipe.sql",
            with_line_after(
                &unrestricted,
                |l: &str| l.starts_with("SET row_security"),
                &format!("\\o |touch {}", mark.display()),
            ),
            "\\o |touch".to_string(),
        ),
        (
            "copy-program.sql",
            with_line_after(
                &dump,
                after_unrestrict,
                &format!("\\copy (select 1) to program 'touch {}'", mark.display()),
            ),
            "\\copy".to_string(),
        ),
        (
            "include.sql",
            with_line_after(&dump, after_restrict, "\\i /etc/hostname"),
            "\\i /etc/hostname".to_string(),
        ),
        (
            "setenv.sql",
            with_line_after(&dump, after_restrict, "\\setenv PAGER 'sh -c id'"),
            "\\setenv".to_string(),
        ),
        (
            "unrestrict-then-shell.sql",
            with_line_after(
                &dump,
                after_restrict,
                &format!("\\unrestrict guess\n{shell}"),
            ),
            "\\unrestrict guess".to_string(),
        ),
    ];
    let target = TestDb::new();
    for (name, text, bad) in cases {
        let path = out.path().join(name);
        std::fs::write(&path, &text).unwrap();
        let run = target.xtask(&["restore", path.to_str().unwrap()]);
        let err = run.failure().stderr();
        assert!(
            err.contains(&format!(
                "{}:{}: psql meta-command",
                path.display(),
                line_of(&text, &bad)
            )),
            "{name}: {err}"
        );
        assert!(err.contains("nothing was restored"), "{name}: {err}");
        assert!(!mark.exists(), "{name}: the shell command ran");
        assert!(target.snapshot().is_empty(), "{name}");
    }
    // A backslash inside a dollar-quoted body, a string, a comment or COPY data is no
    // meta-command: that dump restores.
    db.client()
        .batch_execute(
            "CREATE FUNCTION public.odd() RETURNS text LANGUAGE plpgsql AS $body$\nBEGIN RETURN 'a\\\n\\! not a command'; END\n$body$;\n\
             COMMENT ON FUNCTION public.odd() IS '\\i not a command either';\n\
             INSERT INTO leads (id, tenant_id, name, email, status, score, tags, custom_fields, created_by)\n\
             SELECT gen_random_uuid(), tenant_id, E'\\\\! id\\n\\\\.', 'x@example.com', 'new', 1, '[]', '{}', created_by FROM leads LIMIT 1",
        )
        .unwrap();
    let dump = plain_backup(&db, &out.path().join("odd"));
    assert!(dump.contains("\n\\! not a command'; END\n"));
    let odd = out.path().join("odd.sql");
    std::fs::write(&odd, &dump).unwrap();
    target.xtask(&["restore", odd.to_str().unwrap()]).success();
    let body: String = target
        .client()
        .query_one("SELECT odd()", &[])
        .unwrap()
        .get(0);
    assert_eq!(body, "a\\\n\\! not a command");
    let name: String = target
        .client()
        .query_one("SELECT name FROM leads WHERE name LIKE '\\\\%'", &[])
        .unwrap()
        .get(0);
    assert_eq!(name, "\\! id\n\\.");
    // A dump made with --create switches databases with `\connect`: refused by name.
    let created = out.path().join("created.sql");
    let text = format!("{}\n\\connect app\nSELECT 1;\n", dump);
    std::fs::write(&created, &text).unwrap();
    let fresh = TestDb::new();
    let run = fresh.xtask(&["restore", created.to_str().unwrap()]);
    assert!(
        run.failure().stderr().contains(&format!(
            "{}:{}: `\\connect` is in a dump made with pg_dump --create",
            created.display(),
            line_of(&text, "\\connect app")
        )),
        "{}",
        run.text()
    );
}
