//! The README's claims stay true: its diagram is the committed one, every test its
//! "What we test" table names exists, and every command it shows parses and runs as it
//! says (in a throwaway copy of the workspace, against a throwaway database).

use std::fs;
use std::path::Path;

use crate::support::root;

fn readme() -> String {
    fs::read_to_string(root().join("README.md")).unwrap()
}

#[test]
fn the_readme_shows_the_committed_diagram() {
    let erd = fs::read_to_string(root().join("docs/erd.mmd")).unwrap();
    assert!(
        readme().contains(&format!("```mermaid\n{erd}```")),
        "README.md's mermaid block differs from docs/erd.mmd: paste docs/erd.mmd into it"
    );
}

#[test]
fn every_test_named_in_the_readme_exists() {
    let readme = readme();
    let section = readme
        .split("## What we test")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README.md has a \"What we test\" section");
    let name = regex::Regex::new(r"`(\w+)::(\w+)`").unwrap();
    let mut named = 0;
    for found in name.captures_iter(section) {
        let (module, test) = (&found[1], &found[2]);
        let source = fs::read_to_string(root().join(format!("tests/it/{module}.rs")))
            .unwrap_or_else(|_| {
                panic!("README names {module}::{test}, but there is no tests/it/{module}.rs")
            });
        assert!(
            source.contains(&format!("#[test]\nfn {test}()")),
            "README names {module}::{test}, which is not a test in tests/it/{module}.rs"
        );
        named += 1;
    }
    assert!(named >= 25, "only {named} tests named");
}

/// Splits a shell line into words: single and double quotes, no expansion.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quote, mut started) = (Vec::new(), String::new(), None, false);
    for c in line.chars() {
        match (quote, c) {
            (None, '\'' | '"') => (quote, started) = (Some(c), true),
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            (_, c) => (word.push(c), started = true).1,
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// Every `cargo xtask ...` command in the README's `sh` blocks and in backticks, as
/// its arguments: comments, pipes, redirections and `&&` chains cut off.
fn readme_commands() -> Vec<Vec<String>> {
    let readme = readme();
    let mut lines: Vec<String> = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        match line.trim() {
            "```sh" => in_sh = true,
            "```" => in_sh = false,
            text if in_sh && text.starts_with("cargo xtask") => lines.push(text.to_string()),
            _ => {}
        }
    }
    let inline = regex::Regex::new(r"`(cargo xtask [^`]+)`").unwrap();
    lines.extend(inline.captures_iter(&readme).map(|c| c[1].to_string()));
    lines
        .into_iter()
        // Placeholders and synopses (`...`, `<rev>`, `[--migrations DIR]`) are not commands;
        // `db psql`'s arguments are psql's, so `--help` would go to psql.
        .filter(|line| {
            !line.contains("...")
                && !line.contains('<')
                && !line.contains(" / ")
                && !line.contains("[--")
                && !line.starts_with("cargo xtask db psql")
        })
        .map(|line| {
            let line = line.split(" #").next().unwrap();
            let line = line.split("&&").next().unwrap();
            let line = line.split(['|', '>']).next().unwrap();
            shell_words(line).into_iter().skip(2).collect::<Vec<_>>()
        })
        .filter(|args| !args.is_empty())
        .collect()
}

#[test]
fn every_command_the_readme_shows_parses_with_the_flags_it_shows() {
    let commands = readme_commands();
    assert!(
        commands.len() > 25,
        "only {} commands found",
        commands.len()
    );
    let mut wrong = Vec::new();
    for args in &commands {
        // Clap checks every subcommand, flag and value before it answers --help.
        let mut with_help: Vec<&str> = args.iter().map(String::as_str).collect();
        with_help.push("--help");
        let run = crate::support::xtask(&with_help);
        if run.code() != 0 || !run.stdout().contains("Usage:") {
            wrong.push(format!("cargo xtask {}:\n{}", args.join(" "), run.stderr()));
        }
    }
    assert!(
        wrong.is_empty(),
        "README commands the binary refuses:\n{}",
        wrong.join("\n")
    );
}

/// What the README says a command it shows does, as this test holds it.
enum Says {
    /// Runs in the throwaway workspace and exits 0.
    Succeeds,
    /// Runs and exits with this status, for the reason given (the README's words, or the
    /// state the commands before it left).
    Fails(i32, &'static str),
    /// Cannot run here, and why.
    Skip(&'static str),
}

/// Every command `readme_commands` finds, by its words, in the README's order (a repeat
/// runs once, at its first showing): what the README says it does. The commands run in
/// this order against one database, so each finds the state the ones before it left.
const README_SAYS: &[(&str, Says)] = &[
    ("verify", Says::Succeeds),
    ("db start", Says::Skip("starts a persistent server under target/dev-db; cli::db_status_exits_non_zero_unless_the_dev_database_runs starts and stops it, this test's database comes through DATABASE_URL")),
    ("migrate upgrade head", Says::Succeeds),
    ("migrate current", Says::Succeeds),
    ("migrate history --indicate-current", Says::Succeeds),
    // "refuses to drop data unless --yes": the database is empty, so nothing is lost; the
    // refusal with rows is migrate::a_destructive_downgrade_lists_the_loss_and_needs_yes.
    ("migrate downgrade -1", Says::Succeeds),
    ("migrate revision -m add lead source", Says::Succeeds),
    ("migrate revision --autogenerate -m add lead source", Says::Succeeds),
    ("migrate check", Says::Succeeds),
    // The files already equal head here: "nothing to write", exit 0.
    ("migrate check --write-schema", Says::Succeeds),
    ("backup", Says::Succeeds),
    ("migrate revision --autogenerate -m lead source", Says::Succeeds),
    ("schema-dump --erd docs/erd.mmd", Says::Succeeds),
    ("migrate import-alembic ../backend/alembic --into migrations", Says::Skip("needs an Alembic project at ../backend and the real Alembic; alembic_import's tests import the upstream chain")),
    ("backup --format plain", Says::Succeeds),
    ("backup --format directory --jobs 2 --verify", Says::Succeeds),
    ("backup --output-dir /srv/backups/app", Says::Succeeds),
    ("restore backups/backup_20261124_020000.dump --clean --yes", Says::Succeeds),
    ("schema-dump --check", Says::Succeeds),
    ("dist", Says::Skip("a release build of minutes; dist::the_shipped_binary_migrates_and_checks_drift_without_the_source_tree runs it")),
    ("migrate drift --database-url $DATABASE_URL", Says::Succeeds),
    ("backup --database-url $DATABASE_URL --verify", Says::Succeeds),
    ("rehearse --database-url $DATABASE_URL --report release.md", Says::Succeeds),
    ("rehearse --from-backup backups/backup_20261124_020000.dump --to head", Says::Succeeds),
    ("migrate upgrade head --database-url $DATABASE_URL --lock-timeout 5s", Says::Succeeds),
    ("migrate current --check-heads --database-url $DATABASE_URL", Says::Succeeds),
    ("migrate downgrade -1 --database-url $DATABASE_URL", Says::Succeeds),
    ("restore backups/backup_20261124_020000.dump --database-url $DATABASE_URL --clean --yes", Says::Succeeds),
    ("--help", Says::Succeeds),
    ("migrate merge heads -m MSG", Says::Fails(1, "this chain has one head: merge takes two or more and says so; alembic_graphs' tests merge real branches")),
    ("migrate upgrade a:b --sql", Says::Succeeds),
    ("migrate revision --autogenerate -m MSG", Says::Succeeds),
    ("migrate current --check-heads", Says::Fails(1, "\"non-zero unless the database is at head\": the restore just before put it back below the head `migrate revision -m` added")),
    ("lint", Says::Succeeds),
    ("migrate current --verbose", Says::Succeeds),
    ("bench", Says::Skip("minutes of measurements on a release build")),
    ("bench --runs 3 --backup-leads 1000000", Says::Skip("a million leads backed up three times: minutes")),
];

/// The README's example values, as this test's own: its URL, a directory outside the
/// checkout (never written here), the example backup's name (the first `backup`'s file).
/// The one shipped revision whose ID starts with `prefix`.
fn by_prefix(prefix: &str) -> String {
    let ids: Vec<String> = fs::read_dir(root().join("migrations"))
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let id = name.split('_').next()?.to_string();
            id.starts_with(prefix).then_some(id)
        })
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "the README's `{prefix}` names one revision: {ids:?}"
    );
    ids.into_iter().next().unwrap()
}

fn substitute(arg: &str, url: &str, copy: &Path) -> String {
    arg.replace("$DATABASE_URL", url).replace(
        "/srv/backups/app",
        &copy.join("srv-backups-app").display().to_string(),
    )
}

/// The README's example backup name, given to the first backup the commands wrote.
const EXAMPLE_BACKUP: &str = "backups/backup_20261124_020000.dump";

fn name_the_first_backup(copy: &Path) {
    let example = copy.join(EXAMPLE_BACKUP);
    if example.exists() {
        return;
    }
    let dump = fs::read_dir(copy.join("backups"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "dump"))
        .expect("`cargo xtask backup` wrote a .dump into backups/");
    fs::copy(&dump, &example).unwrap();
    let manifest = |path: &Path| format!("{}.manifest.json", path.display());
    fs::copy(manifest(&dump), manifest(&example)).unwrap();
}

#[test]
fn every_command_the_readme_shows_does_what_the_readme_says() {
    let copy = tempfile::tempdir().unwrap();
    crate::evolution::copy_sources(&root(), copy.path());
    let db = crate::support::TestDb::new();
    let url = db.url();
    let mut seen = std::collections::HashSet::new();
    let mut wrong = Vec::new();
    for args in readme_commands() {
        let key = args.join(" ");
        if !seen.insert(key.clone()) {
            continue;
        }
        let Some((_, says)) = README_SAYS.iter().find(|(shown, _)| *shown == key) else {
            wrong.push(format!("`cargo xtask {key}`: the README shows it, but README_SAYS neither says what it does nor why it cannot run here"));
            continue;
        };
        let (expected, why) = match says {
            Says::Succeeds => (0, "the README shows it as working"),
            Says::Fails(code, why) => (*code, *why),
            Says::Skip(why) => {
                eprintln!("not run: cargo xtask {key}: {why}");
                continue;
            }
        };
        let args: Vec<String> = args
            .iter()
            .map(|a| match a.as_str() {
                // The README's `a:b` means the revisions those prefixes name in the
                // shipped chain; a `revision -m` run above may have added a random ID
                // starting with either letter, which would make the prefix ambiguous.
                "a:b" => format!("{}:{}", by_prefix("a"), by_prefix("b")),
                a => substitute(a, &url, copy.path()),
            })
            .collect();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(&args)
            .env(crate::support::PROJECT_ROOT_VAR, copy.path())
            .env("DATABASE_URL", &url)
            .current_dir(copy.path())
            .output()
            .unwrap();
        let run = crate::support::Run { output };
        if run.code() != expected {
            wrong.push(format!(
                "`cargo xtask {key}` should exit {expected} ({why}):\n{}",
                run.text()
            ));
        }
        if key == "backup" {
            name_the_first_backup(copy.path());
        }
    }
    for (shown, _) in README_SAYS {
        if !seen.contains(*shown) {
            wrong.push(format!(
                "README_SAYS names `cargo xtask {shown}`, which the README no longer shows"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}
