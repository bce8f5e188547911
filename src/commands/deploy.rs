//! `raptiformica deploy`.

use crate::cli::DeployArgs;
use crate::context::Context;

pub fn run(_ctx: &Context, _args: DeployArgs) -> anyhow::Result<()> {
    anyhow::bail!("`deploy` is not built yet")
}
