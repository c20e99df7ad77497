//! `backup` against races and faults: two backups at one name, names already taken
//! (dangling symlinks included), a backups directory others can write, a full disk while
//! the manifest is written, a SIGKILL while the dump is read back, and a dump stream cut
//! short or damaged.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use backend_schema::dump::Manifest;

use crate::backup::seeded;
use crate::support::{xtask_command, TestDb};

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The dump at `path` is the one its manifest describes.
fn assert_matches_its_manifest(path: &Path) {
    let manifest = Manifest::read(&Manifest::path_for(path)).unwrap();
    let (sha256, size) = backend_schema::dump::sha256_path(path).unwrap();
    assert_eq!(
        manifest.file,
        path.file_name().unwrap().to_string_lossy(),
        "{}",
        path.display()
    );
    assert_eq!((manifest.sha256, manifest.size_bytes), (sha256, size));
}

/// Backups started while `leads` is locked: their pg_dumps all park on the lock, so
/// they reach the final rename together once it is released.
fn racing_backups(db: &TestDb, runs: &[Vec<String>]) -> Vec<Output> {
    let mut holder = db.client();
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE leads IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let url = db.url();
    let mut children: Vec<Child> = runs
        .iter()
        .map(|args| {
            let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
            all.extend(["--database-url", &url, "--lock-wait-timeout", "60s"]);
            xtask_command(&all)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut monitor = db.client();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting: i64 = monitor
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_dump' AND wait_event_type = 'Lock'", &[])
            .unwrap()
            .get(0);
        if waiting as usize == runs.len() {
            break;
        }
        for child in &mut children {
            if child.try_wait().unwrap().is_some() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                panic!("a backup ended before its pg_dump parked: {err}");
            }
        }
        assert!(Instant::now() < deadline, "the pg_dumps never all parked");
        std::thread::sleep(Duration::from_millis(20));
    }
    tx.rollback().unwrap();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

#[test]
fn two_backups_to_the_same_output_one_wins_and_the_other_names_the_file() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("b.dump");
    let args = vec![
        "backup".to_string(),
        "--output".to_string(),
        path.display().to_string(),
    ];
    let outputs = racing_backups(&db, &[args.clone(), args]);
    let (won, lost): (Vec<_>, Vec<_>) = outputs.iter().partition(|o| o.status.success());
    let text = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        (won.len(), lost.len()),
        (1, 1),
        "{:?}",
        outputs.iter().map(text).collect::<Vec<_>>()
    );
    let loser = text(lost[0]);
    assert!(
        loser.contains(&format!("{} already exists", path.display())),
        "{loser}"
    );
    assert!(loser.contains("no backup was written"), "{loser}");
    assert!(!loser.contains("backup written:"), "{loser}");
    assert_eq!(names_in(out.path()), ["b.dump", "b.dump.manifest.json"]);
    assert_matches_its_manifest(&path);
}

#[test]
fn two_default_named_backups_at_once_both_succeed_with_different_files() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("backups");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
    // Someone else's files under every default name of the next minute: taken names are
    // never replaced, whoever took them.
    let now = std::time::SystemTime::now();
    let mut taken = Vec::new();
    for second in 0..60 {
        let at = humantime::format_rfc3339_seconds(now + Duration::from_secs(second)).to_string();
        let stamp = at.replace(['-', ':'], "").replace('T', "_");
        let name = format!("backup_{}.dump", stamp.trim_end_matches('Z'));
        fs::write(dir.join(&name), "someone else's").unwrap();
        taken.push(name);
    }
    let args = vec![
        "backup".to_string(),
        "--output-dir".to_string(),
        dir.display().to_string(),
    ];
    let outputs = racing_backups(&db, &[args.clone(), args]);
    for output in &outputs {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for name in &taken {
        assert_eq!(
            fs::read_to_string(dir.join(name)).unwrap(),
            "someone else's"
        );
    }
    let written: Vec<String> = names_in(&dir)
        .into_iter()
        .filter(|n| !taken.contains(n) && !n.ends_with(".manifest.json"))
        .collect();
    assert_eq!(written.len(), 2, "{written:?}");
    for name in &written {
        assert!(
            outputs
                .iter()
                .any(|o| String::from_utf8_lossy(&o.stderr).contains(name.as_str())),
            "{name} is the name a run reports"
        );
        assert_matches_its_manifest(&dir.join(name));
    }
    let manifests = names_in(&dir)
        .into_iter()
        .filter(|n| n.ends_with(".manifest.json"))
        .count();
    assert_eq!(manifests, 2);
}

#[test]
fn a_dangling_symlink_at_the_output_or_manifest_name_is_refused_and_kept() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let nowhere = out.path().join("nowhere");
    for (format, name) in [
        ("custom", "b.dump"),
        ("plain", "b.sql"),
        ("directory", "b.dir"),
    ] {
        let path = out.path().join(name);
        for link in [path.clone(), Manifest::path_for(&path)] {
            std::os::unix::fs::symlink(&nowhere, &link).unwrap();
            let run = db.xtask(&[
                "backup",
                "--format",
                format,
                "--output",
                path.to_str().unwrap(),
            ]);
            assert!(
                run.failure()
                    .stderr()
                    .contains(&format!("{} already exists", link.display())),
                "{}",
                run.text()
            );
            assert_eq!(fs::read_link(&link).unwrap(), nowhere);
            assert!(!nowhere.exists());
            fs::remove_file(&link).unwrap();
            assert!(
                names_in(out.path()).is_empty(),
                "{:?}",
                names_in(out.path())
            );
        }
    }
}

#[test]
fn a_backups_directory_others_can_write_is_made_private_or_refused() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    let ours = out.path().join("ours");
    fs::create_dir(&ours).unwrap();
    fs::set_permissions(&ours, fs::Permissions::from_mode(0o777)).unwrap();
    let run = db.xtask(&["backup", "--output-dir", ours.to_str().unwrap()]);
    assert!(
        run.success().stderr().contains(&format!(
            "{} was mode 0777; made it 0700 (backups hold every tenant's data)",
            ours.display()
        )),
        "{}",
        run.text()
    );
    assert_eq!(mode(&ours), 0o700);
    assert_eq!(names_in(&ours).len(), 2);

    // Not ours (another owner, who could swap the dump even after a chmod), or a shared
    // sticky directory like /tmp: refused.
    let theirs = out.path().join("theirs");
    fs::create_dir(&theirs).unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let shared = out.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let fix_theirs = "Choose a directory of your own with --output-dir".to_string();
    let fix_shared = format!(
        "choose another --output-dir (e.g. {}/backups",
        shared.display()
    );
    for (dir, was, fix) in [(&theirs, 0o777, fix_theirs), (&shared, 0o1777, fix_shared)] {
        let run = db.xtask(&["backup", "--output-dir", dir.to_str().unwrap()]);
        let err = run.failure().stderr();
        assert!(
            err.contains(&format!("{} is mode {was:04o}", dir.display())),
            "{err}"
        );
        assert!(err.contains(&fix), "{err}");
        assert_eq!(mode(dir), was);
        assert!(names_in(dir).is_empty(), "{:?}", names_in(dir));
    }
}

/// Wrappers around the real PostgreSQL programs, in a directory every account can
/// read; `prelude` maps a program to shell lines run before it `exec`s the real one.
pub(crate) fn wrapped_bin_dir(db: &TestDb, prelude: &[(&str, &str)]) -> tempfile::TempDir {
    let temp = tempfile::Builder::new()
        .prefix("wrapped-bin")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let real = db.cluster.binaries().bin_dir();
    for entry in fs::read_dir(real).unwrap() {
        let name = entry.unwrap().file_name();
        let before = prelude
            .iter()
            .find(|(program, _)| name == *program)
            .map_or("", |(_, lines)| lines);
        let script = format!(
            "#!/bin/sh\n{before}\nexec {} \"$@\"\n",
            real.join(&name).display()
        );
        let wrapper = temp.path().join(&name);
        fs::write(&wrapper, script).unwrap();
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    }
    temp
}

#[test]
fn a_full_disk_while_writing_the_manifest_names_it_and_leaves_nothing() {
    let db = seeded();
    // Only xtask's own files are limited (pg_dump lifts its soft limit): the manifest is
    // the first file xtask writes itself in the directory format (a custom or plain dump
    // streams through xtask to its file).
    let bin = wrapped_bin_dir(&db, &[("pg_dump", "ulimit -f unlimited")]);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("b.dir");
    let mut command = xtask_command(&[
        "backup",
        "--format",
        "directory",
        "--output",
        path.to_str().unwrap(),
        "--database-url",
        &db.url(),
    ]);
    command.env("PG_BIN_DIR", bin.path());
    // SAFETY: setrlimit and signal are async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            // A write past the limit then fails with EFBIG, as a full disk fails with
            // ENOSPC, instead of killing the process.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 200,
                rlim_max: libc::RLIM_INFINITY,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "cannot write {}",
            Manifest::path_for(&path).display()
        )),
        "{err}"
    );
    assert!(err.contains("no backup was written"), "{err}");
    assert!(err.contains("File too large"), "{err}");
    assert!(
        names_in(out.path()).is_empty(),
        "{:?}",
        names_in(out.path())
    );
}

/// Whether a process is gone (or a zombie nobody has reaped yet).
fn is_dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(") ")
            .next()
            .is_some_and(|rest| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

#[test]
fn a_backup_killed_during_the_read_back_leaves_no_reader_and_no_readable_temp_file() {
    let db = seeded();
    let work = tempfile::tempdir().unwrap();
    let readers = work.path().join("readers");
    fs::write(&readers, "").unwrap();
    // The read-back's pg_restore parks (it records its pid and sleeps) so the kill lands
    // while it runs; the parent-death signal reaches whatever it has exec'd.
    let park = format!(
        "case \"$*\" in *--file=/dev/null*) echo $$ >> {}; exec sleep 120;; esac",
        readers.display()
    );
    let bin = wrapped_bin_dir(&db, &[("pg_restore", &park)]);
    let tmp = work.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    let out = work.path().join("out");
    // A directory backup is read back; a custom or plain one is checked as it streams.
    let path = out.join("b.dir");
    let mut child = xtask_command(&[
        "backup",
        "--format",
        "directory",
        "--output",
        path.to_str().unwrap(),
        "--database-url",
        &db.url(),
    ])
    .env("PG_BIN_DIR", bin.path())
    .env("TMPDIR", &tmp)
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let pids = loop {
        let pids: Vec<u32> = fs::read_to_string(&readers)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        // Two readers when the listing is shared out; give the second a moment.
        if !pids.is_empty() {
            std::thread::sleep(Duration::from_millis(300));
            break fs::read_to_string(&readers)
                .unwrap()
                .lines()
                .map(|l| l.parse().unwrap())
                .collect::<Vec<u32>>();
        }
        assert!(Instant::now() < deadline, "the read-back never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids.iter().all(|&pid| is_dead(pid)) {
        assert!(
            Instant::now() < deadline,
            "the read-back's pg_restore outlived the killed backup: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!path.exists());
    let mut loose = Vec::new();
    let mut stack: Vec<PathBuf> = vec![tmp.clone(), out.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap().path();
            let mode = mode(&entry);
            if entry.is_dir() {
                stack.push(entry.clone());
                if mode & 0o077 != 0 {
                    loose.push((entry, mode));
                }
            } else if mode & 0o077 != 0 {
                loose.push((entry, mode));
            }
        }
    }
    assert!(loose.is_empty(), "readable by others: {loose:?}");
    assert!(names_in(&tmp).is_empty(), "{:?}", names_in(&tmp));
}

/// Owner and mode of `path` (not following a symlink).
fn owner_and_mode(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt as _;
    let metadata = fs::symlink_metadata(path).unwrap();
    (metadata.uid(), metadata.mode() & 0o7777)
}

/// A pid no process has now: one that just exited.
fn a_dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn a_backup_into_a_shared_sticky_directory_is_built_where_no_one_else_can_plant_anything() {
    let db = seeded();
    let work = tempfile::Builder::new()
        .prefix("sticky")
        .tempdir_in("/tmp")
        .unwrap();
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // Like /tmp: root's, sticky, anyone may create files in it.
    let shared = work.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
    let path = shared.join("b.dump");
    // Another account (nobody) wins the race for the names the dump is written under:
    // before pg_dump starts, it creates a 0666 file at pg_dump's --file and at the
    // temporary name an earlier scheme used (`.b.dump.partial-<our pid>`), and links the
    // temporary manifest name to a file of its own.
    let bait = work.path().join("bait");
    fs::write(&bait, "nobody's").unwrap();
    std::os::unix::fs::chown(&bait, Some(65534), Some(65534)).unwrap();
    let plant = format!(
        "for a in \"$@\"; do case \"$a\" in --file=*) f=\"${{a#--file=}}\";; esac; done\n\
         setpriv --reuid=65534 --regid=65534 --clear-groups sh -c 'umask 0; : > \"$2\"; ln -s {bait} \"$2.manifest\"; : > \"$1\"' sh \"$f\" {shared}/.b.dump.partial-$PPID 2>/dev/null",
        bait = bait.display(),
        shared = shared.display(),
    );
    let bin = wrapped_bin_dir(&db, &[("pg_dump", &plant)]);
    // Leftover-looking names another account holds, of the old scheme and of ours, with
    // a pid that is gone: the sweep is not for them.
    let dead = a_dead_pid();
    let old_leftover = shared.join(format!(".b.dump.partial-{dead}"));
    fs::write(&old_leftover, "theirs").unwrap();
    std::os::unix::fs::chown(&old_leftover, Some(65534), Some(65534)).unwrap();
    let new_leftover = shared.join(format!(".backup-partial-{dead}-00112233aabbccdd"));
    fs::create_dir(&new_leftover).unwrap();
    std::os::unix::fs::chown(&new_leftover, Some(65534), Some(65534)).unwrap();

    let output = xtask_command(&[
        "backup",
        "--output",
        path.to_str().unwrap(),
        "--database-url",
        &db.url(),
    ])
    .env("PG_BIN_DIR", bin.path())
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    // SAFETY: geteuid cannot fail.
    let us = unsafe { libc::geteuid() };
    for written in [path.clone(), Manifest::path_for(&path)] {
        assert_eq!(
            owner_and_mode(&written),
            (us, 0o600),
            "{}",
            written.display()
        );
    }
    assert_matches_its_manifest(&path);
    let planted: Vec<PathBuf> = names_in(&shared)
        .into_iter()
        .filter(|n| n.starts_with(".b.dump.partial-") && !n.ends_with(&format!("-{dead}")))
        .map(|n| shared.join(n))
        .collect();
    assert!(!planted.is_empty(), "the wrapper planted nothing: {err}");
    for file in &planted {
        assert_eq!(owner_and_mode(file).0, 65534, "{}", file.display());
    }
    assert_eq!(fs::read_to_string(&bait).unwrap(), "nobody's");
    assert_eq!(fs::read_to_string(&old_leftover).unwrap(), "theirs");
    assert!(new_leftover.is_dir());
    let mut left = names_in(&shared);
    left.retain(|n| !planted.iter().any(|p| p.ends_with(n)));
    assert_eq!(
        left,
        [
            format!(".b.dump.partial-{dead}"),
            format!(".backup-partial-{dead}-00112233aabbccdd"),
            "b.dump".to_string(),
            "b.dump.manifest.json".to_string(),
        ]
    );
}

#[test]
fn a_directory_another_account_owns_or_anyone_can_write_is_refused() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    // A private directory of another account's: it could swap the dump.
    let theirs = out.path().join("theirs");
    fs::create_dir(&theirs).unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let run = db.xtask(&["backup", "--output-dir", theirs.to_str().unwrap()]);
    let err = run.failure().stderr();
    assert!(
        err.contains(&format!(
            "{} is mode 0700 and belongs to nobody (uid 65534), another account",
            theirs.display()
        )),
        "{err}"
    );
    assert!(
        err.contains("Choose a directory of your own with --output-dir"),
        "{err}"
    );
    assert!(names_in(&theirs).is_empty(), "{:?}", names_in(&theirs));
    // The directory of an explicit --output: another account's (0755), or one anyone (or
    // its group) can write that is not sticky (0777, 0770).
    let open = out.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let group = out.path().join("group");
    fs::create_dir(&group).unwrap();
    fs::set_permissions(&group, fs::Permissions::from_mode(0o770)).unwrap();
    fs::set_permissions(&theirs, fs::Permissions::from_mode(0o755)).unwrap();
    for (dir, says) in [
        (
            &theirs,
            format!(
                "{} (the directory of --output) belongs to nobody (uid 65534), another account",
                theirs.display()
            ),
        ),
        (
            &open,
            format!(
                "{} (the directory of --output) is mode 0777 and not sticky: any account could",
                open.display()
            ),
        ),
        (
            &group,
            format!(
                "{} (the directory of --output) is mode 0770 and not sticky: every account in its group could rename or replace the backup in it; no backup was written. \
                 Choose an --output in a directory others cannot write, or a sticky one like /tmp (or run `chmod go-w {}`)",
                group.display(),
                group.display()
            ),
        ),
    ] {
        let path = dir.join("b.dump");
        let run = db.xtask(&["backup", "--output", path.to_str().unwrap()]);
        let err = run.failure().stderr();
        assert!(err.contains(&says), "{err}");
        assert!(err.contains("no backup was written"), "{err}");
        assert!(names_in(dir).is_empty(), "{:?}", names_in(dir));
    }
}

/// A database whose table data outweighs its table of contents, so most of a custom dump
/// is compressed data blocks.
fn with_bulk_rows() -> TestDb {
    let db = seeded();
    db.client()
        .batch_execute(
            "INSERT INTO leads (id, tenant_id, name, email, status, score, tags, custom_fields, created_by)
             SELECT gen_random_uuid(), tenant_id, md5(g::text), md5(g::text) || '@example.com', 'new', 1, '[]', '{}', created_by
               FROM generate_series(1, 20000) AS g, (SELECT tenant_id, created_by FROM leads LIMIT 1) AS l",
        )
        .unwrap();
    db
}

#[test]
fn a_custom_backup_is_checked_as_it_streams_and_runs_no_read_back() {
    let db = seeded();
    let work = tempfile::tempdir().unwrap();
    let calls = work.path().join("pg_restore-calls");
    fs::write(&calls, "").unwrap();
    let record = format!("echo \"$*\" >> {}", calls.display());
    let bin = wrapped_bin_dir(&db, &[("pg_restore", &record)]);
    let path = work.path().join("out").join("b.dump");
    let run = xtask_command(&[
        "backup",
        "--output",
        path.to_str().unwrap(),
        "--database-url",
        &db.url(),
    ])
    .env("PG_BIN_DIR", bin.path())
    .output()
    .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_matches_its_manifest(&path);
    let calls = fs::read_to_string(&calls).unwrap();
    assert!(
        !calls.contains("--file=/dev/null"),
        "the archive was read back: {calls}"
    );
}

#[test]
fn a_truncated_or_damaged_dump_stream_is_refused_and_leaves_nothing() {
    let db = with_bulk_rows();
    let real = db.cluster.binaries().bin_dir().join("pg_dump");
    let work = tempfile::tempdir().unwrap();
    // pg_dump's output loses its last bytes (or has one byte replaced), whether it is
    // written to --file or to stdout.
    let truncate = format!(
        "for a in \"$@\"; do case \"$a\" in --file=*) f=\"${{a#--file=}}\";; esac; done
         if [ -n \"$f\" ]; then {real} \"$@\" || exit $?; truncate -s -37 \"$f\"; exit 0; fi
         {real} \"$@\" | head -c -37; exit 0",
        real = real.display()
    );
    let damage = format!(
        "for a in \"$@\"; do case \"$a\" in --file=*) f=\"${{a#--file=}}\";; esac; done
         if [ -n \"$f\" ]; then {real} \"$@\" || exit $?; s=$(($(stat -c %s \"$f\") - 200)); printf X | dd of=\"$f\" bs=1 seek=$s conv=notrunc 2>/dev/null; exit 0; fi
         {real} \"$@\" > {tmp}/whole; s=$(($(stat -c %s {tmp}/whole) - 200)); printf X | dd of={tmp}/whole bs=1 seek=$s conv=notrunc 2>/dev/null; cat {tmp}/whole; exit 0",
        real = real.display(),
        tmp = work.path().display()
    );
    for (what, prelude) in [("truncated", truncate), ("damaged", damage)] {
        let bin = wrapped_bin_dir(&db, &[("pg_dump", &prelude)]);
        let out = work.path().join(what);
        let path = out.join("b.dump");
        let run = xtask_command(&[
            "backup",
            "--output",
            path.to_str().unwrap(),
            "--database-url",
            &db.url(),
        ])
        .env("PG_BIN_DIR", bin.path())
        .output()
        .unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{what}: {err}");
        assert!(
            err.contains("the dump is incomplete; no backup was written"),
            "{what}: {err}"
        );
        assert!(names_in(&out).is_empty(), "{what}: {:?}", names_in(&out));
    }
}

#[test]
fn the_stream_reader_refuses_every_cut_and_flipped_byte_of_a_real_dump() {
    use backend_schema::dump::stream::{read_custom, StreamError, Verdict};
    let db = with_bulk_rows();
    let real = db.cluster.binaries().bin_dir().join("pg_dump");
    let dump = std::process::Command::new(real)
        .args(["--format=custom", "--dbname", &db.url()])
        .output()
        .unwrap();
    assert!(dump.status.success());
    let bytes = dump.stdout;
    let mut tables = Vec::new();
    let whole = read_custom(&mut &bytes[..], &mut |t| tables.push(t.to_string())).unwrap();
    assert_eq!(whole, Ok(Verdict::Complete));
    assert!(tables.iter().any(|t| t == "leads"), "{tables:?}");
    let len = bytes.len();
    for cut in [len - 1, len - 100, len / 2, len / 3, 200, 6] {
        let verdict = read_custom(&mut &bytes[..cut], &mut |_| {}).unwrap();
        assert!(
            matches!(verdict, Err(StreamError::Truncated(_))),
            "cut at {cut} of {len}: {verdict:?}"
        );
    }
    // Bytes of the data blocks (the last half is table data): a flip anywhere in them
    // breaks a length, a block's framing or its compressed stream's checksum. Except
    // one: the sign byte of an integer zero (a sign byte, then four zero bytes), since
    // -0 is 0 to pg_restore as to us, and the archive then reads exactly as before.
    // The rows are random, so where the probes land varies from run to run.
    for at in (len / 2..len).step_by(len / 40) {
        let zero_sign = bytes[at] <= 1 && bytes.get(at + 1..at + 5) == Some(&[0, 0, 0, 0][..]);
        if zero_sign {
            continue;
        }
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x20;
        let verdict = read_custom(&mut &flipped[..], &mut |_| {}).unwrap();
        assert!(verdict.is_err(), "flip at {at} of {len}: {verdict:?}");
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"\x01junk");
    assert!(read_custom(&mut &longer[..], &mut |_| {}).unwrap().is_err());
}

#[test]
fn a_directory_below_one_others_can_write_is_refused() {
    let db = seeded();
    let out = tempfile::tempdir().unwrap();
    // Private and ours, but inside a directory anyone can write (not sticky): anyone can
    // rename it away and put their own in its place between the check and the write.
    let open = out.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let backups = open.join("backups");
    fs::create_dir(&backups).unwrap();
    fs::set_permissions(&backups, fs::Permissions::from_mode(0o700)).unwrap();
    // The same through a symlink kept in a private directory: the target's parents count.
    let private = out.path().join("private");
    fs::create_dir(&private).unwrap();
    let link = private.join("link");
    std::os::unix::fs::symlink(&backups, &link).unwrap();
    let says = format!(
        "{} (a parent of the backup's directory) is mode 0777 and not sticky: any account could rename the directory below it away and put its own in its place; no backup was written",
        open.display()
    );
    for args in [
        vec!["backup", "--output-dir", backups.to_str().unwrap()],
        vec!["backup", "--output-dir", link.to_str().unwrap()],
        vec![
            "backup",
            "--output",
            backups.join("b.dump").to_str().unwrap().to_owned().leak(),
        ],
        // Not there yet: refused before anything is created under it.
        vec![
            "backup",
            "--output-dir",
            open.join("new").to_str().unwrap().to_owned().leak(),
        ],
    ] {
        let run = db.xtask(&args);
        let err = run.failure().stderr();
        assert!(err.contains(&says), "{args:?}: {err}");
        assert!(names_in(&backups).is_empty(), "{:?}", names_in(&backups));
        assert_eq!(names_in(&open), ["backups"]);
    }
    // A sticky parent (like /tmp) is fine: only an entry's owner may rename it.
    fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
    db.xtask(&["backup", "--output-dir", backups.to_str().unwrap()])
        .success();
    assert_eq!(names_in(&backups).len(), 2);
}
