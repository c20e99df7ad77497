//! Normalised schema snapshots rendered from the catalog's `Objects`: every table
//! (columns in order, types, defaults, nullability), constraint, index, enum (values in
//! order), RLS flag, policy, sequence, function, trigger, view, grant and the comment on
//! each, sorted so that
//! equal schemas render identically, whatever the attnum holes left by dropped columns.

use std::collections::BTreeMap;
use std::fmt;

use postgres::GenericClient;

use crate::catalog::objects::{Identity, Objects, RelKind};
use crate::sql::display_name;

/// A schema, as object name -> its normalised description lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaSnapshot {
    pub objects: BTreeMap<String, Vec<String>>,
}

impl SchemaSnapshot {
    /// Reads the schema of the database `client` is connected to.
    pub fn capture(client: &mut impl GenericClient) -> Result<SchemaSnapshot, postgres::Error> {
        Ok(SchemaSnapshot::render(&Objects::read(client)?))
    }

    /// The snapshot of what `objects` holds.
    pub fn render(objects: &Objects) -> SchemaSnapshot {
        let mut snapshot = SchemaSnapshot::default();
        snapshot.enums(objects);
        snapshot.relations(objects);
        snapshot.constraints(objects);
        snapshot.indexes(objects);
        snapshot.policies(objects);
        snapshot.sequences(objects);
        snapshot.functions(objects);
        snapshot.triggers(objects);
        snapshot.grants(objects);
        snapshot.extensions(objects);
        for lines in snapshot.objects.values_mut() {
            // Stable sort by section; columns keep their order, the rest is sorted by text.
            lines.sort_by(|a, b| {
                section_rank(a).cmp(&section_rank(b)).then_with(|| {
                    if a.starts_with("column ") && b.starts_with("column ") {
                        std::cmp::Ordering::Equal
                    } else {
                        a.cmp(b)
                    }
                })
            });
        }
        snapshot
    }

    /// The same snapshot with each table's columns sorted by name, for comparisons
    /// where only a column's position may differ.
    pub fn with_columns_sorted(&self) -> SchemaSnapshot {
        let mut copy = self.clone();
        for lines in copy.objects.values_mut() {
            lines.sort_by(|a, b| {
                section_rank(a).cmp(&section_rank(b)).then_with(|| {
                    if a.starts_with("column ") && b.starts_with("column ") {
                        a.cmp(b)
                    } else {
                        std::cmp::Ordering::Equal
                    }
                })
            });
        }
        copy
    }

    /// Whether nothing but the version tables is left.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    fn push(&mut self, object: String, line: String) {
        self.objects.entry(object).or_default().push(line);
    }

    fn enums(&mut self, objects: &Objects) {
        for e in &objects.enums {
            let labels: Vec<String> = e.labels.iter().map(|l| quote_literal(l)).collect();
            let object = format!("type {}", display_name(&e.schema, &e.name));
            self.comment(&object, "type", &e.comment);
            self.push(object, format!("enum ({})", labels.join(", ")));
        }
    }

    /// Tables and views with their columns, comments (`COMMENT ON`, which a reviewer
    /// reads as documentation of the schema) and, for tables, RLS.
    fn relations(&mut self, objects: &Objects) {
        for relation in &objects.relations {
            let name = display_name(&relation.schema, &relation.name);
            let object = format!("{} {name}", object_word(relation.kind));
            let table = relation.kind == RelKind::Table;
            let first = match (table, &relation.view_definition) {
                (true, _) => {
                    let rls = if relation.row_security {
                        "enabled"
                    } else {
                        "disabled"
                    };
                    let force = if relation.force_row_security {
                        ", forced"
                    } else {
                        ""
                    };
                    format!("row level security {rls}{force}")
                }
                (false, definition) => {
                    format!("as {}", squash(definition.as_deref().unwrap_or_default()))
                }
            };
            self.push(object.clone(), first);
            if let Some(text) = &relation.comment {
                self.push(
                    object.clone(),
                    format!(
                        "comment on {}: {}",
                        object_word(relation.kind),
                        squash(text)
                    ),
                );
            }
            for column in &relation.columns {
                let mut line = format!("column {} {}", column.name, column.data_type);
                if let Some(collation) = &column.collation {
                    line.push_str(&format!(" collate {collation}"));
                }
                if column.not_null {
                    line.push_str(" not null");
                }
                if let Some(default) = &column.default {
                    let word = match column.generated {
                        true => "generated always as",
                        false => "default",
                    };
                    line.push_str(&format!(" {word} {default}"));
                }
                match column.identity {
                    Some(Identity::Always) => line.push_str(" generated always as identity"),
                    Some(Identity::ByDefault) => line.push_str(" generated by default as identity"),
                    None => {}
                }
                self.push(object.clone(), line);
                if let Some(text) = &column.comment {
                    self.push(
                        object.clone(),
                        format!("comment on column {}: {}", column.name, squash(text)),
                    );
                }
            }
        }
    }

    fn constraints(&mut self, objects: &Objects) {
        for k in &objects.constraints {
            let object = format!("table {}", display_name(&k.schema, &k.table));
            self.comment(&object, &format!("constraint {}", k.name), &k.comment);
            self.push(object, format!("constraint {} {}", k.name, k.definition));
        }
    }

    /// `comment on WHAT: text` under `object`, when there is a comment. Comments are
    /// part of the schema (a reviewer reads them as its documentation), so a missing
    /// one is a difference like any other.
    fn comment(&mut self, object: &str, what: &str, comment: &Option<String>) {
        if let Some(text) = comment {
            self.push(
                object.to_string(),
                format!("comment on {what}: {}", squash(text)),
            );
        }
    }

    fn indexes(&mut self, objects: &Objects) {
        for index in &objects.indexes {
            let definition = &index.definition;
            // "CREATE INDEX name ON public.t USING btree (c)" -> "btree (c)" plus uniqueness.
            let unique = if definition.starts_with("CREATE UNIQUE") {
                "unique "
            } else {
                ""
            };
            let method = definition.split(" USING ").nth(1).unwrap_or(definition);
            let invalid = if index.valid { "" } else { " INVALID" };
            let object = format!("table {}", display_name(&index.schema, &index.table));
            self.comment(&object, &format!("index {}", index.name), &index.comment);
            self.push(
                object,
                format!("index {} {unique}{method}{invalid}", index.name),
            );
        }
    }

    fn policies(&mut self, objects: &Objects) {
        for p in &objects.policies {
            let permissive = if p.permissive {
                "permissive"
            } else {
                "restrictive"
            };
            let object = format!("table {}", display_name(&p.schema, &p.table));
            self.comment(&object, &format!("policy {}", p.name), &p.comment);
            self.push(
                object,
                format!(
                    "policy {} {permissive} for {} to {} using ({}) with check ({})",
                    p.name,
                    p.command.to_lowercase(),
                    p.roles.join(","),
                    p.using.as_deref().unwrap_or(""),
                    p.with_check.as_deref().unwrap_or("")
                ),
            );
        }
    }

    fn sequences(&mut self, objects: &Objects) {
        for s in &objects.sequences {
            let object = format!("sequence {}", display_name(&s.schema, &s.name));
            self.comment(&object, "sequence", &s.comment);
            self.push(
                object,
                format!(
                    "{} start {} increment {} min {} max {}{}",
                    s.data_type,
                    s.start,
                    s.increment,
                    s.min,
                    s.max,
                    if s.cycle { " cycle" } else { "" }
                ),
            );
        }
    }

    fn functions(&mut self, objects: &Objects) {
        for f in &objects.functions {
            let object = format!("function {}", display_name(&f.schema, &f.signature));
            self.comment(&object, "function", &f.comment);
            self.push(object, squash(&f.definition));
        }
    }

    /// Under `table`, whatever the relation is (a view's `INSTEAD OF` trigger too).
    fn triggers(&mut self, objects: &Objects) {
        for t in &objects.triggers {
            let object = format!("table {}", display_name(&t.schema, &t.table));
            self.comment(&object, &format!("trigger {}", t.name), &t.comment);
            self.push(object, format!("trigger {}", t.definition));
        }
    }

    fn grants(&mut self, objects: &Objects) {
        for g in &objects.grants {
            self.push(
                format!(
                    "{} {}",
                    object_word(g.kind),
                    display_name(&g.schema, &g.relation)
                ),
                format!("grant {} to {}", g.privileges.join(", "), g.grantee),
            );
        }
    }

    fn extensions(&mut self, objects: &Objects) {
        for name in &objects.extensions {
            self.push(format!("extension {name}"), "installed".into());
        }
    }

    /// Object names that differ between `self` (expected) and `other` (actual), with a
    /// line diff of each.
    pub fn diff(&self, other: &SchemaSnapshot) -> Option<String> {
        let mut out = String::new();
        let keys: std::collections::BTreeSet<&String> =
            self.objects.keys().chain(other.objects.keys()).collect();
        for key in keys {
            match (self.objects.get(key), other.objects.get(key)) {
                (Some(_), None) => out.push_str(&format!("- {key} (missing)\n")),
                (None, Some(lines)) => {
                    out.push_str(&format!("+ {key} (unexpected)\n"));
                    for line in lines {
                        out.push_str(&format!("    + {line}\n"));
                    }
                }
                (Some(a), Some(b)) if a != b => {
                    out.push_str(&format!("~ {key}\n"));
                    // Every line newline-terminated, or an appended line changes the last.
                    let a = a.join("\n") + "\n";
                    let b = b.join("\n") + "\n";
                    let diff = similar::TextDiff::from_lines(&a, &b);
                    for change in diff.iter_all_changes() {
                        let sign = match change.tag() {
                            similar::ChangeTag::Delete => "-",
                            similar::ChangeTag::Insert => "+",
                            similar::ChangeTag::Equal => continue,
                        };
                        out.push_str(&format!("    {sign} {}\n", change.value().trim_end()));
                    }
                }
                _ => {}
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// How many objects differ (for "closest revision").
    pub fn distance(&self, other: &SchemaSnapshot) -> usize {
        let keys: std::collections::BTreeSet<&String> =
            self.objects.keys().chain(other.objects.keys()).collect();
        keys.into_iter()
            .filter(|k| self.objects.get(*k) != other.objects.get(*k))
            .count()
    }
}

impl fmt::Display for SchemaSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.objects.is_empty() {
            return writeln!(f, "(empty schema)");
        }
        for (object, lines) in &self.objects {
            writeln!(f, "{object}")?;
            for line in lines {
                writeln!(f, "    {line}")?;
            }
        }
        Ok(())
    }
}

/// Sort rank of a line within an object: columns, constraints, indexes, policies, ...
fn section_rank(line: &str) -> u8 {
    const ORDER: &[&str] = &[
        "row level",
        "enum",
        "as ",
        "column ",
        "constraint ",
        "index ",
        "policy ",
        "trigger ",
        "grant ",
        "comment ",
    ];
    ORDER.iter().position(|p| line.starts_with(p)).unwrap_or(0) as u8
}

/// The word a relation's snapshot key starts with.
fn object_word(kind: RelKind) -> &'static str {
    match kind {
        RelKind::Table => "table",
        RelKind::View => "view",
        RelKind::MaterializedView => "materialized view",
        RelKind::Sequence => "sequence",
    }
}

/// PostgreSQL's `quote_literal`: quotes doubled, and with a backslash in the text,
/// backslashes doubled and an `E` prefix.
fn quote_literal(text: &str) -> String {
    let escaped = text.replace('\'', "''");
    match text.contains('\\') {
        true => format!("E'{}'", escaped.replace('\\', "\\\\")),
        false => format!("'{escaped}'"),
    }
}

/// Collapses whitespace runs, so definitions fit on one line.
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
