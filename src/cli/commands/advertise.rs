//! `raptiformica advertise HOST [-p PORT]` (on a node): the address other nodes should use.

use anyhow::Context as _;

use crate::cli::args::AdvertiseArgs;
use crate::config::context::Context;

pub fn run(ctx: &Context, args: AdvertiseArgs) -> anyhow::Result<()> {
    let key = std::fs::read_to_string("/etc/ssh/ssh_host_ed25519_key.pub")
        .context("cannot read this machine's host key (/etc/ssh/ssh_host_ed25519_key.pub): is it a node?")?;
    let id = crate::sys::digest::node_id(&crate::sys::digest::host_key_fields(&key));
    let written = crate::cli::runtime::runtime()?.block_on(crate::provision::advertise::advertise(
        &ctx.paths, &id, &args.host, args.port,
    ))?;
    let how = match written {
        crate::config::shared::Written::Consul => "in the shared config",
        crate::config::shared::Written::CacheOnly => "cached; it reaches the shared config once consul answers",
        crate::config::shared::Written::Local => "cached; this machine is not in a cluster",
    };
    eprintln!("node {id} is advertised at {}:{} ({how})", args.host, args.port);
    Ok(())
}
