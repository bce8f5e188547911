//! `raptiformica join HOST`: this machine asks the member HOST to slave it.

use crate::cli::args::JoinArgs;
use crate::config::context::Context;
use crate::provision::join::{JoinOptions, join};
use crate::sys::progress::Progress;

pub fn run(ctx: &Context, args: JoinArgs) -> anyhow::Result<()> {
    let progress = Progress::new(ctx.json);
    let opts = JoinOptions {
        server_type: args.server_type,
    };
    crate::cli::runtime::runtime()?.block_on(join(ctx, &progress, &args.host, args.port, &opts))?;
    eprintln!("joined the cluster through {}", args.host);
    Ok(())
}
