//! `raptiformica slave HOST`: provision an existing machine over SSH.

use std::time::Duration;

use crate::cli::SlaveArgs;
use crate::context::Context;
use crate::progress::Progress;
use crate::slave::{self, SlaveOptions};
use crate::ssh::Identity;

pub fn run(ctx: &Context, args: SlaveArgs) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let progress = Progress::new(ctx.json);
    slave::prepare(ctx, &progress)?;
    let identity = Identity::ensure(ctx)?;
    let opts = SlaveOptions {
        server_type: args.server_type,
        provision: !args.steps.no_provision,
        assimilate: !args.steps.no_assimilate,
        patience: Duration::ZERO,
    };
    crate::runtime()?.block_on(slave::slave(
        ctx, &config, &identity, &progress, &args.host, args.port, &opts,
    ))
}
