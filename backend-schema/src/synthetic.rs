//! Synthetic chains and data for `cargo xtask bench`: a long migration chain, and a
//! database seeded with as many leads and SMS messages as asked.

use std::path::Path;

use postgres::GenericClient;

use crate::source::{write_migration_as, NewMigration, WriteError};

/// Writes a linear chain of `n` small migrations under `dir` (a table, then a column,
/// then an index built concurrently, by turns), to show how `verify` scales with the
/// chain's length. `verify` passes it (a test holds that, so `bench` measures a pass).
pub fn write_chain(dir: &Path, n: usize) -> Result<(), WriteError> {
    let mut parent: Vec<String> = Vec::new();
    for i in 0..n {
        let revision = format!("{:012x}", 0xbe_0000_0000u64 + i as u64);
        let (up, down) = match i % 3 {
            0 => (
                format!("CREATE TABLE t{i} (id bigint PRIMARY KEY, tenant_id uuid NOT NULL, name text NOT NULL DEFAULT '');\n"),
                format!("DROP TABLE t{i};\n"),
            ),
            1 => (
                format!("ALTER TABLE t{} ADD COLUMN c{i} integer NOT NULL DEFAULT 0;\n", i - 1),
                format!("ALTER TABLE t{} DROP COLUMN c{i};\n", i - 1),
            ),
            // As a team would write it on a table with rows: concurrently, outside a
            // transaction, safe to run again (verify's safety rules hold it to that).
            _ => (
                format!(
                    "DROP INDEX CONCURRENTLY IF EXISTS ix{i};\nCREATE INDEX CONCURRENTLY ix{i} ON t{} (tenant_id, name);\n",
                    i - 2
                ),
                format!("DROP INDEX CONCURRENTLY IF EXISTS ix{i};\n"),
            ),
        };
        let message = format!("step {i}");
        write_migration_as(
            dir,
            revision.clone(),
            &NewMigration {
                parents: &parent,
                message: &message,
                transactional: i % 3 != 2,
                sql: Some((&up, &down)),
            },
        )?;
        parent = vec![revision];
    }
    Ok(())
}

/// Edits the head of the chain in `dir` as a developer does between two runs of
/// `verify` (`note` appended to its upgrade as a comment), for the incremental re-run's
/// measurement; returns the edited file.
pub fn edit_head(dir: &Path, note: &str) -> Result<std::path::PathBuf, EditError> {
    let graph = crate::RevisionGraph::load(dir)?;
    let head = graph.heads().first().map(|h| h.to_string());
    let migration = head
        .and_then(|head| graph.get(&head))
        .ok_or_else(|| EditError::NoHead(dir.to_path_buf()))?;
    let path = migration.path(crate::Direction::Up);
    let mut up = migration.up.clone();
    up.push_str(&format!("-- {note}\n"));
    std::fs::write(&path, up).map_err(|source| EditError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error("{} has no migrations", .0.display())]
    NoHead(std::path::PathBuf),
    #[error("cannot write {}", path.display())]
    Write {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Adds `leads` leads and as many SMS messages to a database at the chain's head whose
/// tables hold verify's seed rows (a tenant, a user, a campaign), then `VACUUM ANALYZE`.
pub fn seed_leads_and_messages(
    client: &mut impl GenericClient,
    leads: u64,
) -> Result<(), postgres::Error> {
    let leads = leads as i64;
    client.execute(
        "INSERT INTO leads (id, tenant_id, name, email, company, status, score, tags, custom_fields, created_by, notes)
         SELECT gen_random_uuid(), u.tenant_id, 'Lead ' || g, 'lead' || g || '@example.com', 'Company ' || (g % 997),
                'new', (g % 100)::int, '[\"b2b\"]'::json, '{\"source\": \"bench\"}'::json, u.id, repeat('note ', 10)
           FROM generate_series(1, $1::bigint) AS g, (SELECT id, tenant_id FROM users ORDER BY id LIMIT 1) AS u",
        &[&leads],
    )?;
    // Real databases spread their rows: one SMS message per lead, so a parallel dump
    // has more than one big table to share out.
    client.execute(
        "INSERT INTO sms_messages (id, campaign_id, tenant_id, phone_number, message_text, status)
         SELECT gen_random_uuid(), c.id, c.tenant_id, '+81' || (900000000 + g), 'Your diagnosis result is ready: https://example.com/r/' || g, 'delivered'
           FROM generate_series(1, $1::bigint) AS g, (SELECT id, tenant_id FROM sms_campaigns ORDER BY id LIMIT 1) AS c",
        &[&leads],
    )?;
    client.batch_execute("VACUUM ANALYZE")
}

#[cfg(test)]
mod tests {
    use crate::source::{parse_source, read_source};

    #[test]
    fn a_written_chain_reads_back_as_one_line_of_revisions() {
        let dir = tempfile::tempdir().unwrap();
        super::write_chain(dir.path(), 7).unwrap();
        let migrations = parse_source(&read_source(dir.path()).unwrap()).unwrap();
        assert_eq!(migrations.len(), 7);
        let roots = migrations.iter().filter(|m| m.parents.is_empty()).count();
        assert_eq!(roots, 1);
        assert!(migrations.iter().all(|m| m.parents.len() <= 1));
    }
}
