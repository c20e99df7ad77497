//! `restore --create` in one pass over a custom archive: pg_restore reads it from a pipe
//! as we hash it and read it in full (`stream::read_custom_gated`), and the bytes it
//! needs to finish its last block, and so to commit its one transaction, are held back
//! until the hash matched the manifest and the read found the archive complete. A
//! failed check closes the pipe instead: pg_restore stops without a commit, and the
//! caller drops the database it created.

use std::cell::Cell;
use std::ffi::OsString;
use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::archive::ArchiveError;
use super::restore::{pg_restore_args, ArchiveCheck, CheckError, RestoreError, RestoreOptions};
use super::stream::{not_read_by_us, read_custom_gated, Verdict};
use super::{DumpFormat, Manifest};
use crate::database_url::DatabaseUrl;
use crate::pgtool::{libpq, stderr_tail};
use crate::text::hex;
use crate::PgBinaries;

/// Whether `restore_as_read` can restore this archive with these options: a custom
/// archive whose version and compression we read, one job, into a new database
/// (nothing to clean, no staging). Everything else is checked before it is restored.
pub fn restores_as_read(
    format: DumpFormat,
    path: &Path,
    options: &RestoreOptions,
) -> io::Result<bool> {
    if format != DumpFormat::Custom || options.jobs > 1 || options.clean || options.replace_database
    {
        return Ok(false);
    }
    let mut input = BufReader::new(fs::File::open(path)?);
    Ok(not_read_by_us(&mut input)?.is_none())
}

#[derive(Debug, thiserror::Error)]
pub enum AsReadError {
    /// The archive failed its check: pg_restore was stopped before it could commit.
    #[error(transparent)]
    Check(#[from] CheckError),
    /// The archive checked out; pg_restore failed (its one transaction rolled back).
    #[error(transparent)]
    Restore(#[from] RestoreError),
}

/// Restores `path` into the new, empty database `url` names with one
/// `pg_restore --single-transaction` reading the archive from a pipe, as the archive
/// is hashed and read in full: see the module's comment for why a damaged archive
/// cannot commit. `progress` hears the bytes read and, before the commit is let
/// through, that the hash matched.
pub fn restore_as_read(
    binaries: &PgBinaries,
    path: &Path,
    url: &DatabaseUrl,
    manifest: Option<&Manifest>,
    options: &RestoreOptions,
    progress: &mut dyn FnMut(ArchiveCheck),
) -> Result<(), AsReadError> {
    let unreadable = |source| {
        CheckError::Hash(ArchiveError::Unreadable {
            path: path.to_path_buf(),
            source,
        })
    };
    let file = fs::File::open(path).map_err(unreadable)?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    if manifest.is_none() {
        progress(ArchiveCheck::NoManifest);
    }
    let (pipe_out, pipe_in) = os_pipe::pipe().map_err(RestoreError::Io)?;
    widen(&pipe_in);
    let args: Vec<OsString> = pg_restore_args(&RestoreOptions {
        jobs: 1,
        ..*options
    });
    let handle = libpq(binaries, "pg_restore", args, url)
        .stdin_file(pipe_out)
        .stdout_null()
        .stderr_capture()
        .unchecked()
        .start()
        .map_err(RestoreError::Io)?;
    let safe = Cell::new(0u64);
    let mut on_read = |bytes| progress(ArchiveCheck::Read { bytes, total });
    let mut gate = Gate {
        file,
        hasher: Sha256::new(),
        pending: Vec::new(),
        handed_on: 0,
        read: 0,
        next_report: 0,
        safe: &safe,
        out: Some(pipe_in),
        on_read: &mut on_read,
    };
    let checked = check(&mut gate, path, manifest, &safe);
    if checked.is_ok() {
        gate.hand_on(u64::MAX);
    }
    // Closing the pipe ends pg_restore's input: after everything, it commits; short of
    // its last block's end, it fails and its transaction rolls back.
    drop(gate);
    let output = handle.wait().map_err(RestoreError::Io)?.clone();
    checked?;
    if manifest.is_some() {
        progress(ArchiveCheck::HashMatches);
    }
    if !output.status.success() {
        return Err(RestoreError::Failed {
            program: "pg_restore",
            stderr_tail: stderr_tail(&output.stderr),
        }
        .into());
    }
    Ok(())
}

/// The full read through `gate` and, with a manifest, the hash of every byte against it.
fn check(
    gate: &mut Gate<'_>,
    path: &Path,
    manifest: Option<&Manifest>,
    safe: &Cell<u64>,
) -> Result<(), CheckError> {
    let unreadable = |source| {
        CheckError::Hash(ArchiveError::Unreadable {
            path: path.to_path_buf(),
            source,
        })
    };
    let verdict = {
        let mut input = BufReader::with_capacity(1 << 20, &mut *gate);
        read_custom_gated(&mut input, &mut |_| {}, &mut |at| safe.set(at)).map_err(unreadable)?
    };
    // Against the manifest, the hash names what is wrong better than the read's first
    // failure does: read what is left, so both have seen every byte.
    let complete = match verdict {
        Ok(Verdict::Complete) => Ok(()),
        Ok(Verdict::NotRead(format)) => Err(ArchiveError::Damaged {
            path: path.to_path_buf(),
            stderr_tail: format!("{format}, which the check does not read"),
        }),
        Err(source) => Err(ArchiveError::Stream {
            path: path.to_path_buf(),
            source,
        }),
    };
    if manifest.is_some() {
        io::copy(&mut *gate, &mut io::sink()).map_err(unreadable)?;
    }
    if let Some(manifest) = manifest {
        let sha256 = hex(&gate.hasher.clone().finalize());
        if sha256 != manifest.sha256 {
            return Err(CheckError::HashMismatch {
                path: path.to_path_buf(),
                sha256,
                expected: manifest.sha256.clone(),
            });
        }
    }
    complete.map_err(CheckError::Damaged)
}

/// The archive file as the check reads it: hashed, and handed on to pg_restore only as
/// far as `safe` allows; what is not yet safe waits in `pending`.
struct Gate<'a> {
    file: fs::File,
    hasher: Sha256,
    pending: Vec<u8>,
    /// Bytes written to pg_restore so far.
    handed_on: u64,
    /// Bytes read from the file so far.
    read: u64,
    next_report: u64,
    safe: &'a Cell<u64>,
    /// pg_restore's stdin; `None` once it stopped taking (it failed; the check goes on,
    /// so a damaged archive is named as such rather than by pg_restore's error).
    out: Option<os_pipe::PipeWriter>,
    on_read: &'a mut dyn FnMut(u64),
}

impl Gate<'_> {
    /// Writes what is pending up to byte `upto` of the archive to pg_restore.
    fn hand_on(&mut self, upto: u64) {
        let ready = usize::try_from(upto.saturating_sub(self.handed_on))
            .unwrap_or(usize::MAX)
            .min(self.pending.len());
        if ready == 0 {
            return;
        }
        if let Some(out) = self.out.as_mut() {
            if out.write_all(&self.pending[..ready]).is_err() {
                self.out = None;
            }
        }
        self.pending.drain(..ready);
        self.handed_on += ready as u64;
    }
}

impl Read for Gate<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.hand_on(self.safe.get());
        let n = self.file.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.pending.extend_from_slice(&buf[..n]);
        self.read += n as u64;
        if self.read >= self.next_report {
            (self.on_read)(self.read);
            self.next_report = self.read + (4 << 20);
        }
        Ok(n)
    }
}

/// A larger pipe buffer (1 MiB, the unprivileged limit): fewer switches between us and
/// pg_restore. Only a hint: the default works.
fn widen(pipe: &os_pipe::PipeWriter) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: F_SETPIPE_SZ on a pipe we own; a failure changes nothing.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}
