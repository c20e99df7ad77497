//! Findings on the schema a revision leaves (rather than on one statement): indexes
//! another index already provides.

use postgres::types::Type;
use postgres::GenericClient;

use crate::catalog::user_tables_with;
use crate::prepared::Prepared;

pub use crate::lint::{Finding, Rule};

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
///
/// `tables` limits the search to the indexes of those tables (the ones a step touched:
/// an index is redundant because of another on its own table); `None` searches all.
pub(crate) fn redundant_indexes(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    revision: &str,
    tables: Option<&[u32]>,
) -> Result<Vec<Finding>, postgres::Error> {
    let indexes = indexes(client, prepared, tables)?;
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
                    findings.iter().any(|f| {
                        f.table.as_ref() == Some(&redundant.table)
                            && f.index.as_deref() == Some(name)
                    })
                };
                if named(&redundant.name) {
                    continue;
                }
                findings.push(Finding {
                    rule: Rule::RedundantIndex,
                    severity: Rule::RedundantIndex.severity(),
                    revision: revision.to_string(),
                    file: None,
                    line: None,
                    statement: None,
                    fix: format!("drop index {} in a later migration (DROP INDEX CONCURRENTLY)", redundant.name),
                    table: Some(redundant.table.clone()),
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

fn indexes(
    client: &mut impl GenericClient,
    prepared: &mut Prepared,
    tables: Option<&[u32]>,
) -> Result<Vec<Index>, postgres::Error> {
    let oids: Vec<u32> = user_tables_with(client, Some(prepared))?
        .into_iter()
        .filter(|t| !t.is_version_table())
        .map(|t| t.oid)
        .filter(|oid| tables.is_none_or(|tables| tables.contains(oid)))
        .collect();
    let rows = prepared.query(
        client,
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
        &[(&oids, Type::OID_ARRAY)],
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
