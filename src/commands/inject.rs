//! `raptiformica inject HOST [-p PORT]`: add a machine that runs raptiformica already as a
//! neighbour and mesh it (no upload, no provisioning).

use crate::cli::InjectArgs;
use crate::context::Context;
use crate::progress::Progress;
use crate::ssh::Identity;

pub fn run(ctx: &Context, args: InjectArgs) -> anyhow::Result<()> {
    let progress = Progress::new(ctx.json);
    let identity = Identity::ensure(ctx)?;
    crate::runtime()?.block_on(crate::slave::inject(ctx, &identity, &progress, &args.host, args.port))?;
    Ok(())
}
