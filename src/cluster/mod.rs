//! Operations on the cluster from whichever machine runs the command: on a node through its
//! own consul agent, elsewhere (the workstation) through a known node over SSH, running the
//! same command there. The command line prints what these return.

pub mod events;
pub mod members;
pub mod state;

use crate::config::context::Context;
use crate::remote::ssh::Identity;

/// What a node printed when a command was run through it (this machine is not a node).
#[derive(Debug)]
pub struct Forwarded {
    /// The node that ran it.
    pub node: String,
    pub stdout: String,
}

/// Runs `command` (a `raptiformica ...` line, its words quoted) on the first known node that
/// answers.
pub async fn through_a_node(ctx: &Context, what: &str, command: &str) -> anyhow::Result<Forwarded> {
    let identity = Identity::ensure(ctx)?;
    let (node, out) = crate::remote::nodes::on_a_node(ctx, &identity, what, command, &[]).await?;
    Ok(Forwarded {
        node,
        stdout: out.stdout,
    })
}
