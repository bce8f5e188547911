//! `raptiformica inject`.

use crate::cli::InjectArgs;
use crate::context::Context;

pub fn run(_ctx: &Context, _args: InjectArgs) -> anyhow::Result<()> {
    anyhow::bail!("`inject` is not built yet")
}
