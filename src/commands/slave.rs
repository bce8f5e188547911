//! `raptiformica slave HOST`: provision an existing machine over SSH.

use std::time::Duration;

use crate::cli::SlaveArgs;
use crate::context::Context;
use crate::progress::Progress;
use crate::slave::{self, SlaveOptions};
use crate::ssh::Identity;
use crate::{artifacts, config};

pub fn run(ctx: &Context, args: SlaveArgs) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let progress = Progress::new(ctx.json);
    prepare(ctx, &progress)?;
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

/// What every slave needs locally first: the artifacts, and a config cache to hand on.
pub fn prepare(ctx: &Context, progress: &Progress) -> anyhow::Result<()> {
    if !artifacts::complete(ctx) {
        let step = progress.step("local", "fetch artifacts (first time only)");
        artifacts::ensure(ctx)?;
        step.done("");
    }
    // A cache to upload, complete and valid: the effective config as it is now, with the
    // cluster's gossip key made once, here, before any node needs it.
    config::edit::update(&ctx.paths, |m| {
        if !m.contains_key(crate::mesh::node::GOSSIP_KEY) {
            m.insert(
                crate::mesh::node::GOSSIP_KEY.into(),
                crate::consensus::agent::new_gossip_key()?.into(),
            );
        }
        Ok(())
    })
}
