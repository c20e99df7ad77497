//! The command line itself: every command's help has an example and describes every
//! argument, renamed flags keep their old names as hidden aliases, and exit statuses
//! scripts can trust.

use crate::support::xtask;

/// The subcommands `help` lists under "Commands:".
fn subcommands(help: &str) -> Vec<String> {
    help.split("Commands:")
        .nth(1)
        .map(|rest| rest.split("\n\n").next().unwrap_or(""))
        .unwrap_or("")
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Entries of the "Arguments:" and "Options:" sections without a description.
fn undescribed(help: &str) -> Vec<String> {
    let mut found = Vec::new();
    for section in ["Arguments:", "Options:"] {
        let Some(body) = help.split(section).nth(1) else {
            continue;
        };
        let body = body.split("\n\n").next().unwrap_or("");
        let lines: Vec<&str> = body.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let entry = line.trim_start();
            let indent = line.len() - entry.len();
            if indent != 2 || entry.is_empty() {
                continue;
            }
            // "  -v, --verbose  Text" or "  <TARGET>  Text", or the text on the next line.
            let has_text = entry.contains("  ")
                || lines
                    .get(i + 1)
                    .is_some_and(|next| next.len() - next.trim_start().len() > 2);
            if !has_text {
                found.push(entry.to_string());
            }
        }
    }
    found
}

#[test]
fn every_command_has_an_example_and_describes_every_argument() {
    let top = xtask(&["--help"]);
    let mut queue: Vec<Vec<String>> = subcommands(&top.success().stdout())
        .into_iter()
        .map(|c| vec![c])
        .collect();
    let mut checked = 0;
    let mut problems = Vec::new();
    while let Some(path) = queue.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = xtask(&args).success().stdout();
        let children = subcommands(&help);
        let name = path.join(" ");
        if children.is_empty() {
            if !help.contains("Example") {
                problems.push(format!("`{name} --help` has no example"));
            }
        } else {
            queue.extend(children.into_iter().map(|c| {
                let mut p = path.clone();
                p.push(c);
                p
            }));
        }
        for entry in undescribed(&help) {
            problems.push(format!("`{name} --help`: {entry} has no description"));
        }
        checked += 1;
    }
    // Issue 21 owns the wording of history and merge.
    problems.retain(|p| !p.starts_with("`migrate history") && !p.starts_with("`migrate merge"));
    assert!(checked > 15, "only {checked} commands");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn lock_flags_have_distinct_names_and_the_old_ones_are_hidden_aliases() {
    let help = xtask(&["migrate", "upgrade", "--help"]).success().stdout();
    assert!(help.contains("--migrator-wait <DURATION>"), "{help}");
    assert!(help.contains("--lock-timeout <DURATION>"), "{help}");
    assert!(!help.contains("--lock-wait"), "{help}");
    let help = xtask(&["backup", "--help"]).success().stdout();
    assert!(help.contains("--table-lock-timeout <DURATION>"), "{help}");
    assert!(!help.contains("--lock-wait-timeout <"), "{help}");
    // The old names still parse (a bad duration fails on its value, not on the flag).
    for args in [
        &["migrate", "upgrade", "head", "--lock-wait", "soon"][..],
        &["backup", "--lock-wait-timeout", "soon"][..],
    ] {
        let run = xtask(args);
        assert_eq!(run.code(), 2, "{}", run.text());
        assert!(
            !run.stderr().contains("unexpected argument"),
            "{}",
            run.text()
        );
    }
}

#[test]
fn db_status_exits_non_zero_unless_the_dev_database_runs() {
    let run = xtask(&["db", "status"]);
    let out = run.stdout();
    if out.starts_with("running") {
        assert_eq!(run.code(), 0, "{}", run.text());
    } else {
        assert_eq!(run.code(), 3, "{}", run.text());
        assert!(out.contains("cargo xtask db start"), "{}", run.text());
        assert!(!run.stderr().contains("error"), "{}", run.text());
    }
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    // Piped: plain text.
    let run = xtask(&[
        "migrate",
        "upgrade",
        "head",
        "--database-url",
        "postgresql://nobody@/x?host=/nonexistent",
    ]);
    assert!(
        run.failure().stderr().starts_with("error: "),
        "{}",
        run.text()
    );
    assert!(!run.stderr().contains('\x1b'), "{}", run.text());
    // On a terminal (script(1) gives it one): coloured, unless NO_COLOR is set.
    let on_terminal = |no_color: Option<&str>| {
        let mut command = std::process::Command::new("script");
        command.args([
            "-qec",
            &format!(
                "{} migrate current --database-url postgresql://nobody@/x?host=/nonexistent",
                env!("CARGO_BIN_EXE_xtask")
            ),
            "/dev/null",
        ]);
        command.env_remove("NO_COLOR").env("TERM", "xterm");
        if let Some(value) = no_color {
            command.env("NO_COLOR", value);
        }
        String::from_utf8_lossy(&command.output().expect("script(1) from util-linux").stdout)
            .into_owned()
    };
    let coloured = on_terminal(None);
    assert!(coloured.contains("\x1b[1;31merror\x1b[0m"), "{coloured:?}");
    let plain = on_terminal(Some("1"));
    assert!(
        plain.contains("error: ") && !plain.contains('\x1b'),
        "{plain:?}"
    );
}

#[test]
fn a_database_url_is_refused_by_the_verbs_that_use_none() {
    for verb in [
        &["migrate", "heads"][..],
        &["migrate", "check"][..],
        &["migrate", "show", "head"][..],
        &["migrate", "revision", "-m", "x"][..],
        &["migrate", "upgrade", "base:head", "--sql"][..],
    ] {
        let mut args = verb.to_vec();
        args.extend(["--database-url", "postgresql://app@db.example.com/app"]);
        let run = xtask(&args);
        assert_eq!(run.code(), 2, "{}", run.text());
        assert!(
            run.stderr().contains("drop --database-url"),
            "{}",
            run.text()
        );
        assert!(run.stdout().is_empty(), "{}", run.text());
    }
}

/// The usage lines name the command people type (`cargo xtask`), not the binary's file
/// name, in help and in the usage a mistyped command prints.
#[test]
fn usage_says_cargo_xtask() {
    let top = xtask(&["--help"]);
    assert!(
        top.success()
            .stdout()
            .contains("Usage: cargo xtask <COMMAND>"),
        "{}",
        top.text()
    );
    let nested = xtask(&["migrate", "upgrade", "--help"]);
    assert!(
        nested
            .success()
            .stdout()
            .contains("Usage: cargo xtask migrate upgrade [OPTIONS] <TARGET>"),
        "{}",
        nested.text()
    );
    let wrong = xtask(&["migrate", "bogus"]);
    assert!(
        wrong
            .failure()
            .stderr()
            .contains("Usage: cargo xtask migrate [OPTIONS] <COMMAND>"),
        "{}",
        wrong.text()
    );
    assert!(!top.stdout().contains("Usage: xtask"), "{}", top.text());
}
