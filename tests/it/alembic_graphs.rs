//! Alembic and the xtask on random revision graphs: seeded, reproducible graphs (linear
//! runs, branch points, merges of two or three heads, several roots, IDs sharing prefixes,
//! branch labels) and random operation sequences, run by the pinned real Alembic and by
//! `cargo xtask migrate` on twin databases. After every step both must agree on success,
//! on `alembic_version` and on the order the migrations ran in, except for the
//! deliberate differences of [`ALLOWED_DIFFERENCES`] (also in the README).
//!
//! `ALEMBIC_GRAPHS=N` runs N graphs instead of the CI-sized default;
//! `ALEMBIC_GRAPHS_SEED=S` starts from another seed (a failure names the seed of its
//! graph, which reproduces it alone with `ALEMBIC_GRAPHS=1`).

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

use backend_schema::source::{parse_source, read_source};

use crate::pinned_alembic::alembic_command;
use crate::support::{root, xtask, TestDb};

/// Graphs per run in CI; each takes a fraction of a second.
const DEFAULT_GRAPHS: u64 = 24;
const DEFAULT_SEED: u64 = 0x5eed_2024;

/// Where the xtask means to differ from Alembic, each with why. A step that hits one of
/// them must fail in the xtask with the named text; the sequence then stops (the twins
/// are no longer twins).
const ALLOWED_DIFFERENCES: &[(&str, &str, &str)] = &[(
    "downgrade -N with several heads",
    "Alembic warns that this is ambiguous and deprecated, then steps back from whichever \
     alembic_version row PostgreSQL returns first; the xtask refuses and names the form \
     that says which head: `downgrade REV@-N`",
    "name the one to step back from",
)];

/// xorshift64*: small, seedable, the same numbers on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[derive(Debug, Clone)]
struct Rev {
    id: String,
    parents: Vec<String>,
    label: Option<String>,
    dir: String,
    message: String,
}

const LABELS: &[&str] = &["alpha", "beta", "gamma"];

fn hex(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from_digit(rng.below(16) as u32, 16).unwrap())
        .collect()
}

fn random_graph(rng: &mut Rng) -> Vec<Rev> {
    let count = 3 + rng.below(8);
    let mut revs: Vec<Rev> = Vec::new();
    for n in 0..count {
        let id = loop {
            let id = match revs.is_empty() || !rng.chance(25) {
                true => hex(rng, 12),
                // Shares its first five characters with another: short prefixes collide.
                false => format!("{}{}", &rng.pick(&revs).id[..5], hex(rng, 7)),
            };
            if revs.iter().all(|r| r.id != id) {
                break id;
            }
        };
        let heads: Vec<String> = revs
            .iter()
            .filter(|r| !revs.iter().any(|c| c.parents.contains(&r.id)))
            .map(|r| r.id.clone())
            .collect();
        let roots = revs.iter().filter(|r| r.parents.is_empty()).count();
        let roll = rng.below(100);
        let parents = if revs.is_empty() || (roll < 10 && roots < 3) {
            Vec::new()
        } else if roll < 35 && heads.len() >= 2 {
            let mut pool = heads.clone();
            let take = if pool.len() >= 3 && rng.chance(30) {
                3
            } else {
                2
            };
            (0..take)
                .map(|_| pool.remove(rng.below(pool.len())))
                .collect()
        } else if rng.chance(60) {
            vec![rng.pick(&heads).clone()]
        } else {
            vec![rng.pick(&revs).id.clone()]
        };
        let used = revs.iter().filter(|r| r.label.is_some()).count();
        let label = (used < LABELS.len() && rng.chance(25)).then(|| LABELS[used].to_string());
        revs.push(Rev {
            dir: format!("{id}_r{n}"),
            message: "r".into(),
            id,
            parents,
            label,
        });
    }
    revs
}

/// The steps of one sequence, as `(verb, target)`.
fn random_ops(rng: &mut Rng, revs: &[Rev]) -> Vec<(&'static str, String)> {
    let labels: Vec<&str> = revs.iter().filter_map(|r| r.label.as_deref()).collect();
    let len = 4 + rng.below(5);
    (0..len)
        .map(|_| {
            let rev = &rng.pick(revs).id;
            let label = (!labels.is_empty()).then(|| *rng.pick(&labels));
            let prefix = rev[..4 + rng.below(3)].to_string();
            let up = rng.chance(55);
            let target = match (up, rng.below(10), label) {
                (true, 0, _) => "heads".to_string(),
                (true, 1, _) => "head".to_string(),
                (true, 2, _) => format!("+{}", 1 + rng.below(2)),
                (true, 3, _) => prefix,
                (true, 4, _) => format!("{rev}+1"),
                (true, 5, _) => format!("{rev}-1"),
                (true, 6, Some(l)) => l.to_string(),
                (true, 7, Some(l)) => format!("{l}@{}", rng.pick(&["head", "heads", "+1"])),
                (true, _, _) => rev.clone(),
                (false, 0, _) => "base".to_string(),
                (false, 1, _) => format!("-{}", 1 + rng.below(2)),
                (false, 2, _) => prefix,
                (false, 3, _) => format!("{rev}+1"),
                (false, 4, _) => format!("{rev}-1"),
                (false, 5, _) => format!("{rev}@-1"),
                (false, 6, Some(l)) => format!("{l}@{}", rng.pick(&["-1", "base"])),
                (false, 7, Some(l)) => format!("{l}@{rev}"),
                (false, _, _) => rev.clone(),
            };
            (if up { "upgrade" } else { "downgrade" }, target)
        })
        .collect()
}

/// Every migration records that it ran, and in which direction.
fn log_sql(id: &str, direction: &str) -> String {
    format!("INSERT INTO step_log (step) VALUES ('{direction} {id}');\n")
}

fn write_ours(revs: &[Rev], dir: &Path) {
    for rev in revs {
        let path = dir.join(&rev.dir);
        fs::create_dir_all(&path).unwrap();
        let labels = rev
            .label
            .as_ref()
            .map(|l| format!("branch_labels = [{l:?}]\n"))
            .unwrap_or_default();
        fs::write(
            path.join("migration.toml"),
            format!(
                "revision = {:?}\nrevises = {:?}\nmessage = {:?}\ntransactional = true\n{labels}",
                rev.id, rev.parents, rev.message
            ),
        )
        .unwrap();
        fs::write(path.join("up.sql"), log_sql(&rev.id, "up")).unwrap();
        fs::write(path.join("down.sql"), log_sql(&rev.id, "down")).unwrap();
    }
}

fn write_alembic(revs: &[Rev], dir: &Path) {
    let versions = dir.join("versions");
    fs::create_dir_all(&versions).unwrap();
    fs::copy(
        root().join("tests/alembic/graph_env.py"),
        dir.join("env.py"),
    )
    .unwrap();
    fs::write(
        dir.join("alembic.ini"),
        format!("[alembic]\nscript_location = {}\n", dir.display()),
    )
    .unwrap();
    for rev in revs {
        let down = match rev.parents.as_slice() {
            [] => "None".to_string(),
            [one] => format!("{one:?}"),
            many => format!(
                "({},)",
                many.iter()
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let label = rev
            .label
            .as_ref()
            .map_or("None".into(), |l| format!("{l:?}"));
        let mut script = String::new();
        writeln!(
            script,
            "\"\"\"{}\n\nRevision ID: {}\n\"\"\"",
            rev.message, rev.id
        )
        .unwrap();
        writeln!(script, "from alembic import op\n").unwrap();
        writeln!(script, "revision = {:?}\ndown_revision = {down}", rev.id).unwrap();
        writeln!(script, "branch_labels = {label}\ndepends_on = None\n").unwrap();
        for (function, direction) in [("upgrade", "up"), ("downgrade", "down")] {
            writeln!(
                script,
                "def {function}():\n    op.execute({:?})\n",
                log_sql(&rev.id, direction)
            )
            .unwrap();
        }
        // Alembic's file order is the xtask's directory order.
        fs::write(versions.join(format!("{}.py", rev.dir)), script).unwrap();
    }
}

/// One Alembic process answering many commands (`tests/alembic/graph_driver.py`).
struct AlembicDriver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _project: tempfile::TempDir,
}

impl AlembicDriver {
    fn start() -> AlembicDriver {
        let project = tempfile::tempdir().unwrap();
        fs::create_dir(project.path().join("versions")).unwrap();
        fs::copy(
            root().join("tests/alembic/graph_driver.py"),
            project.path().join("env.py"),
        )
        .unwrap();
        let ini = project.path().join("alembic.ini");
        fs::write(
            &ini,
            format!(
                "[alembic]\nscript_location = {}\n",
                project.path().display()
            ),
        )
        .unwrap();
        let mut child = alembic_command()
            .arg("-c")
            .arg(&ini)
            .arg("current")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Alembic driver");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        AlembicDriver {
            child,
            stdin,
            stdout,
            _project: project,
        }
    }

    fn run(&mut self, argv: &[String]) -> (bool, String) {
        let request = serde_json::to_string(argv).unwrap();
        writeln!(self.stdin, "{request}").expect("the Alembic driver is running");
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let answer: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("the Alembic driver answered {line:?}: {err}"));
        (
            answer["ok"].as_bool().unwrap(),
            answer["output"].as_str().unwrap().to_string(),
        )
    }
}

impl Drop for AlembicDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The database's `alembic_version` rows (none before the table exists), and the steps
/// logged since the last call.
fn observe(client: &mut postgres::Client) -> (Vec<String>, Vec<String>) {
    let exists: bool = client
        .query_one("SELECT to_regclass('alembic_version') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    let versions = if exists {
        client
            .query(
                "SELECT version_num::text FROM alembic_version ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        Vec::new()
    };
    let steps = client
        .query("DELETE FROM step_log RETURNING n, step", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, i32>(0), r.get::<_, String>(1)))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_values()
        .collect();
    (versions, steps)
}

/// The steps a `--sql` script logs, in order.
fn logged_steps(sql: &str) -> Vec<String> {
    let step = regex::Regex::new(r"VALUES \('((up|down) \w+)'\)").unwrap();
    step.captures_iter(sql).map(|c| c[1].to_string()).collect()
}

fn describe(revs: &[Rev]) -> String {
    revs.iter()
        .map(|r| {
            format!(
                "  {} <- [{}]{}\n",
                r.id,
                r.parents.join(", "),
                r.label
                    .as_ref()
                    .map_or(String::new(), |l| format!(" label {l}"))
            )
        })
        .collect()
}

#[test]
fn alembic_and_the_xtask_agree_on_random_revision_graphs() {
    let graphs: u64 = std::env::var("ALEMBIC_GRAPHS")
        .ok()
        .map(|v| v.parse().expect("ALEMBIC_GRAPHS is a number"))
        .unwrap_or(DEFAULT_GRAPHS);
    let first_seed: u64 = std::env::var("ALEMBIC_GRAPHS_SEED")
        .ok()
        .map(|v| v.parse().expect("ALEMBIC_GRAPHS_SEED is a number"))
        .unwrap_or(DEFAULT_SEED);
    let db = TestDb::new();
    let theirs = "twin";
    db.cluster.create_database(theirs, None).unwrap();
    let mut our_client = db.client();
    let mut their_client = db.cluster.client(theirs).unwrap();
    let alembic_url = db
        .cluster
        .url(theirs)
        .replace("postgresql://", "postgresql+psycopg2://");
    let our_url = db.url();
    let mut alembic = AlembicDriver::start();
    let (mut steps, mut succeeded, mut allowed) = (0, 0, 0);

    for seed in first_seed..first_seed + graphs {
        let mut rng = Rng::new(seed);
        let revs = random_graph(&mut rng);
        let ops = random_ops(&mut rng, &revs);
        let work = tempfile::tempdir().unwrap();
        write_ours(&revs, &work.path().join("migrations"));
        write_alembic(&revs, &work.path().join("alembic"));
        // The twins start empty but for the step log; each graph starts them afresh.
        for client in [&mut our_client, &mut their_client] {
            client
                .batch_execute(
                    "DROP TABLE IF EXISTS alembic_version, alembic_version_history, step_log;
                     CREATE TABLE step_log (n serial PRIMARY KEY, step text NOT NULL)",
                )
                .unwrap();
        }
        let migrations = work.path().join("migrations");
        let alembic_ini = work
            .path()
            .join("alembic/alembic.ini")
            .display()
            .to_string();
        let mut history = String::new();

        // `--sql` scripts run the steps in the same order.
        for (verb, range) in [("upgrade", "heads"), ("downgrade", "heads:base")] {
            let mine = xtask(&[
                "migrate",
                verb,
                range,
                "--sql",
                "--migrations",
                migrations.to_str().unwrap(),
            ]);
            let (their_ok, their_sql) = alembic.run(&[
                "-c".into(),
                alembic_ini.clone(),
                "-x".into(),
                format!("url={alembic_url}"),
                verb.into(),
                range.into(),
                "--sql".into(),
            ]);
            assert!(
                mine.output.status.success(),
                "seed {seed}: {verb} {range} --sql:\n{}",
                mine.text()
            );
            // Alembic's offline downgrade cannot start from several heads; ours can.
            let several_heads = their_sql.contains("Multiple head revisions are present");
            if verb == "downgrade" && several_heads {
                continue;
            }
            assert!(
                their_ok,
                "seed {seed}: alembic {verb} {range} --sql:\n{their_sql}"
            );
            assert_eq!(
                logged_steps(&mine.stdout()),
                logged_steps(&their_sql),
                "seed {seed}: {verb} {range} --sql runs the steps in another order; graph:\n{}",
                describe(&revs)
            );
        }

        for (verb, target) in &ops {
            steps += 1;
            let heads_before = observe(&mut our_client).0;
            let mut args = vec!["migrate", verb, target.as_str()];
            if *verb == "downgrade" {
                args.push("--yes");
            }
            args.extend(["--migrations", migrations.to_str().unwrap()]);
            args.extend(["--database-url", &our_url]);
            let mine = xtask(&args);
            let (their_ok, their_output) = alembic.run(&[
                "-c".into(),
                alembic_ini.clone(),
                "-x".into(),
                format!("url={alembic_url}"),
                verb.to_string(),
                target.clone(),
            ]);
            let our_ok = mine.output.status.success();
            let (our_versions, our_steps) = observe(&mut our_client);
            let (their_versions, their_steps) = observe(&mut their_client);
            let _ = writeln!(
                history,
                "  {verb} {target}: xtask {} {our_steps:?}, alembic {} {their_steps:?}",
                if our_ok { "ok" } else { "failed" },
                if their_ok { "ok" } else { "failed" },
            );
            let context = || {
                format!(
                    "seed {seed}; graph (revision <- parents):\n{}steps:\n{history}\
                     heads before: {heads_before:?}\n\
                     xtask: {our_versions:?}\n{}\nalembic: {their_versions:?}\n{their_output}",
                    describe(&revs),
                    mine.text()
                )
            };
            let relative_without_revision =
                *verb == "downgrade" && target.starts_with('-') && heads_before.len() > 1;
            if relative_without_revision && their_ok {
                let (_, _, text) = ALLOWED_DIFFERENCES[0];
                assert!(
                    !our_ok && mine.stderr().contains(text),
                    "an allowed difference, but not the documented one:\n{}",
                    context()
                );
                allowed += 1;
                break;
            }
            assert_eq!(our_ok, their_ok, "success differs:\n{}", context());
            assert_eq!(
                our_versions,
                their_versions,
                "alembic_version differs:\n{}",
                context()
            );
            assert_eq!(our_steps, their_steps, "step order differs:\n{}", context());
            succeeded += usize::from(our_ok);
        }
    }
    eprintln!(
        "{graphs} graphs, {steps} steps compared ({succeeded} succeeded in both), {allowed} allowed difference(s) ({})",
        ALLOWED_DIFFERENCES[0].0
    );
}

/// The revisions of a migrations directory the xtask wrote, for the Alembic twin.
fn read_revs(dir: &Path) -> Vec<Rev> {
    parse_source(&read_source(dir).unwrap())
        .unwrap()
        .into_iter()
        .map(|m| Rev {
            dir: m.dir_name().to_string(),
            id: m.revision,
            parents: m.parents,
            label: m.branch_labels.first().cloned(),
            message: m.message,
        })
        .collect()
}

/// Runs the xtask on `dir`'s migrations.
fn xtask_in(dir: &Path, args: &[&str]) -> crate::support::Run {
    let mut all = args.to_vec();
    all.extend(["--migrations", dir.to_str().unwrap()]);
    xtask(&all)
}

#[test]
fn branches_made_with_the_xtask_read_as_alembic_prints_them() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("migrations");
    fs::create_dir(&dir).unwrap();
    let made = |args: &[&str]| -> String {
        let run = xtask_in(&dir, args);
        let text = run.success().stderr();
        let path = text.trim().rsplit(' ').next().unwrap().to_string();
        Path::new(&path).file_name().unwrap().to_str().unwrap()[..12].to_string()
    };
    let root_rev = made(&["migrate", "revision", "-m", "Tenants"]);
    let second = made(&["migrate", "revision", "-m", "Leads"]);
    // A new root, named; then the branch extended by its label.
    let ops = made(&[
        "migrate",
        "revision",
        "-m",
        "Ops audit",
        "--head",
        "base",
        "--branch-label",
        "ops",
    ]);
    let ops_two = made(&[
        "migrate", "revision", "-m", "Ops jobs", "--head", "ops@head",
    ]);
    // Branching off a revision that is not a head needs --splice, as in Alembic.
    let refused = xtask_in(
        &dir,
        &["migrate", "revision", "-m", "Side", "--head", &root_rev],
    );
    assert!(
        refused
            .failure()
            .stderr()
            .contains("not a head revision; pass --splice"),
        "{}",
        refused.text()
    );
    let side = made(&[
        "migrate", "revision", "-m", "Side", "--head", &root_rev, "--splice",
    ]);
    let taken = xtask_in(
        &dir,
        &[
            "migrate",
            "revision",
            "-m",
            "Again",
            "--head",
            "base",
            "--branch-label",
            "ops",
        ],
    );
    assert!(
        taken.failure().stderr().contains(&format!(
            "branch label 'ops' is already used by revision {ops}"
        )),
        "{}",
        taken.text()
    );

    // `merge` joins heads only, each once.
    for (args, says) in [
        (
            vec![root_rev.as_str(), second.as_str()],
            format!("revision {root_rev} is not a head revision"),
        ),
        (
            vec![second.as_str(), second.as_str()],
            format!("duplicate head revisions specified: {second}"),
        ),
        (
            vec!["ops@head"],
            format!("nothing to merge: ops@head names only {ops_two}"),
        ),
    ] {
        let mut all = vec!["migrate", "merge"];
        all.extend(args);
        all.extend(["-m", "join"]);
        let run = xtask_in(&dir, &all);
        assert!(run.failure().stderr().contains(&says), "{}", run.text());
    }

    let mut alembic = AlembicDriver::start();
    let compare = |alembic: &mut AlembicDriver, args: &[&str]| {
        let project = tempfile::tempdir().unwrap();
        write_alembic(&read_revs(&dir), project.path());
        let mut argv = vec![
            "-c".to_string(),
            project.path().join("alembic.ini").display().to_string(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        let (their_ok, theirs) = alembic.run(&argv);
        let mut ours_args = vec!["migrate"];
        ours_args.extend(args);
        let ours = xtask_in(&dir, &ours_args);
        assert_eq!(
            ours.output.status.success(),
            their_ok,
            "{args:?}:\n{}\nalembic:\n{theirs}",
            ours.text()
        );
        if their_ok {
            assert_eq!(ours.stdout(), theirs, "{args:?}: xtask then alembic");
        }
        ours.stdout()
    };
    let show = xtask_in(&dir, &["migrate", "show", "ops@head"]);
    assert!(
        show.success().stdout().contains(&format!(
            "Rev: {ops_two} (head)\nParent: {ops}\nBranch names: ops\n"
        )),
        "{}",
        show.text()
    );
    let heads = compare(&mut alembic, &["heads"]);
    assert!(
        heads.contains(&format!("{ops_two} (ops) (head)")),
        "{heads}"
    );
    let history = compare(&mut alembic, &["history"]);
    assert!(
        history.contains(&format!("{root_rev} -> {second} (head), Leads")),
        "{history}"
    );
    assert!(
        history.contains(&format!("<base> -> {root_rev} (branchpoint), Tenants")),
        "{history}"
    );
    compare(
        &mut alembic,
        &["history", "-r", &format!("{root_rev}:heads")],
    );
    compare(&mut alembic, &["history", "-r", "ops@base:ops@head"]);
    // A range whose start is not below its end is an error in both.
    compare(&mut alembic, &["history", "-r", &format!("{ops}:{second}")]);

    // `merge heads`: the form everyone types.
    made(&["migrate", "merge", "heads", "-m", "Join everything"]);
    let history = compare(&mut alembic, &["history"]);
    let merge_line = history.lines().next().unwrap();
    for parent in [&second, &ops_two, &side] {
        assert!(merge_line.contains(parent.as_str()), "{history}");
    }
    assert!(
        merge_line.ends_with("(head) (mergepoint), Join everything"),
        "{history}"
    );
    assert!(
        !merge_line.starts_with('('),
        "parents unbracketed, as Alembic: {history}"
    );
    compare(&mut alembic, &["heads"]);
}
