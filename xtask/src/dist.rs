//! `dist`: the shipped binary. The chain is checked and every revision's catalog built
//! (the library's `embed::write_bundle`), then this package is built in release with the
//! `embedded` feature, linked statically where the platform allows, and copied to
//! `target/dist/backend-schema-cli`, whose path is the last line of stdout.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use xshell::{cmd, Shell};

use crate::flags::Dist;

use crate::shipped::BINARY;
/// A target that links everything statically, used when its standard library is installed.
const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// The flags of a static glibc build: the C runtime (`libc.a`) linked in, and
/// `getrandom` called directly. Its default looks the function up with `dlsym`, which
/// finds nothing in a static binary, and falls back to reading `/dev/urandom`: a
/// SCRAM login then fails where there is no `/dev` (found by the test in a bare tree).
const CRT_STATIC: &str =
    "-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"";

/// How the binary is to be linked.
enum Linking {
    /// `--target x86_64-unknown-linux-musl`.
    Musl,
    /// `--target <host>` with `+crt-static`: glibc's static archives, on a `*-linux-gnu` host.
    StaticGlibc { host: String },
    /// The host's default, with the reason a static build is not possible here.
    Dynamic { why: String },
}

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
        let linking = linking(sh);
        let built = build(sh, &bundle, &target_dir, &linking)?;
        let binary = dist.join(BINARY);
        std::fs::copy(&built, &binary)
            .with_context(|| format!("copying {} to {}", built.display(), binary.display()))?;
        let size = std::fs::metadata(&binary)?.len();
        let dynamic = backend_schema::elf::needs_dynamic_loader(&binary)?;
        let said = match (&linking, dynamic) {
            (Linking::Musl, false) => format!("statically linked ({MUSL_TARGET})"),
            (Linking::StaticGlibc { host }, false) => format!(
                "statically linked against glibc ({host}, +crt-static): it needs no shared library; \
                 host names resolve through /etc/hosts and DNS (/etc/resolv.conf)"
            ),
            (Linking::Dynamic { why }, _) => format!(
                "dynamically linked against the build machine's glibc ({why}); \
                 run it on a system with this glibc or newer"
            ),
            (_, true) => anyhow::bail!(
                "{} was built for static linking but needs a dynamic loader; \
                 build with `cargo build --release --features embedded` and check the linker's output",
                binary.display()
            ),
        };
        eprintln!(
            "dist: {BINARY}, {:.1} MB, {said}; it needs pg_dump, pg_restore and psql on PATH for backup and restore",
            size as f64 / 1_000_000.0
        );
        println!("{}", binary.display());
        Ok(())
    }
}

/// The most static linking this machine can do: musl when its standard library is
/// installed, else glibc's static archives on a `*-linux-gnu` host that has them.
fn linking(sh: &Shell) -> Linking {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let musl = cmd!(sh, "{rustc} --print target-libdir --target {MUSL_TARGET}")
        .quiet()
        .ignore_stderr()
        .read()
        .ok();
    if musl.is_some_and(|libdir| Path::new(libdir.trim()).is_dir()) {
        return Linking::Musl;
    }
    let host = cmd!(sh, "{rustc} -vV")
        .quiet()
        .read()
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("host: ").map(str::to_string))
        });
    let Some(host) = host.filter(|host| host.ends_with("-linux-gnu")) else {
        return Linking::Dynamic {
            why: format!("the host is not *-linux-gnu and {MUSL_TARGET} is not installed"),
        };
    };
    // The C compiler is rustc's linker here; it knows where libc.a is, if anywhere.
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let libc_a = cmd!(sh, "{cc} -print-file-name=libc.a")
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_default();
    if Path::new(libc_a.trim()).is_absolute() && Path::new(libc_a.trim()).is_file() {
        Linking::StaticGlibc { host }
    } else {
        Linking::Dynamic {
            why: format!(
                "glibc's libc.a was not found (`apt-get install libc6-dev`), and {MUSL_TARGET} \
                 is not installed (`rustup target add {MUSL_TARGET}`)"
            ),
        }
    }
}

/// Builds the package in release with the bundle compiled in; the binary's path.
fn build(
    sh: &Shell,
    bundle: &Path,
    target_dir: &Path,
    linking: &Linking,
) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = match linking {
        Linking::Musl => Some(MUSL_TARGET.to_string()),
        Linking::StaticGlibc { host } => Some(host.clone()),
        Linking::Dynamic { .. } => None,
    };
    let target_args: Vec<&str> = match &target {
        Some(target) => vec!["--target", target],
        None => Vec::new(),
    };
    let _env = sh.push_env(backend_schema::embed::BUNDLE_ENV, bundle);
    // With an explicit --target, RUSTFLAGS reach only the target's artifacts: build
    // scripts and proc macros stay dynamically linked, as they must to run here.
    let _flags = matches!(linking, Linking::StaticGlibc { .. }).then(|| {
        match std::env::var_os("CARGO_ENCODED_RUSTFLAGS") {
            Some(encoded) => sh.push_env(
                "CARGO_ENCODED_RUSTFLAGS",
                appended(encoded, "\u{1f}", &CRT_STATIC.replace(' ', "\u{1f}")),
            ),
            None => sh.push_env(
                "RUSTFLAGS",
                match std::env::var_os("RUSTFLAGS") {
                    Some(user) => appended(user, " ", CRT_STATIC),
                    None => CRT_STATIC.into(),
                },
            ),
        }
    });
    cmd!(
        sh,
        "{cargo} build --release --package xtask --features embedded {target_args...}"
    )
    .run()
    .context("building the shipped binary (cargo build --release --features embedded)")?;
    let mut out = target_dir.to_path_buf();
    if let Some(target) = target {
        out.push(target);
    }
    Ok(out.join("release").join("xtask"))
}

/// `flags` with `more` after them, joined by `separator` unless `flags` is empty.
fn appended(flags: OsString, separator: &str, more: &str) -> OsString {
    let mut all = flags;
    if !all.is_empty() {
        all.push(separator);
    }
    all.push(more);
    all
}
