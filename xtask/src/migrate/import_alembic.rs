//! `migrate import-alembic`: flags in, the library's import, the verdict table out.

use std::path::Path;

use anyhow::Context as _;
use backend_schema::alembic_import::{
    import_alembic, sweep_staging, ImportError, ImportRequest, Table,
};
use xshell::Shell;

pub(crate) fn import(
    sh: &Shell,
    alembic_dir: &Path,
    into: Option<&Path>,
    alembic: Option<&Path>,
) -> anyhow::Result<()> {
    // The paths given are the caller's (made absolute by the flags); only the default
    // destination is the workspace's.
    let source = alembic_dir.to_path_buf();
    let into = into.map_or_else(|| sh.current_dir().join("migrations"), Path::to_path_buf);
    let alembic = alembic.map(Path::to_path_buf);
    eprintln!(
        "importing {} into {} (every revision rendered by Alembic, then proven on a throwaway PostgreSQL)",
        source.display(),
        into.display()
    );
    for swept in sweep_staging(&into) {
        eprintln!(
            "removed {}, the staging directory of an import that was killed",
            swept.display()
        );
    }
    let report = match import_alembic(&ImportRequest {
        source: &source,
        into: &into,
        alembic: alembic.as_deref(),
    }) {
        Ok(report) => report,
        Err(err @ (ImportError::Refused { .. } | ImportError::Proof { .. })) => {
            return Err(err.into())
        }
        Err(err) => return Err(err).with_context(|| format!("importing {}", source.display())),
    };
    println!("{}", Table(&report.verdicts));
    eprintln!("alembic: {}", report.alembic);
    eprintln!(
        "imported {} revision(s) from {} into {}; head: {}",
        report.verdicts.len(),
        report.versions.display(),
        report.into.display(),
        report.heads.join(", ")
    );
    eprintln!(
        "alembic_version is unchanged by the import: a database Alembic migrated is already at these revisions (check with `cargo xtask migrate current --migrations {}`)",
        report.into.display()
    );
    Ok(())
}
