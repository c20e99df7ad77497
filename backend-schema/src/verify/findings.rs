//! Findings on the schema a revision leaves, reported as warnings (failures with
//! `--strict`): indexes another index already provides, and tables a step rewrote.

use std::collections::BTreeMap;

use postgres::GenericClient;
use serde::Serialize;

use crate::catalog::user_tables;

/// One finding, at the revision (and step) where it first appeared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub revision: String,
    pub table: String,
    /// The redundant index, for `redundant-index`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// The index or constraint that already provides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub covered_by: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    RedundantIndex,
    TableRewrite,
}

/// An index of the catalog, as much of it as decides whether two are the same.
#[derive(Debug, Clone)]
struct Index {
    name: String,
    table: String,
    /// Key columns, then INCLUDE columns (0 stands for an expression).
    columns: Vec<i16>,
    key_count: usize,
    classes: Vec<u32>,
    collations: Vec<u32>,
    options: Vec<i16>,
    expressions: Option<String>,
    predicate: Option<String>,
    method: String,
    unique: bool,
    /// The primary key or unique constraint this index backs.
    constraint: Option<(String, bool)>,
}

impl Index {
    fn same_as(&self, other: &Index) -> bool {
        self.table == other.table
            && self.columns == other.columns
            && self.key_count == other.key_count
            && self.classes == other.classes
            && self.collations == other.collations
            && self.options == other.options
            && self.expressions == other.expressions
            && self.predicate == other.predicate
            && self.method == other.method
    }

    /// A plain btree whose keys are the first keys of `longer`'s (same operator
    /// classes, collations and order), with the same predicate: `longer` serves every
    /// query it serves. A unique one enforces something, so it is never redundant.
    fn prefix_of(&self, longer: &Index) -> bool {
        let k = self.key_count;
        self.table == longer.table
            && self.method == "btree"
            && longer.method == "btree"
            && !self.unique
            && self.expressions.is_none()
            && longer.expressions.is_none()
            && self.columns.len() == k
            && k < longer.key_count
            && self.columns[..k] == longer.columns[..k]
            && self.classes[..k] == longer.classes[..k]
            && self.collations[..k] == longer.collations[..k]
            && self.options[..k] == longer.options[..k]
            && self.predicate == longer.predicate
    }

    fn describe(&self) -> String {
        match &self.constraint {
            Some((name, true)) => format!("primary key {name}"),
            Some((name, false)) => format!("unique constraint {name}"),
            None => format!("index {}", self.name),
        }
    }
}

/// Indexes of the user schemas that another index makes redundant; each finding names
/// both. `revision` is where they were found. A partition's indexes are its parent's,
/// so only the parent's are judged.
pub fn redundant_indexes(
    client: &mut impl GenericClient,
    revision: &str,
) -> Result<Vec<Finding>, postgres::Error> {
    let indexes = indexes(client)?;
    let mut findings: Vec<Finding> = Vec::new();
    // Copies first, then prefixes of what is left: each redundant index is named once,
    // beside the index that makes it so.
    for prefixes in [false, true] {
        for (i, a) in indexes.iter().enumerate() {
            for b in &indexes[i + 1..] {
                let (redundant, kept, how) = if !prefixes && a.same_as(b) {
                    // Keep the one that enforces something; else the first by name.
                    let enforces = |x: &Index| x.unique || x.constraint.is_some();
                    if !enforces(a) && enforces(b) {
                        (a, b, "has the same columns, method and predicate as")
                    } else {
                        (b, a, "has the same columns, method and predicate as")
                    }
                } else if prefixes && a.prefix_of(b) {
                    (a, b, "is a btree prefix of")
                } else if prefixes && b.prefix_of(a) {
                    (b, a, "is a btree prefix of")
                } else {
                    continue;
                };
                // An index that backs a constraint cannot be dropped on its own.
                if redundant.constraint.is_some() && kept.constraint.is_none() {
                    continue;
                }
                let named = |name: &str| {
                    findings
                        .iter()
                        .any(|f| f.table == redundant.table && f.index.as_deref() == Some(name))
                };
                if named(&redundant.name) {
                    continue;
                }
                findings.push(Finding {
                    kind: FindingKind::RedundantIndex,
                    revision: revision.to_string(),
                    table: redundant.table.clone(),
                    index: Some(redundant.name.clone()),
                    covered_by: Some(
                        kept.constraint
                            .as_ref()
                            .map_or(kept.name.clone(), |c| c.0.clone()),
                    ),
                    message: format!(
                        "index {} on {} {how} {}: it costs every write and serves no query the other does not; drop it",
                        redundant.name,
                        redundant.table,
                        kept.describe()
                    ),
                });
            }
        }
    }
    Ok(findings)
}

fn indexes(client: &mut impl GenericClient) -> Result<Vec<Index>, postgres::Error> {
    let oids: Vec<u32> = user_tables(client)?
        .into_iter()
        .filter(|t| !t.is_version_table())
        .map(|t| t.oid)
        .collect();
    let rows = client.query(
        "SELECT ic.relname::text, t.relname::text, i.indkey::int2[], i.indnkeyatts::int,
                i.indclass::oid[], i.indcollation::oid[], i.indoption::int2[],
                pg_get_expr(i.indexprs, i.indrelid), pg_get_expr(i.indpred, i.indrelid),
                am.amname::text, i.indisunique, k.conname::text, k.contype = 'p'
           FROM pg_index i
           JOIN pg_class ic ON ic.oid = i.indexrelid
           JOIN pg_class t ON t.oid = i.indrelid
           JOIN pg_am am ON am.oid = ic.relam
           LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u')
          WHERE i.indrelid = ANY($1) AND i.indisvalid AND NOT t.relispartition
          ORDER BY t.relname, ic.relname",
        &[&oids],
    )?;
    Ok(rows
        .iter()
        .map(|r| Index {
            name: r.get(0),
            table: r.get(1),
            columns: r.get(2),
            key_count: r.get::<_, i32>(3) as usize,
            classes: r.get(4),
            collations: r.get(5),
            options: r.get(6),
            expressions: r.get(7),
            predicate: r.get(8),
            method: r.get(9),
            unique: r.get(10),
            constraint: r
                .get::<_, Option<String>>(11)
                .map(|name| (name, r.get::<_, Option<bool>>(12).unwrap_or(false))),
        })
        .collect())
}

/// Each table's storage file, by oid: a step that changes it rewrote the table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileNodes(BTreeMap<u32, (String, u32)>);

impl FileNodes {
    pub fn capture(client: &mut impl GenericClient) -> Result<FileNodes, postgres::Error> {
        let oids: Vec<u32> = user_tables(client)?
            .into_iter()
            .filter(|t| !t.is_version_table())
            .map(|t| t.oid)
            .collect();
        // Partitioned parents have no storage (relfilenode 0): their partitions are
        // tables of their own and are read here too.
        let rows = client.query(
            "SELECT c.oid, c.relname::text, c.relfilenode
               FROM pg_class c
              WHERE (c.oid = ANY($1) OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = ANY($1)))
                AND c.relkind IN ('r', 'm')",
            &[&oids],
        )?;
        Ok(FileNodes(
            rows.iter()
                .map(|r| (r.get(0), (r.get(1), r.get(2))))
                .collect(),
        ))
    }

    /// Tables present in both whose file node changed.
    pub fn rewritten_since(&self, before: &FileNodes) -> Vec<String> {
        self.0
            .iter()
            .filter(|(oid, (_, node))| before.0.get(oid).is_some_and(|(_, old)| old != node))
            .map(|(_, (name, _))| name.clone())
            .collect()
    }
}

/// The findings for tables `step` (e.g. "upgrade") of `revision` rewrote.
pub fn rewrites(revision: &str, step: &str, tables: Vec<String>) -> Vec<Finding> {
    tables
        .into_iter()
        .map(|table| Finding {
            kind: FindingKind::TableRewrite,
            revision: revision.to_string(),
            message: format!(
                "the {step} of {revision} rewrites table {table} (its file node changed): every row is copied under an ACCESS EXCLUSIVE lock, blocking reads and writes for as long as that takes on a big table"
            ),
            table,
            index: None,
            covered_by: None,
        })
        .collect()
}
