//! Everything the user schemas of a database hold, read from the catalogs once, one
//! struct per kind of object: the rows `SchemaSnapshot` renders and the planner's
//! `Catalog` narrows to `public`.
//!
//! Every reader has the same scope (`USER_SCHEMAS`) and the same ignore list
//! (`is_bookkeeping`), so no view of the schema sees an object another one misses.

use std::cell::RefCell;

use postgres::types::{ToSql, Type};
use postgres::{GenericClient, Row};

use crate::prepared::{Params, Prepared};

use super::tables::{is_bookkeeping, USER_SCHEMAS};

/// The objects of every user schema but our bookkeeping, each with its schema.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Objects {
    /// Tables, views and materialized views, each with its columns.
    pub relations: Vec<Relation>,
    /// Constraints of every kind, on whatever relation holds them.
    pub constraints: Vec<Constraint>,
    /// Every index, the ones backing a constraint included.
    pub indexes: Vec<Index>,
    pub policies: Vec<Policy>,
    pub sequences: Vec<Sequence>,
    /// Functions and procedures that no extension owns.
    pub functions: Vec<Function>,
    /// User triggers, not the internal ones behind foreign keys.
    pub triggers: Vec<Trigger>,
    /// Privileges on relations and sequences granted to roles other than the owner
    /// (the owner differs between servers).
    pub grants: Vec<Grant>,
    pub enums: Vec<EnumType>,
    /// Installed extensions but `plpgsql`, which every database has.
    pub extensions: Vec<String>,
}

/// What a relation is (`pg_class.relkind`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum RelKind {
    /// Ordinary or partitioned.
    Table,
    View,
    MaterializedView,
    Sequence,
}

impl RelKind {
    fn from_relkind(relkind: &str) -> RelKind {
        match relkind {
            "r" | "p" => RelKind::Table,
            "m" => RelKind::MaterializedView,
            "S" => RelKind::Sequence,
            _ => RelKind::View,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Relation {
    pub schema: String,
    pub name: String,
    pub kind: RelKind,
    pub row_security: bool,
    pub force_row_security: bool,
    /// `pg_get_viewdef`, for views and materialized views.
    pub view_definition: Option<String>,
    pub comment: Option<String>,
    /// In attnum order.
    pub columns: Vec<Column>,
    /// The relations of its own schema a view reads, by name (sorted), so views can be
    /// created after what they read and dropped before it.
    #[serde(default)]
    pub uses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    pub name: String,
    /// `format_type`, e.g. `character varying(255)`.
    pub data_type: String,
    pub not_null: bool,
    /// The default, or the expression of a generated column.
    pub default: Option<String>,
    pub identity: Option<Identity>,
    /// `GENERATED ALWAYS AS (default) STORED`.
    pub generated: bool,
    pub comment: Option<String>,
    /// `COLLATE "C"`-style name, when not its type's default collation.
    #[serde(default)]
    pub collation: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Identity {
    Always,
    ByDefault,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Constraint {
    pub schema: String,
    pub table: String,
    pub name: String,
    /// `pg_constraint.contype`: `p`rimary key, `u`nique, `f`oreign key, `c`heck,
    /// e`x`clusion, constraint `t`rigger.
    pub kind: char,
    /// `pg_get_constraintdef`, e.g. `FOREIGN KEY (tenant_id) REFERENCES tenants(id)`.
    pub definition: String,
    /// The backing index (`pg_get_indexdef`) of a primary key or unique constraint.
    pub index: Option<String>,
    /// The constrained columns, in key order.
    pub columns: Vec<String>,
    /// The table a foreign key references (its name, unqualified).
    pub references: Option<String>,
    /// `COMMENT ON CONSTRAINT`.
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Index {
    pub schema: String,
    pub table: String,
    pub name: String,
    /// `pg_get_indexdef`.
    pub definition: String,
    /// False for an index a failed `CREATE INDEX CONCURRENTLY` left behind.
    pub valid: bool,
    /// Whether a primary key, unique or exclusion constraint of its table owns it.
    pub backs_constraint: bool,
    /// `COMMENT ON INDEX`.
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Policy {
    pub schema: String,
    pub table: String,
    pub name: String,
    pub permissive: bool,
    /// `ALL`, `SELECT`, `INSERT`, `UPDATE` or `DELETE`.
    pub command: String,
    pub roles: Vec<String>,
    pub using: Option<String>,
    pub with_check: Option<String>,
    /// `COMMENT ON POLICY`.
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Sequence {
    pub schema: String,
    pub name: String,
    pub data_type: String,
    pub start: i64,
    pub increment: i64,
    pub min: i64,
    pub max: i64,
    pub cycle: bool,
    /// The column that owns it (`serial`, `bigserial`, identity), as (table, column).
    pub owned_by: Option<(String, String)>,
    /// `COMMENT ON SEQUENCE`.
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Function {
    pub schema: String,
    /// `name(identity arguments)`.
    pub signature: String,
    /// `pg_get_functiondef`.
    pub definition: String,
    /// `COMMENT ON FUNCTION` (or `PROCEDURE`).
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trigger {
    pub schema: String,
    pub table: String,
    pub name: String,
    /// `pg_get_triggerdef`.
    pub definition: String,
    /// `COMMENT ON TRIGGER`.
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grant {
    pub schema: String,
    pub relation: String,
    pub kind: RelKind,
    /// A role name, or `PUBLIC`.
    pub grantee: String,
    /// Sorted, e.g. `INSERT`, `SELECT`.
    pub privileges: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnumType {
    pub schema: String,
    pub name: String,
    /// In sort order.
    pub labels: Vec<String>,
    /// `COMMENT ON TYPE`.
    #[serde(default)]
    pub comment: Option<String>,
}

impl Objects {
    /// Reads the database `client` is connected to.
    pub fn read(client: &mut impl GenericClient) -> Result<Objects, postgres::Error> {
        Objects::read_in(
            client,
            &Scope {
                relations: None,
                kinds: Kinds::ALL,
                prepared: None,
            },
        )
    }

    /// Only the relations among `oids` with what hangs on them (columns, constraints,
    /// indexes, policies, triggers, grants), and the kinds read whole that `kinds` names.
    /// `verify` re-reads what a step can have touched this way.
    /// Its statements are prepared on `client` once and kept in `prepared`.
    pub(crate) fn read_relations(
        client: &mut impl GenericClient,
        oids: &[u32],
        kinds: Kinds,
        prepared: &mut Prepared,
    ) -> Result<Objects, postgres::Error> {
        let scope = Scope {
            relations: Some(oids.to_vec()),
            kinds,
            prepared: Some(RefCell::new(std::mem::take(prepared))),
        };
        let objects = Objects::read_in(client, &scope);
        if let Some(cache) = scope.prepared {
            *prepared = cache.into_inner();
        }
        objects
    }

    fn read_in(client: &mut impl GenericClient, scope: &Scope) -> Result<Objects, postgres::Error> {
        let mut objects = Objects::default();
        // After a step that touched no relation, none of their queries is worth a round trip.
        let any_relation = scope.relations.as_ref().is_none_or(|oids| !oids.is_empty());
        if any_relation {
            objects.relations = relations(client, scope)?;
            columns(client, &mut objects.relations, scope)?;
            objects.constraints = constraints(client, scope)?;
            objects.indexes = indexes(client, scope)?;
            objects.policies = policies(client, scope)?;
            objects.triggers = triggers(client, scope)?;
        }
        if any_relation || scope.kinds.sequences {
            objects.grants = grants(client, scope)?;
        }
        if scope.kinds.sequences {
            objects.sequences = sequences(client)?;
        }
        if scope.kinds.functions {
            objects.functions = functions(client)?;
        }
        if scope.kinds.enums {
            objects.enums = enums(client)?;
        }
        if scope.kinds.extensions {
            objects.extensions = extensions(client)?;
        }
        Ok(objects)
    }
}

/// Which of the kinds read whole (not by relation) a read covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kinds {
    pub sequences: bool,
    pub functions: bool,
    pub enums: bool,
    pub extensions: bool,
}

impl Kinds {
    const ALL: Kinds = Kinds {
        sequences: true,
        functions: true,
        enums: true,
        extensions: true,
    };
}

/// The relations a read covers, by oid (`None`: all), bound as `$1`, the kinds read
/// whole it covers (a sequence's grants come with the sequences), and where its
/// statements are kept when they are prepared.
struct Scope {
    relations: Option<Vec<u32>>,
    kinds: Kinds,
    prepared: Option<RefCell<Prepared>>,
}

impl Scope {
    /// `scoped` for a read of some relations, `true` for a full read. A filter written
    /// `$1 IS NULL OR c.oid = ANY($1)` left the statement kept for scoped reads a plan
    /// that scanned every relation (a generic plan cannot know `$1` is never null), so
    /// each read cost as much as the schema was large.
    fn only<'a>(&self, scoped: &'a str) -> &'a str {
        if self.relations.is_some() {
            scoped
        } else {
            "true"
        }
    }

    fn param(&self) -> [(&(dyn ToSql + Sync), Type); 1] {
        [(&self.relations, Type::OID_ARRAY)]
    }

    /// `sql` run once (a full read) or through its prepared statement.
    fn query(
        &self,
        client: &mut impl GenericClient,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Vec<Row>, postgres::Error> {
        let mut cache = self.prepared.as_ref().map(RefCell::borrow_mut);
        crate::prepared::query(client, cache.as_deref_mut(), sql, params)
    }
}

fn relations(
    client: &mut impl GenericClient,
    scope: &Scope,
) -> Result<Vec<Relation>, postgres::Error> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relrowsecurity, c.relforcerowsecurity,
                CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
                obj_description(c.oid, 'pg_class'),
                ARRAY(SELECT DISTINCT r.relname::text
                        FROM pg_rewrite w
                        JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = w.oid
                        JOIN pg_class r ON d.refclassid = 'pg_class'::regclass AND r.oid = d.refobjid
                       WHERE w.ev_class = c.oid AND r.oid <> c.oid AND r.relnamespace = c.relnamespace
                       ORDER BY 1)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm')
            AND {only}",
        only = scope.only("c.oid = ANY($1)")
    );
    let mut relations: Vec<Relation> = scope
        .query(client, &sql, &scope.param())?
        .iter()
        .filter(|row| !is_bookkeeping(row.get(1)))
        .map(|row| Relation {
            schema: row.get(0),
            name: row.get(1),
            kind: RelKind::from_relkind(row.get(2)),
            row_security: row.get(3),
            force_row_security: row.get(4),
            view_definition: row.get(5),
            comment: row.get(6),
            columns: Vec::new(),
            uses: row.get(7),
        })
        .collect();
    relations.sort_by(|a, b| (&a.schema, &a.name).cmp(&(&b.schema, &b.name)));
    Ok(relations)
}

/// Fills in the columns of `relations`, which are sorted by schema and name.
fn columns(
    client: &mut impl GenericClient,
    relations: &mut [Relation],
    scope: &Scope,
) -> Result<(), postgres::Error> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
                a.attnotnull, pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text,
                col_description(c.oid, a.attnum),
                (SELECT quote_ident(co.collname) FROM pg_collation co JOIN pg_type t ON t.oid = a.atttypid
                  WHERE co.oid = a.attcollation AND a.attcollation <> t.typcollation)
           FROM pg_attribute a
           JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
          WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped
            AND {only}
          ORDER BY n.nspname, c.relname, a.attnum",
        only = scope.only("c.oid = ANY($1)")
    );
    for row in scope.query(client, &sql, &scope.param())? {
        let key = (row.get::<_, &str>(0), row.get::<_, &str>(1));
        let Ok(at) = relations.binary_search_by(|r| (r.schema.as_str(), r.name.as_str()).cmp(&key))
        else {
            continue; // our bookkeeping
        };
        relations[at].columns.push(Column {
            name: row.get(2),
            data_type: row.get(3),
            not_null: row.get(4),
            default: row.get(5),
            identity: match row.get::<_, &str>(6) {
                "a" => Some(Identity::Always),
                "d" => Some(Identity::ByDefault),
                _ => None,
            },
            generated: row.get::<_, &str>(7) == "s",
            comment: row.get(8),
            collation: row.get(9),
        });
    }
    Ok(())
}

fn constraints(
    client: &mut impl GenericClient,
    scope: &Scope,
) -> Result<Vec<Constraint>, postgres::Error> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, k.conname::text, k.contype::text, pg_get_constraintdef(k.oid),
                CASE WHEN k.contype IN ('p', 'u') THEN pg_get_indexdef(k.conindid) END,
                ARRAY(SELECT a.attname::text FROM unnest(k.conkey) WITH ORDINALITY AS u(attnum, i)
                        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.attnum
                       ORDER BY u.i),
                (SELECT r.relname::text FROM pg_class r WHERE r.oid = k.confrelid),
                obj_description(k.oid, 'pg_constraint')
           FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE {USER_SCHEMAS} AND {only}",
        only = scope.only("c.oid = ANY($1)")
    );
    Ok(scope
        .query(client, &sql, &scope.param())?
        .iter()
        .filter(|row| !is_bookkeeping(row.get(1)))
        .map(|row| Constraint {
            schema: row.get(0),
            table: row.get(1),
            name: row.get(2),
            kind: row.get::<_, &str>(3).chars().next().unwrap_or('c'),
            definition: row.get(4),
            index: row.get(5),
            columns: row.get(6),
            references: row.get(7),
            comment: row.get(8),
        })
        .collect())
}

fn indexes(client: &mut impl GenericClient, scope: &Scope) -> Result<Vec<Index>, postgres::Error> {
    let sql = format!(
        "SELECT n.nspname::text, t.relname::text, ic.relname::text, pg_get_indexdef(i.indexrelid), i.indisvalid,
                EXISTS (SELECT 1 FROM pg_constraint k
                         WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid
                           AND k.contype IN ('p', 'u', 'x')),
                obj_description(i.indexrelid, 'pg_class')
           FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
           JOIN pg_namespace n ON n.oid = t.relnamespace
          WHERE {USER_SCHEMAS} AND {only}",
        only = scope.only("t.oid = ANY($1)")
    );
    Ok(scope
        .query(client, &sql, &scope.param())?
        .iter()
        .filter(|row| !is_bookkeeping(row.get(1)))
        .map(|row| Index {
            schema: row.get(0),
            table: row.get(1),
            name: row.get(2),
            definition: row.get(3),
            valid: row.get(4),
            backs_constraint: row.get(5),
            comment: row.get(6),
        })
        .collect())
}

fn policies(
    client: &mut impl GenericClient,
    scope: &Scope,
) -> Result<Vec<Policy>, postgres::Error> {
    let sql = format!(
        "SELECT p.schemaname::text, p.tablename::text, p.policyname::text, p.permissive = 'PERMISSIVE', p.cmd,
                p.roles::text[], p.qual, p.with_check,
                (SELECT obj_description(pol.oid, 'pg_policy') FROM pg_policy pol JOIN pg_class c ON c.oid = pol.polrelid
                  WHERE c.relnamespace = n.oid AND c.relname = p.tablename AND pol.polname = p.policyname)
           FROM pg_policies p JOIN pg_namespace n ON n.nspname = p.schemaname
          WHERE {USER_SCHEMAS}
            AND {only}",
        only = scope.only("EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = ANY($1) AND c.relnamespace = n.oid AND c.relname = p.tablename)")
    );
    Ok(scope
        .query(client, &sql, &scope.param())?
        .iter()
        .filter(|row| !is_bookkeeping(row.get(1)))
        .map(|row| Policy {
            schema: row.get(0),
            table: row.get(1),
            name: row.get(2),
            permissive: row.get(3),
            command: row.get(4),
            roles: row.get(5),
            using: row.get(6),
            with_check: row.get(7),
            comment: row.get(8),
        })
        .collect())
}

fn sequences(client: &mut impl GenericClient) -> Result<Vec<Sequence>, postgres::Error> {
    let sql = format!(
        "SELECT s.schemaname::text, s.sequencename::text, s.data_type::text, s.start_value, s.increment_by,
                s.min_value, s.max_value, s.cycle,
                (SELECT t.relname::text FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = format('%I.%I', s.schemaname, s.sequencename)::regclass
                    AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0),
                (SELECT a.attname::text FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = format('%I.%I', s.schemaname, s.sequencename)::regclass
                    AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0),
                obj_description(format('%I.%I', s.schemaname, s.sequencename)::regclass, 'pg_class')
           FROM pg_sequences s JOIN pg_namespace n ON n.nspname = s.schemaname
          WHERE {USER_SCHEMAS}"
    );
    Ok(client
        .query_typed(&sql, &[])?
        .iter()
        .filter(|row| !is_bookkeeping(row.get(1)))
        .map(|row| Sequence {
            schema: row.get(0),
            name: row.get(1),
            data_type: row.get(2),
            start: row.get(3),
            increment: row.get(4),
            min: row.get(5),
            max: row.get(6),
            cycle: row.get(7),
            owned_by: row
                .get::<_, Option<String>>(8)
                .zip(row.get::<_, Option<String>>(9)),
            comment: row.get(10),
        })
        .collect())
}

fn functions(client: &mut impl GenericClient) -> Result<Vec<Function>, postgres::Error> {
    let sql = format!(
        "SELECT n.nspname::text, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                pg_get_functiondef(p.oid), obj_description(p.oid, 'pg_proc')
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE {USER_SCHEMAS} AND p.prokind IN ('f', 'p')
            AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"
    );
    Ok(client
        .query_typed(&sql, &[])?
        .iter()
        .map(|row| Function {
            schema: row.get(0),
            signature: row.get(1),
            definition: row.get(2),
            comment: row.get(3),
        })
        .collect())
}

fn triggers(
    client: &mut impl GenericClient,
    scope: &Scope,
) -> Result<Vec<Trigger>, postgres::Error> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, t.tgname::text, pg_get_triggerdef(t.oid),
                obj_description(t.oid, 'pg_trigger')
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE {USER_SCHEMAS} AND NOT t.tgisinternal AND {only}",
        only = scope.only("c.oid = ANY($1)")
    );
    Ok(scope
        .query(client, &sql, &scope.param())?
        .iter()
        .filter(|row| !is_bookkeeping(row.get(1)))
        .map(|row| Trigger {
            schema: row.get(0),
            table: row.get(1),
            name: row.get(2),
            definition: row.get(3),
            comment: row.get(4),
        })
        .collect())
}

fn grants(client: &mut impl GenericClient, scope: &Scope) -> Result<Vec<Grant>, postgres::Error> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text,
                CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(g.grantee)::text END,
                array_agg(g.privilege_type::text ORDER BY g.privilege_type)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) g
          WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'S') AND g.grantee <> c.relowner
            AND {only}
          GROUP BY 1, 2, 3, 4",
        only = scope.only("(c.oid = ANY($1) OR (c.relkind = 'S' AND $2))")
    );
    let [relations] = scope.param();
    let params = [
        relations,
        (&scope.kinds.sequences, postgres::types::Type::BOOL),
    ];
    Ok(scope
        .query(client, &sql, &params)?
        .iter()
        .filter(|row| !is_bookkeeping(row.get(1)))
        .map(|row| Grant {
            schema: row.get(0),
            relation: row.get(1),
            kind: RelKind::from_relkind(row.get(2)),
            grantee: row.get(3),
            privileges: row.get(4),
        })
        .collect())
}

fn enums(client: &mut impl GenericClient) -> Result<Vec<EnumType>, postgres::Error> {
    let sql = format!(
        "SELECT n.nspname::text, t.typname::text, array_agg(e.enumlabel::text ORDER BY e.enumsortorder),
                obj_description(t.oid, 'pg_type')
           FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid
          WHERE {USER_SCHEMAS} GROUP BY 1, 2, t.oid"
    );
    Ok(client
        .query_typed(&sql, &[])?
        .iter()
        .map(|row| EnumType {
            schema: row.get(0),
            name: row.get(1),
            labels: row.get(2),
            comment: row.get(3),
        })
        .collect())
}

fn extensions(client: &mut impl GenericClient) -> Result<Vec<String>, postgres::Error> {
    Ok(client
        .query_typed(
            "SELECT extname::text FROM pg_extension WHERE extname <> 'plpgsql'",
            &[],
        )?
        .iter()
        .map(|row| row.get(0))
        .collect())
}
