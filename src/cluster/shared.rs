//! A change of the shared config made on a machine that is not a node but knows nodes (a
//! workstation): after its own cache, the same change on one node, which shares it with the
//! rest through consul's KV.

use crate::config::Mapping;
use crate::config::context::Context;
use crate::mesh::neighbours;
use crate::remote::ssh::Identity;

/// Makes the change (`set`, and `removed` with what lies below each) on a known node that
/// answers. The node's id; None when this machine drives no cluster (it holds no cluster
/// token, made when it first slaved a machine or taken by `attach`, or knows no node) or is a
/// node itself.
pub async fn push(ctx: &Context, set: &Mapping, removed: &[String]) -> anyhow::Result<Option<String>> {
    // A node (it has an overlay identity, also before its consul runs) shares a change
    // through its own consul, never over SSH.
    if crate::config::shared::is_node(&ctx.paths)
        || (set.is_empty() && removed.is_empty())
        || crate::consensus::acl::read_token(&ctx.paths).is_none()
    {
        return Ok(None);
    }
    let config = ctx.config()?;
    if !neighbours::all(&config.mapping).iter().any(|n| n.host.is_some()) {
        return Ok(None);
    }
    let identity = Identity::ensure(ctx)?;
    let script = crate::modules::install::cluster_script(set, removed);
    let (node, _) = crate::remote::nodes::on_a_node(ctx, &identity, "update the shared config", &script, &[]).await?;
    Ok(Some(node))
}
