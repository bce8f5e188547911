//! Operations on the cluster from whichever machine runs the command: on a node through its
//! own consul agent, elsewhere (the workstation) through a known node over SSH, running the
//! same command there. The command line prints what these return.

pub mod attach;
pub mod events;
pub mod members;
pub mod remove;
pub mod shared;
pub mod state;

use crate::config::context::Context;
use crate::remote::ssh::Identity;

/// What a node printed when a command was run through it (this machine is not a node).
#[derive(Debug)]
pub struct Forwarded {
    /// The node that ran it.
    pub node: String,
    pub stdout: String,
    pub stderr: String,
    /// Its exit code: 0, or one of the codes the caller settles for.
    pub code: Option<i32>,
}

/// Runs `command` (a `raptiformica ...` line, its words quoted) on the first known node that
/// answers.
pub async fn through_a_node(ctx: &Context, what: &str, command: &str) -> anyhow::Result<Forwarded> {
    through_a_node_settled(ctx, what, command, &[], &[]).await
}

/// As [`through_a_node`], where the `settled` exit codes are an answer, not a failure to try
/// on the next node, and the nodes in `skip` are not asked (a node being removed).
pub async fn through_a_node_settled(
    ctx: &Context,
    what: &str,
    command: &str,
    skip: &[String],
    settled: &[i32],
) -> anyhow::Result<Forwarded> {
    let identity = Identity::ensure(ctx)?;
    let (node, out) = crate::remote::nodes::on_a_node_settled(ctx, &identity, what, command, skip, settled).await?;
    Ok(Forwarded {
        node,
        stdout: out.stdout,
        stderr: out.stderr,
        code: out.code,
    })
}
