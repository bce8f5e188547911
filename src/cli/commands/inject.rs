//! `raptiformica inject HOST [-p PORT]`: add a machine that runs raptiformica already as a
//! neighbour and mesh it (no upload, no provisioning).

use crate::cli::args::InjectArgs;
use crate::config::context::Context;
use crate::remote::ssh::Identity;
use crate::sys::progress::Progress;

pub fn run(ctx: &Context, args: InjectArgs) -> anyhow::Result<()> {
    let progress = Progress::new(ctx.json);
    let identity = Identity::ensure(ctx)?;
    crate::cli::runtime::runtime()?.block_on(crate::provision::slave::inject(
        ctx, &identity, &progress, &args.host, args.port,
    ))?;
    Ok(())
}
