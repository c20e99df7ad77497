//! `cargo xtask verify`: proves every migration on throwaway PostgreSQL, and prints the
//! report with the verdict and the failures last (coloured on a terminal).

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use anyhow::{bail, Context as _};
use backend_schema::lint::Severity;
use backend_schema::verify::{VerifyOptions, VerifyReport, VerifyStep};
use xshell::Shell;

use crate::flags::Verify;

impl Verify {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let dir = self.source.dir(sh);
        if !dir.is_dir() {
            bail!(
                "migrations directory {} does not exist (pass --migrations DIR)",
                dir.display()
            );
        }
        eprintln!(
            "verifying the migrations in {} on a throwaway PostgreSQL",
            dir.display()
        );
        // One line rewritten in place on a terminal; a log or a pipe gets none of it.
        let terminal = std::io::stderr().is_terminal();
        // The estimate counts from the first step: revisions from the cache take no time.
        let started = std::time::Instant::now();
        let mut first_done = None;
        let mut progress = |step: VerifyStep<'_>| {
            if terminal {
                let first = *first_done.get_or_insert(step.revisions_done);
                let estimate = crate::progress::estimate(
                    step.revisions_done.saturating_sub(first) as u64,
                    step.revisions_total.saturating_sub(first) as u64,
                    started.elapsed(),
                );
                eprint!("\r\x1b[2K{}", progress_line(&step, &estimate));
            }
        };
        let options = VerifyOptions {
            strict: self.strict,
            cache_dir: (!self.no_cache).then(cache_dir),
            jobs: self.jobs.map(usize::from),
            ..VerifyOptions::default()
        };
        let report = backend_schema::verify::verify_dir(&dir, &options, &mut progress);
        if terminal {
            eprint!("\r\x1b[2K");
        }
        let mut report = report.context("verify could not run")?;
        crate::findings::relative_files(&mut report.findings);
        crate::findings::relative_files(report.allowed.iter_mut().map(|a| &mut a.finding));
        if report.revisions.is_empty() && report.failures.is_empty() {
            bail!(
                "no migrations found in {}; create one with `cargo xtask migrate revision -m MESSAGE`",
                dir.display()
            );
        }
        if let Some(path) = &self.json {
            let json = serde_json::to_string_pretty(&report)?;
            std::fs::write(path, json + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let colour = use_colour(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR"),
        );
        print!("{}", crate::findings::annotations(&report.findings));
        print!("{}", render(&report, colour));
        if !report.passed() {
            bail!("verify failed (the failures are listed last above)");
        }
        Ok(())
    }
}

/// The variable that moves the cache (the tests give each run its own).
const CACHE_DIR_VAR: &str = "BACKEND_SCHEMA_VERIFY_CACHE_DIR";

/// `target/verify-cache` of the workspace, or where `BACKEND_SCHEMA_VERIFY_CACHE_DIR`
/// says.
fn cache_dir() -> std::path::PathBuf {
    match std::env::var_os(CACHE_DIR_VAR).filter(|dir| !dir.is_empty()) {
        Some(dir) => dir.into(),
        None => crate::project_root().join("target").join("verify-cache"),
    }
}

/// What came from the cache: the revisions (always the first ones of the stairway),
/// the whole-chain checks, and any file ignored or not written.
fn cache_lines(report: &VerifyReport) -> Vec<String> {
    let mut lines: Vec<String> = report
        .cache_notes
        .iter()
        .map(|note| format!("cache: {note}"))
        .collect();
    let (Some(first), Some(last)) = (report.from_cache.first(), report.from_cache.last()) else {
        return lines;
    };
    let file = report.cache_file.as_deref().unwrap_or("the cache");
    let now = report.revisions.len() - report.from_cache.len();
    let verified_now = match report.revisions.get(report.from_cache.len()) {
        Some(next) => format!(", verified now from {} on ({now})", next.revision),
        None => String::new(),
    };
    let range = if first == last {
        first.clone()
    } else {
        format!("{first} .. {last}")
    };
    lines.push(format!(
        "cache: {} of {} revision(s) from {file} ({range}: unchanged since they passed, with everything before them){verified_now}; `--no-cache` verifies all",
        report.from_cache.len(),
        report.revisions.len(),
    ));
    if let Some(after) = &report.resumed_after {
        lines.push(format!(
            "cache: the stairway started from its database kept after {after} (the revisions up to it not replayed)"
        ));
    }
    lines.push(format!(
        "cache: base -> head, head -> base and the merge orders {}",
        if report.chain_from_cache {
            "from the cache"
        } else {
            "run now"
        }
    ));
    lines
}

/// `verify: 37/100 revisions verified, 37%, about 12s left (REV down)`; no estimate
/// before the first revision is done.
fn progress_line(step: &VerifyStep<'_>, estimate: &str) -> String {
    let estimate = match estimate {
        "" => String::new(),
        estimate => format!(", {estimate}"),
    };
    format!(
        "verify: {}/{} revisions verified{estimate} ({})",
        step.revisions_done, step.revisions_total, step.what
    )
}

/// Colour only on a terminal, and never when `NO_COLOR` is set to anything but empty
/// (no-color.org).
fn use_colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// ANSI SGR codes around `text` when colouring.
struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn failed(&self, text: &str) -> String {
        self.wrap("1;31", text)
    }
    fn warning(&self, text: &str) -> String {
        self.wrap("33", text)
    }
    fn passed(&self, text: &str) -> String {
        self.wrap("1;32", text)
    }
}

/// The human report: a table per revision, what was checked, warnings, then every
/// failure and the verdict, last, where a terminal leaves them in view.
pub(crate) fn render(report: &VerifyReport, colour: bool) -> String {
    let paint = Paint(colour);
    let mut out = String::new();
    let _ = writeln!(out, "\nPostgreSQL {}", report.server_version);
    let _ = writeln!(
        out,
        "{:<14} {:>7} {:>7}  {:<10} {:<12} {:<10} locks",
        "revision", "up ms", "down ms", "schema", "data", "isolation"
    );
    for rev in &report.revisions {
        let schema = if rev.error.is_some() {
            "ERROR"
        } else if rev.schema_roundtrip.is_some() {
            "MISMATCH"
        } else {
            "ok"
        };
        let data = if !rev.data_changed.is_empty() {
            "CHANGED"
        } else if !rev.destructive.is_empty() {
            "destructive"
        } else {
            "ok"
        };
        // The worst verdict of the revision's tables.
        let isolation = rev
            .isolation_failures
            .iter()
            .map(|f| f.verdict)
            .min()
            .map(|v| v.label())
            .unwrap_or(if rev.isolation_checked.is_empty() {
                "-"
            } else {
                "ok"
            });
        let locks = rev.locks_up.len() + rev.locks_down.len();
        let _ = writeln!(
            out,
            "{:<14} {:>7} {:>7}  {:<10} {:<12} {:<10} {locks}",
            rev.revision, rev.up_ms, rev.down_ms, schema, data, isolation
        );
    }

    // What was checked and seen, revision by revision.
    for rev in &report.revisions {
        let mut lines = Vec::new();
        for lock in &rev.locks_up {
            lines.push(format!("lock: {} up: {lock}", rev.revision));
        }
        for lock in &rev.locks_down {
            lines.push(format!("lock: {} down: {lock}", rev.revision));
        }
        if !rev.destructive.is_empty() {
            lines.push(format!(
                "destructive: downgrade of {} destroys {}",
                rev.revision,
                rev.destructive.join(", ")
            ));
        }
        if !rev.isolation_checked.is_empty() {
            lines.push(format!(
                "isolation: {} checked as an ordinary role: {}",
                rev.revision,
                rev.isolation_checked.join(", ")
            ));
        }
        if !lines.is_empty() {
            let _ = writeln!(out, "\n{}", lines.join("\n"));
        }
    }
    if !report.fail_closed.is_empty() {
        let _ = writeln!(
            out,
            "\nisolation: with app.current_tenant_id unset, {} return an error or no rows (fail-closed, as they should)",
            report.fail_closed.join(", ")
        );
    }
    if !report.declared_roles.is_empty() {
        let _ = writeln!(
            out,
            "\nroles: created before the chain ran, from roles.toml: {}",
            report.declared_roles.join(", ")
        );
    }
    let cache = cache_lines(report);
    if !cache.is_empty() {
        let _ = writeln!(out, "\n{}", cache.join("\n"));
    }
    if !report.not_checked.is_empty() {
        let _ = writeln!(out);
        for line in &report.not_checked {
            let _ = writeln!(out, "not checked: {line}");
        }
    }
    if report.warning_count() > 0 {
        let _ = writeln!(out);
        let label = paint.warning(if report.strict {
            "warning (--strict: a failure)"
        } else {
            "warning"
        });
        for warning in &report.warnings {
            let _ = writeln!(out, "{label}: {warning}");
        }
    }
    // Findings as a compiler prints them (the verdict counts the warnings --strict
    // fails on).
    let findings: Vec<_> = report.findings.iter().collect();
    if !findings.is_empty() || !report.allowed.is_empty() {
        let _ = writeln!(out);
    }
    for finding in findings {
        let label = match finding.severity {
            Severity::Error => paint.failed("error"),
            _ => paint.warning("warning"),
        };
        let _ = write!(out, "{}", crate::findings::render(finding, &label));
    }
    for allowed in &report.allowed {
        let _ = write!(out, "{}", crate::findings::render_allowed(allowed));
    }

    // Failures, then the verdict: the last lines of the report.
    let failures = failure_lines(report);
    if !failures.is_empty() {
        let _ = writeln!(out);
        for line in &failures {
            let _ = writeln!(out, "{} {line}", paint.failed("FAILED"));
        }
    }
    let revisions = format!(
        "{} revision(s) in {} ms",
        report.revisions.len(),
        report.total_ms
    );
    if report.passed() {
        let _ = writeln!(
            out,
            "\n{}: {revisions}, {} warning(s)",
            paint.passed("verify PASSED"),
            report.warning_count()
        );
    } else {
        let strict = if report.strict && report.warning_count() > 0 {
            format!(
                ", {} warning(s) failing under --strict",
                report.warning_count()
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "\n{}: {revisions}, {} failure(s){strict}",
            paint.failed("verify FAILED"),
            failures.len()
        );
    }
    out
}

/// Every failure, each naming the revision, the step or check, and the file.
fn failure_lines(report: &VerifyReport) -> Vec<String> {
    let mut lines = Vec::new();
    for rev in &report.revisions {
        for failure in &rev.isolation_failures {
            lines.push(format!(
                "isolation at {} ({}): {failure}",
                rev.revision, rev.dir
            ));
        }
        for change in &rev.data_changed {
            lines.push(format!("data at {} ({}): {change}", rev.revision, rev.dir));
        }
        if let Some(diff) = &rev.schema_roundtrip {
            lines.push(format!("schema round trip at {}: {diff}", rev.revision));
        }
        if let Some(error) = &rev.error {
            let step = rev.failed_step.map(|s| s.label()).unwrap_or("step");
            lines.push(format!(
                "at {} ({}), {step}: {error}",
                rev.revision, rev.dir
            ));
        }
    }
    lines.extend(report.failures.iter().cloned());
    let errors = report.error_findings();
    if errors > 0 {
        lines.push(format!(
            "{errors} safety finding(s) of severity error (listed above with their fixes); allow one with a reason as `-- xtask:allow RULE reason` above the statement or in lint.toml"
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_the_revisions_verified_of_the_total() {
        let step = VerifyStep {
            revisions_done: 37,
            revisions_total: 100,
            what: "abc down",
        };
        assert_eq!(
            progress_line(&step, ""),
            "verify: 37/100 revisions verified (abc down)"
        );
        assert_eq!(
            progress_line(&step, "37%, about 12s left"),
            "verify: 37/100 revisions verified, 37%, about 12s left (abc down)"
        );
    }

    #[test]
    fn colour_only_on_a_terminal_and_never_with_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("".into())));
        assert!(!use_colour(true, Some("1".into())));
        assert!(!use_colour(false, None));
    }

    #[test]
    fn the_verdict_and_failures_come_last() {
        let report = VerifyReport {
            failures: vec!["graph: x/0001_a: duplicate revision ID".into()],
            warnings: vec!["at a: table t has tenant_id but no row-level security policy".into()],
            ..VerifyReport::default()
        };
        let plain = render(&report, false);
        let lines: Vec<&str> = plain.trim_end().lines().collect();
        assert!(
            lines[lines.len() - 1].starts_with("verify FAILED: 0 revision(s)"),
            "{plain}"
        );
        assert_eq!(
            lines[lines.len() - 3],
            "FAILED graph: x/0001_a: duplicate revision ID"
        );
        assert!(plain.find("warning: at a").unwrap() < plain.find("FAILED graph").unwrap());
        assert!(!plain.contains('\x1b'));
        let coloured = render(&report, true);
        assert!(
            coloured.contains("\x1b[1;31mverify FAILED\x1b[0m"),
            "{coloured}"
        );
        assert!(
            coloured.contains("\x1b[33mwarning\x1b[0m: at a"),
            "{coloured}"
        );
    }
}
