//! `cargo xtask bench`: the timings in the README, measured on this machine.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use backend_schema::TempCluster;
use xshell::{cmd, Shell};

use crate::flags::Bench;

impl Bench {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        if cfg!(debug_assertions) {
            return rerun_in_release(sh);
        }
        let runs = self.runs.max(1);
        let mut rows: Vec<Row> = Vec::new();

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
        rows.push(Row::new(
            "cluster: create to first query, cache warm",
            median(start),
            "<= 250 ms",
        ));
        rows.push(Row::new(
            "cluster: stop and remove",
            median(stop),
            "<= 150 ms",
        ));

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
        rows.push(Row::new(
            "cluster: create to first query, cache cold (initdb)",
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
        rows.push(
            Row::of_samples(
                "migrate upgrade head, empty database (binary)",
                &upgrade_times,
                "<= 1.2x psql -1 -f",
            )
            .against(median(psql_times.clone()), 1.2),
        );
        rows.push(Row::of_samples(
            "psql -1 -f of the same SQL (baseline)",
            &psql_times,
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
        rows.push(Row::new(
            "migrate current, database at head (binary)",
            median(current),
            "<= 30 ms",
        ));
        drop(cluster);

        let mut verify = Vec::new();
        for _ in 0..runs.min(7) {
            let began = Instant::now();
            cmd!(sh, "{xtask} verify --no-cache --migrations {migrations}")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()?;
            verify.push(began.elapsed());
        }
        rows.push(Row::new(
            "verify, seven-migration chain (binary, cache warm)",
            median(verify),
            "<= 2 s",
        ));

        let mut chain_times = Vec::new();
        for n in [100, 300] {
            let chain = generated_chain(n)?;
            let chain_dir = chain.path();
            let mut samples = Vec::new();
            for _ in 0..runs.min(3) {
                let began = Instant::now();
                cmd!(sh, "{xtask} verify --no-cache --migrations {chain_dir}")
                    .quiet()
                    .ignore_stdout()
                    .ignore_stderr()
                    .run()?;
                samples.push(began.elapsed());
            }
            chain_times.push(Spread::of(samples));
        }
        let (t100, t300) = (chain_times[0], chain_times[1]);
        // The same 300 revisions in one stairway: what the segments at once save.
        let one_stairway = {
            let chain = generated_chain(300)?;
            let chain_dir = chain.path();
            let mut samples = Vec::new();
            for _ in 0..runs.min(3) {
                let began = Instant::now();
                cmd!(
                    sh,
                    "{xtask} verify --no-cache --jobs 1 --migrations {chain_dir}"
                )
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()?;
                samples.push(began.elapsed());
            }
            Spread::of(samples)
        };
        rows.push(
            Row::new(
                "verify, generated chain of 100 small migrations",
                t100.median,
                "-",
            )
            .spread(t100),
        );
        rows.push(
            Row::new(
                "verify, generated chain of 300 small migrations",
                t300.median,
                "<= 6 s, <= 3.3x the 100-migration chain",
            )
            .spread(t300)
            .against(t100.median, 3.3)
            .at_most(Duration::from_secs(6)),
        );
        rows.push(
            Row::new(
                "verify, the same 300 in one stairway (--jobs 1)",
                one_stairway.median,
                "-",
            )
            .spread(one_stairway),
        );

        let (first, rerun) = incremental_rerun(sh, &xtask, runs.min(3))?;
        rows.push(
            Row::new(
                "verify, the 100-migration chain with an empty cache (it keeps its databases)",
                first.median,
                "-",
            )
            .spread(first),
        );
        rows.push(
            Row::new(
                "verify, 100-migration chain re-run after editing its newest migration (cache)",
                rerun.median,
                "<= 0.25x a full run of the 100-migration chain",
            )
            .spread(rerun)
            .against(t100.median, 0.25),
        );

        if let Some(leads) = self.backup_leads {
            rows.extend(backup_rows(sh, migrations, leads, runs.min(5))?);
        }

        println!("| measurement (median of up to {runs} runs, release build) | time | target |");
        println!("|---|---:|---|");
        for row in rows {
            println!("{}", row.markdown());
        }
        Ok(())
    }
}

/// The README's figures are from a release build: a debug `cargo xtask bench` builds
/// the release binary and runs the same command with it, from the caller's directory.
fn rerun_in_release(sh: &Shell) -> anyhow::Result<()> {
    eprintln!("bench measures a release build: cargo build --release --package xtask");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    cmd!(sh, "{cargo} build --release --package xtask")
        .run()
        .context("building the release binary for bench")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| sh.current_dir().join("target"));
    let release = target.join("release").join("xtask");
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    sh.change_dir(std::env::current_dir()?);
    cmd!(sh, "{release} {args...}")
        .run()
        .with_context(|| format!("running {}", release.display()))?;
    Ok(())
}

/// The median of some runs and their fastest and slowest.
#[derive(Debug, Clone, Copy)]
struct Spread {
    median: Duration,
    min: Duration,
    max: Duration,
}

impl Spread {
    fn of(mut samples: Vec<Duration>) -> Spread {
        samples.sort();
        Spread {
            median: samples[samples.len() / 2],
            min: samples[0],
            max: samples[samples.len() - 1],
        }
    }
}

/// One line of the table: a median, its target, and for targets relative to a
/// baseline the ratio beside it with the verdict.
struct Row {
    name: String,
    time: Duration,
    target: &'static str,
    ratio: Option<(f64, f64)>,
    /// A bound on the time itself, when the target has one besides the ratio.
    at_most: Option<Duration>,
    /// The fastest and slowest run, when the row shows its spread.
    spread: Option<Spread>,
}

impl Row {
    fn new(name: impl Into<String>, time: Duration, target: &'static str) -> Row {
        Row {
            name: name.into(),
            time,
            target,
            ratio: None,
            at_most: None,
            spread: None,
        }
    }

    /// Prints the fastest and slowest run beside the median.
    fn spread(mut self, spread: Spread) -> Row {
        self.spread = Some(spread);
        self
    }

    /// The median of `samples`, with their spread beside it.
    fn of_samples(name: impl Into<String>, samples: &[Duration], target: &'static str) -> Row {
        let spread = Spread::of(samples.to_vec());
        Row::new(name, spread.median, target).spread(spread)
    }

    /// This row's time, to be at most `most` as well.
    fn at_most(mut self, most: Duration) -> Row {
        self.at_most = Some(most);
        self
    }

    /// This row's time as a ratio of `baseline`'s, to be at most `limit`.
    fn against(mut self, baseline: Duration, limit: f64) -> Row {
        self.ratio = Some((self.time.as_secs_f64() / baseline.as_secs_f64(), limit));
        self
    }

    fn markdown(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let mut time = format!("{:.0} ms", ms(self.time));
        if let Some(s) = self.spread {
            time.push_str(&format!(" ({:.0}-{:.0})", ms(s.min), ms(s.max)));
        }
        match self.ratio {
            None => format!("| {} | {time} | {} |", self.name, self.target),
            Some((ratio, limit)) => {
                // Met only when every bound the target names is.
                let met = ratio <= limit && self.at_most.is_none_or(|most| self.time <= most);
                format!(
                    "| {} | {time} ({ratio:.2}x) | {}: {} |",
                    self.name,
                    self.target,
                    if met { "met" } else { "NOT met" }
                )
            }
        }
    }
}

/// `verify` of the 100-migration chain with its cache warm, each run after an edit of
/// the newest migration (the developer's loop); and the first run, which fills the
/// cache and keeps its databases.
fn incremental_rerun(
    sh: &Shell,
    xtask: &std::path::Path,
    runs: usize,
) -> anyhow::Result<(Spread, Spread)> {
    let chain = generated_chain(100)?;
    let chain_dir = chain.path();
    let cache = tempfile::tempdir()?;
    let verify = || {
        cmd!(sh, "{xtask} verify --migrations {chain_dir}")
            .env("BACKEND_SCHEMA_VERIFY_CACHE_DIR", cache.path())
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
    };
    let began = Instant::now();
    verify()
        .run()
        .context("the first run, which fills the cache")?;
    let first = Spread::of(vec![began.elapsed()]);
    let mut samples = Vec::new();
    for run in 0..runs {
        backend_schema::synthetic::edit_head(chain_dir, &format!("edit {run}"))?;
        let began = Instant::now();
        verify().run()?;
        samples.push(began.elapsed());
    }
    Ok((first, Spread::of(samples)))
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
) -> anyhow::Result<Vec<Row>> {
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
    let psql = binaries.tool("psql");
    let out = tempfile::tempdir()?;
    let dir = out.path();
    let mut times: [Vec<Duration>; 7] = Default::default();
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
        // The same work as restore's default: pg_restore, then ANALYZE.
        let c = format!("analyzed_{n}");
        cluster.create_database(&c, None)?;
        let url_c = cluster.url(&c);
        times[6].push(timed(&mut || {
            cmd!(
                sh,
                "{pg_restore} --exit-on-error --single-transaction --dbname={url_c} {direct}"
            )
            .quiet()
            .run()?;
            Ok(cmd!(sh, "{psql} -X -q -c ANALYZE {url_c}").quiet().run()?)
        })?);
        for path in [&direct, &ours] {
            std::fs::remove_file(path)?;
        }
        for path in [&direct_dir, &ours_dir] {
            std::fs::remove_dir_all(path)?;
        }
    }
    let [dump, backup, dump_dir, backup_dir, restore_direct, restore, restore_analyzed] = &times;
    let label = |what: &str| format!("{what}, {leads} leads + {leads} SMS");
    let (dump_median, restore_median) = (median(dump.clone()), median(restore_direct.clone()));
    Ok(vec![
        Row::of_samples(label("pg_dump --format=custom (baseline)"), dump, "-"),
        Row::of_samples(
            label("backup (custom; manifest, checked as it streams, hash)"),
            backup,
            "<= 1.08x pg_dump",
        )
        .against(dump_median, 1.08),
        Row::of_samples(
            label("pg_dump --format=directory --jobs=2 (baseline)"),
            dump_dir,
            "-",
        ),
        Row::of_samples(
            label("backup --format directory --jobs 2"),
            backup_dir,
            "< single-job backup",
        )
        .against(median(backup.clone()), 1.0),
        Row::of_samples(
            label("pg_restore --single-transaction (baseline)"),
            restore_direct,
            "-",
        ),
        Row::of_samples(
            label("restore --create (hashed and read in full as pg_restore restores; preflight, ANALYZE, counts)"),
            restore,
            "<= 1.08x pg_restore",
        )
        .against(restore_median, 1.08),
        Row::of_samples(
            label("pg_restore --single-transaction, then ANALYZE (baseline: restore's work)"),
            restore_analyzed,
            "-",
        ),
        Row::new(
            label("restore --create against pg_restore, then ANALYZE (medians)"),
            median(restore.clone()),
            "<= 1.08x",
        )
        .against(median(restore_analyzed.clone()), 1.08),
    ])
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_is_printed_beside_its_target_with_the_verdict() {
        let row = Row::new("backup", Duration::from_millis(1100), "<= 1.1x pg_dump")
            .against(Duration::from_millis(1000), 1.1);
        assert_eq!(
            row.markdown(),
            "| backup | 1100 ms (1.10x) | <= 1.1x pg_dump: met |"
        );
        let row = Row::new("restore", Duration::from_millis(1200), "<= 1.1x pg_restore")
            .against(Duration::from_millis(1000), 1.1);
        assert!(row
            .markdown()
            .ends_with("(1.20x) | <= 1.1x pg_restore: NOT met |"));
        let row = Row::new("cluster", Duration::from_millis(78), "<= 250 ms");
        assert_eq!(row.markdown(), "| cluster | 78 ms | <= 250 ms |");
        let spread = Spread::of(vec![
            Duration::from_millis(5200),
            Duration::from_millis(4900),
            Duration::from_millis(5000),
        ]);
        let row = Row::new("verify, 300", spread.median, "<= 3.3x")
            .spread(spread)
            .against(Duration::from_millis(2000), 3.3);
        assert_eq!(
            row.markdown(),
            "| verify, 300 | 5000 ms (4900-5200) (2.50x) | <= 3.3x: met |"
        );
        let samples = [1000, 1080, 1020].map(Duration::from_millis);
        let row = Row::of_samples("backup", &samples, "<= 1.08x pg_dump")
            .against(Duration::from_millis(1000), 1.08);
        assert_eq!(
            row.markdown(),
            "| backup | 1020 ms (1000-1080) (1.02x) | <= 1.08x pg_dump: met |"
        );
    }
}
