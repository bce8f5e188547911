//! `raptiformica attach [USER@]HOST`: drive a cluster from this machine too, through a member.

use crate::cli::args::AttachArgs;
use crate::cli::runtime::runtime;
use crate::cluster::attach;
use crate::config::context::Context;
use crate::remote::login::Login;
use crate::sys::progress::Progress;

pub fn run(ctx: &Context, args: AttachArgs) -> anyhow::Result<()> {
    let (login, host) = Login::split_for_root(&args.host, args.sudo, "on the member")?;
    crate::config::known::check_host(&host).map_err(|e| anyhow::anyhow!("{e}"))?;
    let progress = Progress::new(ctx.json);
    let attached = runtime()?.block_on(attach::attach(
        ctx,
        &progress,
        &login,
        &host,
        args.port,
        args.host_key.as_deref(),
    ))?;
    if ctx.json {
        super::print_json(&attached);
        return Ok(());
    }
    eprintln!(
        "attached as workstation {} through node {} ({}:{}): {} node(s) known, {} alive member(s); its key is \
         authorized there and every node's agent takes it up",
        attached.workstation, attached.node, attached.host, attached.port, attached.nodes, attached.alive
    );
    Ok(())
}
