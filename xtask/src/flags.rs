//! Command-line flags of every `cargo xtask` command (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// DiagnoLeads schema tooling: migrations, verification, backups.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    propagate_version = true
)]
pub struct Xtask {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Prove every migration up and down on a throwaway PostgreSQL (no configuration)
    #[command(
        after_help = "Examples:\n  cargo xtask verify\n  cargo xtask verify --json target/verify.json\n  cargo xtask verify --strict   # warnings fail too (CI)\n  cargo xtask verify --no-cache # every revision verified now (releases)\n  cargo xtask verify --migrations tests/fixtures/leaky_policy"
    )]
    Verify(Verify),
    /// Check migrations against the static safety rules, without a server (pre-commit)
    #[command(
        after_help = "Examples:\n  cargo xtask lint\n  cargo xtask lint f7e1c2d9b3a4 --strict\n\nThe rules that need a trace (locks, rewrites, scans) run in `cargo xtask verify`."
    )]
    Lint(Lint),
    /// Apply, inspect and author migrations (Alembic-compatible)
    #[command(
        after_help = "Examples:\n  cargo xtask migrate current\n  cargo xtask migrate upgrade head\n  cargo xtask migrate downgrade -1\n  cargo xtask migrate history --indicate-current"
    )]
    Migrate(Migrate),
    /// Back up a database with pg_dump: private, atomic, with a manifest
    #[command(
        after_help = "Examples:\n  cargo xtask backup\n  cargo xtask backup --format plain --output backups/before-release.sql\n  cargo xtask backup --format directory --jobs 2 --verify"
    )]
    Backup(Backup),
    /// Restore a backup, all or nothing, after checking the archive and the target
    #[command(
        after_help = "Examples:\n  cargo xtask restore backups/backup_20251117_120000.dump --create\n  cargo xtask restore backups/x.dump --clean --yes"
    )]
    Restore(Restore),
    /// Rehearse the release on a copy of production: timings, locks, drift, the way back
    #[command(
        after_help = "Production's copy (a fresh pg_dump of --database-url, or --from-backup checked as restore\nchecks it) is restored into a throwaway cluster; the source is only read. On the copy:\ndrift, then each pending migration with its statements' time, locks (and how long each\nis held), rewrites, full scans and rows, then the downgrade back, which must give back\nthe starting schema. Exit 0 passed (or nothing pending), 1 a migration or the downgrade\nfails on production's data, 2 the rehearsal could not run.\n\nExamples:\n  cargo xtask rehearse --database-url \"$PRODUCTION_URL\" --report release.md\n  cargo xtask rehearse --from-backup backups/backup_20251117_120000.dump --to b2c3d4e5f6a7"
    )]
    Rehearse(Rehearse),
    /// Write schema.sql (and an ER diagram) from head, deterministically
    #[command(
        after_help = "Examples:\n  cargo xtask schema-dump\n  cargo xtask schema-dump --check\n  cargo xtask schema-dump --erd docs/erd.mmd"
    )]
    SchemaDump(SchemaDump),
    /// Measure cluster, migrate, verify and (with --backup-leads) backup timings: the README table
    #[command(after_help = "Example:\n  cargo xtask bench --runs 20")]
    Bench(Bench),
    /// Build the shipped binary: migrations and catalogs built in, no source tree needed
    #[command(
        after_help = "Offers migrate (but revision, merge, check, import-alembic), backup, restore and (with\nPostgreSQL's server programs installed) rehearse, with the flags and output of cargo xtask. The binary's path is the last line of stdout.\n\nExample:\n  cp \"$(cargo xtask dist | tail -n1)\" deploy/"
    )]
    Dist(Dist),
    /// Test helper: start a throwaway cluster, print its dir and pid, wait to be killed
    #[command(hide = true)]
    HoldCluster {
        /// Panic after starting (to test keeping a failed cluster)
        #[arg(long)]
        panic: bool,
    },
    /// Run the local dev database (start, stop, status, url, psql)
    #[command(
        after_help = "Example:\n  cargo xtask db start && cargo xtask db psql -c 'select 1'"
    )]
    Db(Db),
}

/// The connection options every command that talks to a database takes.
#[derive(Debug, Args, Clone, Default)]
pub struct ConnectOpts {
    /// Database URL; else DATABASE_URL, ./.env, backend/.env, then the dev database
    #[arg(long, value_name = "URL", global = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct Db {
    #[command(subcommand)]
    pub action: DbAction,
}

#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Start the dev database (created on first use under target/dev-db)
    #[command(after_help = "Example:\n  cargo xtask db start")]
    Start,
    /// Stop the dev database
    #[command(after_help = "Example:\n  cargo xtask db stop")]
    Stop,
    /// Say whether the dev database is running (exit 0 running, 3 stopped or not created)
    #[command(after_help = "Example:\n  cargo xtask db status || cargo xtask db start")]
    Status,
    /// Print the dev database's URL
    #[command(after_help = "Example:\n  DATABASE_URL=$(cargo xtask db url) alembic current")]
    Url,
    /// Open psql on the dev database; extra arguments go to psql
    #[command(
        after_help = "Examples:\n  cargo xtask db psql -c 'select version()'\n  cargo xtask db psql -f ../queries/report.sql"
    )]
    Psql {
        /// Arguments for psql (-c SQL, -f FILE relative to the current directory, ...)
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "PSQL ARGS"
        )]
        args: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct Verify {
    #[command(flatten)]
    pub source: MigrationsOpts,
    /// Also write the report as JSON (for CI), relative to the current directory
    #[arg(long, value_name = "PATH", value_parser = from_caller)]
    pub json: Option<PathBuf>,
    /// Warnings (redundant indexes, long locks, drops, unseedable tables, missing policies) fail the run too (for CI); error findings always do
    #[arg(long)]
    pub strict: bool,
    /// Verify every revision, trusting no result kept in target/verify-cache from an earlier run (for releases)
    #[arg(long)]
    pub no_cache: bool,
    /// Verify N segments of the chain at once (1 to 16), each on a throwaway cluster of its own (about 42 MB each) [default: one per core, while each has 24 revisions]
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=16))]
    pub jobs: Option<u16>,
}

#[derive(Debug, Args)]
pub struct Lint {
    /// Revisions to check (full IDs or unique prefixes) [default: all]
    #[arg(value_name = "REV")]
    pub revisions: Vec<String>,
    #[command(flatten)]
    pub source: MigrationsOpts,
    /// Also write the findings as JSON, relative to the current directory
    #[arg(long, value_name = "PATH", value_parser = from_caller)]
    pub json: Option<PathBuf>,
    /// Warnings fail too (for CI)
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct Backup {
    #[command(flatten)]
    pub connect: ConnectOpts,
    /// Where to write, relative to the current directory (default: the checkout's
    /// backups/backup_YYYYMMDD_HHMMSS.<ext>, UTC); never replaced
    #[arg(long, short, value_name = "PATH", value_parser = from_caller)]
    pub output: Option<PathBuf>,
    /// The directory for a default-named backup, kept 0700 [default: the checkout's backups/]
    #[arg(long, value_name = "DIR", value_parser = from_caller, conflicts_with = "output")]
    pub output_dir: Option<PathBuf>,
    /// custom (pg_restore, one file), plain (SQL, the guide's .sql) or directory (parallel)
    #[arg(long, value_enum, default_value = "custom")]
    pub format: FormatArg,
    /// Parallel dump jobs (directory format)
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Restore the dump into a throwaway cluster and compare schema and row counts
    #[arg(long)]
    pub verify: bool,
    /// How long pg_dump (and the row counts) wait for each table's lock before giving up
    #[arg(long = "table-lock-timeout", alias = "lock-wait-timeout", value_name = "DURATION", default_value = "30s", value_parser = humantime_duration)]
    pub lock_wait_timeout: std::time::Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Custom,
    Plain,
    Directory,
}

#[derive(Debug, Args)]
pub struct Restore {
    /// The dump file or directory, relative to the current directory
    #[arg(value_parser = from_caller)]
    pub path: PathBuf,
    #[command(flatten)]
    pub connect: ConnectOpts,
    /// Create the target database first, owned by the dump's database owner (from the
    /// manifest, else the one role owning the dump's objects) or --owner
    #[arg(long)]
    pub create: bool,
    /// With --create: the new database's owner
    #[arg(long, value_name = "ROLE", requires = "create")]
    pub owner: Option<String>,
    /// Replace what the target holds (needs --yes)
    #[arg(long)]
    pub clean: bool,
    /// Confirm --clean
    #[arg(long, short)]
    pub yes: bool,
    /// Parallel restore into a staging database, swapped in when complete
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Do not restore owners and grants (for a target without the source's roles)
    #[arg(long)]
    pub no_owner: bool,
}

#[derive(Debug, Args)]
pub struct Rehearse {
    #[command(flatten)]
    pub connect: ConnectOpts,
    #[command(flatten)]
    pub source: MigrationsOpts,
    /// Rehearse on this backup (a dump file or directory) instead of a fresh pg_dump of the database
    #[arg(long, value_name = "FILE", value_parser = from_caller, conflicts_with = "database_url")]
    pub from_backup: Option<PathBuf>,
    /// The revision the release upgrades to
    #[arg(long, value_name = "REV", default_value = "head")]
    pub to: String,
    /// Where to write the Markdown report (replaced if it exists), relative to the current
    /// directory [default: none, the summary only]
    #[arg(long, value_name = "PATH", value_parser = from_caller)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunOpts,
}

#[derive(Debug, Args)]
pub struct SchemaDump {
    #[command(flatten)]
    pub connect: ConnectOpts,
    #[command(flatten)]
    pub source: MigrationsOpts,
    /// The file to write (or --check), relative to the current directory [default: the
    /// checkout's schema.sql]
    #[arg(long, short, value_name = "PATH", value_parser = from_caller)]
    pub output: Option<PathBuf>,
    /// Also write an ER diagram: PATH.mmd (Mermaid), PATH.dot and PATH.svg (no Graphviz needed)
    #[arg(long, value_name = "PATH", value_parser = from_caller)]
    pub erd: Option<PathBuf>,
    /// Fail with a diff when the file is stale instead of writing it
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct Dist {
    #[command(flatten)]
    pub source: MigrationsOpts,
}

#[derive(Debug, Args)]
pub struct Bench {
    #[command(flatten)]
    pub source: MigrationsOpts,
    /// Runs per measurement (the median is reported)
    #[arg(long, default_value_t = 15)]
    pub runs: usize,
    /// Also time backup and restore against pg_dump/pg_restore on this many seeded leads
    #[arg(long, value_name = "N")]
    pub backup_leads: Option<u64>,
}

/// Where the declarative schema is.
#[derive(Debug, Args, Clone)]
pub struct SchemaOpts {
    /// Directory of the declarative schema, relative to the current directory [default:
    /// the checkout's backend-schema/schema]
    #[arg(long, value_name = "DIR", value_parser = from_caller)]
    pub schema: Option<PathBuf>,
}

impl SchemaOpts {
    /// `--schema`, or the checkout's declarative schema.
    pub fn dir(&self) -> PathBuf {
        self.schema
            .clone()
            .unwrap_or_else(|| crate::project_root().join(backend_schema::declarative::SCHEMA_DIR))
    }
}

/// Where the migrations are.
#[derive(Debug, Args, Clone)]
pub struct MigrationsOpts {
    /// Directory of migrations, relative to the current directory [default: the checkout's
    /// migrations/]
    #[arg(long, value_name = "DIR", value_parser = from_caller, global = true)]
    pub migrations: Option<PathBuf>,
}

/// A path from the command line, taken relative to the directory the command was run
/// from (as every command-line tool does); the workspace root only locates the project.
/// Called while parsing, before anything changes directory.
fn from_caller(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("an empty path".into());
    }
    let cwd = std::env::current_dir()
        .map_err(|err| format!("cannot read the current directory: {err}"))?;
    Ok(lexically_normal(&cwd.join(text)))
}

/// `a/b/../c` as `a/c`, the way a shell's `cd` and messages read it (no symlinks
/// resolved, so the names printed are the ones the caller typed).
fn lexically_normal(path: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut normal = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !normal.pop() {
                    normal.push(part);
                }
            }
            other => normal.push(other),
        }
    }
    normal
}

/// Production safety knobs of a run.
#[derive(Debug, Args, Clone)]
pub struct RunOpts {
    /// PostgreSQL's lock_timeout for each migration's statements: how long one waits for
    /// a table lock before the attempt gives up (e.g. 5s, 500ms)
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime_duration)]
    pub lock_timeout: std::time::Duration,
    /// statement_timeout of each migration (default: the server's)
    #[arg(long, value_name = "DURATION", value_parser = humantime_duration)]
    pub statement_timeout: Option<std::time::Duration>,
    /// Retries of a migration that hit lock_timeout
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,
    /// How long to wait for another migrator (holding the migration lock) to finish
    #[arg(long = "migrator-wait", alias = "lock-wait", value_name = "DURATION", default_value = "5m", value_parser = humantime_duration)]
    pub lock_wait: std::time::Duration,
}

fn humantime_duration(text: &str) -> Result<std::time::Duration, String> {
    backend_schema::parse_duration(text)
}

#[derive(Debug, Args)]
pub struct Migrate {
    #[command(subcommand)]
    pub action: MigrateAction,
    #[command(flatten)]
    pub connect: ConnectOpts,
    #[command(flatten)]
    pub source: MigrationsOpts,
}

#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Show the database's current revision(s)
    #[command(
        after_help = "Example:\n  cargo xtask migrate current   # prints e.g. b2c3d4e5f6a7 (head)\n\nExit status: 0, 1 on an error (or not at head with --check-heads), 4 when the database records a revision no migration defines"
    )]
    Current {
        /// Also show the URL, file paths and checksum status of every applied revision
        #[arg(long, short)]
        verbose: bool,
        /// Exit non-zero unless the database is at the head revision(s)
        #[arg(long)]
        check_heads: bool,
    },
    /// Compare the chain's head with the declarative schema; non-zero with a diff if they differ
    #[command(
        after_help = "Examples:\n  cargo xtask migrate check   # no database needed: both are built in a throwaway cluster\n  cargo xtask migrate check --write-schema   # a migration written by hand: the schema files from head"
    )]
    Check {
        #[command(flatten)]
        schema: SchemaOpts,
        /// When the schema files describe an earlier revision (the migrations are ahead of
        /// them), write them from the chain's head instead of failing
        #[arg(long)]
        write_schema: bool,
    },
    /// List revisions, newest first
    #[command(
        after_help = "Examples:\n  cargo xtask migrate history --indicate-current\n  cargo xtask migrate history -r f5a2:head --verbose"
    )]
    History {
        #[arg(long, short)]
        verbose: bool,
        /// Mark the database's current revision (needs a database)
        #[arg(long, short)]
        indicate_current: bool,
        /// Only revisions in START:END (each side a revision, base, head(s) or current)
        #[arg(long, short = 'r', value_name = "RANGE")]
        rev_range: Option<String>,
    },
    /// Show the head revision(s) of the migration files
    #[command(after_help = "Example:\n  cargo xtask migrate heads")]
    Heads,
    /// Show one revision in detail
    #[command(
        after_help = "Examples:\n  cargo xtask migrate show b2c3\n  cargo xtask migrate show head"
    )]
    Show {
        /// A revision ID or unique prefix, `head` (the one head) or `heads` (each)
        revision: String,
    },
    /// Upgrade to a target: head, heads, a revision or label (or unique prefix), LABEL@head, +N, REV+N, REV-N, LABEL@+N
    #[command(
        after_help = "Examples:\n  cargo xtask migrate upgrade head\n  cargo xtask migrate upgrade a1b2c3d4e5f6\n  cargo xtask migrate upgrade +1\n  cargo xtask migrate upgrade base:head --sql > upgrade.sql"
    )]
    Upgrade {
        /// Where to go: head, heads, a revision ID or unique prefix, +N, REV+N (FROM:TO with --sql)
        #[arg(allow_hyphen_values = true, value_name = "TARGET")]
        target: String,
        /// Print the SQL instead of running it (TARGET may be FROM:TO); no database needed
        #[arg(long)]
        sql: bool,
        #[command(flatten)]
        run: RunOpts,
    },
    /// Downgrade to a target: base, a revision or label (or unique prefix), LABEL@base, -N, REV@-N, REV-N, REV+N
    #[command(
        after_help = "Examples:\n  cargo xtask migrate downgrade -1\n  cargo xtask migrate downgrade f7e1c2d9b3a4 --yes\n  cargo xtask migrate downgrade head:f7e1 --sql"
    )]
    Downgrade {
        /// Where to go: base, a revision ID or unique prefix, -N, REV-N (FROM:TO with --sql)
        #[arg(allow_hyphen_values = true, value_name = "TARGET")]
        target: String,
        /// Accept data loss (tables or columns that hold rows are dropped)
        #[arg(long, short)]
        yes: bool,
        /// Print the SQL instead of running it (TARGET is FROM:TO); no database needed
        #[arg(long)]
        sql: bool,
        #[command(flatten)]
        run: RunOpts,
    },
    /// Record a revision as current without running migrations
    #[command(
        after_help = "Examples:\n  cargo xtask migrate stamp b2c3d4e5f6a7\n  cargo xtask migrate stamp --purge head\n  cargo xtask migrate stamp --detect"
    )]
    Stamp {
        /// The revision to record (head, heads, base, ID or prefix)
        #[arg(required_unless_present = "detect")]
        target: Option<String>,
        /// Empty alembic_version first (also of revisions no file knows)
        #[arg(long)]
        purge: bool,
        /// Compare the live schema with every revision and stamp the one it equals
        #[arg(long, conflicts_with = "target")]
        detect: bool,
        #[command(flatten)]
        run: RunOpts,
    },
    /// Create a new migration whose parent is the current head
    #[command(
        after_help = "Examples:\n  cargo xtask migrate revision -m \"add lead source column\"\n  cargo xtask migrate revision --autogenerate -m \"add lead source column\""
    )]
    Revision {
        /// The revision's message (also the folder's slug)
        #[arg(short, long)]
        message: String,
        /// Parent: a head, `LABEL@head`, or `base` to start a new root (default: the single head)
        #[arg(long, value_name = "REV")]
        head: Option<String>,
        /// Allow --head to name a revision that is not a head (starts a new branch there)
        #[arg(long)]
        splice: bool,
        /// Name the branch this revision starts (Alembic's branch_labels)
        #[arg(long, value_name = "LABEL")]
        branch_label: Vec<String>,
        /// The migration runs outside a transaction (CREATE INDEX CONCURRENTLY)
        #[arg(long)]
        non_transactional: bool,
        /// Write the SQL that turns head into the declarative schema, and prove it
        #[arg(long)]
        autogenerate: bool,
        /// With --autogenerate: accept dropping tables, columns or enum values
        #[arg(long, requires = "autogenerate")]
        allow_drop: bool,
        /// With --autogenerate: a rename, not a drop and an add: TABLE.OLD=NEW for a
        /// column, OLD=NEW for a table (repeatable)
        #[arg(long, requires = "autogenerate", value_name = "[TABLE.]OLD=NEW")]
        rename: Vec<String>,
        #[command(flatten)]
        schema: SchemaOpts,
    },
    /// Create a merge revision of two or more heads
    #[command(
        after_help = "Examples:\n  cargo xtask migrate merge heads -m \"merge sms and billing\"\n  cargo xtask migrate merge 3f1a 9c2b -m \"merge sms and billing\""
    )]
    Merge {
        /// `heads` (every head), or two or more heads (IDs, prefixes, LABEL@head)
        #[arg(required = true, num_args = 1..)]
        revisions: Vec<String>,
        #[arg(short, long)]
        message: String,
        /// Name the branch the merge revision starts
        #[arg(long, value_name = "LABEL")]
        branch_label: Vec<String>,
    },
    /// Turn an Alembic project into migration folders, proven equal revision by revision
    #[command(
        after_help = "Each revision is rendered by the real Alembic in offline mode (through our own env.py, so\nthe application need not be importable), then proven on a throwaway PostgreSQL: the\nimported upgrade of every revision builds the schema Alembic's `upgrade REV` builds, and\nits downgrade returns to the schema before it. Nothing is written unless all of it holds.\n\nExamples:\n  cargo xtask migrate import-alembic ../backend/alembic --into migrations\n  cargo xtask migrate import-alembic ../backend/alembic/versions --into migrations --alembic ../backend/.venv/bin/python"
    )]
    ImportAlembic {
        /// The Alembic project directory (holding versions/) or its versions directory
        #[arg(value_parser = from_caller)]
        alembic_dir: PathBuf,
        /// Where the migration folders go: a new or empty directory
        /// [default: the workspace's migrations/]
        #[arg(long, value_name = "DIR", value_parser = from_caller)]
        into: Option<PathBuf>,
        /// The Alembic to run: an alembic executable or a python with alembic installed
        /// [default: alembic on PATH, then .venv/ or venv/ beside the project]
        #[arg(long, value_name = "PATH", value_parser = from_caller)]
        alembic: Option<PathBuf>,
    },
    /// Compare the live schema with the schema its recorded revision should have (exit 0
    /// equal, 1 drifted, 2 could not tell); read-only
    #[command(
        after_help = "The expected schema is built from the migrations in a throwaway cluster; data is ignored.
Each difference is named (table, column, index, constraint, policy, type, function,
extension, ...), with the SQL that brings it back where the declarative planner writes it.
The database is read in one read-only transaction: a role with CONNECT and SELECT on
alembic_version is enough.

Examples:
  cargo xtask migrate drift
  cargo xtask migrate drift --database-url \"$PRODUCTION_URL\" --lock-timeout 2s"
    )]
    Drift {
        /// How long a catalog read waits for a lock (a migration holding ACCESS EXCLUSIVE) before giving up
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime_duration)]
        lock_timeout: std::time::Duration,
    },
    /// Accept an intended edit of an applied migration (records its new checksum)
    #[command(after_help = "Example:\n  cargo xtask migrate rehash f7e1c2d9b3a4")]
    Rehash {
        /// The applied revision (ID or unique prefix) whose edited file to accept
        revision: String,
        #[command(flatten)]
        run: RunOpts,
    },
}

impl FormatArg {
    pub fn format(self) -> backend_schema::dump::DumpFormat {
        match self {
            FormatArg::Custom => backend_schema::dump::DumpFormat::Custom,
            FormatArg::Plain => backend_schema::dump::DumpFormat::Plain,
            FormatArg::Directory => backend_schema::dump::DumpFormat::Directory,
        }
    }
}
