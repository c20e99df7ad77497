//! How an executable is linked, read from its ELF program headers: `dist` says what it
//! built from the file itself, not from the flags it passed (a linker can quietly fall
//! back to dynamic linking).

use std::path::Path;

/// `PT_INTERP`: the program header naming the dynamic loader (`ld-linux-x86-64.so.2`).
const PT_INTERP: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a 64-bit little-endian ELF executable")]
    NotElf64 { path: std::path::PathBuf },
}

/// Whether the executable at `path` needs a dynamic loader, and so the shared libraries
/// of the system it runs on. A static (or static-pie) executable has no `PT_INTERP`.
pub fn needs_dynamic_loader(path: &Path) -> Result<bool, ElfError> {
    let bytes = std::fs::read(path).map_err(|source| ElfError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    has_interpreter(&bytes).ok_or_else(|| ElfError::NotElf64 {
        path: path.to_path_buf(),
    })
}

/// `None` when `bytes` is not a 64-bit little-endian ELF file with whole program headers.
fn has_interpreter(bytes: &[u8]) -> Option<bool> {
    // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1).
    if bytes.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for index in 0..phnum {
        let p_type = u32_at(phoff.checked_add(index.checked_mul(phentsize)?)?)?;
        if p_type == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit ELF header followed by program headers of these types.
    fn elf_with(types: &[u32]) -> Vec<u8> {
        let mut bytes = vec![0u8; 64];
        bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bytes[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for p_type in types {
            let mut header = vec![0u8; 56];
            header[..4].copy_from_slice(&p_type.to_le_bytes());
            bytes.extend(header);
        }
        bytes
    }

    #[test]
    fn an_interpreter_header_means_dynamic_linking() {
        // PT_PHDR, PT_INTERP, PT_LOAD, PT_DYNAMIC: a dynamically linked executable.
        assert_eq!(has_interpreter(&elf_with(&[6, 3, 1, 2])), Some(true));
        // PT_LOAD, PT_DYNAMIC, PT_TLS: a static-pie executable.
        assert_eq!(has_interpreter(&elf_with(&[1, 2, 7])), Some(false));
    }

    #[test]
    fn what_is_not_a_whole_elf64_file_is_refused() {
        assert_eq!(has_interpreter(b"#!/bin/sh\n"), None);
        let mut cut = elf_with(&[1, 3]);
        cut.truncate(64 + 56 + 2);
        assert_eq!(has_interpreter(&cut), None);
    }

    #[test]
    fn the_system_shell_is_dynamically_linked() {
        // Debian's /bin/sh (dash) needs ld-linux; a check on a real file, not only ours.
        assert!(needs_dynamic_loader(Path::new("/bin/sh")).unwrap());
    }
}
