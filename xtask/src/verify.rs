//! `cargo xtask verify`: proves every migration on throwaway PostgreSQL.

use std::fmt::Write as _;

use anyhow::{bail, Context as _};
use backend_schema::verify::VerifyReport;
use xshell::Shell;

use crate::flags::Verify;

impl Verify {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let graph = self.source.load(sh)?;
        eprintln!(
            "verifying {} migration(s) in {} on a throwaway PostgreSQL",
            graph.migrations().len(),
            graph.dir().display()
        );
        let mut progress = |step: &str| eprintln!("  {step}");
        let report = backend_schema::verify::verify(&graph, &mut progress)
            .context("verify could not run")?;
        if let Some(path) = &self.json {
            let json = serde_json::to_string_pretty(&report)?;
            std::fs::write(path, json + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        print!("{}", render(&report));
        if !report.passed() {
            bail!("verify failed: see the report above");
        }
        Ok(())
    }
}

/// The human report: a table per revision, then details, warnings and the verdict.
pub(crate) fn render(report: &VerifyReport) -> String {
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
        let isolation = if !rev.isolation_failures.is_empty() {
            "LEAK"
        } else if rev.isolation_checked.is_empty() {
            "-"
        } else {
            "ok"
        };
        let locks = rev.locks_up.len() + rev.locks_down.len();
        let _ = writeln!(
            out,
            "{:<14} {:>7} {:>7}  {:<10} {:<12} {:<10} {locks}",
            rev.revision, rev.up_ms, rev.down_ms, schema, data, isolation
        );
    }
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
        for failure in &rev.isolation_failures {
            lines.push(format!(
                "FAILED isolation at {} ({}): {failure}",
                rev.revision, rev.dir
            ));
        }
        for change in &rev.data_changed {
            lines.push(format!(
                "FAILED data at {} ({}): {change}",
                rev.revision, rev.dir
            ));
        }
        if let Some(diff) = &rev.schema_roundtrip {
            lines.push(format!(
                "FAILED schema round trip at {}: {diff}",
                rev.revision
            ));
        }
        if let Some(error) = &rev.error {
            lines.push(format!("FAILED at {}: {error}", rev.revision));
        }
        if !lines.is_empty() {
            let _ = writeln!(out, "\n{}", lines.join("\n"));
        }
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(out);
        for warning in &report.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
    }
    for failure in &report.failures {
        let _ = writeln!(out, "\nFAILED: {failure}");
    }
    let verdict = if report.passed() { "PASSED" } else { "FAILED" };
    let _ = writeln!(
        out,
        "\nverify {verdict}: {} revision(s) in {} ms",
        report.revisions.len(),
        report.total_ms
    );
    out
}
