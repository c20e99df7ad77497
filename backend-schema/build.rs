//! The build's code ID: a hash of this library's sources, manifest and the workspace's
//! lock file, so `verify`'s cache (`verify/cache.rs`) misses whenever the code that
//! seeds, migrates and compares may have changed, without hashing the binary at run time.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("the library's sources are readable")
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let mut inputs = Vec::new();
    files(&manifest.join("src"), &mut inputs);
    inputs.push(manifest.join("Cargo.toml"));
    let lock = manifest.join("../Cargo.lock");
    if lock.is_file() {
        inputs.push(lock);
    }
    let mut hash = Sha256::new();
    for path in &inputs {
        let relative = path.strip_prefix(&manifest).unwrap_or(path);
        let bytes = std::fs::read(path).expect("a source file is readable");
        hash.update(relative.to_string_lossy().as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    let id: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=BACKEND_SCHEMA_CODE_ID={id}");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=Cargo.toml");
    println!("cargo:rerun-if-changed=../Cargo.lock");
}
