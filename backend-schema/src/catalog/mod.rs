//! The one reader of PostgreSQL's catalogs: which tables a database holds
//! (`user_tables`), `Objects`, everything its user schemas hold, read once, and
//! `Catalog`, the structured view of `public` the declarative planner and the ER diagram
//! work from; `SchemaSnapshot` renders the same `Objects` as flat, comparable text.

pub mod objects;
mod public;
mod tables;

pub use objects::{Identity, Objects};
pub use public::{Catalog, Column, Constraint, Policy, Table, View};
pub use tables::{column_names, is_bookkeeping, tables_in_current_schema, user_tables, UserTable};
pub(crate) use tables::{column_names_with, user_tables_with, FIRST_UNPINNED, USER_SCHEMAS};
