//! `cargo xtask bench`: the timings in the README, measured on this machine.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use backend_schema::TempCluster;
use xshell::{cmd, Shell};

use crate::flags::Bench;

impl Bench {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let runs = self.runs.max(1);
        let mut rows: Vec<(String, Duration, &str)> = Vec::new();

        // Warm the template cache, then time creation -> first query, and stop.
        drop(TempCluster::start()?);
        let mut start = Vec::new();
        let mut stop = Vec::new();
        for _ in 0..runs {
            let began = Instant::now();
            let cluster = TempCluster::start()?;
            cluster.client("postgres")?.query_one("SELECT 1", &[])?;
            start.push(began.elapsed());
            let began = Instant::now();
            cluster.stop()?;
            stop.push(began.elapsed());
        }
        rows.push((
            "cluster: create to first query, cache warm".into(),
            median(start),
            "<= 250 ms",
        ));
        rows.push(("cluster: stop and remove".into(), median(stop), "<= 150 ms"));

        let mut cold = Vec::new();
        for _ in 0..runs.min(5) {
            let cache = tempfile::tempdir()?;
            // The library reads the cache location from this process's environment.
            std::env::set_var("BACKEND_SCHEMA_CACHE_DIR", cache.path());
            let began = Instant::now();
            let cluster = TempCluster::start()?;
            cluster.client("postgres")?.query_one("SELECT 1", &[])?;
            cold.push(began.elapsed());
            cluster.stop()?;
            std::env::remove_var("BACKEND_SCHEMA_CACHE_DIR");
        }
        rows.push((
            "cluster: create to first query, cache cold (initdb)".into(),
            median(cold),
            "<= 1.5 s",
        ));

        let xtask = std::env::current_exe().context("locating the xtask binary")?;
        let cluster = TempCluster::start()?;
        let psql = cluster.binaries().tool("psql");
        let mut psql_times = Vec::new();
        let mut upgrade_times = Vec::new();
        let migrations = sh.current_dir().join("migrations");
        let graph = crate::migrate::load_graph(&migrations)?;
        let mut sql = String::new();
        for migration in graph.migrations() {
            sql.push_str(&migration.up);
            sql.push('\n');
        }
        let sql_file = tempfile::NamedTempFile::new()?;
        std::fs::write(sql_file.path(), sql)?;
        let sql_path = sql_file.path();
        for n in 0..runs {
            let (a, b) = (format!("psql_{n}"), format!("xtask_{n}"));
            cluster.create_database(&a, None)?;
            cluster.create_database(&b, None)?;
            let (url_a, url_b) = (cluster.url(&a), cluster.url(&b));
            let began = Instant::now();
            cmd!(
                sh,
                "{psql} -X -q -1 -v ON_ERROR_STOP=1 -f {sql_path} {url_a}"
            )
            .quiet()
            .ignore_stdout()
            .run()?;
            psql_times.push(began.elapsed());
            let began = Instant::now();
            cmd!(sh, "{xtask} migrate upgrade head --database-url {url_b}")
                .quiet()
                .ignore_stderr()
                .run()?;
            upgrade_times.push(began.elapsed());
        }
        let (psql_median, upgrade_median) = (median(psql_times), median(upgrade_times));
        rows.push((
            "migrate upgrade head, empty database (binary)".into(),
            upgrade_median,
            "<= 1.2x psql -1 -f",
        ));
        rows.push((
            "psql -1 -f of the same SQL (baseline)".into(),
            psql_median,
            "-",
        ));

        let url = cluster.url("xtask_0");
        let mut current = Vec::new();
        for _ in 0..runs {
            let began = Instant::now();
            cmd!(sh, "{xtask} migrate current --database-url {url}")
                .quiet()
                .ignore_stdout()
                .run()?;
            current.push(began.elapsed());
        }
        rows.push((
            "migrate current, database at head (binary)".into(),
            median(current),
            "<= 30 ms",
        ));
        drop(cluster);

        let mut verify = Vec::new();
        for _ in 0..runs.min(7) {
            let began = Instant::now();
            cmd!(sh, "{xtask} verify")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()?;
            verify.push(began.elapsed());
        }
        rows.push((
            "verify, seven-migration chain (binary, cache warm)".into(),
            median(verify),
            "<= 2 s",
        ));

        println!("| measurement (median of up to {runs} runs) | time | target |");
        println!("|---|---:|---|");
        for (name, time, target) in rows {
            println!(
                "| {name} | {:.0} ms | {target} |",
                time.as_secs_f64() * 1000.0
            );
        }
        Ok(())
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}
