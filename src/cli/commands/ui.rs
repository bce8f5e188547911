//! `raptiformica ui`: serves the cluster map (see [`crate::ui`]), or prints the login URL of
//! the map a node's agent serves (`--login-url`).

use crate::agent::settings::{UI_LISTEN, ui_listen};
use crate::cli::args::UiArgs;
use crate::config::context::Context;
use crate::ui::{self, hosts, token};

pub fn run(ctx: &Context, args: UiArgs) -> anyhow::Result<()> {
    if args.login_url {
        println!("{}", node_login_url(ctx)?);
        return Ok(());
    }
    let allow_hosts = args
        .allow_host
        .iter()
        .map(|h| hosts::allowed_name(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let token = match &args.token_file {
        Some(file) => token::read(file)?,
        None => token::new_token()?,
    };
    let options = ui::Options {
        token,
        allow_hosts,
        print_login: true,
    };
    crate::cli::runtime::runtime()?.block_on(ui::serve(ctx.clone(), args.listen, options))
}

/// The login URL of the map this node's agent serves (`raptiformica/agent/ui_listen`), with
/// the token of `<cache-dir>/ui_token` (made if the agent has not made it yet).
fn node_login_url(ctx: &Context) -> anyhow::Result<String> {
    let config = crate::config::load(&ctx.paths)?;
    let listen = ui_listen(&config.mapping)?.ok_or_else(|| {
        anyhow::anyhow!(
            "this machine's agent serves no map: `{UI_LISTEN}` is not set; set it with \
             `raptiformica config set {UI_LISTEN} 127.0.0.1:8420` (the agent reads it when it starts)"
        )
    })?;
    let file = token::node_file(&ctx.paths);
    let token = token::ensure(&file).map_err(|e| {
        e.context(format!(
            "the map's token is in `{}`, which only its owner (root on a node) may read",
            file.display()
        ))
    })?;
    Ok(token::login_url(listen, &token))
}
