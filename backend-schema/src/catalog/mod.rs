//! The one reader of PostgreSQL's catalogs: which tables a database holds
//! (`user_tables`), and `Catalog`, the structured view (tables, columns, constraints,
//! indexes, enums, RLS, policies, comments) the declarative planner and the ER diagram
//! work from; `SchemaSnapshot` is the flat, comparable view of the same catalogs.

use std::collections::BTreeMap;

use postgres::GenericClient;

mod tables;

pub(crate) use tables::USER_SCHEMAS;
pub use tables::{column_names, is_bookkeeping, tables_in_current_schema, user_tables, UserTable};

/// The `public` schema of one database: the planner writes unqualified names, so it
/// sees only the schema those resolve to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Enum type -> its values in order.
    pub enums: BTreeMap<String, Vec<String>>,
    pub tables: BTreeMap<String, Table>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// In attnum order.
    pub columns: Vec<Column>,
    /// Name -> constraint.
    pub constraints: BTreeMap<String, Constraint>,
    /// Name -> `pg_get_indexdef`, for indexes that do not back a constraint.
    pub indexes: BTreeMap<String, String>,
    pub row_security: bool,
    pub force_row_security: bool,
    pub policies: BTreeMap<String, Policy>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type`, e.g. `character varying(255)`.
    pub data_type: String,
    pub not_null: bool,
    pub default: Option<String>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Constraint {
    /// `p`rimary key, `u`nique, `f`oreign key, `c`heck, e`x`clusion.
    pub kind: char,
    /// `pg_get_constraintdef`, e.g. `FOREIGN KEY (tenant_id) REFERENCES tenants(id)`.
    pub definition: String,
    /// The backing index (`pg_get_indexdef`) of a primary key or unique constraint.
    pub index: Option<String>,
    /// The constrained columns, in key order.
    pub columns: Vec<String>,
    /// The table a foreign key references.
    pub references: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub permissive: bool,
    /// `ALL`, `SELECT`, `INSERT`, `UPDATE` or `DELETE`.
    pub command: String,
    pub roles: Vec<String>,
    pub using: Option<String>,
    pub with_check: Option<String>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

impl Catalog {
    pub fn capture(client: &mut impl GenericClient) -> Result<Catalog, postgres::Error> {
        let mut catalog = Catalog::default();
        for row in client.query(
            "SELECT t.typname::text, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
               FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
               JOIN pg_namespace n ON n.oid = t.typnamespace
              WHERE n.nspname = 'public' GROUP BY t.typname",
            &[],
        )? {
            catalog.enums.insert(row.get(0), row.get(1));
        }
        let oids: Vec<u32> = user_tables(client)?
            .into_iter()
            .filter(|t| t.schema == "public" && !t.is_version_table())
            .map(|t| t.oid)
            .collect();
        for row in client.query(
            "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity, obj_description(c.oid, 'pg_class')
               FROM pg_class c WHERE c.oid = ANY($1)",
            &[&oids],
        )? {
            let name: String = row.get(0);
            catalog.tables.insert(
                name,
                Table {
                    row_security: row.get(1),
                    force_row_security: row.get(2),
                    comment: row.get(3),
                    ..Table::default()
                },
            );
        }
        for row in client.query(
            "SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                    pg_get_expr(d.adbin, d.adrelid), col_description(c.oid, a.attnum)
               FROM pg_attribute a
               JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY c.relname, a.attnum",
            &[],
        )? {
            if let Some(table) = catalog.tables.get_mut(row.get::<_, &str>(0)) {
                table.columns.push(Column {
                    name: row.get(1),
                    data_type: row.get(2),
                    not_null: row.get(3),
                    default: row.get(4),
                    comment: row.get(5),
                });
            }
        }
        for row in client.query(
            "SELECT c.relname::text, k.conname::text, k.contype::text, pg_get_constraintdef(k.oid),
                    CASE WHEN k.contype IN ('p', 'u') THEN pg_get_indexdef(k.conindid) END,
                    ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, i)
                            JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
                           ORDER BY u.i),
                    (SELECT r.relname::text FROM pg_class r WHERE r.oid = k.confrelid)
               FROM pg_constraint k
               JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND k.contype IN ('p', 'u', 'f', 'c', 'x')",
            &[],
        )? {
            if let Some(table) = catalog.tables.get_mut(row.get::<_, &str>(0)) {
                let kind: String = row.get(2);
                table.constraints.insert(
                    row.get(1),
                    Constraint {
                        kind: kind.chars().next().unwrap_or('c'),
                        definition: row.get(3),
                        index: row.get(4),
                        columns: row.get(5),
                        references: row.get(6),
                    },
                );
            }
        }
        for row in client.query(
            "SELECT t.relname::text, i.relname::text, pg_get_indexdef(x.indexrelid)
               FROM pg_index x
               JOIN pg_class i ON i.oid = x.indexrelid
               JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
              WHERE n.nspname = 'public'
                AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                                 WHERE k.conindid = x.indexrelid AND k.conrelid = x.indrelid
                                   AND k.contype IN ('p', 'u', 'x'))",
            &[],
        )? {
            if let Some(table) = catalog.tables.get_mut(row.get::<_, &str>(0)) {
                table.indexes.insert(row.get(1), row.get(2));
            }
        }
        for row in client.query(
            "SELECT tablename::text, policyname::text, permissive = 'PERMISSIVE', cmd,
                    roles::text[], qual, with_check
               FROM pg_policies WHERE schemaname = 'public'",
            &[],
        )? {
            if let Some(table) = catalog.tables.get_mut(row.get::<_, &str>(0)) {
                table.policies.insert(
                    row.get(1),
                    Policy {
                        permissive: row.get(2),
                        command: row.get(3),
                        roles: row.get(4),
                        using: row.get(5),
                        with_check: row.get(6),
                    },
                );
            }
        }
        Ok(catalog)
    }
}
