//! The bad-input corpus: every case gets a message naming the problem, a non-zero
//! exit, and leaves the database exactly as it was (catalog snapshot, version rows and
//! bookkeeping rows compared before and after).

use std::fs;
use std::path::Path;

use crate::support::{copy_dir, copy_migrations, root, xtask, TestDb};

/// The next migration to apply from the database the cases start at (f5a2c3d8e9b1).
const NEXT: &str = "f7e1c2d9b3a4_authentication_enhancements";

type Prepare = fn(&Path, &mut postgres::Client);

struct Case {
    name: &'static str,
    prepare: Prepare,
    /// `{M}` is the migrations copy, `{URL}` the case's database, `{MISSING}` a database
    /// that does not exist, `{DIR}` a scratch dir.
    args: &'static [&'static str],
    exit_code: i32,
    needles: &'static [&'static str],
}

const UPGRADE: &[&str] = &[
    "migrate",
    "upgrade",
    "head",
    "--migrations",
    "{M}",
    "--database-url",
    "{URL}",
];

fn nothing(_: &Path, _: &mut postgres::Client) {}

fn write(dir: &Path, file: &str, text: &str) {
    fs::write(dir.join(file), text).unwrap();
}

fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no {from:?}");
    fs::write(path, text.replacen(from, to, 1)).unwrap();
}

const CASES: &[Case] = &[
    Case {
        name: "metadata that is not TOML",
        prepare: |m, _| {
            write(
                m,
                &format!("{NEXT}/migration.toml"),
                "revision = \"f7e1c2d9b3a4\nrevises = [\n",
            )
        },
        args: UPGRADE,
        exit_code: 1,
        needles: &["f7e1c2d9b3a4_authentication_enhancements/migration.toml"],
    },
    Case {
        name: "an unknown metadata key",
        prepare: |m, _| {
            edit(
                m,
                &format!("{NEXT}/migration.toml"),
                "message =",
                "mesage =",
            )
        },
        args: UPGRADE,
        exit_code: 1,
        needles: &["migration.toml", "mesage"],
    },
    Case {
        name: "a missing up.sql",
        prepare: |m, _| fs::remove_file(m.join(NEXT).join("up.sql")).unwrap(),
        args: UPGRADE,
        exit_code: 1,
        needles: &["f7e1c2d9b3a4_authentication_enhancements", "up.sql"],
    },
    Case {
        name: "a missing down.sql",
        prepare: |m, _| fs::remove_file(m.join(NEXT).join("down.sql")).unwrap(),
        args: UPGRADE,
        exit_code: 1,
        needles: &["f7e1c2d9b3a4_authentication_enhancements", "down.sql"],
    },
    Case {
        name: "a duplicate revision ID",
        prepare: |m, _| copy_dir(&m.join(NEXT), &m.join("f7e1c2d9b3a4_auth_again")),
        args: UPGRADE,
        exit_code: 1,
        needles: &[
            "duplicate revision ID f7e1c2d9b3a4",
            "f7e1c2d9b3a4_auth_again",
        ],
    },
    Case {
        name: "a parent that does not exist",
        prepare: |m, _| {
            edit(
                m,
                &format!("{NEXT}/migration.toml"),
                "f5a2c3d8e9b1",
                "f5a2c3d8e9b0",
            )
        },
        args: UPGRADE,
        exit_code: 1,
        needles: &["f5a2c3d8e9b0"],
    },
    Case {
        name: "a cycle",
        prepare: |m, _| {
            edit(
                m,
                "0f18384ca39a_initial_tables/migration.toml",
                "revises = []",
                "revises = [\"b2c3d4e5f6a7\"]",
            )
        },
        args: UPGRADE,
        exit_code: 1,
        needles: &["cycle"],
    },
    Case {
        name: "a revision ID over 32 characters",
        prepare: |m, _| {
            let long = "f7e1c2d9b3a4f7e1c2d9b3a4f7e1c2d9b3a4";
            edit(
                m,
                &format!("{NEXT}/migration.toml"),
                "revision = \"f7e1c2d9b3a4\"",
                &format!("revision = \"{long}\""),
            );
            fs::rename(
                m.join(NEXT),
                m.join(format!("{long}_authentication_enhancements")),
            )
            .unwrap();
        },
        args: UPGRADE,
        exit_code: 1,
        needles: &["32"],
    },
    Case {
        name: "a folder whose name does not start with its revision",
        prepare: |m, _| fs::rename(m.join(NEXT), m.join("authentication_enhancements")).unwrap(),
        args: UPGRADE,
        exit_code: 1,
        needles: &["authentication_enhancements"],
    },
    Case {
        name: "a stray file among the migrations",
        prepare: |m, _| write(m, "notes.txt", "todo\n"),
        args: UPGRADE,
        exit_code: 1,
        needles: &["notes.txt"],
    },
    Case {
        name: "a non-UTF-8 SQL file",
        prepare: |m, _| {
            fs::write(
                m.join(NEXT).join("up.sql"),
                b"ALTER TABLE users ADD COLUMN caf\xe9 int;\n",
            )
            .unwrap()
        },
        args: UPGRADE,
        exit_code: 1,
        needles: &["f7e1c2d9b3a4_authentication_enhancements/up.sql", "UTF-8"],
    },
    Case {
        name: "an empty migrations directory",
        prepare: |m, _| {
            fs::remove_dir_all(m).unwrap();
            fs::create_dir(m).unwrap();
        },
        args: UPGRADE,
        exit_code: 1,
        needles: &["no migrations"],
    },
    Case {
        name: "a migrations directory that does not exist",
        prepare: |m, _| fs::remove_dir_all(m).unwrap(),
        args: UPGRADE,
        exit_code: 1,
        needles: &["migrations"],
    },
    Case {
        name: "an SQL syntax error in the next migration",
        prepare: |m, _| {
            write(m, &format!("{NEXT}/up.sql"), "ALTER TABLE users ADD COLUMN locked_until timestamptz;\nALTER TABLEE users ADD COLUMN x int;\n")
        },
        args: UPGRADE,
        exit_code: 1,
        needles: &[
            "f7e1c2d9b3a4_authentication_enhancements/up.sql:2",
            "syntax error at or near \"TABLEE\"",
        ],
    },
    Case {
        name: "an unknown target revision",
        prepare: nothing,
        args: &[
            "migrate",
            "upgrade",
            "deadbeef",
            "--migrations",
            "{M}",
            "--database-url",
            "{URL}",
        ],
        exit_code: 1,
        needles: &["deadbeef"],
    },
    Case {
        name: "an ambiguous revision prefix",
        prepare: nothing,
        args: &[
            "migrate",
            "upgrade",
            "f",
            "--migrations",
            "{M}",
            "--database-url",
            "{URL}",
        ],
        exit_code: 1,
        needles: &["f5a2c3d8e9b1", "f7e1c2d9b3a4"],
    },
    Case {
        name: "a relative target past head",
        prepare: nothing,
        args: &[
            "migrate",
            "upgrade",
            "+9",
            "--migrations",
            "{M}",
            "--database-url",
            "{URL}",
        ],
        exit_code: 1,
        needles: &["+9"],
    },
    Case {
        name: "a relative downgrade past base",
        prepare: nothing,
        args: &[
            "migrate",
            "downgrade",
            "-9",
            "--yes",
            "--migrations",
            "{M}",
            "--database-url",
            "{URL}",
        ],
        exit_code: 1,
        needles: &["-9"],
    },
    Case {
        name: "stamping an unknown revision",
        prepare: nothing,
        args: &[
            "migrate",
            "stamp",
            "0badc0ffee00",
            "--migrations",
            "{M}",
            "--database-url",
            "{URL}",
        ],
        exit_code: 1,
        needles: &["0badc0ffee00"],
    },
    Case {
        name: "a database at a revision no file knows",
        prepare: |_, client| {
            client
                .batch_execute("UPDATE alembic_version SET version_num = 'abcdef123456'")
                .unwrap()
        },
        args: UPGRADE,
        exit_code: 1,
        needles: &["abcdef123456"],
    },
    Case {
        name: "an edited applied migration",
        prepare: |m, _| {
            edit(
                m,
                "e33568d0d2e9_add_lead_model/up.sql",
                "CREATE TABLE",
                "CREATE TABLE /* edited */",
            )
        },
        args: UPGRADE,
        exit_code: 1,
        needles: &[
            "e33568d0d2e9",
            "e33568d0d2e9_add_lead_model",
            "migrate rehash",
        ],
    },
    Case {
        name: "an unfinished non-transactional migration",
        prepare: |_, client| {
            client
                .batch_execute(
                    "INSERT INTO alembic_version_history (revision, operation, status, tool_version)
                     VALUES ('f7e1c2d9b3a4', 'upgrade', 'in_progress', 'test')",
                )
                .unwrap()
        },
        args: UPGRADE,
        exit_code: 1,
        needles: &["f7e1c2d9b3a4", "in_progress"],
    },
    Case {
        name: "a malformed DATABASE_URL",
        prepare: nothing,
        args: &[
            "migrate",
            "upgrade",
            "head",
            "--migrations",
            "{M}",
            "--database-url",
            "postgresql://app:s3cret@localhost:notaport/app",
        ],
        exit_code: 1,
        needles: &["malformed database URL from --database-url"],
    },
    Case {
        name: "a URL that is not PostgreSQL",
        prepare: nothing,
        args: &[
            "migrate",
            "current",
            "--migrations",
            "{M}",
            "--database-url",
            "mysql://root@localhost/app",
        ],
        exit_code: 1,
        needles: &["postgresql://"],
    },
    Case {
        name: "an sslmode libpq does not have",
        prepare: nothing,
        args: &["migrate", "current", "--migrations", "{M}", "--database-url", "postgresql://app@db.example.com/app?sslmode=strict"],
        exit_code: 1,
        needles: &["sslmode=strict; use disable, allow, prefer, require, verify-ca or verify-full"],
    },
    Case {
        name: "verify-full without a root certificate",
        prepare: nothing,
        args: &["migrate", "current", "--migrations", "{M}", "--database-url", "postgresql://app@db.example.com/app?sslmode=verify-full"],
        exit_code: 1,
        needles: &["sslmode=verify-full checks the server's certificate, but no root certificate was given", "sslrootcert="],
    },
    Case {
        name: "an unreachable host",
        prepare: nothing,
        args: &[
            "migrate",
            "current",
            "--migrations",
            "{M}",
            "--database-url",
            "postgresql://app@127.0.0.1:1/app",
        ],
        exit_code: 1,
        needles: &["could not connect", "127.0.0.1"],
    },
    Case {
        name: "a database that does not exist",
        prepare: nothing,
        args: &[
            "migrate",
            "upgrade",
            "head",
            "--migrations",
            "{M}",
            "--database-url",
            "{MISSING}",
        ],
        exit_code: 1,
        needles: &["could not connect", "does not exist"],
    },
    Case {
        name: "rehashing a revision that is not applied",
        prepare: nothing,
        args: &[
            "migrate",
            "rehash",
            "b2c3d4e5f6a7",
            "--migrations",
            "{M}",
            "--database-url",
            "{URL}",
        ],
        exit_code: 1,
        needles: &["b2c3d4e5f6a7"],
    },
    Case {
        name: "a lock timeout that is not a duration",
        prepare: nothing,
        args: &[
            "migrate",
            "upgrade",
            "head",
            "--lock-timeout",
            "soon",
            "--migrations",
            "{M}",
            "--database-url",
            "{URL}",
        ],
        exit_code: 2,
        needles: &["--lock-timeout"],
    },
    Case {
        name: "an unknown command",
        prepare: nothing,
        args: &["migrate", "upgrayedd", "--database-url", "{URL}"],
        exit_code: 2,
        needles: &["upgrayedd"],
    },
    Case {
        name: "restoring a file that does not exist",
        prepare: nothing,
        args: &["restore", "{DIR}/nope.dump", "--database-url", "{URL}"],
        exit_code: 1,
        needles: &["nope.dump", "does not exist"],
    },
    Case {
        name: "restoring a file that is not a dump",
        prepare: |m, _| write(m.parent().unwrap(), "scratch/notes.dump", "hello\n"),
        args: &[
            "restore",
            "{DIR}/notes.dump",
            "--clean",
            "--yes",
            "--database-url",
            "{URL}",
        ],
        exit_code: 1,
        needles: &["notes.dump"],
    },
    Case {
        name: "a COMMIT inside a transactional migration",
        prepare: |m, _| {
            edit(
                m,
                &format!("{NEXT}/up.sql"),
                "\nALTER TABLE users ADD COLUMN locked_until",
                "\nCOMMIT;\nALTER TABLE users ADD COLUMN locked_until",
            )
        },
        args: UPGRADE,
        exit_code: 1,
        needles: &[
            "f7e1c2d9b3a4_authentication_enhancements/up.sql: line 7: transaction control",
        ],
    },
    Case {
        name: "a psql meta-command in a migration",
        prepare: |m, _| write(m, &format!("{NEXT}/down.sql"), "SELECT 1;\n\\! id\n"),
        args: UPGRADE,
        exit_code: 1,
        needles: &["down.sql: line 2: psql meta-command `\\!`"],
    },
    Case {
        name: "a migration folder whose name is not UTF-8",
        prepare: |m, _| {
            use std::os::unix::ffi::OsStrExt as _;
            fs::create_dir(m.join(std::ffi::OsStr::from_bytes(b"c0ffee_caf\xe9"))).unwrap();
        },
        args: UPGRADE,
        exit_code: 1,
        needles: &["the name is not valid UTF-8; rename it"],
    },
    Case {
        name: "a symbolic link to nothing among the migrations",
        prepare: |m, _| std::os::unix::fs::symlink(m.join("gone"), m.join("c0ffee_link")).unwrap(),
        args: UPGRADE,
        exit_code: 1,
        needles: &["c0ffee_link: a symbolic link to nothing"],
    },
    Case {
        // As a migration pasted from pg_dump's output leaves it: the version tables,
        // found by their unqualified names, are then nowhere (it failed with `relation
        // "alembic_version" does not exist`, naming no cause).
        name: "a migration that leaves the session's search_path empty",
        prepare: |m, _| {
            let up = m.join(format!("{NEXT}/up.sql"));
            let mut text = fs::read_to_string(&up).unwrap();
            text.push_str("\nSELECT pg_catalog.set_config('search_path', '', false);\n");
            fs::write(up, text).unwrap();
        },
        args: UPGRADE,
        exit_code: 1,
        needles: &[
            "migration f7e1c2d9b3a4",
            "left the session's search_path ``",
            "nothing of it was committed",
            "RESET search_path;",
        ],
    },
    Case {
        name: "a backup over an existing file",
        prepare: |m, _| write(m.parent().unwrap(), "scratch/taken.dump", "precious\n"),
        args: &[
            "backup",
            "--output",
            "{DIR}/taken.dump",
            "--database-url",
            "{URL}",
        ],
        exit_code: 1,
        needles: &["taken.dump already exists"],
    },
];

/// Everything a failed command must leave as it was.
/// A cause printed twice in one line (`x failed: db error: E: db error: E`): an error that
/// both shows its source and returns it from `source()`, printed as a chain.
fn repeated_cause(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|line| {
        let parts: Vec<&str> = line.split(": ").collect();
        (1..parts.len()).find_map(|len| {
            (0..parts.len().saturating_sub(2 * len - 1)).find_map(|start| {
                let (a, b) = (&parts[start..start + len], &parts[start + len..]);
                let cause = a.join(": ");
                (cause.len() > 12 && b.len() >= len && a == &b[..len]).then_some(cause)
            })
        })
    })
}

fn fingerprint(client: &mut postgres::Client) -> String {
    let snapshot = backend_schema::snapshot::SchemaSnapshot::capture(client).unwrap();
    let versions: Vec<String> = client
        .query(
            "SELECT version_num::text FROM alembic_version ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let history: Vec<String> = client
        .query("SELECT format('%s %s %s %s', id, revision, operation, status) FROM alembic_version_history ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    format!("{snapshot:?}\n{versions:?}\n{history:?}")
}

#[test]
fn bad_input_gets_a_clear_message_a_non_zero_exit_and_changes_nothing() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("bad input corpus, {} cases", CASES.len())),
        "README.md's \"What we test\" must count {} bad-input cases",
        CASES.len()
    );
    assert!(CASES.len() >= 25);
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "f5a2"]).success();
    let mut failures = Vec::new();
    for (n, case) in CASES.iter().enumerate() {
        let database = format!("case_{n}");
        db.cluster.create_database(&database, Some("app")).unwrap();
        let url = db.cluster.url(&database);
        let work = tempfile::tempdir().unwrap();
        let m = work.path().join("m");
        copy_dir(&root().join("migrations"), &m);
        let scratch = work.path().join("scratch");
        fs::create_dir(&scratch).unwrap();
        let mut client = db.cluster.client(&database).unwrap();
        (case.prepare)(&m, &mut client);
        let before = fingerprint(&mut client);
        let args: Vec<String> = case
            .args
            .iter()
            .map(|a| {
                a.replace("{M}", m.to_str().unwrap())
                    .replace("{URL}", &url)
                    .replace("{MISSING}", &db.cluster.url("no_such_database"))
                    .replace("{DIR}", scratch.to_str().unwrap())
            })
            .collect();
        let run = xtask(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = run.stderr();
        let mut problems = Vec::new();
        if run.code() != case.exit_code {
            problems.push(format!(
                "exit code {} (expected {})",
                run.code(),
                case.exit_code
            ));
        }
        for needle in case.needles {
            if !err.contains(needle) {
                problems.push(format!("no {needle:?} in the message"));
            }
        }
        if err.contains("panicked") {
            problems.push("panicked".into());
        }
        if let Some(repeated) = repeated_cause(&err) {
            problems.push(format!("the cause {repeated:?} printed twice"));
        }
        if fingerprint(&mut client) != before {
            problems.push("the database changed".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n{}",
                case.name,
                problems.join("; "),
                run.text()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn crlf_and_bom_files_work_and_keep_their_checksums() {
    let db = TestDb::new();
    db.xtask(&["migrate", "upgrade", "f5a2"]).success();
    let migrations = copy_migrations();
    for entry in fs::read_dir(migrations.path()).unwrap() {
        // lint.toml sits beside the migration folders.
        if !entry.as_ref().unwrap().path().is_dir() {
            continue;
        }
        for file in ["migration.toml", "up.sql", "down.sql"] {
            let path = entry.as_ref().unwrap().path().join(file);
            let text = fs::read_to_string(&path).unwrap().replace('\n', "\r\n");
            fs::write(&path, format!("\u{feff}{text}")).unwrap();
        }
    }
    let dir = migrations.path().to_str().unwrap();
    // The applied revisions were recorded from LF files: their checksums still match.
    db.xtask(&["migrate", "upgrade", "head", "--migrations", dir])
        .success();
    assert_eq!(db.heads(), [crate::support::chain_head()]);
    let current = db.xtask(&["migrate", "current", "--verbose", "--migrations", dir]);
    let out = current.success().stdout();
    assert_eq!(
        out.matches("checksum ok").count(),
        crate::support::chain_len(),
        "{out}"
    );
    assert!(!out.contains("EDITED"), "{out}");
    let run = db.xtask(&["migrate", "downgrade", "base", "--yes", "--migrations", dir]);
    run.success();
    assert!(db.heads().is_empty());
}
