//! `raptiformica join HOST`: this machine asks the member HOST to slave it.

use crate::cli::args::JoinArgs;
use crate::config::context::Context;
use crate::provision::join::{JoinOptions, join};
use crate::sys::progress::Progress;

pub fn run(ctx: &Context, args: JoinArgs) -> anyhow::Result<()> {
    let progress = Progress::new(ctx.json);
    let (login, host) = crate::remote::login::Login::split_for_root(&args.host, args.sudo, "on the member")?;
    let opts = JoinOptions {
        server_type: args.server_type,
        login,
        user: args.user,
    };
    crate::cli::runtime::runtime()?.block_on(join(ctx, &progress, &host, args.port, &opts))?;
    eprintln!("joined the cluster through {host}");
    Ok(())
}
