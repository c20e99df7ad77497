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
//! that are gone are removed. Enum types, sequences, functions and extensions are read
//! whole, and only when one of them was written (a sequence also through `pg_sequence`,
//! a comment on a function or type through `pg_description`), depends on something
//! written, or their number changed (a drop, a function joining an extension); else
//! the previous snapshot's entries stay. A role created or renamed since the mark makes
//! every relation touched (grants and policies name roles).
//! `VerifyOptions::compare_full_snapshots` checks all of this against a full read.

use std::collections::{BTreeMap, BTreeSet};

use postgres::types::Type;
use postgres::GenericClient;

use crate::catalog::objects::{Kinds, Objects};
use crate::catalog::{FIRST_UNPINNED, USER_SCHEMAS};
use crate::prepared::Prepared;
use crate::snapshot::SchemaSnapshot;
use crate::sql::display_name;

/// The pinned functions (below `FIRST_UNPINNED`) moved out of `pg_catalog`, as a query
/// of their oids: the only pinned objects the kinds read whole can meet.
///
/// Moving a function out of a pinned schema records a dependency on its new schema
/// (`changeDependencyFor` adds the row PostgreSQL keeps for no pinned schema) and moving
/// it back deletes it, so a pinned function is in a user schema exactly when it has such
/// a row. A move back leaves no row to find by `xmin`: the mark counts them. Found
/// through `pg_depend`'s index on the dependent object, where a scan of `pg_description`
/// for comments on them read every built-in comment (~5000 rows) twice a step.
fn moved_in() -> String {
    format!(
        "SELECT md.objid FROM pg_depend md
          WHERE md.classid = 'pg_proc'::regclass AND md.objid < {FIRST_UNPINNED}
            AND md.refclassid = 'pg_namespace'::regclass"
    )
}

/// A snapshot and the mark of the moment it describes. Refreshed on the connection
/// that captured it (its statements are prepared there).
#[derive(Debug, Clone)]
pub(crate) struct Tracked {
    pub snapshot: SchemaSnapshot,
    /// The relations read again since the previous snapshot (every one after a full
    /// read).
    pub touched: Vec<u32>,
    mark: Mark,
    /// The mark's, `written_since`'s and the relation reads' statements, prepared on
    /// the connection that captured it: planning them (a dozen catalogs each) cost as
    /// much as running them, three times a revision.
    prepared: Prepared,
}

/// The first transaction ID not yet assigned, how many members each kind read whole
/// has, and every relation with the number of objects that hang on it.
#[derive(Debug, Clone)]
struct Mark {
    next_xid: i64,
    /// Sequences and comments on them, functions (not an extension's) and comments on
    /// functions, enum types and comments on types, extensions, pinned functions moved
    /// out of `pg_catalog`.
    counts: [i64; 8],
    relations: BTreeMap<u32, (String, Vec<i64>)>,
}

impl Tracked {
    /// A full read, marked.
    pub fn capture(client: &mut impl GenericClient) -> Result<Tracked, postgres::Error> {
        let mut prepared = Prepared::default();
        let mark = Mark::take(client, &mut prepared)?;
        Ok(Tracked {
            snapshot: SchemaSnapshot::capture(client)?,
            touched: mark.relations.keys().copied().collect(),
            mark,
            prepared,
        })
    }

    /// The schema now, re-reading only the relations touched since `self`'s mark, and
    /// of the kinds read whole only those with a member written, added or gone.
    pub fn refresh(&self, client: &mut impl GenericClient) -> Result<Tracked, postgres::Error> {
        let mut prepared = self.prepared.clone();
        let mark = Mark::take(client, &mut prepared)?;
        let Some(written) = written_since(client, &mut prepared, self.mark.next_xid)? else {
            return Ok(Tracked {
                snapshot: SchemaSnapshot::capture(client)?,
                touched: mark.relations.keys().copied().collect(),
                mark,
                prepared,
            });
        };
        let mut scope = written.relations;
        for (oid, now) in &mark.relations {
            if self.mark.relations.get(oid) != Some(now) {
                scope.insert(*oid);
            }
        }
        // A drop (of a member or of its comment) leaves no row to find by `xmin`: a kind
        // whose counts changed is read again.
        let changed = |at: std::ops::Range<usize>| mark.counts[at.clone()] != self.mark.counts[at];
        let kinds = Kinds {
            sequences: written.sequences || changed(0..2),
            // A pinned function moved back to `pg_catalog` loses the row `moved_in`
            // finds it by, so only their number tells (our functions' may not change: a
            // function leaving an extension in the same step).
            functions: written.functions || changed(2..4) || changed(7..8),
            enums: written.enums || changed(4..6),
            extensions: written.extensions || changed(6..7),
        };
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
        let fresh = SchemaSnapshot::render(&Objects::read_relations(
            client,
            &scope,
            kinds,
            &mut prepared,
        )?);
        let mut snapshot = self.snapshot.clone();
        snapshot.objects.retain(|key, _| match whole_kind_of(key) {
            Some(read_again) => !read_again(&kinds),
            None => relation_of(key).is_some_and(|name| !stale.contains(name)),
        });
        snapshot.objects.extend(fresh.objects);
        Ok(Tracked {
            snapshot,
            touched: scope,
            mark,
            prepared,
        })
    }
}

/// The relation a snapshot entry belongs to (its display name), or `None` for the
/// kinds read whole (types, sequences, functions, extensions).
fn relation_of(key: &str) -> Option<&str> {
    ["table ", "view ", "materialized view "]
        .iter()
        .find_map(|word| key.strip_prefix(word))
}

/// For an entry of a kind read whole, whether `Kinds` reads it again (a sequence's
/// entry holds its grants too, which are read with it).
#[allow(clippy::type_complexity)]
fn whole_kind_of(key: &str) -> Option<fn(&Kinds) -> bool> {
    let kinds: [(&str, fn(&Kinds) -> bool); 4] = [
        ("sequence ", |k| k.sequences),
        ("function ", |k| k.functions),
        ("type ", |k| k.enums),
        ("extension ", |k| k.extensions),
    ];
    kinds
        .into_iter()
        .find(|(word, _)| key.starts_with(word))
        .map(|(_, read_again)| read_again)
}

impl Mark {
    /// One round trip: the relations' rows, and a row of oid 0 carrying the next
    /// transaction ID and the counts of the kinds read whole.
    fn take(
        client: &mut impl GenericClient,
        statements: &mut Prepared,
    ) -> Result<Mark, postgres::Error> {
        // Each kind counted by one grouped pass over its catalog, joined to the
        // relations once: per-relation subqueries (a scan of pg_description each) made
        // this mark cost grow with the square of the number of tables.
        let moved_in = moved_in();
        let sql = format!(
            "WITH rel AS (
                 SELECT c.oid, n.nspname::text AS nspname, c.relname::text AS relname
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.oid >= {FIRST_UNPINNED} AND {USER_SCHEMAS}
                    AND c.relkind IN ('r', 'p', 'v', 'm')
             ), owned(rel, kind) AS (
                       SELECT k.conrelid, 0 FROM pg_constraint k WHERE k.conrelid >= {FIRST_UNPINNED}
             UNION ALL SELECT i.indrelid, 1 FROM pg_index i WHERE i.indrelid >= {FIRST_UNPINNED}
             UNION ALL SELECT p.polrelid, 2 FROM pg_policy p WHERE p.polrelid >= {FIRST_UNPINNED}
             UNION ALL SELECT t.tgrelid, 3 FROM pg_trigger t WHERE t.tgrelid >= {FIRST_UNPINNED}
             UNION ALL SELECT d.adrelid, 4 FROM pg_attrdef d WHERE d.adrelid >= {FIRST_UNPINNED}
             UNION ALL SELECT d.objoid, 5 FROM pg_description d
                        WHERE d.objoid >= {FIRST_UNPINNED} AND d.classoid = 'pg_class'::regclass
             UNION ALL SELECT i.indrelid, 6 FROM pg_description d
                         JOIN pg_index i ON i.indexrelid = d.objoid
                        WHERE d.objoid >= {FIRST_UNPINNED} AND d.classoid = 'pg_class'::regclass
             UNION ALL SELECT k.conrelid, 7 FROM pg_description d
                         JOIN pg_constraint k ON k.oid = d.objoid
                        WHERE d.objoid >= {FIRST_UNPINNED} AND d.classoid = 'pg_constraint'::regclass
             UNION ALL SELECT t.tgrelid, 7 FROM pg_description d
                         JOIN pg_trigger t ON t.oid = d.objoid
                        WHERE d.objoid >= {FIRST_UNPINNED} AND d.classoid = 'pg_trigger'::regclass
             UNION ALL SELECT p.polrelid, 7 FROM pg_description d
                         JOIN pg_policy p ON p.oid = d.objoid
                        WHERE d.objoid >= {FIRST_UNPINNED} AND d.classoid = 'pg_policy'::regclass
             ), functions(oid) AS (
                       SELECT p.oid FROM pg_proc p WHERE p.oid >= {FIRST_UNPINNED}
             UNION ALL {moved_in}
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
              GROUP BY r.oid, r.nspname, r.relname
             UNION ALL
             SELECT 0::oid, '', '', ARRAY[
                    pg_snapshot_xmax(pg_current_snapshot())::text::int8,
                    (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE {USER_SCHEMAS} AND c.relkind = 'S'),
                    (SELECT count(*) FROM pg_description d JOIN pg_class c ON c.oid = d.objoid
                      WHERE d.objoid >= {FIRST_UNPINNED} AND d.classoid = 'pg_class'::regclass
                        AND c.relkind = 'S'),
                    (SELECT count(*) FROM functions f JOIN pg_proc p ON p.oid = f.oid
                       JOIN pg_namespace n ON n.oid = p.pronamespace
                      WHERE {USER_SCHEMAS} AND p.prokind IN ('f', 'p')
                        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                                           AND d.objid = p.oid AND d.deptype = 'e')),
                    (SELECT count(*) FROM functions f JOIN pg_description d
                         ON d.objoid = f.oid AND d.classoid = 'pg_proc'::regclass),
                    (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                      WHERE t.oid >= {FIRST_UNPINNED} AND {USER_SCHEMAS} AND t.typtype = 'e'),
                    (SELECT count(*) FROM pg_description d
                      WHERE d.objoid >= {FIRST_UNPINNED} AND d.classoid = 'pg_type'::regclass),
                    (SELECT count(*) FROM pg_extension),
                    (SELECT count(*) FROM ({moved_in}) md)]"
        );
        let mut next_xid = 0;
        let mut counts = [0; 8];
        let mut relations = BTreeMap::new();
        for r in statements.query(client, &sql, &[])? {
            let oid: u32 = r.get(0);
            let numbers: Vec<i64> = r.get(3);
            if oid == 0 {
                next_xid = numbers[0];
                counts.copy_from_slice(&numbers[1..9]);
            } else {
                relations.insert(oid, (display_name(r.get(1), r.get(2)), numbers));
            }
        }
        Ok(Mark {
            next_xid,
            counts,
            relations,
        })
    }
}

/// What a step wrote: the relations it touched, and which kinds read whole had a member
/// written.
struct Written {
    relations: BTreeSet<u32>,
    sequences: bool,
    functions: bool,
    enums: bool,
    extensions: bool,
}

/// What was written since `xid`: the relations whose catalog rows were written or that
/// depend on something written, and the kinds read whole with a member written; `None`
/// when a role was (then every relation counts), or a pinned function, type, collation,
/// operator, operator class or text search object: PostgreSQL records no dependency on
/// one, so the defaults, views and columns a rename or move changes cannot be found.
fn written_since(
    client: &mut impl GenericClient,
    statements: &mut Prepared,
    xid: i64,
) -> Result<Option<Written>, postgres::Error> {
    // A throwaway cluster never wraps its transaction IDs around: a row whose `xmin` is
    // no older than the mark was written after it. `age` compares without turning each
    // row's `xmin` into text (a third of the cost of every catalog scan).
    let moved_in = moved_in();
    let rows = statements.query(
        client,
        &format!("WITH RECURSIVE m(a) AS (SELECT age($1::text::xid)),
         written(classid, objid) AS (
                 SELECT 'pg_class'::regclass::oid, oid FROM pg_class WHERE oid >= {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_class'::regclass::oid, attrelid FROM pg_attribute WHERE attrelid >= {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_class'::regclass::oid, adrelid FROM pg_attrdef WHERE adrelid >= {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_constraint'::regclass::oid, oid FROM pg_constraint WHERE oid >= {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_class'::regclass::oid, conrelid FROM pg_constraint WHERE oid >= {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_type'::regclass::oid, contypid FROM pg_constraint WHERE oid >= {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_class'::regclass::oid, indrelid FROM pg_index WHERE indexrelid >= {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_class'::regclass::oid, polrelid FROM pg_policy WHERE age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_class'::regclass::oid, tgrelid FROM pg_trigger WHERE age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_class'::regclass::oid, ev_class FROM pg_rewrite WHERE age(xmin) <= (SELECT a FROM m)
           UNION SELECT classoid, objoid FROM pg_description
                  WHERE objoid >= {FIRST_UNPINNED} AND classoid IN ('pg_class'::regclass, 'pg_constraint'::regclass,
                                     'pg_trigger'::regclass, 'pg_policy'::regclass)
                    AND age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_type'::regclass::oid, oid FROM pg_type WHERE oid >= {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_type'::regclass::oid, enumtypid FROM pg_enum WHERE age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_proc'::regclass::oid, oid FROM pg_proc WHERE oid >= {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)

           UNION SELECT 'pg_namespace'::regclass::oid, oid FROM pg_namespace WHERE age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_collation'::regclass::oid, oid FROM pg_collation WHERE oid >= {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_opclass'::regclass::oid, oid FROM pg_opclass WHERE oid >= {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_operator'::regclass::oid, oid FROM pg_operator WHERE oid >= {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_ts_config'::regclass::oid, oid FROM pg_ts_config WHERE oid >= {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
           UNION SELECT 'pg_ts_dict'::regclass::oid, oid FROM pg_ts_dict WHERE oid >= {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
         ), touched(classid, objid) AS (
                 SELECT classid, objid FROM written
           UNION SELECT d.classid, d.objid FROM pg_depend d
                   JOIN touched t ON d.refclassid = t.classid AND d.refobjid = t.objid
         )
         SELECT 0, t.objid FROM touched t WHERE t.classid = 'pg_class'::regclass
         UNION SELECT 0, i.indrelid FROM touched t JOIN pg_index i ON i.indexrelid = t.objid
                WHERE t.classid = 'pg_class'::regclass
         UNION SELECT 0, k.conrelid FROM touched t JOIN pg_constraint k ON k.oid = t.objid
                WHERE t.classid = 'pg_constraint'::regclass
         UNION SELECT 0, d.adrelid FROM touched t JOIN pg_attrdef d ON d.oid = t.objid
                WHERE t.classid = 'pg_attrdef'::regclass
         UNION SELECT 0, g.tgrelid FROM touched t JOIN pg_trigger g ON g.oid = t.objid
                WHERE t.classid = 'pg_trigger'::regclass
         UNION SELECT 0, p.polrelid FROM touched t JOIN pg_policy p ON p.oid = t.objid
                WHERE t.classid = 'pg_policy'::regclass
         UNION SELECT 0, r.ev_class FROM touched t JOIN pg_rewrite r ON r.oid = t.objid
                WHERE t.classid = 'pg_rewrite'::regclass
         UNION SELECT 0, y.typrelid FROM touched t JOIN pg_type y ON y.oid = t.objid
                WHERE t.classid = 'pg_type'::regclass AND y.typrelid <> 0
         UNION SELECT 1, c.oid FROM touched t JOIN pg_class c ON c.oid = t.objid
                WHERE t.classid = 'pg_class'::regclass AND c.relkind = 'S'
         UNION SELECT 1, seqrelid FROM pg_sequence WHERE age(xmin) <= (SELECT a FROM m)
         UNION SELECT 2, t.objid FROM touched t WHERE t.classid = 'pg_proc'::regclass
         UNION SELECT CASE WHEN classoid = 'pg_proc'::regclass THEN 2 ELSE 3 END, objoid
                 FROM pg_description
                WHERE objoid >= {FIRST_UNPINNED} AND classoid IN ('pg_proc'::regclass, 'pg_type'::regclass)
                  AND age(xmin) <= (SELECT a FROM m)
         UNION SELECT 2, objoid FROM pg_description
                WHERE objoid IN ({moved_in}) AND classoid = 'pg_proc'::regclass
                  AND age(xmin) <= (SELECT a FROM m)
         UNION SELECT 3, y.oid FROM touched t JOIN pg_type y ON y.oid = t.objid
                WHERE t.classid = 'pg_type'::regclass AND y.typtype = 'e'
         UNION SELECT 4, oid FROM pg_extension WHERE age(xmin) <= (SELECT a FROM m)
         UNION SELECT 5, 0::oid FROM pg_authid WHERE age(xmin) <= (SELECT a FROM m)
         UNION SELECT 5, 0::oid FROM pg_proc WHERE oid < {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
         UNION SELECT 5, 0::oid FROM pg_type WHERE oid < {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
         UNION SELECT 5, 0::oid FROM pg_collation WHERE oid < {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
         UNION SELECT 5, 0::oid FROM pg_operator WHERE oid < {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
         UNION SELECT 5, 0::oid FROM pg_opclass WHERE oid < {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
         UNION SELECT 5, 0::oid FROM pg_ts_config WHERE oid < {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)
         UNION SELECT 5, 0::oid FROM pg_ts_dict WHERE oid < {FIRST_UNPINNED} AND age(xmin) <= (SELECT a FROM m)"),
        &[(&xid, Type::INT8)],
    )?;
    let mut written = Written {
        relations: BTreeSet::new(),
        sequences: false,
        functions: false,
        enums: false,
        extensions: false,
    };
    for row in rows {
        match row.get::<_, i32>(0) {
            0 => {
                written.relations.insert(row.get(1));
            }
            1 => written.sequences = true,
            2 => written.functions = true,
            3 => written.enums = true,
            4 => written.extensions = true,
            _ => return Ok(None),
        }
    }
    Ok(Some(written))
}
