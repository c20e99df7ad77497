//! ER diagrams from the catalog: Mermaid `erDiagram` (renders on GitHub), Graphviz dot,
//! and SVG laid out from that dot by `layout-rs` (pure Rust: no Graphviz on the user's
//! machine): tables, columns with types, primary and foreign keys, and RLS.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

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
        self.dot_with(true)
    }

    /// The dot text; `nested` wraps each record in braces, which Graphviz needs for a
    /// vertical table in a left-to-right graph and `layout-rs`, which already turns a
    /// record across the graph's direction, must not have.
    fn dot_with(&self, nested: bool) -> String {
        let (open, close) = match nested {
            true => ("{", "}"),
            false => ("", ""),
        };
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
                "    {name} [label=\"{open}{title}|{}{close}\"];",
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

impl Diagram {
    /// The dot diagram laid out and drawn as SVG by `layout-rs`.
    pub fn svg(&self) -> Result<String, ErdWriteError> {
        let dot = self.dot_with(false);
        let mut parser = layout::gv::DotParser::new(&dot);
        let graph = parser.process().map_err(ErdWriteError::Layout)?;
        let mut builder = layout::gv::GraphBuilder::new();
        builder.visit_graph(&graph);
        let mut visual = builder.get();
        let mut writer = layout::backends::svg::SVGWriter::new();
        visual.do_it(false, false, false, &mut writer);
        Ok(sorted_styles(&writer.finalize()))
    }

    /// Writes `stem.mmd`, `stem.dot` and `stem.svg` for `path` (whatever its
    /// extension), creating its directory.
    pub fn write_files(&self, path: &Path) -> Result<ErdFiles, ErdWriteError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| ErdWriteError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let stem = path.with_extension("");
        let mermaid = stem.with_extension("mmd");
        std::fs::write(&mermaid, self.mermaid())?;
        let dot = stem.with_extension("dot");
        std::fs::write(&dot, self.dot())?;
        let svg = stem.with_extension("svg");
        std::fs::write(&svg, self.svg()?)?;
        Ok(ErdFiles { mermaid, dot, svg })
    }
}

/// The SVG with its `<style>` rules sorted: `layout-rs` writes them from a hash map, in
/// an order that changes from run to run, and the committed diagram must not.
fn sorted_styles(svg: &str) -> String {
    let (Some(start), Some(end)) = (svg.find("<style>\n"), svg.find("</style>")) else {
        return svg.to_string();
    };
    let body = start + "<style>\n".len();
    let mut rules: Vec<&str> = svg[body..end].lines().collect();
    rules.sort_unstable();
    let mut out = svg[..body].to_string();
    for rule in rules {
        out.push_str(rule);
        out.push('\n');
    }
    out.push_str(&svg[end..]);
    out
}

/// The files `write_files` wrote.
#[derive(Debug, Clone)]
pub struct ErdFiles {
    pub mermaid: PathBuf,
    pub dot: PathBuf,
    pub svg: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ErdWriteError {
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("laying out the diagram as SVG failed: {0}")]
    Layout(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
