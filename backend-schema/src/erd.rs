//! ER diagrams from the catalog: Mermaid `erDiagram` (renders on GitHub) and Graphviz
//! dot: tables, columns with types, primary and foreign keys, and RLS.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use postgres::GenericClient;

#[derive(Debug, Default)]
pub struct Diagram {
    tables: BTreeMap<String, Table>,
    /// (from table, column, to table)
    relations: Vec<(String, String, String, bool)>,
}

#[derive(Debug, Default)]
struct Table {
    columns: Vec<(String, String, bool, bool)>,
    rls: bool,
    policies: Vec<String>,
}

impl Diagram {
    pub fn capture(client: &mut impl GenericClient) -> Result<Diagram, postgres::Error> {
        let mut diagram = Diagram::default();
        let rows = client.query(
            "SELECT c.relname, c.relrowsecurity, a.attname, format_type(a.atttypid, a.atttypmod),
                    EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p' AND a.attnum = ANY (k.conkey)),
                    EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'f' AND a.attnum = ANY (k.conkey))
               FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace
                AND c.relname NOT IN ('alembic_version', 'alembic_version_history')
              ORDER BY c.relname, a.attnum",
            &[],
        )?;
        for row in rows {
            let table = diagram.tables.entry(row.get(0)).or_default();
            table.rls = row.get(1);
            table.columns.push((
                row.get(2),
                short_type(&row.get::<_, String>(3)),
                row.get(4),
                row.get(5),
            ));
        }
        for row in client.query(
            "SELECT tablename::text, policyname::text FROM pg_policies WHERE schemaname = 'public'",
            &[],
        )? {
            if let Some(table) = diagram.tables.get_mut(&row.get::<_, String>(0)) {
                table.policies.push(row.get(1));
            }
        }
        let fks = client.query(
            "SELECT c.relname, a.attname, r.relname, a.attnotnull
               FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class r ON r.oid = k.confrelid
               JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
              WHERE k.contype = 'f' AND c.relnamespace = 'public'::regnamespace
              ORDER BY 1, 2",
            &[],
        )?;
        diagram.relations = fks
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        Ok(diagram)
    }

    pub fn mermaid(&self) -> String {
        let mut out = String::from("erDiagram\n");
        for (name, table) in &self.tables {
            let _ = writeln!(out, "    {name} {{");
            for (column, ty, pk, fk) in &table.columns {
                let keys = match (pk, fk) {
                    (true, true) => " PK, FK",
                    (true, false) => " PK",
                    (false, true) => " FK",
                    _ => "",
                };
                let comment = if table.rls && column == "tenant_id" {
                    format!(
                        " \"RLS: {}\"",
                        if table.policies.is_empty() {
                            "no policy".into()
                        } else {
                            table.policies.join(", ")
                        }
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(out, "        {ty} {column}{keys}{comment}");
            }
            let _ = writeln!(out, "    }}");
        }
        for (from, column, to, required) in &self.relations {
            let cardinality = if *required { "}o--||" } else { "}o--o|" };
            let _ = writeln!(out, "    {from} {cardinality} {to} : \"{column}\"");
        }
        out
    }

    pub fn dot(&self) -> String {
        let mut out = String::from("digraph schema {\n    rankdir=LR;\n    node [shape=record, fontname=\"Helvetica\", fontsize=10];\n");
        for (name, table) in &self.tables {
            let title = if table.rls {
                format!("{name} (RLS)")
            } else {
                name.clone()
            };
            let fields: Vec<String> = table
                .columns
                .iter()
                .map(|(column, ty, pk, fk)| {
                    let mark = if *pk {
                        " PK"
                    } else if *fk {
                        " FK"
                    } else {
                        ""
                    };
                    format!("<{column}> {column}: {ty}{mark}")
                })
                .collect();
            let _ = writeln!(
                out,
                "    {name} [label=\"{{{title}|{}}}\"];",
                fields.join("\\l|") + "\\l"
            );
        }
        for (from, column, to, _) in &self.relations {
            let _ = writeln!(out, "    {from}:{column} -> {to}:id;");
        }
        out.push_str("}\n");
        out
    }
}

/// One-word type names, as Mermaid attribute types must be.
fn short_type(ty: &str) -> String {
    let ty = ty
        .replace("character varying", "varchar")
        .replace("timestamp with time zone", "timestamptz")
        .replace("timestamp without time zone", "timestamp")
        .replace("double precision", "float8");
    ty.replace(' ', "_")
}
