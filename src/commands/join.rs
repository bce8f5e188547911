//! `raptiformica join`.

use crate::cli::JoinArgs;
use crate::context::Context;

pub fn run(_ctx: &Context, _args: JoinArgs) -> anyhow::Result<()> {
    anyhow::bail!("`join` is not built yet")
}
