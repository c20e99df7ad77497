//! `cargo xtask lint [REV...]`: the static safety rules, without a server, fast enough
//! for a pre-commit hook; findings printed as a compiler does, errors fail.

use anyhow::{bail, Context as _};
use backend_schema::graph::RevisionGraph;

use crate::findings;
use crate::flags::Lint;

impl Lint {
    pub(crate) fn run(self, sh: &xshell::Shell) -> anyhow::Result<()> {
        let dir = self.source.dir(sh);
        let graph = RevisionGraph::load(&dir)
            .with_context(|| format!("cannot read the migrations in {}", dir.display()))?;
        let mut report = backend_schema::lint::lint(&graph, &self.revisions)
            .with_context(|| format!("cannot lint the migrations in {}", dir.display()))?;
        findings::relative_files(&mut report.findings);
        findings::relative_files(report.allowed.iter_mut().map(|a| &mut a.finding));
        if let Some(path) = &self.json {
            let json = serde_json::to_string_pretty(&report)?;
            std::fs::write(path, json + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        print!("{}", findings::annotations(&report.findings));
        for finding in &report.findings {
            print!("{}", findings::render(finding, finding.severity.label()));
        }
        for allowed in &report.allowed {
            print!("{}", findings::render_allowed(allowed));
        }
        let errors = report.errors();
        let warnings = report.findings.len() - errors;
        println!(
            "lint: {} revision(s), {errors} error(s), {warnings} warning(s), {} allowed",
            if self.revisions.is_empty() {
                graph.migrations().len()
            } else {
                self.revisions.len()
            },
            report.allowed.len()
        );
        if errors > 0 || (self.strict && warnings > 0) {
            bail!("lint failed: fix the findings above or allow them with a reason (`-- xtask:allow RULE reason` above the statement, or lint.toml)");
        }
        Ok(())
    }
}
