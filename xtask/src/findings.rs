//! Printing safety findings as a compiler does (`file:line`, the statement, the fix),
//! the allowed ones with their reasons, and GitHub Actions annotations.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use backend_schema::lint::{Allowed, Finding, Severity};

/// `path` relative to the current directory when it is under it: what an editor, a
/// terminal and GitHub's annotations resolve.
pub(crate) fn shown_path(path: &Path) -> PathBuf {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
}

/// Makes every finding's file relative to the current directory (for the JSON too).
pub(crate) fn relative_files<'a>(findings: impl IntoIterator<Item = &'a mut Finding>) {
    for finding in findings {
        if let Some(file) = &finding.file {
            finding.file = Some(shown_path(file));
        }
    }
}

fn location(finding: &Finding) -> String {
    match (&finding.file, finding.line) {
        (Some(file), Some(line)) => format!("{}:{line}", file.display()),
        (Some(file), None) => file.display().to_string(),
        _ => format!("revision {}", finding.revision),
    }
}

/// One finding: `error[rule]: file:line: message`, the statement's first lines, the fix.
pub(crate) fn render(finding: &Finding, label: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{label}[{}]: {}: {} ({})",
        finding.rule.id(),
        location(finding),
        finding.message,
        finding.revision
    );
    if let Some(statement) = &finding.statement {
        let first = finding.line.unwrap_or(0);
        let lines: Vec<&str> = statement.lines().collect();
        for (n, line) in lines.iter().take(3).enumerate() {
            let _ = writeln!(out, "  {:>4} | {line}", first + n);
        }
        if lines.len() > 3 {
            let _ = writeln!(out, "       | ...");
        }
    }
    let _ = writeln!(out, "  fix: {}", finding.fix);
    out
}

pub(crate) fn render_allowed(allowed: &Allowed) -> String {
    format!(
        "allowed[{}]: {}: {} (by {})\n",
        allowed.finding.rule.id(),
        location(&allowed.finding),
        allowed.reason,
        allowed.allowed_by
    )
}

/// GitHub Actions workflow commands, one per finding, when `GITHUB_ACTIONS=true`.
pub(crate) fn annotations(findings: &[Finding]) -> String {
    if std::env::var("GITHUB_ACTIONS").as_deref() != Ok("true") {
        return String::new();
    }
    let mut out = String::new();
    for finding in findings {
        let level = match finding.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "notice",
        };
        let mut properties = Vec::new();
        if let Some(file) = &finding.file {
            properties.push(format!(
                "file={}",
                escape_property(&file.display().to_string())
            ));
        }
        if let Some(line) = finding.line {
            properties.push(format!("line={line}"));
        }
        properties.push(format!("title={}", escape_property(finding.rule.id())));
        let _ = writeln!(
            out,
            "::{level} {}::{}",
            properties.join(","),
            escape_data(&format!("{} Fix: {}", finding.message, finding.fix))
        );
    }
    out
}

/// GitHub's escaping of a workflow command's message.
fn escape_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// GitHub's escaping of a workflow command's property.
fn escape_property(text: &str) -> String {
    escape_data(text).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_command_escaping() {
        assert_eq!(escape_data("a%b\nc"), "a%25b%0Ac");
        assert_eq!(escape_property("x:y,z"), "x%3Ay%2Cz");
    }
}
