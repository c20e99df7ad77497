//! `dist`: the shipped binary. The chain is checked and every revision's catalog built
//! (the library's `embed::write_bundle`), then this package is built in release with the
//! `embedded` feature and copied to `target/dist/backend-schema-cli`, whose path is the
//! last line of stdout.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use xshell::{cmd, Shell};

use crate::flags::Dist;

use crate::shipped::BINARY;
/// A target that links everything statically, used when installed.
const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

impl Dist {
    pub(crate) fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let graph = self.source.load(sh)?;
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| sh.current_dir().join("target"));
        let dist = target_dir.join("dist");
        eprintln!(
            "dist: {} migration(s) from {}; building each revision's catalog in a throwaway cluster",
            graph.migrations().len(),
            graph.dir().display()
        );
        let bundle = backend_schema::embed::write_bundle(&graph, &dist.join("bundle"))
            .context("preparing the migrations and catalogs to embed")?;
        let static_target = static_target(sh);
        let built = build(sh, &bundle, &target_dir, static_target)?;
        let binary = dist.join(BINARY);
        std::fs::copy(&built, &binary)
            .with_context(|| format!("copying {} to {}", built.display(), binary.display()))?;
        let size = std::fs::metadata(&binary)?.len();
        let linking = match static_target {
            Some(target) => format!("statically linked ({target})"),
            None => format!(
                "dynamically linked against the build machine's glibc ({STATIC_TARGET} is not installed: \
                 `rustup target add {STATIC_TARGET}` for a static binary); run it on a system with this glibc or newer"
            ),
        };
        eprintln!(
            "dist: {BINARY}, {:.1} MB, {linking}; it needs pg_dump, pg_restore and psql on PATH for backup and restore",
            size as f64 / 1_000_000.0
        );
        println!("{}", binary.display());
        Ok(())
    }
}

/// The static target when its standard library is installed.
fn static_target(sh: &Shell) -> Option<&'static str> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let libdir = cmd!(sh, "{rustc} --print target-libdir --target {STATIC_TARGET}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok()?;
    Path::new(libdir.trim()).is_dir().then_some(STATIC_TARGET)
}

/// Builds the package in release with the bundle compiled in; the binary's path.
fn build(
    sh: &Shell,
    bundle: &Path,
    target_dir: &Path,
    static_target: Option<&str>,
) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_args: Vec<&str> = match static_target {
        Some(target) => vec!["--target", target],
        None => Vec::new(),
    };
    let _env = sh.push_env(backend_schema::embed::BUNDLE_ENV, bundle);
    cmd!(
        sh,
        "{cargo} build --release --package xtask --features embedded {target_args...}"
    )
    .run()
    .context("building the shipped binary (cargo build --release --features embedded)")?;
    let mut out = target_dir.to_path_buf();
    if let Some(target) = static_target {
        out.push(target);
    }
    Ok(out.join("release").join("xtask"))
}
