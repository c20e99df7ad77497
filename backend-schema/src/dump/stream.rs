//! Checking a dump while pg_dump writes it, in the same pass that stores and hashes it:
//! `Tee` copies pg_dump's stdout to the file and the hash as it is read, and
//! `read_custom` reads the custom format's stream as pg_restore would (header, table of
//! contents, every data block's chunks inflated to their end), so no read-back follows.
//! A version or compression we do not read is not guessed at: the caller falls back to
//! the read-back by pg_restore (`archive::check_complete`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use flate2::{Decompress, FlushDecompress, Status};
use sha2::{Digest, Sha256};

use crate::text::hex;

/// The largest chunk pg_dump can write: its lengths are 4-byte integers.
const MAX_CHUNK: u64 = u32::MAX as u64;

/// Reads through to `out` and a SHA-256, counting bytes.
pub struct Tee<R, W> {
    inner: R,
    out: W,
    hasher: Sha256,
    size: u64,
}

impl<R: Read, W: Write> Tee<R, W> {
    pub fn new(inner: R, out: W) -> Self {
        Tee {
            inner,
            out,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Bytes passed through so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads what is left to its end (what a reader that stopped early did not), and
    /// returns the hash, the size and the writer.
    pub fn finish(mut self) -> io::Result<(String, u64, W)> {
        io::copy(&mut self, &mut io::sink())?;
        self.out.flush()?;
        Ok((hex(&self.hasher.finalize()), self.size, self.out))
    }
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// What reading the stream found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every table-of-contents entry with data had its block, each block ended where
    /// its compression stream did, and nothing followed the last one.
    Complete,
    /// A format we do not read ourselves (named): the file needs the read-back.
    NotRead(String),
}

/// Why the stream is not a complete archive.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("the archive ends early (truncated){0}")]
    Truncated(String),
    #[error("the archive is damaged: {0}")]
    Damaged(String),
}

/// A data block starting, for progress: the table (or "large objects") it holds.
pub type OnBlock<'a> = &'a mut dyn FnMut(&str);

/// How far the stream may be handed on to a consumer that must not be able to finish
/// before the caller has its verdict (`pg_restore` committing): every byte before the
/// position. It never passes the last byte of the table of contents or of a data block
/// until what follows has been read and is valid (the next block's header), so a
/// consumer that stops after the archive's last block cannot complete that block, nor
/// an archive without data its table of contents, before the end of the input is seen.
pub type OnSafe<'a> = &'a mut dyn FnMut(u64);

const MAGIC: &[u8; 5] = b"PGDMP";
const FORMAT_CUSTOM: u8 = 1;
const BLK_DATA: u8 = 1;
const BLK_BLOBS: u8 = 3;
const OFFSET_POS_NOT_SET: u8 = 1;
const OFFSET_POS_SET: u8 = 2;
const OFFSET_NO_DATA: u8 = 3;
/// The entries pg_dump 12-16 writes a data block for (each with a data dumper).
const DATA_DESCS: &[&str] = &["TABLE DATA", "BLOBS"];

/// Reads a custom-format archive from `input` to its end, calling `on_block` as each
/// data block starts. Read errors of `input` itself (the disk, the pipe) are `Err` of
/// the outer result.
pub fn read_custom(
    input: &mut impl Read,
    on_block: OnBlock<'_>,
) -> io::Result<Result<Verdict, StreamError>> {
    read_custom_gated(input, on_block, &mut |_| {})
}

/// [`read_custom`], telling `on_safe` how much of the stream a consumer may have so
/// far (see [`OnSafe`]).
pub fn read_custom_gated(
    input: &mut impl Read,
    on_block: OnBlock<'_>,
    on_safe: OnSafe<'_>,
) -> io::Result<Result<Verdict, StreamError>> {
    let mut reader = Reader {
        input,
        int_size: 4,
        off_size: 8,
        at: 0,
    };
    match reader.archive(on_block, on_safe) {
        Ok(verdict) => Ok(Ok(verdict)),
        Err(Failure::Io(err)) => Err(err),
        Err(Failure::Bad(err)) => Ok(Err(err)),
    }
}

/// The version or compression of a custom archive that [`read_custom`] leaves to
/// pg_restore, read from its header; `None` when it reads the archive (a damaged or cut
/// header included: the full read names what is wrong).
pub fn not_read_by_us(input: &mut impl Read) -> io::Result<Option<String>> {
    let mut reader = Reader {
        input,
        int_size: 4,
        off_size: 8,
        at: 0,
    };
    match reader.header() {
        Ok(Err(format)) => Ok(Some(format)),
        Ok(Ok(_)) | Err(Failure::Bad(_)) => Ok(None),
        Err(Failure::Io(err)) => Err(err),
    }
}

enum Failure {
    Io(io::Error),
    Bad(StreamError),
}

impl From<io::Error> for Failure {
    fn from(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::UnexpectedEof {
            Failure::Bad(StreamError::Truncated(String::new()))
        } else {
            Failure::Io(err)
        }
    }
}

fn damaged(text: String) -> Failure {
    Failure::Bad(StreamError::Damaged(text))
}

struct Reader<'r, R> {
    input: &'r mut R,
    int_size: usize,
    off_size: usize,
    /// Bytes read so far, for messages.
    at: u64,
}

/// A table-of-contents entry that has a data block.
struct Entry {
    name: String,
}

impl<R: Read> Reader<'_, R> {
    fn archive(&mut self, on_block: OnBlock<'_>, on_safe: OnSafe<'_>) -> Result<Verdict, Failure> {
        let compressed = match self.header()? {
            Ok(compressed) => compressed,
            Err(format) => return Ok(Verdict::NotRead(format)),
        };
        let entries = self.toc()?;
        self.blocks(compressed, &entries, on_block, on_safe)?;
        Ok(Verdict::Complete)
    }

    /// The header up to the table of contents: whether the data is compressed, or the
    /// version or compression we leave to pg_restore.
    fn header(&mut self) -> Result<Result<bool, String>, Failure> {
        let mut magic = [0u8; 5];
        self.exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(damaged("it does not start with PGDMP".into()));
        }
        let version = (self.byte()?, self.byte()?, self.byte()?);
        self.int_size = self.byte()? as usize;
        self.off_size = self.byte()? as usize;
        let format = self.byte()?;
        if format != FORMAT_CUSTOM {
            return Err(damaged(format!("format byte {format}, not custom")));
        }
        if !(1..=8).contains(&self.int_size) || !(1..=16).contains(&self.off_size) {
            return Err(damaged(format!(
                "integer size {} and offset size {}",
                self.int_size, self.off_size
            )));
        }
        // 1.14 is pg_dump 12 to 15 (a compression level), 1.15 is 16 (an algorithm).
        let compressed = match version {
            (1, 14, _) => self.int()? != 0,
            (1, 15, _) => match self.byte()? {
                0 => false,
                1 => true,
                other => return Ok(Err(format!("compression algorithm {other}"))),
            },
            (major, minor, _) => return Ok(Err(format!("archive version {major}.{minor}"))),
        };
        for _ in 0..7 {
            self.int()?; // the creation time
        }
        for _ in 0..3 {
            self.string()?; // database, server and pg_dump versions
        }
        Ok(Ok(compressed))
    }

    /// The blocks after the table of contents, each checked against it.
    fn blocks(
        &mut self,
        compressed: bool,
        entries: &BTreeMap<i64, Entry>,
        on_block: OnBlock<'_>,
        on_safe: OnSafe<'_>,
    ) -> Result<(), Failure> {
        let mut seen = BTreeSet::new();
        loop {
            let mut kind = [0u8; 1];
            if self.input.read(&mut kind)? == 0 {
                break;
            }
            self.at += 1;
            let id = self.int()?;
            let Some(entry) = entries.get(&id) else {
                return Err(damaged(format!(
                    "a data block for entry {id}, which the table of contents has no data for, at byte {}",
                    self.at
                )));
            };
            if !seen.insert(id) {
                return Err(damaged(format!("entry {id}'s data appears twice")));
            }
            if ![BLK_DATA, BLK_BLOBS].contains(&kind[0]) {
                return Err(damaged(format!(
                    "block type {} at byte {}",
                    kind[0], self.at
                )));
            }
            // A valid header: what came before it (the previous block's end, or the
            // table of contents) is not the archive's end.
            on_safe(self.at);
            on_block(&entry.name);
            if kind[0] == BLK_DATA {
                self.chunks(compressed, &entry.name, on_safe)?;
            } else {
                loop {
                    let oid = self.int()?;
                    if oid == 0 {
                        break;
                    }
                    self.chunks(compressed, &format!("large object {oid}"), on_safe)?;
                }
            }
        }
        let missing: Vec<&str> = entries
            .iter()
            .filter(|(id, _)| !seen.contains(*id))
            .map(|(_, entry)| entry.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(Failure::Bad(StreamError::Truncated(format!(
                ": no data for {}",
                missing.join(", ")
            ))));
        }
        Ok(())
    }

    /// The table of contents: the entries that have data, by dump ID.
    fn toc(&mut self) -> Result<BTreeMap<i64, Entry>, Failure> {
        let count = self.int()?;
        let mut with_data = BTreeMap::new();
        for _ in 0..count {
            let id = self.int()?;
            let had_dumper = self.int()? != 0;
            self.string()?; // table oid
            self.string()?; // oid
            let tag = self.string()?.unwrap_or_default();
            let desc = self.string()?.unwrap_or_default();
            self.int()?; // section
            for _ in 0..3 {
                self.string()?; // definition, drop, copy statements
            }
            let namespace = self.string()?.unwrap_or_default();
            for _ in 0..4 {
                self.string()?; // tablespace, access method, owner, "with oids"
            }
            while self.string()?.is_some() {} // dependencies
            let flag = self.byte()?;
            let mut offset = vec![0u8; self.off_size];
            self.exact(&mut offset)?;
            match flag {
                // pg_restore reads a block only for an entry that had a data dumper
                // (table data, large objects): any other entry's block it never reads,
                // so it could commit before the gate held back that block's end.
                // pg_dump writes no such entry.
                OFFSET_POS_NOT_SET | OFFSET_POS_SET
                    if !had_dumper || !DATA_DESCS.contains(&desc.as_str()) =>
                {
                    return Err(damaged(format!(
                        "entry {id} ({desc} {tag}) has a data block that pg_restore would not read"
                    )));
                }
                OFFSET_POS_NOT_SET | OFFSET_POS_SET => {
                    let name = match desc.as_str() {
                        "TABLE DATA" if namespace.is_empty() || namespace == "public" => tag,
                        "TABLE DATA" => format!("{namespace}.{tag}"),
                        _ => format!("{desc} {tag}").to_lowercase(),
                    };
                    with_data.insert(id, Entry { name });
                }
                OFFSET_NO_DATA => {}
                other => return Err(damaged(format!("entry {id} has data flag {other}"))),
            }
        }
        Ok(with_data)
    }

    /// One block's chunks to the zero length that ends them, inflated when compressed:
    /// the compression stream must end exactly with the last chunk.
    /// Each chunk, once read (and inflated without error), may be handed on: the
    /// zero length that ends the block is not, until the next header is read.
    fn chunks(&mut self, compressed: bool, what: &str, on_safe: OnSafe<'_>) -> Result<(), Failure> {
        let mut inflate = compressed.then(|| Decompress::new(true));
        let mut out = vec![0u8; 256 * 1024];
        let mut ended = false;
        loop {
            let length = self.int()?;
            if length == 0 {
                break;
            }
            // pg_dump writes a chunk per output buffer (compressed) or per row (not), never
            // past a 4-byte length; a larger claim is damage.
            let length = u64::try_from(length)
                .ok()
                .filter(|&length| length <= MAX_CHUNK)
                .ok_or_else(|| damaged(format!("{what}: a chunk of {length} bytes")))?;
            // A chunk's bytes short of its last can go on as they are read: nothing can
            // end with them. So a consumer holds at most one piece, never a whole chunk
            // a crafted length made as large as the file.
            let (start, mut consumed) = (self.at, 0u64);
            self.pieces(length, &mut |mut input| {
                consumed += input.len() as u64;
                if consumed < length {
                    on_safe(start + consumed);
                }
                let Some(inflate) = inflate.as_mut() else {
                    return Ok(());
                };
                while !input.is_empty() {
                    if ended {
                        return Err(damaged(format!("{what}: data after its end")));
                    }
                    let before = inflate.total_in();
                    let status = inflate
                        .decompress(input, &mut out, FlushDecompress::None)
                        .map_err(|err| damaged(format!("{what}: {err}")))?;
                    input = &input[(inflate.total_in() - before) as usize..];
                    ended = status == Status::StreamEnd;
                }
                Ok(())
            })?;
            on_safe(self.at);
        }
        if inflate.is_some() && !ended {
            return Err(damaged(format!("{what}: its compressed data stops early")));
        }
        Ok(())
    }

    /// `length` bytes handed to `each` a bounded piece at a time: a length field is only
    /// a claim, so no buffer of its size is made before the bytes behind it arrive (a
    /// crafted archive of a few bytes could otherwise ask for gigabytes).
    fn pieces(
        &mut self,
        length: u64,
        each: &mut dyn FnMut(&[u8]) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let mut buf = [0u8; 64 * 1024];
        let mut left = length;
        while left > 0 {
            let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
            self.exact(&mut buf[..n])?;
            each(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), Failure> {
        self.input.read_exact(buf)?;
        self.at += buf.len() as u64;
        Ok(())
    }

    fn byte(&mut self) -> Result<u8, Failure> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    /// pg_dump's integer: a sign byte, then `int_size` bytes, least significant first.
    fn int(&mut self) -> Result<i64, Failure> {
        let negative = self.byte()? != 0;
        let mut value: i64 = 0;
        for i in 0..self.int_size {
            value |= i64::from(self.byte()?) << (8 * i);
        }
        if !negative {
            return Ok(value);
        }
        // Eight bytes can hold -2^63, which has no negation.
        value
            .checked_neg()
            .ok_or_else(|| damaged(format!("an integer out of range at byte {}", self.at)))
    }

    /// pg_dump's string: a length (-1 for NULL), then the bytes.
    fn string(&mut self) -> Result<Option<String>, Failure> {
        let length = self.int()?;
        if length < 0 {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        self.pieces(length as u64, &mut |piece| {
            bytes.extend_from_slice(piece);
            Ok(())
        })?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tee_stores_and_hashes_what_passes_through() {
        let mut tee = Tee::new(&b"hello world"[..], Vec::new());
        let mut first = [0u8; 5];
        tee.read_exact(&mut first).unwrap();
        let (hash, size, out) = tee.finish().unwrap();
        assert_eq!(out, b"hello world");
        assert_eq!(size, 11);
        assert_eq!(
            hash,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }

    #[test]
    fn garbage_is_damaged_and_a_bare_magic_truncated() {
        let verdict = read_custom(&mut &b"-- PostgreSQL"[..], &mut |_| {}).unwrap();
        assert!(
            matches!(verdict, Err(StreamError::Damaged(_))),
            "{verdict:?}"
        );
        let verdict = read_custom(&mut &b"PGDMP\x01\x0e"[..], &mut |_| {}).unwrap();
        assert!(
            matches!(verdict, Err(StreamError::Truncated(_))),
            "{verdict:?}"
        );
    }

    #[test]
    fn an_unknown_version_is_left_to_the_read_back() {
        let verdict = read_custom(&mut &b"PGDMP\x01\x63\x00\x04\x08\x01"[..], &mut |_| {});
        assert_eq!(
            verdict.unwrap(),
            Ok(Verdict::NotRead("archive version 1.99".into()))
        );
    }
}
