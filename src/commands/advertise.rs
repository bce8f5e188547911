//! `raptiformica advertise`.

use crate::cli::AdvertiseArgs;
use crate::context::Context;

pub fn run(_ctx: &Context, _args: AdvertiseArgs) -> anyhow::Result<()> {
    anyhow::bail!("`advertise` is not built yet")
}
