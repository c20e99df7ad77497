//! `--database-url` and its fallbacks, resolved through the library's [`Target`].

pub(crate) use backend_schema::connection::Target;

use crate::flags::ConnectOpts;

impl ConnectOpts {
    pub(crate) fn resolve(&self) -> anyhow::Result<Target> {
        Ok(Target::resolve(
            self.database_url.as_deref(),
            &crate::project_root(),
        )?)
    }
}
