//! The README's claims stay true: its diagram is the committed one, and every test its
//! "What we test" table names exists.

use std::fs;

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
