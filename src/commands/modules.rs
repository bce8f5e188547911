//! `raptiformica modules`.

use crate::cli::ModulesAction;
use crate::context::Context;

pub fn run(_ctx: &Context, _action: ModulesAction) -> anyhow::Result<()> {
    anyhow::bail!("`modules` is not built yet")
}
