//! `raptiformica package`: bake a provisioned machine image (see `crate::compute::package`).

use anyhow::Context as _;

use super::print_json;
use crate::cli::args::PackageArgs;
use crate::compute::{package, spawner};
use crate::config::context::Context;
use crate::provision::slave;
use crate::remote::ssh::Identity;
use crate::sys::progress::Progress;

pub fn run(ctx: &Context, args: PackageArgs) -> anyhow::Result<()> {
    let config = ctx.config()?;
    if args.check_available {
        return super::available::check(ctx, &config, Some("package"));
    }
    let ty = spawner::choose(ctx, &config, args.compute_type.as_deref(), args.server_type.as_deref())?;
    let progress = Progress::new(ctx.json);
    slave::prepare(ctx, &progress)?;
    let identity = Identity::ensure(ctx)?;
    let ctx = Context {
        public_key_file: Some(identity.public_key_file.clone()),
        ..ctx.clone()
    };
    let config = std::sync::Arc::new(ctx.config().context("cannot load the config")?);
    let packaged =
        crate::cli::runtime::runtime()?.block_on(package::package(&ctx, &config, &ty, &identity, &progress))?;
    if ctx.json {
        print_json(&packaged);
    } else {
        println!("{}", packaged.image);
    }
    Ok(())
}
