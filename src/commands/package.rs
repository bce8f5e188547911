//! `raptiformica package`.

use crate::cli::PackageArgs;
use crate::context::Context;

pub fn run(_ctx: &Context, _args: PackageArgs) -> anyhow::Result<()> {
    anyhow::bail!("`package` is not built yet")
}
