//! Reading an archive back before it is trusted: its hash, a full read (a custom
//! archive by `stream::read_custom`, else by pg_restore; a plain dump's completion
//! line), and the SQL its restore would run.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::stream::{read_custom, StreamError, Verdict};
use super::{plain_dump_is_complete, sha256_path, split_listing, DumpFormat};
use crate::pgtool::{stderr_tail, tool};
use crate::PgBinaries;

/// Why an archive cannot be trusted; callers say what that means for their command.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read {}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("hashing {} panicked", path.display())]
    HashPanicked { path: PathBuf },
    #[error("{} does not end with pg_dump's completion line (truncated?)", path.display())]
    Truncated { path: PathBuf },
    #[error("pg_restore cannot read all of {}:\n  {stderr_tail}", path.display())]
    Damaged { path: PathBuf, stderr_tail: String },
    #[error("{} cannot be read in full", path.display())]
    Stream {
        path: PathBuf,
        #[source]
        source: StreamError,
    },
    /// Running pg_restore, or its list files, failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The archive's SHA-256 and size, and whether `check_complete` could read it all,
/// computed side by side on two cores: both read every byte.
pub fn hash_and_read(
    binaries: &PgBinaries,
    format: DumpFormat,
    path: &Path,
    rows: &BTreeMap<String, i64>,
    on_read: &mut dyn FnMut(u64),
) -> (
    Result<(String, u64), ArchiveError>,
    Result<(), ArchiveError>,
) {
    std::thread::scope(|scope| {
        let hash = scope.spawn(|| sha256_path(path));
        let complete = check_complete(binaries, format, path, rows, on_read);
        let hash = match hash.join() {
            Ok(hash) => hash.map_err(|source| ArchiveError::Unreadable {
                path: path.to_path_buf(),
                source,
            }),
            Err(_) => Err(ArchiveError::HashPanicked {
                path: path.to_path_buf(),
            }),
        };
        (hash, complete)
    })
}

/// A full read of the archive: `pg_restore -l` alone accepts a truncated file. With
/// several tables' data, two `pg_restore -L` read halves of it at once (weighed by
/// `rows`, when known): inflating the data is what the read-back spends its time on.
/// `on_read` hears how many bytes of a custom archive we have read ourselves.
pub fn check_complete(
    binaries: &PgBinaries,
    format: DumpFormat,
    path: &Path,
    rows: &BTreeMap<String, i64>,
    on_read: &mut dyn FnMut(u64),
) -> Result<(), ArchiveError> {
    match format {
        DumpFormat::Plain => {
            if !plain_dump_is_complete(path)? {
                return Err(ArchiveError::Truncated {
                    path: path.to_path_buf(),
                });
            }
        }
        DumpFormat::Custom if reads_itself(path, on_read)? => {}
        DumpFormat::Custom | DumpFormat::Directory => {
            // A list reaches pg_restore on its stdin: no temp file to leave behind.
            let read = |list: Option<&str>| {
                let mut args = vec![OsString::from("--file=/dev/null")];
                if list.is_some() {
                    args.push("--use-list=/dev/stdin".into());
                }
                args.push(path.into());
                let expression = tool(binaries, "pg_restore", args)
                    .stdout_null()
                    .stderr_capture()
                    .unchecked();
                match list {
                    Some(list) => expression.stdin_bytes(list.as_bytes().to_vec()),
                    None => expression.stdin_null(),
                }
            };
            let listing = tool(binaries, "pg_restore", vec!["--list".into(), path.into()])
                .stdin_null()
                .stderr_capture()
                .unchecked()
                .stdout_capture()
                .run()?;
            let parts = listing
                .status
                .success()
                .then(|| split_listing(&String::from_utf8_lossy(&listing.stdout), rows, 2))
                .flatten();
            let outputs = match parts {
                None => vec![read(None).run()?],
                Some(parts) => {
                    let running = parts
                        .iter()
                        .map(|part| read(Some(part)).start())
                        .collect::<Result<Vec<_>, _>>()?;
                    running
                        .iter()
                        .map(|handle| handle.wait().cloned())
                        .collect::<Result<Vec<_>, _>>()?
                }
            };
            for output in outputs {
                if !output.status.success() {
                    return Err(ArchiveError::Damaged {
                        path: path.to_path_buf(),
                        stderr_tail: stderr_tail(&output.stderr),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Reads a custom archive in full ourselves: one pass, the data inflated, no COPY text
/// made and thrown away as pg_restore to /dev/null does. False when the archive is of a
/// version or compression only pg_restore reads.
fn reads_itself(path: &Path, on_read: &mut dyn FnMut(u64)) -> Result<bool, ArchiveError> {
    let unreadable = |source| ArchiveError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(unreadable)?;
    let counted = Counted {
        inner: file,
        read: 0,
        next: 0,
        on_read,
    };
    let mut input = io::BufReader::with_capacity(1 << 20, counted);
    match read_custom(&mut input, &mut |_| {}).map_err(unreadable)? {
        Ok(Verdict::Complete) => Ok(true),
        Ok(Verdict::NotRead(_)) => Ok(false),
        Err(source) => Err(ArchiveError::Stream {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A reader that tells `on_read` how far it got, every few MiB.
struct Counted<'a, R> {
    inner: R,
    read: u64,
    next: u64,
    on_read: &'a mut dyn FnMut(u64),
}

impl<R: io::Read> io::Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read >= self.next {
            (self.on_read)(self.read);
            self.next = self.read + (4 << 20);
        }
        Ok(n)
    }
}

/// The SQL a restore of the archive would run (the schema part): what the pre-flight
/// reads the roles and extensions from.
pub fn script_of(binaries: &PgBinaries, format: DumpFormat, path: &Path) -> io::Result<String> {
    match format {
        DumpFormat::Plain => fs::read_to_string(path),
        _ => tool(
            binaries,
            "pg_restore",
            vec!["--schema-only".into(), "--file=-".into(), path.into()],
        )
        .stdin_null()
        .stderr_capture()
        .read(),
    }
}
