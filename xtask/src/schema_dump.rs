//! `cargo xtask schema-dump`: a deterministic `schema.sql` and an ER diagram.

use anyhow::{bail, Context as _};
use backend_schema::database_url::DatabaseUrl;
use backend_schema::dump::schema;
use backend_schema::erd::Diagram;
use backend_schema::runner::{Migrator, RunOptions};
use backend_schema::{PgBinaries, TempCluster};
use xshell::Shell;

use crate::flags::SchemaDump;

impl SchemaDump {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let binaries = PgBinaries::locate()?;
        let output = self
            .output
            .clone()
            .unwrap_or_else(|| sh.current_dir().join("schema.sql"));
        // Without a URL: head, built in a throwaway cluster.
        let cluster;
        let (url, mut client) = match &self.connect.database_url {
            Some(_) => {
                let target = self.connect.resolve()?;
                let client = target.connect("cargo xtask schema-dump")?;
                (target.url, client)
            }
            None => {
                cluster = TempCluster::start()?;
                cluster.create_database("head", None)?;
                let mut client = cluster.client("head")?;
                let graph = self.source.load(sh)?;
                Migrator::new(&mut client, &graph, RunOptions::default()).upgrade("heads")?;
                (
                    DatabaseUrl::parse(&cluster.url("head"), "the throwaway cluster")?,
                    client,
                )
            }
        };
        let schema = schema::export(&binaries, &url)?;

        if let Some(erd) = &self.erd {
            let diagram = Diagram::capture(&mut client)?;
            let files = diagram.write_files(erd)?;
            eprintln!(
                "wrote {}, {} and {}",
                files.mermaid.display(),
                files.dot.display(),
                files.svg.display()
            );
        }
        if self.check {
            let label = output.display().to_string();
            if let Some(diff) = schema::stale_diff(&output, &label, &schema) {
                bail!(
                    "{} is stale:\n{diff}\nrun `cargo xtask schema-dump` and commit the result",
                    output.display()
                );
            }
            eprintln!("{} is up to date", output.display());
            return Ok(());
        }
        std::fs::write(&output, &schema)
            .with_context(|| format!("cannot write {}", output.display()))?;
        eprintln!("wrote {}", output.display());
        Ok(())
    }
}
