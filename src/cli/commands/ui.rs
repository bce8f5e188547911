//! `raptiformica ui`: serves the cluster map (see [`crate::ui`]).

use anyhow::Context as _;

use crate::cli::args::UiArgs;
use crate::config::context::Context;

pub fn run(ctx: &Context, args: UiArgs) -> anyhow::Result<()> {
    let token = if crate::ui::is_loopback(&args.listen) && args.token_file.is_none() {
        None
    } else if let Some(file) = &args.token_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the token file `{}`", file.display()))?;
        let token = text.lines().next().unwrap_or_default().trim().to_string();
        anyhow::ensure!(
            token.len() >= 16,
            "the token in `{}` is shorter than 16 characters; put a long random one there",
            file.display()
        );
        Some(token)
    } else {
        let token = crate::ui::new_token()?;
        // Shown once, on the terminal of who started it; never in a log or an argument.
        eprintln!(
            "listening on {} (not loopback): requests need this token, shown once:\n  {token}\n  open http://{}/?token={token}",
            args.listen, args.listen
        );
        Some(token)
    };
    crate::cli::runtime::runtime()?.block_on(crate::ui::serve(ctx.clone(), args.listen, token))
}
