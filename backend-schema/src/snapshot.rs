//! Normalised schema snapshots built from the catalogs: every table (columns in order,
//! types, defaults, nullability), constraint, index, enum (values in order), RLS flag,
//! policy, sequence, function, trigger, view and grant, sorted so that equal schemas
//! render identically, whatever the attnum holes left by dropped columns.

use std::collections::BTreeMap;
use std::fmt;

use postgres::GenericClient;

use crate::catalog::{is_bookkeeping, USER_SCHEMAS};
use crate::sql::display_name;

/// A schema, as object name -> its normalised description lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaSnapshot {
    pub objects: BTreeMap<String, Vec<String>>,
}

impl SchemaSnapshot {
    /// Reads the schema of the database `client` is connected to.
    pub fn capture(client: &mut impl GenericClient) -> Result<SchemaSnapshot, postgres::Error> {
        let mut snapshot = SchemaSnapshot::default();
        snapshot.enums(client)?;
        snapshot.relations(client)?;
        snapshot.columns(client)?;
        snapshot.constraints(client)?;
        snapshot.indexes(client)?;
        snapshot.policies(client)?;
        snapshot.sequences(client)?;
        snapshot.functions(client)?;
        snapshot.triggers(client)?;
        snapshot.grants(client)?;
        snapshot.extensions(client)?;
        snapshot.comments(client)?;
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
        Ok(snapshot)
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

    fn header(&mut self, object: String, line: String) {
        self.objects.entry(object).or_default().insert(0, line);
    }

    fn enums(&mut self, client: &mut impl GenericClient) -> Result<(), postgres::Error> {
        let sql = format!(
            "SELECT n.nspname, t.typname, string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
               FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid
              WHERE {USER_SCHEMAS} GROUP BY 1, 2"
        );
        for row in client.query(&sql, &[])? {
            let name = qualified(row.get(0), row.get::<_, String>(1));
            self.header(
                format!("type {name}"),
                format!("enum ({})", row.get::<_, String>(2)),
            );
        }
        Ok(())
    }

    fn relations(&mut self, client: &mut impl GenericClient) -> Result<(), postgres::Error> {
        let sql = format!(
            "SELECT n.nspname, c.relname, c.relkind::text, c.relrowsecurity, c.relforcerowsecurity,
                    CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm')"
        );
        for row in client.query(&sql, &[])? {
            let relname: String = row.get(1);
            if is_bookkeeping(&relname) {
                continue;
            }
            let name = qualified(row.get(0), &relname);
            let kind: String = row.get(2);
            match kind.as_str() {
                "r" | "p" => {
                    let rls = if row.get(3) { "enabled" } else { "disabled" };
                    let force = if row.get(4) { ", forced" } else { "" };
                    self.header(
                        format!("table {name}"),
                        format!("row level security {rls}{force}"),
                    );
                }
                _ => {
                    let definition: String = row.get(5);
                    let what = if kind == "m" {
                        "materialized view"
                    } else {
                        "view"
                    };
                    self.header(
                        format!("{what} {name}"),
                        format!("as {}", squash(&definition)),
                    );
                }
            }
        }
        Ok(())
    }

    fn columns(&mut self, client: &mut impl GenericClient) -> Result<(), postgres::Error> {
        let sql = format!(
            "SELECT n.nspname, c.relname, c.relkind::text, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                    pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY n.nspname, c.relname, a.attnum"
        );
        for row in client.query(&sql, &[])? {
            let relname: String = row.get(1);
            if is_bookkeeping(&relname) {
                continue;
            }
            let kind: String = row.get(2);
            let object = match kind.as_str() {
                "r" | "p" => "table",
                "m" => "materialized view",
                _ => "view",
            };
            let mut line = format!(
                "column {} {}",
                row.get::<_, String>(3),
                row.get::<_, String>(4)
            );
            if row.get(5) {
                line.push_str(" not null");
            }
            if let Some(default) = row.get::<_, Option<String>>(6) {
                let generated: String = row.get(8);
                let word = if generated == "s" {
                    "generated always as"
                } else {
                    "default"
                };
                line.push_str(&format!(" {word} {default}"));
            }
            match row.get::<_, String>(7).as_str() {
                "a" => line.push_str(" generated always as identity"),
                "d" => line.push_str(" generated by default as identity"),
                _ => {}
            }
            self.push(
                format!("{object} {}", qualified(row.get(0), &relname)),
                line,
            );
        }
        Ok(())
    }

    fn constraints(&mut self, client: &mut impl GenericClient) -> Result<(), postgres::Error> {
        let sql = format!(
            "SELECT n.nspname, c.relname, k.conname, pg_get_constraintdef(k.oid)
               FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE {USER_SCHEMAS}"
        );
        for row in client.query(&sql, &[])? {
            let relname: String = row.get(1);
            if is_bookkeeping(&relname) {
                continue;
            }
            let line = format!(
                "constraint {} {}",
                row.get::<_, String>(2),
                row.get::<_, String>(3)
            );
            self.push(format!("table {}", qualified(row.get(0), &relname)), line);
        }
        Ok(())
    }

    fn indexes(&mut self, client: &mut impl GenericClient) -> Result<(), postgres::Error> {
        let sql = format!(
            "SELECT n.nspname, t.relname, ic.relname, pg_get_indexdef(i.indexrelid), i.indisvalid
               FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
               JOIN pg_namespace n ON n.oid = t.relnamespace
              WHERE {USER_SCHEMAS}"
        );
        for row in client.query(&sql, &[])? {
            let relname: String = row.get(1);
            if is_bookkeeping(&relname) {
                continue;
            }
            let definition: String = row.get(3);
            // "CREATE INDEX name ON public.t USING btree (c)" -> "btree (c)" plus uniqueness.
            let unique = if definition.starts_with("CREATE UNIQUE") {
                "unique "
            } else {
                ""
            };
            let method = definition.split(" USING ").nth(1).unwrap_or(&definition);
            let invalid = if row.get(4) { "" } else { " INVALID" };
            let line = format!(
                "index {} {unique}{method}{invalid}",
                row.get::<_, String>(2)
            );
            self.push(format!("table {}", qualified(row.get(0), &relname)), line);
        }
        Ok(())
    }

    fn policies(&mut self, client: &mut impl GenericClient) -> Result<(), postgres::Error> {
        let rows = client.query(
            "SELECT schemaname::text, tablename::text, policyname::text, permissive, array_to_string(roles, ','), cmd,
                    coalesce(qual, ''), coalesce(with_check, '')
               FROM pg_policies",
            &[],
        )?;
        for row in rows {
            let line = format!(
                "policy {} {} for {} to {} using ({}) with check ({})",
                row.get::<_, String>(2),
                row.get::<_, String>(3).to_lowercase(),
                row.get::<_, String>(5).to_lowercase(),
                row.get::<_, String>(4),
                row.get::<_, String>(6),
                row.get::<_, String>(7)
            );
            self.push(
                format!("table {}", qualified(row.get(0), row.get::<_, String>(1))),
                line,
            );
        }
        Ok(())
    }

    fn sequences(&mut self, client: &mut impl GenericClient) -> Result<(), postgres::Error> {
        let rows = client.query(
            "SELECT schemaname::text, sequencename::text, data_type::text, start_value, increment_by, min_value, max_value, cycle
               FROM pg_sequences",
            &[],
        )?;
        for row in rows {
            let name: String = row.get(1);
            if is_bookkeeping(&name) {
                continue;
            }
            let line = format!(
                "{} start {} increment {} min {} max {}{}",
                row.get::<_, String>(2),
                row.get::<_, i64>(3),
                row.get::<_, i64>(4),
                row.get::<_, i64>(5),
                row.get::<_, i64>(6),
                if row.get(7) { " cycle" } else { "" }
            );
            self.header(format!("sequence {}", qualified(row.get(0), &name)), line);
        }
        Ok(())
    }

    fn functions(&mut self, client: &mut impl GenericClient) -> Result<(), postgres::Error> {
        let sql = format!(
            "SELECT n.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', pg_get_functiondef(p.oid)
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE {USER_SCHEMAS} AND p.prokind IN ('f', 'p')
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"
        );
        for row in client.query(&sql, &[])? {
            let line = squash(&row.get::<_, String>(2));
            self.header(
                format!(
                    "function {}",
                    qualified(row.get(0), row.get::<_, String>(1))
                ),
                line,
            );
        }
        Ok(())
    }

    fn triggers(&mut self, client: &mut impl GenericClient) -> Result<(), postgres::Error> {
        let sql = format!(
            "SELECT n.nspname, c.relname, t.tgname, pg_get_triggerdef(t.oid)
               FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE {USER_SCHEMAS} AND NOT t.tgisinternal"
        );
        for row in client.query(&sql, &[])? {
            let line = format!("trigger {}", row.get::<_, String>(3));
            self.push(
                format!("table {}", qualified(row.get(0), row.get::<_, String>(1))),
                line,
            );
        }
        Ok(())
    }

    /// Grants to roles other than the owner (the owner differs between servers).
    fn grants(&mut self, client: &mut impl GenericClient) -> Result<(), postgres::Error> {
        let sql = format!(
            "SELECT n.nspname, c.relname, c.relkind::text,
                    CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(g.grantee) END,
                    string_agg(g.privilege_type, ', ' ORDER BY g.privilege_type)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) g
              WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'S') AND g.grantee <> c.relowner
              GROUP BY 1, 2, 3, 4"
        );
        for row in client.query(&sql, &[])? {
            let relname: String = row.get(1);
            if is_bookkeeping(&relname) {
                continue;
            }
            let object = match row.get::<_, String>(2).as_str() {
                "r" | "p" => "table",
                "S" => "sequence",
                "m" => "materialized view",
                _ => "view",
            };
            let line = format!(
                "grant {} to {}",
                row.get::<_, String>(4),
                row.get::<_, String>(3)
            );
            self.push(
                format!("{object} {}", qualified(row.get(0), &relname)),
                line,
            );
        }
        Ok(())
    }

    fn extensions(&mut self, client: &mut impl GenericClient) -> Result<(), postgres::Error> {
        for row in client.query(
            "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql'",
            &[],
        )? {
            self.header(
                format!("extension {}", row.get::<_, String>(0)),
                "installed".into(),
            );
        }
        Ok(())
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

impl SchemaSnapshot {
    /// Comments on tables and their columns (`COMMENT ON`), which a reviewer reads as
    /// documentation of the schema.
    fn comments(&mut self, client: &mut impl GenericClient) -> Result<(), postgres::Error> {
        let sql = format!(
            "SELECT n.nspname, c.relname, a.attname, d.description
               FROM pg_description d
               JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass
               JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid AND d.objsubid > 0
              WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p')"
        );
        for row in client.query(&sql, &[])? {
            let relname: String = row.get(1);
            if is_bookkeeping(&relname) {
                continue;
            }
            let on = match row.get::<_, Option<String>>(2) {
                Some(column) => format!("column {column}"),
                None => "table".to_string(),
            };
            let text: String = row.get(3);
            self.push(
                format!("table {}", qualified(row.get(0), &relname)),
                format!("comment on {on}: {}", squash(&text)),
            );
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

fn qualified(schema: String, name: impl AsRef<str>) -> String {
    display_name(&schema, name.as_ref())
}

/// Collapses whitespace runs, so definitions fit on one line.
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
