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

fn directory_backup(db: &TestDb, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("b.dir");
    db.xtask(&[
        "backup",
        "--format",
        "directory",
        "--jobs",
        "2",
        "--output",
        path.to_str().unwrap(),
    ])
    .success();
    path
}

/// The database-level state `restore --clean` must keep: grants, settings (for every
/// role and for one role), connection limit and comment, in a comparable form.
fn database_level(db: &TestDb, database: &str) -> Vec<Option<String>> {
    let row = db
        .client()
        .query_one(
            "SELECT (SELECT string_agg(a::text, ' ' ORDER BY a::text) FROM unnest(d.datacl) a),
                    (SELECT string_agg(coalesce(r.rolname, '*') || ':' || array_to_string(s.setconfig, ','), ' ' ORDER BY r.rolname NULLS FIRST)
                       FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole
                      WHERE s.setdatabase = d.oid),
                    d.datconnlimit::text, shobj_description(d.oid, 'pg_database')
               FROM pg_database d WHERE d.datname = $1",
            &[&database],
        )
        .unwrap();
    (0..4).map(|i| row.get(i)).collect()
}

#[test]
fn a_clean_restore_through_staging_keeps_the_databases_grants_and_settings() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let path = directory_backup(&db, out.path());
    db.cluster.create_database("target", None).unwrap();
    db.client()
        .batch_execute(
            "CREATE ROLE reader LOGIN;
             REVOKE CONNECT ON DATABASE target FROM PUBLIC;
             GRANT CONNECT ON DATABASE target TO reader;
             ALTER DATABASE target SET statement_timeout = '5min';
             ALTER ROLE reader IN DATABASE target SET search_path = \"$user\", public;
             ALTER DATABASE target CONNECTION LIMIT 50;
             COMMENT ON DATABASE target IS 'the reporting copy'",
        )
        .unwrap();
    db.cluster
        .client("target")
        .unwrap()
        .batch_execute("CREATE TABLE old_stuff (x int)")
        .unwrap();
    let before = database_level(&db, "target");
    assert!(
        before[0].as_deref().unwrap().contains("reader=c/"),
        "{before:?}"
    );
    // PUBLIC keeps TEMPORARY only: CONNECT was revoked.
    assert!(
        before[0].as_deref().unwrap().starts_with("=T/"),
        "{before:?}"
    );
    let run = crate::support::xtask(&[
        "restore",
        path.to_str().unwrap(),
        "--jobs",
        "2",
        "--clean",
        "--yes",
        "--database-url",
        &db.cluster.url("target"),
    ]);
    run.success();
    assert_eq!(database_level(&db, "target"), before, "{}", run.text());
    let timeout: String = db
        .cluster
        .client("target")
        .unwrap()
        .query_one("SHOW statement_timeout", &[])
        .unwrap()
        .get(0);
    assert_eq!(timeout, "5min");
}

#[test]
fn a_killed_restore_leaves_leftovers_the_next_run_recognises_and_removes() {
    let db = seeded();
    // Enough rows that pg_restore takes a moment.
    db.client()
        .batch_execute(
            "INSERT INTO leads (id, tenant_id, name, email, status, score, tags, custom_fields, created_by)
             SELECT gen_random_uuid(), tenant_id, md5(g::text), md5(g::text) || '@example.com', 'new', 1, '[]', '{}', created_by
               FROM generate_series(1, 100000) AS g, (SELECT tenant_id, created_by FROM leads LIMIT 1) AS l",
        )
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = directory_backup(&db, out.path());
    let url = db.cluster.url("fresh");
    let args = [
        "restore",
        path.to_str().unwrap(),
        "--create",
        "--jobs",
        "2",
        "--database-url",
        &url,
    ];
    let mut child = crate::support::xtask_command(&args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut monitor = db.client();
    let in_staging = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname LIKE 'fresh\\_\\_restore\\_%' AND application_name = 'pg_restore')";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !monitor
        .query_one(in_staging, &[])
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "pg_restore never started on a staging database"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while monitor
        .query_one(in_staging, &[])
        .unwrap()
        .get::<_, bool>(0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "pg_restore outlived the killed restore"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let databases = |monitor: &mut postgres::Client| -> Vec<String> {
        monitor
            .query(
                "SELECT datname::text FROM pg_database WHERE datname LIKE 'fresh%' ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let left = databases(&mut monitor);
    assert_eq!(
        left.len(),
        2,
        "the empty target and the staging copy: {left:?}"
    );

    // A running restore's staging copy (this test process stands in for it) stays.
    db.cluster.create_database("fresh_other", None).unwrap();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let start = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    let alive = serde_json::json!({
        "kind": "staging",
        "pid": std::process::id(),
        "host": std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim(),
        "boot": std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap().trim(),
        "start": start.parse::<u64>().unwrap(),
        "since": "now",
    });
    // A --create database of the killed restore that someone has written tables to
    // since, and a staging copy of a restore on another host: both stay too.
    db.cluster.create_database("fresh_written", None).unwrap();
    db.cluster
        .client("fresh_written")
        .unwrap()
        .batch_execute("CREATE TABLE notes (x int)")
        .unwrap();
    db.cluster.create_database("fresh_remote", None).unwrap();
    let mut written = alive.clone();
    written["kind"] = "create".into();
    written["pid"] = child.id().into();
    let mut remote = alive.clone();
    remote["host"] = "another-host.example".into();
    for (database, maker) in [
        ("fresh_other", &alive),
        ("fresh_written", &written),
        ("fresh_remote", &remote),
    ] {
        monitor
            .batch_execute(&format!(
                "COMMENT ON DATABASE {database} IS {}",
                backend_schema::sql::literal(&format!("cargo xtask restore in progress: {maker}"))
            ))
            .unwrap();
    }

    let run = crate::support::xtask(&args);
    let err = run.success().stderr();
    assert!(
        err.contains(&format!(
            "removed database {} (the staging copy of a restore",
            left[1]
        )),
        "{err}"
    );
    assert!(
        err.contains("removed database fresh (created by restore --create"),
        "{err}"
    );
    assert!(
        err.contains("left database fresh_written (created by restore --create")
            && err.contains("it holds tables now"),
        "{err}"
    );
    assert!(
        err.contains("left database fresh_remote (the staging copy of a restore")
            && err.contains("this machine cannot tell whether it still runs"),
        "{err}"
    );
    assert!(!err.contains("fresh_other"), "{err}");
    assert_eq!(
        databases(&mut monitor),
        ["fresh", "fresh_other", "fresh_remote", "fresh_written"]
    );
    let comment: Option<String> = monitor
        .query_one(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'fresh'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(comment, None, "the finished restore's mark is gone");
    let leads: i64 = db
        .cluster
        .client("fresh")
        .unwrap()
        .query_one("SELECT count(*) FROM leads", &[])
        .unwrap()
        .get(0);
    assert!(leads > 100000);
}

#[test]
fn the_last_line_and_the_exit_status_say_what_state_the_target_is_in() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("b.dump");
    db.xtask(&["backup", "--output", path.to_str().unwrap()])
        .success();
    // A check after the commit fails: the manifest's row count for leads is off by one
    // (its hash is of the dump, so the archive check passes).
    let manifest_path = backend_schema::dump::Manifest::path_for(&path);
    let mut manifest = backend_schema::dump::Manifest::read(&manifest_path).unwrap();
    *manifest.tables.get_mut("leads").unwrap() += 1;
    std::fs::write(&manifest_path, serde_json::to_string(&manifest).unwrap()).unwrap();

    let target = TestDb::new();
    let run = target.xtask(&["restore", path.to_str().unwrap()]);
    assert_eq!(run.code(), 3, "{}", run.text());
    let err = run.stderr();
    assert!(err.contains("row counts differ from the manifest"), "{err}");
    assert_eq!(
        err.trim_end().lines().last().unwrap(),
        "restored, but a check afterwards failed; the target now holds the restored data",
        "{err}"
    );
    assert!(target.snapshot().objects.contains_key("table leads"));

    // Refused before the commit: exit 1, and the last line says the target is unchanged.
    let before = target.snapshot();
    let run = target.xtask(&["restore", path.to_str().unwrap()]);
    assert_eq!(run.code(), 1, "{}", run.text());
    assert_eq!(
        run.stderr().trim_end().lines().last().unwrap(),
        "restore failed; the target is unchanged",
        "{}",
        run.text()
    );
    assert_eq!(target.snapshot(), before);
}

/// `text` with `insert` (bytes, for what is not text) after the first COPY block.
fn with_bytes_after_first_copy(text: &str, insert: &[u8]) -> Vec<u8> {
    let end = text.find("\n\\.\n").expect("a COPY block") + "\n\\.\n".len();
    let mut out = text.as_bytes()[..end].to_vec();
    out.extend_from_slice(insert);
    out.extend_from_slice(&text.as_bytes()[end..]);
    out
}

#[test]
fn what_psql_reads_differently_from_the_pre_check_is_refused_by_the_pre_check() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let dump = plain_backup(&db, out.path());
    let mark = out.path().join("pwned");
    let touch = format!("\\! touch {} #", mark.display());
    // (file, the bytes after the first COPY block, the line of those refused (1-based
    // within them), what the refusal says)
    let cases: Vec<(&str, Vec<u8>, usize, &str)> = vec![
        (
            // With standard_conforming_strings off, `'a\' , '` is one string to psql
            // and the shell command follows it.
            "conforming-strings-off.sql",
            format!("SET standard_conforming_strings = off;\nSELECT 'a\\' , ' {touch}';\n")
                .into_bytes(),
            1,
            "standard_conforming_strings",
        ),
        (
            // psql reads `1` and then a dollar quote, which ends before the command.
            "dollar-after-digits.sql",
            format!("SELECT 1$a$ $a$ {touch}\n;\n").into_bytes(),
            1,
            "psql meta-command",
        ),
        (
            // psql drops the rest of a line after a NUL: its string stays open to the
            // next line, whose quote closes it before the command.
            "nul.sql",
            format!("SELECT '\0';\nSELECT ' {touch}';\n").into_bytes(),
            1,
            "NUL byte",
        ),
        (
            // In SJIS 0x81 starts a two-byte character that takes the quote after it.
            "sjis.sql",
            [
                b"SET client_encoding = 'SJIS';\nSELECT '\xc4\x81' , ' ".as_slice(),
                touch.as_bytes(),
                b"';\n",
            ]
            .concat(),
            1,
            "client_encoding",
        ),
    ];
    let target = TestDb::new();
    let copy_end = dump.find("\n\\.\n").unwrap() + "\n\\.\n".len();
    let first_line = dump[..copy_end].lines().count() + 1;
    for (name, insert, line, says) in cases {
        let path = out.path().join(name);
        std::fs::write(&path, with_bytes_after_first_copy(&dump, &insert)).unwrap();
        let run = target.xtask(&["restore", path.to_str().unwrap()]);
        let err = run.failure().stderr();
        assert!(
            err.contains(&format!("{}:{}: ", path.display(), first_line + line - 1)),
            "{name}: {err}"
        );
        assert!(err.contains(says), "{name}: {err}");
        assert!(err.contains("nothing was restored"), "{name}: {err}");
        // Refused by the pre-check, before psql or the target: not psql's words.
        assert!(!err.contains("psql:"), "{name}: {err}");
        assert!(!mark.exists(), "{name}: the shell command ran");
        assert!(target.snapshot().is_empty(), "{name}");
    }
}

#[test]
fn a_psql_without_restricted_mode_gets_no_plain_dump() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    plain_backup(&db, out.path());
    let path = out.path().join("b.sql");
    // An installation whose psql predates \restrict (15.14).
    let bin = crate::backup_safety::wrapped_bin_dir(
        &db,
        &[(
            "psql",
            "case \"$1\" in --version) echo 'psql (PostgreSQL) 15.13'; exit 0;; esac",
        )],
    );
    let target = TestDb::new();
    let output = crate::support::xtask_command(&[
        "restore",
        path.to_str().unwrap(),
        "--database-url",
        &target.url(),
    ])
    .env("PG_BIN_DIR", bin.path())
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("psql 15.13"), "{err}");
    assert!(err.contains("no restricted mode"), "{err}");
    assert!(
        err.contains("13.22, 14.19, 15.14, 16.10, 17.6"),
        "the fix names the releases: {err}"
    );
    assert!(
        err.contains("--format custom"),
        "the fix names the other way: {err}"
    );
    assert!(target.snapshot().is_empty());
}

/// pg_dump's integer as the custom format writes it with 4-byte integers.
pub(crate) fn archive_int(value: i64) -> Vec<u8> {
    let mut out = vec![u8::from(value < 0)];
    out.extend_from_slice(&(value.unsigned_abs() as u32).to_le_bytes());
    out
}

fn archive_str(text: Option<&str>) -> Vec<u8> {
    match text {
        None => archive_int(-1),
        Some(text) => [archive_int(text.len() as i64), text.as_bytes().to_vec()].concat(),
    }
}

/// A custom archive (version 1.14, uncompressed) with one table-data entry, whose TOC
/// strings and data block `tail` follows: the start every crafted archive below shares.
pub(crate) fn crafted_archive(database_name_length: Option<i64>, tail: &[u8]) -> Vec<u8> {
    let mut out = b"PGDMP\x01\x0e\x00\x04\x08\x01".to_vec();
    out.extend(archive_int(0)); // no compression
    for _ in 0..7 {
        out.extend(archive_int(1));
    }
    if let Some(length) = database_name_length {
        out.extend(archive_int(length));
        out.extend_from_slice(b"app");
        return out;
    }
    for text in ["app", "15.0", "15.0"] {
        out.extend(archive_str(Some(text)));
    }
    out.extend(archive_int(1)); // one TOC entry
    out.extend(archive_int(7)); // its dump ID
    out.extend(archive_int(1));
    for text in [Some("0"), Some("0"), Some("leads"), Some("TABLE DATA")] {
        out.extend(archive_str(text));
    }
    out.extend(archive_int(3)); // the data section
    for text in [
        Some(""),
        Some(""),
        Some("COPY public.leads (id) FROM stdin;\n"),
        Some("public"),
        None,
        None,
        Some("app"),
        Some("false"),
        None,
    ] {
        out.extend(archive_str(text));
    }
    out.push(1); // offset not set
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(tail);
    out
}

#[test]
fn a_crafted_archive_with_extreme_numbers_is_refused_as_damaged_in_little_memory() {
    let target = TestDb::new();
    let before = target.snapshot();
    let dir = tempfile::tempdir().unwrap();
    // A sane archive with one row, to show the crafting is right.
    let mut row = vec![1u8]; // a data block
    row.extend(archive_int(7));
    row.extend(archive_int(2));
    row.extend_from_slice(b"1\n");
    row.extend(archive_int(0));
    let mut negative_min = b"PGDMP\x01\x0e\x00\x08\x08\x01\x01".to_vec();
    negative_min.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0x80]);
    let mut huge_chunk = vec![1u8];
    huge_chunk.extend(archive_int(7));
    huge_chunk.extend(archive_int((1 << 30) - 1));
    huge_chunk.extend_from_slice(b"1\n");
    let cases: [(&str, Vec<u8>); 4] = [
        ("sane.dump", crafted_archive(None, &row)),
        // An 8-byte integer of -2^63: its negation overflows.
        ("negative-min.dump", negative_min),
        // Lengths near 1 GiB in a file of a few hundred bytes: nothing may be
        // allocated ahead of the bytes that back it.
        (
            "huge-string.dump",
            crafted_archive(Some((1 << 30) - 1), &[]),
        ),
        ("huge-chunk.dump", crafted_archive(None, &huge_chunk)),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let mut command = crate::support::xtask_command(&[
            "restore",
            path.to_str().unwrap(),
            "--yes",
            "--database-url",
            &target.url(),
        ]);
        // Far less address space than the lengths claim.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            command.pre_exec(|| {
                let limit = libc::rlimit {
                    rlim_cur: 512 << 20,
                    rlim_max: 512 << 20,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let output = command.output().unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        if name == "sane.dump" {
            assert!(
                !err.contains("damaged") && !err.contains("truncated"),
                "{name}: {err}"
            );
            continue;
        }
        assert_eq!(output.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains("the archive is damaged"), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
        assert_eq!(target.snapshot(), before, "{name}");
    }
}

#[test]
fn a_compressed_dump_is_named_as_such_with_the_way_to_restore_it() {
    let db = seeded();
    let dir = tempfile::tempdir().unwrap();
    plain_backup(&db, dir.path());
    let plain = dir.path().join("b.sql").display().to_string();
    // `pg_dump | gzip > backup.sql.gz`, the most common backup there is.
    let status = std::process::Command::new("gzip")
        .args(["--keep", &plain])
        .status()
        .unwrap();
    assert!(status.success());
    let gz = format!("{plain}.gz");
    let target = TestDb::new();
    let run = target.xtask(&["restore", &gz, "--yes"]);
    let err = run.stderr();
    assert_eq!(run.code(), 1, "{}", run.text());
    assert!(
        err.contains(&format!(
            "{gz} is gzip-compressed: decompress it first (gunzip --keep {gz}) and pass the result"
        )),
        "{err}"
    );
    assert!(!err.contains("damaged"), "{err}");
    assert!(target.snapshot().is_empty());
    let run = crate::support::xtask(&["rehearse", "--from-backup", &gz]);
    assert_eq!(run.code(), 2, "{}", run.text());
    assert!(
        run.stderr().contains("is gzip-compressed"),
        "{}",
        run.text()
    );
}

/// The release checklist's way back: the backup taken before a release restored with
/// `--clean` over the database the release changed. `pg_restore --clean` drops only what
/// the archive holds, so a later table whose foreign key hangs on `users` stopped it
/// (exit 1) and, had it not, would have stayed behind; the restore now builds a new
/// database from the backup and swaps it in, and the target is the backup again.
#[test]
fn a_clean_restore_over_tables_the_backup_lacks_gives_back_the_backup_exactly() {
    let db = seeded();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("before.dump");
    db.xtask(&["backup", "--output", path.to_str().unwrap()])
        .success();
    let tables = |db: &TestDb| -> Vec<String> {
        backend_schema::catalog::user_tables(&mut db.client())
            .unwrap()
            .into_iter()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect()
    };
    let before = tables(&db);
    db.client()
        .batch_execute(
            "CREATE TABLE released_later (id int PRIMARY KEY, user_id uuid REFERENCES users (id));
             INSERT INTO released_later SELECT 1, id FROM users LIMIT 1;",
        )
        .unwrap();
    let run = db.xtask(&["restore", path.to_str().unwrap(), "--clean", "--yes"]);
    assert_eq!(run.code(), 0, "{}", run.text());
    assert!(
        run.stderr().contains(
            "the target holds 1 table(s) the backup does not create (public.released_later)"
        ),
        "{}",
        run.text()
    );
    assert_eq!(tables(&db), before, "{}", run.text());
    assert_eq!(db.heads(), vec![crate::support::chain_head().to_string()]);
}

/// Damaged copies of a good custom archive, each with what must catch it: bytes after
/// its end, a byte flipped in the last data block's compressed data (its checksum), the
/// last byte cut off, and a header byte neither pg_restore nor the read looks at (the
/// dumped database's name), which only the manifest's hash catches.
fn damaged_custom_archives(good: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut extra = good.to_vec();
    extra.extend_from_slice(&[0x01; 64]);
    let mut flipped = good.to_vec();
    // The block ends with a zero length (5 bytes) after zlib's 4-byte checksum.
    let late = flipped.len() - 7;
    flipped[late] ^= 0x10;
    let mut header = good.to_vec();
    let name = header[..128]
        .windows(3)
        .position(|w| w == b"app")
        .expect("the database name in the header");
    header[name] = b'b';
    vec![
        ("extra bytes after the end", extra),
        ("flipped late in the last block", flipped),
        ("cut one byte short", good[..good.len() - 1].to_vec()),
        ("renamed in the header", header),
    ]
}

/// Where the "had a data dumper" integer's value byte of the last table-of-contents
/// entry with data is, in a pg_dump 12-16 custom archive (4-byte ints, 8-byte offsets),
/// and that entry's tag.
fn last_data_entrys_dumper_flag(archive: &[u8]) -> (usize, String) {
    let mut at = 5 + 3 + 3;
    let int = |at: &mut usize| {
        let negative = archive[*at] != 0;
        let value = i64::from(u32::from_le_bytes(
            archive[*at + 1..*at + 5].try_into().unwrap(),
        ));
        *at += 5;
        if negative {
            -value
        } else {
            value
        }
    };
    let string = |at: &mut usize| {
        let length = int(at);
        if length > 0 {
            *at += length as usize;
        }
        length >= 0
    };
    match archive[6] {
        14 => {
            int(&mut at);
        }
        _ => at += 1,
    }
    for _ in 0..7 {
        int(&mut at);
    }
    for _ in 0..3 {
        string(&mut at);
    }
    let mut last = None;
    for _ in 0..int(&mut at) {
        int(&mut at);
        let dumper = at + 1;
        int(&mut at);
        string(&mut at); // table oid
        string(&mut at); // oid
        let tag_at = at + 5;
        string(&mut at);
        let tag = String::from_utf8_lossy(&archive[tag_at..at]).into_owned();
        string(&mut at); // desc
        int(&mut at); // section
        for _ in 0..8 {
            string(&mut at);
        }
        while string(&mut at) {}
        let flag = archive[at];
        at += 1 + 8;
        if flag != 3 {
            last = Some((dumper, tag));
        }
    }
    last.expect("an entry with data")
}

#[test]
fn an_archive_whose_last_block_pg_restore_would_skip_never_commits_as_it_is_read() {
    use backend_schema::dump::as_read::{restore_as_read, AsReadError};
    use backend_schema::dump::restore::{CheckError, RestoreOptions};
    let db = seeded();
    // A table nothing references, whose data block is the archive's last.
    db.client()
        .batch_execute("CREATE TABLE zz_notes (note text); INSERT INTO zz_notes VALUES ('x')")
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let good = out.path().join("good.dump");
    db.xtask(&["backup", "--output", good.to_str().unwrap()])
        .success();
    let mut bytes = std::fs::read(&good).unwrap();
    let (dumper, tag) = last_data_entrys_dumper_flag(&bytes);
    assert_eq!(tag, "zz_notes");
    // pg_restore reads no data for an entry without a data dumper, so with the last
    // block's entry marked so it needs nothing of that block, damaged or not, to commit.
    bytes[dumper] = 0;
    bytes.truncate(bytes.len() - 1);
    let path = out.path().join("undumped.dump");
    std::fs::write(&path, &bytes).unwrap();
    db.cluster.create_database("undumped", None).unwrap();
    let url = backend_schema::database_url::DatabaseUrl::parse(&db.cluster.url("undumped"), "test")
        .unwrap();
    let binaries = backend_schema::PgBinaries::locate().unwrap();
    let result = restore_as_read(
        &binaries,
        &path,
        &url,
        None,
        &RestoreOptions::default(),
        &mut |_| {},
    );
    let tables =
        backend_schema::catalog::user_tables(&mut db.cluster.client("undumped").unwrap()).unwrap();
    assert!(tables.is_empty(), "pg_restore committed {tables:?}");
    assert!(
        matches!(result, Err(AsReadError::Check(CheckError::Damaged(_)))),
        "{result:?}"
    );
    // pg_dump's own blocks all pass: table data and large objects.
    db.client()
        .batch_execute("SELECT lo_from_bytea(0, 'large')")
        .unwrap();
    let with_blob = out.path().join("blob.dump");
    db.xtask(&["backup", "--output", with_blob.to_str().unwrap()])
        .success();
    db.cluster.create_database("with_blob", None).unwrap();
    let url =
        backend_schema::database_url::DatabaseUrl::parse(&db.cluster.url("with_blob"), "test")
            .unwrap();
    restore_as_read(
        &binaries,
        &with_blob,
        &url,
        None,
        &RestoreOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let blobs: i64 = db
        .cluster
        .client("with_blob")
        .unwrap()
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .unwrap()
        .get(0);
    assert_eq!(blobs, 1);
}

#[test]
fn a_damaged_archive_restored_as_it_is_read_never_commits() {
    use backend_schema::dump::as_read::{restore_as_read, AsReadError};
    use backend_schema::dump::restore::{CheckError, RestoreOptions};
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let good = out.path().join("good.dump");
    db.xtask(&["backup", "--output", good.to_str().unwrap()])
        .success();
    let manifest =
        backend_schema::dump::Manifest::read(&backend_schema::dump::Manifest::path_for(&good))
            .unwrap();
    let binaries = backend_schema::PgBinaries::locate().unwrap();
    let bytes = std::fs::read(&good).unwrap();
    for (n, (what, content)) in damaged_custom_archives(&bytes).into_iter().enumerate() {
        let path = out.path().join(format!("damaged_{n}.dump"));
        std::fs::write(&path, content).unwrap();
        // Without the manifest where the read alone must catch it: pg_restore has had
        // everything before the damage, and must still not have committed.
        let with_manifest = what == "renamed in the header";
        let database = format!("as_read_{n}");
        db.cluster.create_database(&database, None).unwrap();
        let url =
            backend_schema::database_url::DatabaseUrl::parse(&db.cluster.url(&database), "test")
                .unwrap();
        let result = restore_as_read(
            &binaries,
            &path,
            &url,
            with_manifest.then_some(&manifest),
            &RestoreOptions::default(),
            &mut |_| {},
        );
        match (&result, with_manifest) {
            (Err(AsReadError::Check(CheckError::HashMismatch { .. })), true)
            | (Err(AsReadError::Check(CheckError::Damaged(_))), false) => {}
            _ => panic!("{what}: {result:?}"),
        }
        let tables =
            backend_schema::catalog::user_tables(&mut db.cluster.client(&database).unwrap())
                .unwrap();
        assert!(tables.is_empty(), "{what}: pg_restore committed {tables:?}");
    }
    // The good archive, the same way: everything.
    db.cluster.create_database("as_read_good", None).unwrap();
    let url =
        backend_schema::database_url::DatabaseUrl::parse(&db.cluster.url("as_read_good"), "test")
            .unwrap();
    let mut read = 0;
    restore_as_read(
        &binaries,
        &good,
        &url,
        Some(&manifest),
        &RestoreOptions::default(),
        &mut |check| {
            if let backend_schema::dump::restore::ArchiveCheck::Read { bytes, .. } = check {
                read = bytes;
            }
        },
    )
    .unwrap();
    assert!(read > 0);
    let counts =
        backend_schema::dump::row_counts(&mut db.cluster.client("as_read_good").unwrap()).unwrap();
    assert_eq!(counts, manifest.tables);
}

#[test]
fn a_damaged_archive_given_to_create_leaves_no_database_behind() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let good = out.path().join("good.dump");
    db.xtask(&["backup", "--output", good.to_str().unwrap()])
        .success();
    let manifest = std::fs::read(backend_schema::dump::Manifest::path_for(&good)).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let mut monitor = db.cluster.client("postgres").unwrap();
    for (n, (what, content)) in damaged_custom_archives(&bytes).into_iter().enumerate() {
        for with_manifest in [true, false] {
            if what == "renamed in the header" && !with_manifest {
                continue; // nothing but the hash can tell
            }
            let path = out.path().join(format!("damaged_{n}_{with_manifest}.dump"));
            std::fs::write(&path, &content).unwrap();
            if with_manifest {
                std::fs::write(backend_schema::dump::Manifest::path_for(&path), &manifest).unwrap();
            }
            let database = format!("created_{n}_{with_manifest}");
            let run = crate::support::xtask(&[
                "restore",
                path.to_str().unwrap(),
                "--create",
                "--database-url",
                &db.cluster.url(&database),
            ]);
            assert_eq!(run.code(), 1, "{what}: {}", run.text());
            let err = run.stderr();
            let expected = match with_manifest {
                true => "does not match its manifest",
                false => "the archive is damaged",
            };
            assert!(err.contains(expected), "{what}: {err}");
            assert!(err.contains("restoring as the archive is read"), "{err}");
            assert_eq!(
                err.trim_end().lines().last().unwrap(),
                "restore failed; the database created for it was dropped again",
                "{what}: {err}"
            );
            let left = monitor
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
                .unwrap();
            assert!(left.is_none(), "{what}: {database} is left");
        }
    }
}

#[test]
fn a_create_restore_analyzes_every_relation_and_checks_row_counts() {
    let db = seeded();
    db.client()
        .batch_execute(
            "CREATE MATERIALIZED VIEW lead_tenants AS SELECT DISTINCT tenant_id FROM leads",
        )
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("b.dump");
    db.xtask(&["backup", "--output", path.to_str().unwrap()])
        .success();
    let restored = crate::support::xtask(&[
        "restore",
        path.to_str().unwrap(),
        "--create",
        "--database-url",
        &db.cluster.url("copy"),
    ]);
    assert!(
        restored
            .success()
            .stderr()
            .contains("row counts match the manifest"),
        "{}",
        restored.text()
    );
    let never: Vec<String> = db
        .cluster
        .client("copy")
        .unwrap()
        .query(
            "SELECT relname::text FROM pg_stat_user_tables WHERE last_analyze IS NULL ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(never.is_empty(), "not analyzed: {never:?}");

    // One row fewer than the manifest says: the restore committed, the check says so.
    let manifest_path = backend_schema::dump::Manifest::path_for(&path);
    let mut manifest = backend_schema::dump::Manifest::read(&manifest_path).unwrap();
    *manifest.tables.get_mut("sms_messages").unwrap() += 1;
    std::fs::write(&manifest_path, serde_json::to_string(&manifest).unwrap()).unwrap();
    let run = crate::support::xtask(&[
        "restore",
        path.to_str().unwrap(),
        "--create",
        "--database-url",
        &db.cluster.url("copy_2"),
    ]);
    assert_eq!(run.code(), 3, "{}", run.text());
    assert!(
        run.stderr().contains("row counts differ from the manifest"),
        "{}",
        run.text()
    );
}

#[test]
fn a_create_restore_killed_while_it_reads_the_archive_commits_nothing_and_is_swept() {
    let db = seeded();
    // Enough rows that pg_restore takes a moment.
    db.client()
        .batch_execute(
            "INSERT INTO leads (id, tenant_id, name, email, status, score, tags, custom_fields, created_by)
             SELECT gen_random_uuid(), tenant_id, md5(g::text), md5(g::text) || '@example.com', 'new', 1, '[]', '{}', created_by
               FROM generate_series(1, 100000) AS g, (SELECT tenant_id, created_by FROM leads LIMIT 1) AS l",
        )
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("b.dump");
    db.xtask(&["backup", "--output", path.to_str().unwrap()])
        .success();
    let url = db.cluster.url("killed");
    let args = [
        "restore",
        path.to_str().unwrap(),
        "--create",
        "--database-url",
        &url,
    ];
    let mut child = crate::support::xtask_command(&args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut monitor = db.client();
    let restoring = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = 'killed' AND application_name = 'pg_restore')";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !monitor.query_one(restoring, &[]).unwrap().get::<_, bool>(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "pg_restore never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while monitor.query_one(restoring, &[]).unwrap().get::<_, bool>(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "pg_restore outlived the killed restore"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let tables =
        backend_schema::catalog::user_tables(&mut db.cluster.client("killed").unwrap()).unwrap();
    assert!(tables.is_empty(), "committed: {tables:?}");

    let run = crate::support::xtask(&args);
    let err = run.success().stderr();
    assert!(
        err.contains("removed database killed (created by restore --create"),
        "{err}"
    );
    assert!(err.contains("row counts match the manifest"), "{err}");
}

/// What `restore --create` may hand to pg_restore before the archive is checked: a
/// chunk's bytes short of its last as they are read (so a chunk as large as the file
/// is never held whole in memory), never the zero length that ends the last block.
#[test]
fn a_large_chunk_is_handed_on_as_it_is_read_but_not_its_last_byte() {
    let data = vec![b'x'; 4 << 20];
    let mut block = vec![1u8]; // a data block
    block.extend(archive_int(7));
    block.extend(archive_int(data.len() as i64));
    let archive_before_data = crafted_archive(None, &block).len() as u64;
    block.extend_from_slice(&data);
    block.extend(archive_int(0));
    let archive = crafted_archive(None, &block);
    let chunk_end = archive_before_data + data.len() as u64;
    let mut safe = Vec::new();
    let verdict = backend_schema::dump::stream::read_custom_gated(
        &mut std::io::BufReader::new(&archive[..]),
        &mut |_| {},
        &mut |at| safe.push(at),
    )
    .unwrap();
    assert!(verdict.is_ok(), "{verdict:?}");
    let inside = safe
        .iter()
        .filter(|&&at| at > archive_before_data && at < chunk_end)
        .count();
    assert!(inside >= 32, "handed on in pieces: {safe:?}");
    assert!(
        safe.iter().all(|&at| at <= chunk_end),
        "the block's end waits for the check: {safe:?}"
    );
    assert!(safe.windows(2).all(|w| w[0] <= w[1]), "{safe:?}");
}
