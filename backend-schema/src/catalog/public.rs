//! `Catalog`, the view of `public` the declarative planner and the ER diagram work
//! from: tables keyed by their unqualified names, narrowed from `Objects`.

use std::collections::BTreeMap;

use postgres::GenericClient;

use super::objects::{self, Identity, Objects, RelKind};

/// The `public` schema of one database: the planner writes unqualified names, so it
/// sees only the schema those resolve to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Enum type -> its values in order.
    pub enums: BTreeMap<String, Vec<String>>,
    /// Enum type -> its comment.
    pub enum_comments: BTreeMap<String, String>,
    pub tables: BTreeMap<String, Table>,
    /// Plain views (not materialized ones).
    pub views: BTreeMap<String, View>,
    /// Functions and procedures no extension owns, by `name(identity arguments)`:
    /// `pg_get_functiondef`, a whole `CREATE OR REPLACE` statement.
    pub functions: BTreeMap<String, String>,
}

/// A view of `public`: what the planner needs to create, replace or drop it in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// `pg_get_viewdef`, without its final semicolon.
    pub definition: String,
    /// (name, `format_type`), in order: `CREATE OR REPLACE VIEW` may only append.
    pub columns: Vec<(String, String)>,
    /// The tables and views of `public` it reads.
    pub uses: Vec<String>,
    pub comment: Option<String>,
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
    /// Comments on the table's objects, by name, apart from the objects themselves: a
    /// new comment is a `COMMENT ON`, not a rebuilt index or constraint.
    pub index_comments: BTreeMap<String, String>,
    pub constraint_comments: BTreeMap<String, String>,
    pub policy_comments: BTreeMap<String, String>,
    /// User triggers by name: `pg_get_triggerdef`, a whole `CREATE TRIGGER` statement.
    pub triggers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// `format_type`, e.g. `character varying(255)`.
    pub data_type: String,
    pub not_null: bool,
    /// The default, or the expression of a generated column.
    pub default: Option<String>,
    pub comment: Option<String>,
    pub identity: Option<Identity>,
    /// `GENERATED ALWAYS AS (default) STORED`.
    pub generated: bool,
    /// The default is `nextval` of a sequence this column owns (`serial`, `bigserial`).
    pub serial: bool,
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
    /// Reads the database `client` is connected to.
    pub fn capture(client: &mut impl GenericClient) -> Result<Catalog, postgres::Error> {
        Ok(Catalog::public(&Objects::read(client)?))
    }

    /// The tables, views, functions and triggers of `public` in `objects` (materialized
    /// views and sequences are not the planner's), with their enums.
    pub fn public(objects: &Objects) -> Catalog {
        let in_public = |schema: &str| schema == "public";
        let mut catalog = Catalog::default();
        for e in objects.enums.iter().filter(|e| in_public(&e.schema)) {
            catalog.enums.insert(e.name.clone(), e.labels.clone());
            if let Some(comment) = &e.comment {
                catalog
                    .enum_comments
                    .insert(e.name.clone(), comment.clone());
            }
        }
        for relation in &objects.relations {
            if in_public(&relation.schema) && relation.kind == RelKind::View {
                let definition = relation.view_definition.as_deref().unwrap_or_default();
                catalog.views.insert(
                    relation.name.clone(),
                    View {
                        definition: definition
                            .trim()
                            .trim_end_matches(';')
                            .trim_end()
                            .to_string(),
                        columns: relation
                            .columns
                            .iter()
                            .map(|c| (c.name.clone(), c.data_type.clone()))
                            .collect(),
                        uses: relation.uses.clone(),
                        comment: relation.comment.clone(),
                    },
                );
            }
            if !in_public(&relation.schema) || relation.kind != RelKind::Table {
                continue;
            }
            let owns = |column: &objects::Column| {
                let Some(default) = &column.default else {
                    return false;
                };
                objects.sequences.iter().any(|s| {
                    in_public(&s.schema)
                        && s.owned_by.as_ref()
                            == Some(&(relation.name.clone(), column.name.clone()))
                        && *default
                            == format!("nextval('{}'::regclass)", crate::sql::ident(&s.name))
                })
            };
            catalog.tables.insert(
                relation.name.clone(),
                Table {
                    columns: relation
                        .columns
                        .iter()
                        .map(|c| Column {
                            serial: owns(c),
                            ..Column::from(c)
                        })
                        .collect(),
                    row_security: relation.row_security,
                    force_row_security: relation.force_row_security,
                    comment: relation.comment.clone(),
                    ..Table::default()
                },
            );
        }
        for k in &objects.constraints {
            if !['p', 'u', 'f', 'c', 'x'].contains(&k.kind) {
                continue;
            }
            if let Some(table) = catalog.public_table(&k.schema, &k.table) {
                if let Some(comment) = &k.comment {
                    table
                        .constraint_comments
                        .insert(k.name.clone(), comment.clone());
                }
                table.constraints.insert(
                    k.name.clone(),
                    Constraint {
                        kind: k.kind,
                        definition: k.definition.clone(),
                        index: k.index.clone(),
                        columns: k.columns.clone(),
                        references: k.references.clone(),
                    },
                );
            }
        }
        for index in &objects.indexes {
            if let Some(table) = catalog.public_table(&index.schema, &index.table) {
                if let Some(comment) = &index.comment {
                    table
                        .index_comments
                        .insert(index.name.clone(), comment.clone());
                }
                if !index.backs_constraint {
                    table
                        .indexes
                        .insert(index.name.clone(), index.definition.clone());
                }
            }
        }
        for f in objects.functions.iter().filter(|f| in_public(&f.schema)) {
            catalog
                .functions
                .insert(f.signature.clone(), f.definition.clone());
        }
        for t in &objects.triggers {
            if let Some(table) = catalog.public_table(&t.schema, &t.table) {
                table.triggers.insert(t.name.clone(), t.definition.clone());
            }
        }
        for p in &objects.policies {
            if let Some(table) = catalog.public_table(&p.schema, &p.table) {
                if let Some(comment) = &p.comment {
                    table
                        .policy_comments
                        .insert(p.name.clone(), comment.clone());
                }
                table.policies.insert(
                    p.name.clone(),
                    Policy {
                        permissive: p.permissive,
                        command: p.command.clone(),
                        roles: p.roles.clone(),
                        using: p.using.clone(),
                        with_check: p.with_check.clone(),
                    },
                );
            }
        }
        catalog
    }

    fn public_table(&mut self, schema: &str, name: &str) -> Option<&mut Table> {
        match schema {
            "public" => self.tables.get_mut(name),
            _ => None,
        }
    }
}

impl From<&objects::Column> for Column {
    fn from(column: &objects::Column) -> Column {
        Column {
            name: column.name.clone(),
            data_type: column.data_type.clone(),
            not_null: column.not_null,
            default: column.default.clone(),
            comment: column.comment.clone(),
            identity: column.identity,
            generated: column.generated,
            serial: false,
        }
    }
}
