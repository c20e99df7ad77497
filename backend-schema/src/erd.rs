//! ER diagrams from the catalog: Mermaid `erDiagram` (renders on GitHub) and Graphviz
//! dot: tables, columns with types, primary and foreign keys, and RLS.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use postgres::GenericClient;

use crate::catalog::Catalog;

#[derive(Debug, Default)]
pub struct Diagram {
    tables: BTreeMap<String, Table>,
    /// (from table, its first key column, to table, whether that column is NOT NULL)
    relations: Vec<(String, String, String, bool)>,
}

#[derive(Debug, Default)]
struct Table {
    /// (name, short type, in the primary key, in a foreign key)
    columns: Vec<(String, String, bool, bool)>,
    rls: bool,
    policies: Vec<String>,
}

impl Diagram {
    pub fn capture(client: &mut impl GenericClient) -> Result<Diagram, postgres::Error> {
        Ok(Diagram::from_catalog(&Catalog::capture(client)?))
    }

    pub fn from_catalog(catalog: &Catalog) -> Diagram {
        let mut diagram = Diagram::default();
        for (name, table) in &catalog.tables {
            let keyed = |kind: char, column: &str| {
                table
                    .constraints
                    .values()
                    .any(|c| c.kind == kind && c.columns.iter().any(|k| k == column))
            };
            diagram.tables.insert(
                name.clone(),
                Table {
                    columns: table
                        .columns
                        .iter()
                        .map(|c| {
                            (
                                c.name.clone(),
                                short_type(&c.data_type),
                                keyed('p', &c.name),
                                keyed('f', &c.name),
                            )
                        })
                        .collect(),
                    rls: table.row_security,
                    policies: table.policies.keys().cloned().collect(),
                },
            );
            for key in table.constraints.values().filter(|c| c.kind == 'f') {
                let (Some(column), Some(to)) = (key.columns.first(), &key.references) else {
                    continue;
                };
                let required = table.column(column).is_some_and(|c| c.not_null);
                diagram
                    .relations
                    .push((name.clone(), column.clone(), to.clone(), required));
            }
        }
        diagram.relations.sort();
        diagram
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
