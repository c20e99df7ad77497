//! Databases a restore makes (its staging copy, the target of `--create`) carry a
//! comment naming the process that made them until the restore is done, so a later run
//! can tell the leftover of a killed restore from anyone else's database and drop it.

use std::fs;

use postgres::Client;
use serde::{Deserialize, Serialize};

use crate::sql::{literal, quote_ident};

/// The start of every comment we put on a database while a restore runs.
const PREFIX: &str = "cargo xtask restore in progress: ";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The staging database of a parallel restore.
    Staging,
    /// The database `--create` made.
    Create,
}

/// The process a database was made by: enough to prove later that it is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maker {
    pub kind: Kind,
    pub pid: u32,
    pub host: String,
    /// `/proc/sys/kernel/random/boot_id`: a pid is only meaningful within one boot.
    pub boot: String,
    /// The process's start time (clock ticks after boot): tells a reused pid apart.
    pub start: u64,
    /// When the restore began (UTC), for the message that reports the leftover.
    pub since: String,
}

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 of `/proc/<pid>/stat`; the command name before it may hold spaces.
fn start_time(pid: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

impl Maker {
    pub fn this_process(kind: Kind) -> Maker {
        Maker {
            kind,
            pid: std::process::id(),
            host: read_trimmed("/proc/sys/kernel/hostname"),
            boot: read_trimmed("/proc/sys/kernel/random/boot_id"),
            start: start_time("self").unwrap_or(0),
            since: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }

    fn comment(&self) -> String {
        format!(
            "{PREFIX}{}",
            serde_json::to_string(self).expect("a Maker serialises")
        )
    }

    fn parse(comment: &str) -> Option<Maker> {
        serde_json::from_str(comment.strip_prefix(PREFIX)?).ok()
    }

    /// Whether the maker provably no longer runs: `None` for another host's process,
    /// which this machine cannot see.
    pub fn is_gone(&self) -> Option<bool> {
        if self.host != read_trimmed("/proc/sys/kernel/hostname") {
            return None;
        }
        if self.boot != read_trimmed("/proc/sys/kernel/random/boot_id") {
            return Some(true);
        }
        Some(start_time(&self.pid.to_string()) != Some(self.start))
    }
}

/// Marks `database` as made by this process for a restore.
pub fn mark(admin: &mut Client, database: &str, kind: Kind) -> Result<(), postgres::Error> {
    admin.batch_execute(&format!(
        "COMMENT ON DATABASE {} IS {}",
        quote_ident(database),
        literal(&Maker::this_process(kind).comment())
    ))
}

/// Removes the mark once the restore is done.
pub fn unmark(admin: &mut Client, database: &str) -> Result<(), postgres::Error> {
    admin.batch_execute(&format!(
        "COMMENT ON DATABASE {} IS NULL",
        quote_ident(database)
    ))
}

/// A database a restore made and did not finish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub name: String,
    pub maker: Maker,
}

/// What the sweep did with one leftover.
#[derive(Debug)]
pub enum Swept {
    Dropped(Leftover),
    /// Its maker runs on another host: this machine cannot tell whether it still runs.
    OtherHost(Leftover),
    /// A `--create` database that holds tables: someone wrote to it since.
    HoldsTables(Leftover),
    /// The drop failed (sessions connected to it, say).
    DropFailed(Leftover, postgres::Error),
}

/// Every marked database of the server `admin` is connected to.
pub fn marked(admin: &mut Client) -> Result<Vec<Leftover>, postgres::Error> {
    let rows = admin.query(
        "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database
          WHERE starts_with(coalesce(shobj_description(oid, 'pg_database'), ''), $1)
          ORDER BY 1",
        &[&PREFIX],
    )?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let maker = Maker::parse(row.get::<_, Option<&str>>(1)?)?;
            Some(Leftover {
                name: row.get(0),
                maker,
            })
        })
        .collect())
}

/// Drops the leftovers whose makers are provably gone: staging copies always, a
/// `--create` database only while it holds no tables (`holds_tables` looks inside).
pub fn sweep(
    admin: &mut Client,
    holds_tables: &mut dyn FnMut(&str) -> bool,
) -> Result<Vec<Swept>, postgres::Error> {
    let mut swept = Vec::new();
    for leftover in marked(admin)? {
        match leftover.maker.is_gone() {
            None => swept.push(Swept::OtherHost(leftover)),
            Some(false) => {}
            Some(true) => {
                if leftover.maker.kind == Kind::Create && holds_tables(&leftover.name) {
                    swept.push(Swept::HoldsTables(leftover));
                    continue;
                }
                match admin.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {}",
                    quote_ident(&leftover.name)
                )) {
                    Ok(()) => swept.push(Swept::Dropped(leftover)),
                    Err(err) => swept.push(Swept::DropFailed(leftover, err)),
                }
            }
        }
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_round_trips_and_names_a_live_process() {
        let me = Maker::this_process(Kind::Staging);
        assert_eq!(Maker::parse(&me.comment()), Some(me.clone()));
        assert_eq!(me.is_gone(), Some(false));
        assert!(Maker::parse("a comment of the user's").is_none());
    }

    #[test]
    fn a_reused_pid_another_boot_or_another_host_is_told_apart() {
        let me = Maker::this_process(Kind::Create);
        let reused = Maker {
            start: me.start + 1,
            ..me.clone()
        };
        assert_eq!(reused.is_gone(), Some(true));
        let rebooted = Maker {
            boot: "another boot".into(),
            ..me.clone()
        };
        assert_eq!(rebooted.is_gone(), Some(true));
        let elsewhere = Maker {
            host: format!("{}-elsewhere", me.host),
            ..me
        };
        assert_eq!(elsewhere.is_gone(), None);
    }

    #[test]
    fn start_time_skips_a_command_name_with_spaces_and_parentheses() {
        assert!(start_time("self").is_some());
        assert!(start_time("999999999").is_none());
    }
}
