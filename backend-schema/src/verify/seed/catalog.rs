//! What the seeder needs to know about the tables it fills: columns with their types
//! resolved (domains to their base, arrays to their element), foreign keys with every
//! column in order, CHECK constraints and partition bounds.

use std::collections::{BTreeMap, BTreeSet};

use postgres::types::Type;
use postgres::GenericClient;

use crate::catalog::{user_tables, UserTable};
use crate::prepared::Prepared;
use crate::sql::quote_ident;
use crate::verify::data::TableData;

/// A table of `public` the seeder fills; partitions are filled through their parent.
#[derive(Debug, Clone)]
pub struct SeedTable {
    pub oid: u32,
    pub name: String,
    pub columns: Vec<SeedColumn>,
    /// Partition key columns of a partitioned table, and the literals its partitions'
    /// bounds name (values that are certain to land in some partition).
    pub partition_key: Vec<String>,
    pub partition_literals: Vec<String>,
}

impl SeedTable {
    pub fn column(&self, name: &str) -> Option<&SeedColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn has_tenant_column(&self) -> bool {
        self.column("tenant_id").is_some()
    }
}

#[derive(Debug, Clone)]
pub struct SeedColumn {
    pub name: String,
    /// The declared type, as a cast target (`format_type`).
    pub type_name: String,
    /// The type values are generated for: a domain's base type, else the declared one.
    pub value_type: String,
    /// Element type of an array (of the base type for an array domain).
    pub element_type: Option<String>,
    /// Labels of an enum (of the element for an enum array), in order.
    pub enum_labels: Vec<String>,
    pub not_null: bool,
    pub has_default: bool,
    /// Generated or identity: PostgreSQL fills it.
    pub filled_by_server: bool,
}

/// A foreign key, every column in `conkey` order.
#[derive(Debug, Clone)]
pub struct ForeignKey {
    pub name: String,
    pub table: String,
    pub columns: Vec<String>,
    pub target: String,
    /// The referenced table is in `public`, where the seeder can read and fill it.
    pub target_in_public: bool,
    pub target_columns: Vec<String>,
}

/// A CHECK constraint of a table.
#[derive(Debug, Clone)]
pub struct Check {
    pub columns: Vec<String>,
    pub definition: String,
}

/// The tables of `public` but the version tables: the ones the seeder fills, partitions
/// left to their parent.
pub fn public_tables(client: &mut impl GenericClient) -> Result<Vec<UserTable>, postgres::Error> {
    Ok(user_tables(client)?
        .into_iter()
        .filter(|t| t.schema == "public" && !t.is_version_table())
        .collect())
}

/// The names of the tables of `tables` [`seed_tables`] would return that hold no row.
/// `rows`, when given, holds the rows of (some of) them now: a table it holds is empty
/// when it holds no row of it, and only the others are counted, in one query.
pub(crate) fn empty_tables(
    client: &mut impl GenericClient,
    tables: &[UserTable],
    rows: Option<&TableData>,
) -> Result<BTreeSet<String>, postgres::Error> {
    let known = |t: &UserTable| rows.and_then(|rows| rows.tables.get(&t.name));
    // Partitions are filled through their parent: asked about the candidates alone, as
    // most of the time no table is empty and nothing need be asked at all.
    let oids: Vec<u32> = tables
        .iter()
        .filter(|t| known(t).is_none_or(|(_, rows)| rows.is_empty()))
        .map(|t| t.oid)
        .collect();
    if oids.is_empty() {
        return Ok(BTreeSet::new());
    }
    let candidates: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_class c
              WHERE c.oid = ANY($1) AND NOT c.relispartition ORDER BY c.relname",
            &[&oids],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut empty = BTreeSet::new();
    let mut names = Vec::new();
    for name in candidates {
        if rows.is_some_and(|rows| rows.tables.contains_key(&name)) {
            empty.insert(name);
        } else {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Ok(empty);
    }
    // One round trip for every table: the position in `names` comes back, never a name
    // spliced into the text but as a quoted identifier.
    let sql = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!(
                "SELECT {i}::int4 WHERE NOT EXISTS (SELECT 1 FROM {})",
                quote_ident(name)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    empty.extend(
        client
            .query_typed(&sql, &[])?
            .iter()
            .map(|r| names[r.get::<_, i32>(0) as usize].clone()),
    );
    Ok(empty)
}

/// The tables of `tables` (from [`public_tables`]) but partitions, in name order, with
/// the columns of those `needed`.
pub fn seed_tables(
    client: &mut impl GenericClient,
    mut prepared: Option<&mut Prepared>,
    tables: &[UserTable],
    needed: &BTreeSet<String>,
) -> Result<Vec<SeedTable>, postgres::Error> {
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let rows = crate::prepared::query(
        client,
        prepared.as_deref_mut(),
        "SELECT c.oid, c.relname::text, c.relkind = 'p'
           FROM pg_class c
          WHERE c.oid = ANY($1) AND NOT c.relispartition
          ORDER BY c.relname",
        &[(&oids, Type::OID_ARRAY)],
    )?;
    let mut tables = Vec::new();
    for row in rows {
        let oid: u32 = row.get(0);
        let name: String = row.get(1);
        if !needed.contains(&name) {
            // Its place in the seeding order is all the seeder needs of it.
            tables.push(SeedTable {
                oid,
                name,
                columns: Vec::new(),
                partition_key: Vec::new(),
                partition_literals: Vec::new(),
            });
            continue;
        }
        let partitioned: bool = row.get(2);
        let (partition_key, partition_literals) = if partitioned {
            partitioning(client, oid)?
        } else {
            (Vec::new(), Vec::new())
        };
        tables.push(SeedTable {
            oid,
            name,
            columns: columns(client, prepared.as_deref_mut(), oid)?,
            partition_key,
            partition_literals,
        });
    }
    Ok(tables)
}

fn columns(
    client: &mut impl GenericClient,
    prepared: Option<&mut Prepared>,
    oid: u32,
) -> Result<Vec<SeedColumn>, postgres::Error> {
    // A domain resolves to its base type (one level is what schemas use; a domain over
    // a domain still casts correctly, its values just come from the inner domain's base).
    let rows = crate::prepared::query(
        client,
        prepared,
        "SELECT a.attname::text,
                format_type(a.atttypid, a.atttypmod),
                format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END,
                            CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END),
                CASE WHEN b.typcategory = 'A' THEN format_type(b.typelem, NULL) END,
                COALESCE((SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
                            FROM pg_enum e
                           WHERE e.enumtypid = CASE WHEN b.typcategory = 'A' THEN b.typelem ELSE b.oid END),
                         '{}'),
                a.attnotnull OR (t.typtype = 'd' AND t.typnotnull),
                a.atthasdef OR (t.typtype = 'd' AND t.typdefault IS NOT NULL),
                a.attgenerated <> '' OR a.attidentity <> ''
           FROM pg_attribute a
           JOIN pg_type t ON t.oid = a.atttypid
           JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
          WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
          ORDER BY a.attnum",
        &[(&oid, Type::OID)],
    )?;
    Ok(rows
        .iter()
        .map(|r| SeedColumn {
            name: r.get(0),
            type_name: r.get(1),
            value_type: r.get(2),
            element_type: r.get(3),
            enum_labels: r.get(4),
            not_null: r.get(5),
            has_default: r.get(6),
            filled_by_server: r.get(7),
        })
        .collect())
}

/// The key columns of a partitioned table and the literals of its partitions' bounds.
fn partitioning(
    client: &mut impl GenericClient,
    oid: u32,
) -> Result<(Vec<String>, Vec<String>), postgres::Error> {
    let key: Vec<String> = client
        .query(
            "SELECT a.attname::text
               FROM pg_partitioned_table p, unnest(p.partattrs) WITH ORDINALITY AS k(attnum, n)
               JOIN pg_attribute a ON a.attrelid = $1 AND a.attnum = k.attnum
              WHERE p.partrelid = $1
              ORDER BY k.n",
            &[&oid],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let bounds: Vec<String> = client
        .query(
            "SELECT pg_get_expr(c.relpartbound, c.oid)
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = $1
              ORDER BY c.relname",
            &[&oid],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let literals = bounds.iter().flat_map(|b| quoted_literals(b)).collect();
    Ok((key, literals))
}

/// Every foreign key of the tables of `public`, keyed by the table that holds it.
pub fn foreign_keys(
    client: &mut impl GenericClient,
    prepared: Option<&mut Prepared>,
) -> Result<BTreeMap<String, Vec<ForeignKey>>, postgres::Error> {
    let rows = crate::prepared::query(
        client,
        prepared,
        "SELECT k.conname::text, c.relname::text, r.relname::text, rn.nspname = 'public',
                ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY AS x(attnum, n)
                        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = x.attnum ORDER BY x.n),
                ARRAY(SELECT a.attname::text FROM unnest(k.confkey) WITH ORDINALITY AS x(attnum, n)
                        JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = x.attnum ORDER BY x.n)
           FROM pg_constraint k
           JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
           JOIN pg_class r ON r.oid = k.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
          WHERE k.contype = 'f' AND cn.nspname = 'public' AND NOT c.relispartition
          ORDER BY c.relname, k.conname",
        &[],
    )?;
    let mut by_table: BTreeMap<String, Vec<ForeignKey>> = BTreeMap::new();
    for r in rows {
        let fk = ForeignKey {
            name: r.get(0),
            table: r.get(1),
            target: r.get(2),
            target_in_public: r.get(3),
            columns: r.get(4),
            target_columns: r.get(5),
        };
        by_table.entry(fk.table.clone()).or_default().push(fk);
    }
    Ok(by_table)
}

/// The CHECK constraint `name` of table `oid` or of a domain of its columns.
pub fn check(
    client: &mut impl GenericClient,
    oid: u32,
    name: &str,
) -> Result<Option<Check>, postgres::Error> {
    // The table's own CHECK, else a CHECK of the domain of one of its columns (the
    // domain's constraint then applies to that column).
    let row = client.query_opt(
        "SELECT pg_get_constraintdef(k.oid),
                ARRAY(SELECT a.attname::text FROM unnest(k.conkey) AS x(attnum)
                        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = x.attnum)
           FROM pg_constraint k
          WHERE k.conrelid = $1 AND k.conname = $2 AND k.contype = 'c'
         UNION ALL
         SELECT pg_get_constraintdef(k.oid), ARRAY[a.attname::text]
           FROM pg_constraint k
           JOIN pg_attribute a ON a.attrelid = $1 AND a.atttypid = k.contypid AND NOT a.attisdropped
          WHERE k.conname = $2 AND k.contype = 'c'
          LIMIT 1",
        &[&oid, &name],
    )?;
    Ok(row.map(|r| Check {
        definition: r.get(0),
        columns: r.get(1),
    }))
}

/// The values a constraint or bound spells out: quoted literals (`'a'::text`), then
/// numbers, in order of appearance.
pub fn quoted_literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut numbers = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            let mut value = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        value.push('\'');
                        i += 2;
                        continue;
                    }
                    break;
                }
                value.push(chars[i]);
                i += 1;
            }
            out.push(value);
        } else if c.is_ascii_digit()
            && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'))
        {
            let start = i;
            while i + 1 < chars.len() && (chars[i + 1].is_ascii_digit() || chars[i + 1] == '.') {
                i += 1;
            }
            let negative = start > 0 && chars[start - 1] == '-';
            let number: String = chars[start..=i].iter().collect();
            numbers.push(if negative {
                format!("-{number}")
            } else {
                number
            });
        }
        i += 1;
    }
    out.extend(numbers);
    out
}

#[cfg(test)]
mod tests {
    use super::quoted_literals;

    #[test]
    fn literals_of_checks_and_bounds() {
        assert_eq!(
            quoted_literals("CHECK (((status)::text = ANY ((ARRAY['new'::character varying, 'it''s'::character varying])::text[])))"),
            ["new", "it's"]
        );
        assert_eq!(
            quoted_literals(
                "FOR VALUES FROM ('2024-01-01 00:00:00+00') TO ('2024-02-01 00:00:00+00')"
            ),
            ["2024-01-01 00:00:00+00", "2024-02-01 00:00:00+00"]
        );
        assert_eq!(
            quoted_literals("CHECK (((score >= 100) AND (score <= 1000)))"),
            ["100", "1000"]
        );
        assert_eq!(quoted_literals("CHECK ((x1 > -5))"), ["-5"]);
    }
}
