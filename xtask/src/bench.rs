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
            cluster.ping("postgres")?;
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
            cluster.ping("postgres")?;
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
        let graph = self.source.load(sh)?;
        let migrations = graph.dir();
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
            cmd!(
                sh,
                "{xtask} migrate upgrade head --migrations {migrations} --database-url {url_b}"
            )
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
            cmd!(
                sh,
                "{xtask} migrate current --migrations {migrations} --database-url {url}"
            )
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
            cmd!(sh, "{xtask} verify --migrations {migrations}")
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

        let chain = generated_chain(100)?;
        let chain_dir = chain.path();
        let mut long = Vec::new();
        for _ in 0..runs.min(3) {
            let began = Instant::now();
            cmd!(sh, "{xtask} verify --migrations {chain_dir}")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()?;
            long.push(began.elapsed());
        }
        rows.push((
            "verify, generated chain of 100 small migrations".into(),
            median(long),
            "<= 20 s",
        ));

        if let Some(leads) = self.backup_leads {
            rows.extend(backup_rows(sh, migrations, leads, runs.min(5))?);
        }

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

/// A generated chain of `n` small migrations in a temp dir.
fn generated_chain(n: usize) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    backend_schema::synthetic::write_chain(dir.path(), n).context("writing the generated chain")?;
    Ok(dir)
}

/// Our backup and restore against the bare tools on a database of `leads` leads.
fn backup_rows(
    sh: &Shell,
    migrations: &std::path::Path,
    leads: u64,
    runs: usize,
) -> anyhow::Result<Vec<(String, Duration, &'static str)>> {
    let xtask = std::env::current_exe().context("locating the xtask binary")?;
    let cluster = TempCluster::start()?;
    cluster.create_database("source", None)?;
    let source = cluster.url("source");
    cmd!(
        sh,
        "{xtask} migrate upgrade head --migrations {migrations} --database-url {source}"
    )
    .quiet()
    .ignore_stderr()
    .run()?;
    let mut client = cluster.client("source")?;
    backend_schema::verify::seed::seed_empty_tables(&mut client)?;
    eprintln!("seeding {leads} leads and as many SMS messages...");
    backend_schema::synthetic::seed_leads_and_messages(&mut client, leads)?;
    drop(client);

    let binaries = cluster.binaries();
    let (pg_dump, pg_restore) = (binaries.tool("pg_dump"), binaries.tool("pg_restore"));
    let out = tempfile::tempdir()?;
    let dir = out.path();
    let mut times: [Vec<Duration>; 6] = Default::default();
    for n in 0..runs {
        let direct = dir.join(format!("direct_{n}.dump"));
        let ours = dir.join(format!("ours_{n}.dump"));
        let (direct_dir, ours_dir) = (
            dir.join(format!("direct_{n}.dir")),
            dir.join(format!("ours_{n}.dir")),
        );
        let timed = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<Duration> {
            let began = Instant::now();
            f()?;
            Ok(began.elapsed())
        };
        times[0].push(timed(&mut || {
            Ok(
                cmd!(sh, "{pg_dump} --format=custom --file={direct} {source}")
                    .quiet()
                    .run()?,
            )
        })?);
        times[1].push(timed(&mut || {
            Ok(
                cmd!(sh, "{xtask} backup --output {ours} --database-url {source}")
                    .quiet()
                    .ignore_stderr()
                    .run()?,
            )
        })?);
        times[2].push(timed(&mut || {
            Ok(cmd!(
                sh,
                "{pg_dump} --format=directory --jobs=2 --file={direct_dir} {source}"
            )
            .quiet()
            .run()?)
        })?);
        times[3].push(timed(&mut || {
            Ok(cmd!(sh, "{xtask} backup --format directory --jobs 2 --output {ours_dir} --database-url {source}")
                .quiet()
                .ignore_stderr()
                .run()?)
        })?);
        let (a, b) = (format!("direct_{n}"), format!("ours_{n}"));
        cluster.create_database(&a, None)?;
        let (url_a, url_b) = (cluster.url(&a), cluster.url(&b));
        times[4].push(timed(&mut || {
            Ok(cmd!(
                sh,
                "{pg_restore} --exit-on-error --single-transaction --dbname={url_a} {direct}"
            )
            .quiet()
            .run()?)
        })?);
        times[5].push(timed(&mut || {
            Ok(
                cmd!(sh, "{xtask} restore {ours} --create --database-url {url_b}")
                    .quiet()
                    .ignore_stdout()
                    .ignore_stderr()
                    .run()?,
            )
        })?);
        for path in [&direct, &ours] {
            std::fs::remove_file(path)?;
        }
        for path in [&direct_dir, &ours_dir] {
            std::fs::remove_dir_all(path)?;
        }
    }
    let [dump, backup, dump_dir, backup_dir, restore_direct, restore] = times.map(median);
    let ratio = |ours: Duration, theirs: Duration| ours.as_secs_f64() / theirs.as_secs_f64();
    eprintln!(
        "backup/pg_dump {:.2}x, restore/pg_restore {:.2}x, directory -j2 / custom backup {:.2}x",
        ratio(backup, dump),
        ratio(restore, restore_direct),
        ratio(backup_dir, backup)
    );
    let label = |what: &str| format!("{what}, {leads} leads + {leads} SMS");
    Ok(vec![
        (label("pg_dump --format=custom (baseline)"), dump, "-"),
        (
            label("backup (custom, with manifest and full read check)"),
            backup,
            "<= 1.1x pg_dump",
        ),
        (
            label("pg_dump --format=directory --jobs=2 (baseline)"),
            dump_dir,
            "-",
        ),
        (
            label("backup --format directory --jobs 2"),
            backup_dir,
            "< single-job backup",
        ),
        (
            label("pg_restore --single-transaction (baseline)"),
            restore_direct,
            "-",
        ),
        (
            label("restore --create (hash, full read, preflight, ANALYZE, counts)"),
            restore,
            "<= 1.1x pg_restore",
        ),
    ])
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}
