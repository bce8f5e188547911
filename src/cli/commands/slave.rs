//! `raptiformica slave HOST`: provision an existing machine over SSH.

use std::time::Duration;

use crate::cli::args::SlaveArgs;
use crate::config::context::Context;
use crate::provision::slave::{self, SlaveOptions};
use crate::remote::ssh::Identity;
use crate::sys::progress::Progress;

pub fn run(ctx: &Context, args: SlaveArgs) -> anyhow::Result<()> {
    let config = ctx.config()?;
    let progress = Progress::new(ctx.json);
    // From a member, the member's artifacts, token and gossip key serve: nothing to make here.
    if !args.from_member {
        slave::prepare(ctx, &progress)?;
    }
    let identity = Identity::ensure(ctx)?;
    let (login, host) = crate::remote::ssh::Login::split_for_root(
        &args.host,
        args.sudo,
        "there (raptiformica runs as root on a node)",
    )?;
    anyhow::ensure!(
        !args.ask_sudo_password || login.sudo,
        "--ask-sudo-password is for a sudo user: `slave USER@{host} --sudo --ask-sudo-password`"
    );
    let sudo_password = if args.ask_sudo_password {
        Some(crate::remote::sudo::SudoPassword::ask(&login.user, &host)?)
    } else {
        None
    };
    let opts = SlaveOptions {
        login,
        via: args.via.iter().map(|h| jump(h)).collect::<anyhow::Result<_>>()?,
        host_key: args.host_key,
        skip_if_healthy: false,
        server_type: args.server_type,
        provision: !args.steps.no_provision,
        assimilate: !args.steps.no_assimilate,
        after_assimilate: !args.steps.no_after_assimilate,
        after_mesh: !args.steps.no_after_mesh,
        patience: Duration::ZERO,
        machine: None,
        sudo_password,
    };
    if args.from_member {
        let member = crate::cli::runtime::runtime()?.block_on(crate::provision::relay::slave_from_member(
            ctx, &identity, &progress, &host, args.port, &opts,
        ))?;
        eprintln!("slaved {host}:{} from node {member}", args.port);
        return Ok(());
    }
    crate::cli::runtime::runtime()?.block_on(slave::slave(
        ctx, &config, &identity, &progress, &host, args.port, &opts,
    ))?;
    Ok(())
}

/// A jump host as given (`host`, `host:port`, `[v6]:port`, a bare IPv6 literal) in the form
/// ssh's `-J` takes (`host:port`).
fn jump(given: &str) -> anyhow::Result<String> {
    let bad = || anyhow::anyhow!("`--via {given}`: expected `host`, `host:port` or `[v6]:port`");
    if let Some(rest) = given.strip_prefix('[') {
        let (host, port) = rest.split_once(']').ok_or_else(bad)?;
        let port = match port.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if port.is_empty() => 22,
            None => return Err(bad()),
        };
        return Ok(crate::remote::reach::hop(host, port));
    }
    if given.matches(':').count() > 1 {
        return Ok(crate::remote::reach::hop(given, 22)); // a bare IPv6 literal
    }
    match given.split_once(':') {
        Some((host, port)) if !host.is_empty() => Ok(crate::remote::reach::hop(host, port.parse().map_err(|_| bad())?)),
        Some(_) => Err(bad()),
        None if !given.is_empty() && !given.contains(char::is_whitespace) => Ok(crate::remote::reach::hop(given, 22)),
        None => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::jump;

    #[test]
    fn jump_hosts_are_normalized() {
        assert_eq!(jump("10.0.0.1").unwrap(), "10.0.0.1:22");
        assert_eq!(jump("10.0.0.1:2222").unwrap(), "10.0.0.1:2222");
        assert_eq!(jump("fd00::1").unwrap(), "[fd00::1]:22");
        assert_eq!(jump("[fd00::1]:2200").unwrap(), "[fd00::1]:2200");
        assert!(jump("h:port").is_err());
        assert!(jump(":22").is_err());
        assert!(jump("").is_err());
    }
}
