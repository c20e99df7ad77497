//! Snapshots kept up to date step by step: after a migration step only the relations it
//! can have touched are read again, so a stairway's cost grows with what each migration
//! does, not with the schema it has built so far.
//!
//! A relation counts as touched when a catalog row about it was written after the mark
//! taken with the previous snapshot (its `xmin` is a later transaction: new, altered,
//! renamed), when it depends through `pg_depend` on anything written (a renamed type,
//! function, sequence or referenced table, an operator, operator class or text search
//! configuration moved or renamed, as `ALTER EXTENSION ... SET SCHEMA` moves them,
//! changes how its columns, defaults, checks, foreign keys, indexes, triggers, policies
//! or view text read), or when the number of its constraints, indexes, policies,
//! triggers, defaults or comments (on it, its columns, indexes, constraints, triggers
//! and policies) changed (a drop leaves no row behind to find by `xmin`). Relations
//! that are gone are removed. Types,
//! sequences, functions and extensions are read whole every time; a role created or
//! renamed since the mark makes every relation touched (grants and policies name roles).
//! `VerifyOptions::compare_full_snapshots` checks all of this against a full read.

use std::collections::{BTreeMap, BTreeSet};

use postgres::GenericClient;

use crate::catalog::objects::Objects;
use crate::catalog::USER_SCHEMAS;
use crate::snapshot::SchemaSnapshot;
use crate::sql::display_name;

/// A snapshot and the mark of the moment it describes.
#[derive(Debug, Clone)]
pub(crate) struct Tracked {
    pub snapshot: SchemaSnapshot,
    mark: Mark,
}

/// The first transaction ID not yet assigned, and every relation with the number of
/// objects that hang on it.
#[derive(Debug, Clone)]
struct Mark {
    next_xid: i64,
    relations: BTreeMap<u32, (String, Vec<i64>)>,
}

impl Tracked {
    /// A full read, marked.
    pub fn capture(client: &mut impl GenericClient) -> Result<Tracked, postgres::Error> {
        let mark = Mark::take(client)?;
        Ok(Tracked {
            snapshot: SchemaSnapshot::capture(client)?,
            mark,
        })
    }

    /// The schema now, re-reading only the relations touched since `self`'s mark.
    pub fn refresh(&self, client: &mut impl GenericClient) -> Result<Tracked, postgres::Error> {
        let mark = Mark::take(client)?;
        let (mut scope, everything) = written_since(client, self.mark.next_xid)?;
        if everything {
            return Ok(Tracked {
                snapshot: SchemaSnapshot::capture(client)?,
                mark,
            });
        }
        for (oid, now) in &mark.relations {
            if self.mark.relations.get(oid) != Some(now) {
                scope.insert(*oid);
            }
        }
        // Names whose entries go: relations touched (under their old and new names)
        // and relations that are gone.
        let mut stale: BTreeSet<&str> = BTreeSet::new();
        for (oid, (name, _)) in &self.mark.relations {
            if scope.contains(oid) || !mark.relations.contains_key(oid) {
                stale.insert(name);
            }
        }
        for (oid, (name, _)) in &mark.relations {
            if scope.contains(oid) {
                stale.insert(name);
            }
        }
        let scope: Vec<u32> = scope
            .into_iter()
            .filter(|oid| mark.relations.contains_key(oid))
            .collect();
        let fresh = SchemaSnapshot::render(&Objects::read_relations(client, &scope)?);
        let mut snapshot = self.snapshot.clone();
        snapshot
            .objects
            .retain(|key, _| relation_of(key).is_some_and(|name| !stale.contains(name)));
        snapshot.objects.extend(fresh.objects);
        Ok(Tracked { snapshot, mark })
    }
}

/// The relation a snapshot entry belongs to (its display name), or `None` for the
/// kinds read whole (types, sequences, functions, extensions).
fn relation_of(key: &str) -> Option<&str> {
    ["table ", "view ", "materialized view "]
        .iter()
        .find_map(|word| key.strip_prefix(word))
}

impl Mark {
    fn take(client: &mut impl GenericClient) -> Result<Mark, postgres::Error> {
        let next_xid: i64 = client
            .query_typed_one(
                "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8",
                &[],
            )?
            .get(0);
        // Each kind counted by one grouped pass over its catalog, joined to the
        // relations once: per-relation subqueries (a scan of pg_description each) made
        // this mark cost grow with the square of the number of tables.
        let sql = format!(
            "WITH rel AS (
                 SELECT c.oid, n.nspname::text AS nspname, c.relname::text AS relname
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm')
             ), owned(rel, kind) AS (
                       SELECT k.conrelid, 0 FROM pg_constraint k WHERE k.conrelid <> 0
             UNION ALL SELECT i.indrelid, 1 FROM pg_index i
             UNION ALL SELECT p.polrelid, 2 FROM pg_policy p
             UNION ALL SELECT t.tgrelid, 3 FROM pg_trigger t
             UNION ALL SELECT d.adrelid, 4 FROM pg_attrdef d
             UNION ALL SELECT d.objoid, 5 FROM pg_description d
                        WHERE d.classoid = 'pg_class'::regclass
             UNION ALL SELECT i.indrelid, 6 FROM pg_description d
                         JOIN pg_index i ON i.indexrelid = d.objoid
                        WHERE d.classoid = 'pg_class'::regclass
             UNION ALL SELECT k.conrelid, 7 FROM pg_description d
                         JOIN pg_constraint k ON k.oid = d.objoid
                        WHERE d.classoid = 'pg_constraint'::regclass
             UNION ALL SELECT t.tgrelid, 7 FROM pg_description d
                         JOIN pg_trigger t ON t.oid = d.objoid
                        WHERE d.classoid = 'pg_trigger'::regclass
             UNION ALL SELECT p.polrelid, 7 FROM pg_description d
                         JOIN pg_policy p ON p.oid = d.objoid
                        WHERE d.classoid = 'pg_policy'::regclass
             ), counted AS (
                 SELECT o.rel, o.kind, count(*) AS n FROM owned o
                  WHERE o.rel IN (SELECT oid FROM rel) GROUP BY o.rel, o.kind
             )
             SELECT r.oid, r.nspname, r.relname, ARRAY[
                    coalesce(sum(x.n) FILTER (WHERE x.kind = 0), 0)::int8,
                    coalesce(sum(x.n) FILTER (WHERE x.kind = 1), 0)::int8,
                    coalesce(sum(x.n) FILTER (WHERE x.kind = 2), 0)::int8,
                    coalesce(sum(x.n) FILTER (WHERE x.kind = 3), 0)::int8,
                    coalesce(sum(x.n) FILTER (WHERE x.kind = 4), 0)::int8,
                    coalesce(sum(x.n) FILTER (WHERE x.kind >= 5), 0)::int8]
               FROM rel r LEFT JOIN counted x ON x.rel = r.oid
              GROUP BY r.oid, r.nspname, r.relname"
        );
        let relations = client
            .query_typed(&sql, &[])?
            .iter()
            .map(|r| {
                let name = display_name(r.get(1), r.get(2));
                (r.get(0), (name, r.get(3)))
            })
            .collect();
        Ok(Mark {
            next_xid,
            relations,
        })
    }
}

/// The relations whose catalog rows were written since `xid` or that depend on
/// something written since, and whether a role was (then every relation counts).
fn written_since(
    client: &mut impl GenericClient,
    xid: i64,
) -> Result<(BTreeSet<u32>, bool), postgres::Error> {
    // A throwaway cluster never wraps its transaction IDs around: a 32-bit xmin at or
    // after the mark was written after it.
    let roles: bool = client
        .query_typed_one(
            "SELECT EXISTS (SELECT 1 FROM pg_authid WHERE xmin::text::int8 >= $1)",
            &[(&xid, postgres::types::Type::INT8)],
        )?
        .get(0);
    if roles {
        return Ok((BTreeSet::new(), true));
    }
    let rows = client.query_typed(
        "WITH RECURSIVE written(classid, objid) AS (
                 SELECT 'pg_class'::regclass::oid, oid FROM pg_class WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_class'::regclass::oid, attrelid FROM pg_attribute WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_class'::regclass::oid, adrelid FROM pg_attrdef WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_constraint'::regclass::oid, oid FROM pg_constraint WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_class'::regclass::oid, conrelid FROM pg_constraint WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_type'::regclass::oid, contypid FROM pg_constraint WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_class'::regclass::oid, indrelid FROM pg_index WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_class'::regclass::oid, polrelid FROM pg_policy WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_class'::regclass::oid, tgrelid FROM pg_trigger WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_class'::regclass::oid, ev_class FROM pg_rewrite WHERE xmin::text::int8 >= $1
           UNION SELECT classoid, objoid FROM pg_description
                  WHERE classoid IN ('pg_class'::regclass, 'pg_constraint'::regclass,
                                     'pg_trigger'::regclass, 'pg_policy'::regclass)
                    AND xmin::text::int8 >= $1
           UNION SELECT 'pg_type'::regclass::oid, oid FROM pg_type WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_type'::regclass::oid, enumtypid FROM pg_enum WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_proc'::regclass::oid, oid FROM pg_proc WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_namespace'::regclass::oid, oid FROM pg_namespace WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_collation'::regclass::oid, oid FROM pg_collation WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_opclass'::regclass::oid, oid FROM pg_opclass WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_operator'::regclass::oid, oid FROM pg_operator WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_ts_config'::regclass::oid, oid FROM pg_ts_config WHERE xmin::text::int8 >= $1
           UNION SELECT 'pg_ts_dict'::regclass::oid, oid FROM pg_ts_dict WHERE xmin::text::int8 >= $1
         ), touched(classid, objid) AS (
                 SELECT classid, objid FROM written
           UNION SELECT d.classid, d.objid FROM pg_depend d
                   JOIN touched t ON d.refclassid = t.classid AND d.refobjid = t.objid
         )
         SELECT t.objid FROM touched t WHERE t.classid = 'pg_class'::regclass
         UNION SELECT i.indrelid FROM touched t JOIN pg_index i ON i.indexrelid = t.objid
                WHERE t.classid = 'pg_class'::regclass
         UNION SELECT k.conrelid FROM touched t JOIN pg_constraint k ON k.oid = t.objid
                WHERE t.classid = 'pg_constraint'::regclass
         UNION SELECT d.adrelid FROM touched t JOIN pg_attrdef d ON d.oid = t.objid
                WHERE t.classid = 'pg_attrdef'::regclass
         UNION SELECT g.tgrelid FROM touched t JOIN pg_trigger g ON g.oid = t.objid
                WHERE t.classid = 'pg_trigger'::regclass
         UNION SELECT p.polrelid FROM touched t JOIN pg_policy p ON p.oid = t.objid
                WHERE t.classid = 'pg_policy'::regclass
         UNION SELECT r.ev_class FROM touched t JOIN pg_rewrite r ON r.oid = t.objid
                WHERE t.classid = 'pg_rewrite'::regclass
         UNION SELECT y.typrelid FROM touched t JOIN pg_type y ON y.oid = t.objid
                WHERE t.classid = 'pg_type'::regclass AND y.typrelid <> 0",
        &[(&xid, postgres::types::Type::INT8)],
    )?;
    Ok((rows.iter().map(|r| r.get(0)).collect(), false))
}
