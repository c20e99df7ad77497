//! One Alembic revision file as our env.py rendered it, turned into what a migration
//! folder holds, or into the reasons it needs a hand: nothing offline mode could not
//! render faithfully is kept.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::migration::MAX_REVISION_LEN;

/// What env.py wrote for one file.
#[derive(Debug, Deserialize)]
pub struct Rendered {
    load_error: Option<PyError>,
    #[serde(default)]
    has_revision: bool,
    #[serde(default)]
    revision: String,
    #[serde(default)]
    down_revision: Vec<String>,
    #[serde(default)]
    branch_labels: Vec<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    doc: String,
    upgrade: Option<Function>,
    downgrade: Option<Function>,
}

#[derive(Debug, Deserialize)]
struct PyError {
    message: String,
    line: Option<u32>,
}

/// One of `upgrade()` and `downgrade()`, rendered.
#[derive(Debug, Deserialize)]
struct Function {
    missing: bool,
    #[serde(default)]
    sql: String,
    #[serde(default)]
    autocommit: bool,
    #[serde(default)]
    get_bind_lines: Vec<Option<u32>>,
    #[serde(default)]
    offline_check_lines: Vec<Option<u32>>,
    error: Option<PyError>,
}

/// A revision ready to be written as a migration folder.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The Alembic file it came from.
    pub file: PathBuf,
    pub revision: String,
    pub parents: Vec<String>,
    pub branch_labels: Vec<String>,
    pub message: String,
    pub create_date: Option<String>,
    /// False when `upgrade()` or `downgrade()` used `autocommit_block()`.
    pub transactional: bool,
    pub up: String,
    pub down: String,
}

/// A revision file the import cannot convert on its own, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedsHand {
    pub file: PathBuf,
    /// The revision ID, when the file could be read far enough to have one.
    pub revision: Option<String>,
    pub reasons: Vec<String>,
}

impl std::fmt::Display for NeedsHand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(revision) = &self.revision {
            write!(f, " (revision {revision})")?;
        }
        for reason in &self.reasons {
            write!(f, "\n    {reason}")?;
        }
        Ok(())
    }
}

fn at(line: Option<u32>) -> String {
    line.map(|l| format!("line {l}"))
        .unwrap_or_else(|| "somewhere".into())
}

/// Converts what env.py rendered for `file` (its JSON), or says why it cannot be.
pub fn convert(file: &Path, json: &str) -> Result<Imported, NeedsHand> {
    let needs_hand = |revision: Option<String>, reasons: Vec<String>| NeedsHand {
        file: file.to_path_buf(),
        revision,
        reasons,
    };
    let rendered: Rendered = serde_json::from_str(json).map_err(|err| {
        needs_hand(
            None,
            vec![format!("the rendering could not be read back ({err})")],
        )
    })?;
    if let Some(error) = &rendered.load_error {
        return Err(needs_hand(None, vec![format!(
            "cannot be loaded ({}: {}); a revision that imports the application needs it importable by the python running Alembic",
            at(error.line), error.message
        )]));
    }
    let mut reasons = Vec::new();
    let revision = rendered.revision.clone();
    if !rendered.has_revision || revision.is_empty() {
        reasons.push(
            "declares no `revision`: Alembic would not load it either; give it one or move it out of versions/"
                .to_string(),
        );
    } else if !revision.chars().all(|c| c.is_ascii_alphanumeric())
        || revision.len() > MAX_REVISION_LEN
    {
        reasons.push(format!(
            "revision `{revision}` is not ASCII letters and digits of at most {MAX_REVISION_LEN} characters, which our migration folders need; \
             alembic_version would not hold a renamed one either, so rename it in Alembic first (and stamp databases at it)"
        ));
    }
    if !rendered.depends_on.is_empty() {
        reasons.push(format!(
            "depends_on = {}: our migrations have no depends_on; make {} parents in down_revision (a merge), or remove the dependency",
            rendered.depends_on.join(", "),
            if rendered.depends_on.len() == 1 { "it one of its" } else { "them" }
        ));
    }
    let mut transactional = true;
    let mut sql = Vec::new();
    for (name, function) in [
        ("upgrade", &rendered.upgrade),
        ("downgrade", &rendered.downgrade),
    ] {
        let Some(function) = function.as_ref().filter(|f| !f.missing) else {
            reasons.push(format!("has no {name}() function"));
            sql.push(String::new());
            continue;
        };
        for line in &function.get_bind_lines {
            reasons.push(format!(
                "{name}() calls op.get_bind() at {}: offline mode has no connection, so what it reads or runs through one is not known; \
                 write it with op.execute(...) SQL, or convert this revision by hand",
                at(*line)
            ));
        }
        for line in &function.offline_check_lines {
            reasons.push(format!(
                "{name}() asks context.is_offline_mode() at {}: its offline SQL is not what it runs online",
                at(*line)
            ));
        }
        if let Some(error) = &function.error {
            reasons.push(format!(
                "{name}() fails offline at {}: {} (reflection and reading rows need a database, which offline mode has not)",
                at(error.line),
                error.message
            ));
        }
        let cleaned = clean_sql(&function.sql);
        for (line, problem) in crate::sql_split::forbidden_statements(&cleaned) {
            reasons.push(format!(
                "{name}() renders SQL that line {line} of our file would refuse: {problem}"
            ));
        }
        if function.autocommit {
            transactional = false;
        }
        sql.push(cleaned);
    }
    let revision_known = (!revision.is_empty()).then(|| revision.clone());
    if !reasons.is_empty() {
        return Err(needs_hand(revision_known, reasons));
    }
    let down = sql.pop().unwrap_or_default();
    let up = sql.pop().unwrap_or_default();
    Ok(Imported {
        file: file.to_path_buf(),
        message: message(&rendered.doc).unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| revision.clone())
        }),
        create_date: create_date(&rendered.doc),
        revision,
        parents: rendered.down_revision,
        branch_labels: rendered.branch_labels,
        transactional,
        up,
        down,
    })
}

/// Alembic's `Script.doc`: the first paragraph of the module's docstring.
fn message(doc: &str) -> Option<String> {
    let first = doc.trim().split("\n\n").next()?.trim();
    (!first.is_empty()).then(|| first.to_string())
}

/// The `Create Date:` line Alembic's template writes into the docstring, as written.
fn create_date(doc: &str) -> Option<String> {
    doc.lines()
        .find_map(|line| line.trim().strip_prefix("Create Date:"))
        .map(|date| date.trim().to_string())
        .filter(|date| !date.is_empty())
}

/// Offline SQL as a file of ours: one statement after another, each ending in one `;`.
/// Alembic appends `;` to every statement, so `op.execute("...;")` renders `;;`; the
/// split is PostgreSQL's lexer's, so nothing inside strings or bodies is touched.
pub fn clean_sql(sql: &str) -> String {
    crate::sql_split::split_statements(sql)
        .iter()
        .map(|statement| format!("{};\n", statement.sql))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubled_semicolons_go_and_strings_stay() {
        let sql = "UPDATE t SET a = ';;' WHERE b;;\n\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n\n";
        assert_eq!(
            clean_sql(sql),
            "UPDATE t SET a = ';;' WHERE b;\n\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n"
        );
    }

    #[test]
    fn message_and_create_date_come_from_the_docstring() {
        let doc = "Add lead model\n\nRevision ID: e33568d0d2e9\nRevises: d724f366bbf2\nCreate Date: 2025-11-10 16:56:03.943103\n\n";
        assert_eq!(message(doc).as_deref(), Some("Add lead model"));
        assert_eq!(
            create_date(doc).as_deref(),
            Some("2025-11-10 16:56:03.943103")
        );
        assert_eq!(message(""), None);
        assert_eq!(create_date("no date"), None);
    }

    #[test]
    fn every_reason_a_file_needs_a_hand_is_named() {
        let json = r#"{"load_error": null, "has_revision": true, "revision": "abc", "down_revision": [],
            "branch_labels": [], "depends_on": ["xyz"], "doc": "",
            "upgrade": {"missing": false, "sql": "SELECT 1;", "autocommit": false, "get_bind_lines": [12],
                        "offline_check_lines": [], "error": {"message": "AttributeError: x", "line": 13}},
            "downgrade": {"missing": true}}"#;
        let err = convert(Path::new("v/abc.py"), json).unwrap_err();
        assert_eq!(err.revision.as_deref(), Some("abc"));
        let text = err.to_string();
        for needle in [
            "depends_on = xyz",
            "op.get_bind() at line 12",
            "fails offline at line 13: AttributeError: x",
            "has no downgrade() function",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
    }
}
