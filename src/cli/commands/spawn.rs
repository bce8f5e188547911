//! `raptiformica spawn`: start machines through a compute back-end.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use super::print_json;
use crate::cli::args::SpawnArgs;
use crate::compute;
use crate::compute::spawner;
use crate::config::context::Context;
use crate::provision::slave::{self, SlaveOptions};
use crate::remote::ssh::Identity;
use crate::sys::progress::Progress;

pub fn run(ctx: &Context, args: SpawnArgs) -> anyhow::Result<()> {
    let config = spawner::spawning_config(ctx)?;
    if args.check_available {
        return super::available::check(ctx, &config, None);
    }
    let ty = spawner::choose(ctx, &config, args.compute_type.as_deref(), args.server_type.as_deref())?;
    let progress = Progress::new(ctx.json);
    if !args.no_slave {
        slave::prepare(ctx, &progress)?;
    }
    let identity = Identity::ensure(ctx)?;
    let ctx = Context {
        public_key_file: Some(identity.public_key_file.clone()),
        no_package: args.no_package,
        with_engine: args.with_engine,
        ..ctx.clone()
    };
    let config = Arc::new(spawner::spawning_config(&ctx)?);
    // The cluster it starts machines for exists now (slave::prepare made its gossip key).
    let ty = compute::ComputeType {
        cluster: compute::find(&config, &ty.compute, &ty.server)?.cluster,
        ..ty
    };
    let opts = (!args.no_slave).then(|| SlaveOptions {
        provision: !args.steps.no_provision,
        assimilate: !args.steps.no_assimilate,
        after_assimilate: !args.steps.no_after_assimilate,
        after_mesh: !args.steps.no_after_mesh,
        ..SlaveOptions::fresh(&ty.server, Duration::from_secs(args.ssh_wait))
    });
    let batch = spawner::Batch {
        ty: &ty,
        label: "instance",
        count: args.count as usize,
        opts: &opts,
        from_node: None,
    };
    let results =
        crate::cli::runtime::runtime()?.block_on(spawner::spawn_many(&ctx, &config, &identity, &progress, batch));
    let mut started = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(i) => started.push(i),
            Err(e) => errors.push(e),
        }
    }
    if ctx.json {
        print_json(&started);
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        n => {
            for e in &errors {
                eprintln!("error: {e:#}");
            }
            bail!("{n} of {} instances failed (each was cleaned up)", args.count)
        }
    }
}
