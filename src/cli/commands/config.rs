//! `raptiformica config`: show the effective config, get, set and unset keys.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{print_json, print_table};
use crate::cli::args::{ConfigAction, ConfigArgs};
use crate::config::context::Context;
use crate::config::{Origin, edit, mapping};

pub fn run(ctx: &Context, args: ConfigArgs) -> anyhow::Result<()> {
    match args.action {
        None => show(ctx, args.origins, args.show_secrets),
        Some(ConfigAction::Get { key }) => get(ctx, &key, args.show_secrets),
        Some(ConfigAction::Set { key, value, json_value }) => {
            let key = normalize(&key)?;
            let value = if json_value {
                serde_json::from_str(&value).with_context(|| format!("--json-value: `{value}` is not JSON"))?
            } else {
                Value::String(value)
            };
            check_known_setting(&key, &value)?;
            let written = crate::cli::runtime::runtime()?
                .block_on(edit::set(&ctx.paths, &key, value.clone()))
                .with_context(|| format!("failed to set `{key}`"))?;
            if written == crate::config::shared::Written::CacheOnly {
                eprintln!("consul did not answer: `{key}` is set in the cache and goes to the cluster later");
            }
            if written == crate::config::shared::Written::Local {
                let set = crate::config::Mapping::from([(key.clone(), value)]);
                to_the_cluster(ctx, &key, &set, &[])?;
            }
            Ok(())
        }
        Some(ConfigAction::Unset { key }) => {
            let key = normalize(&key)?;
            // A key of the cluster this workstation never took (another workstation's entry,
            // say): unset in the cluster only.
            if !crate::config::shared::consul_configured(&ctx.paths)
                && crate::config::mapping::subtree(&ctx.config()?.mapping, &key)
                    .next()
                    .is_none()
                && let Some(node) = crate::cli::runtime::runtime()?.block_on(crate::cluster::shared::push(
                    ctx,
                    &crate::config::Mapping::new(),
                    std::slice::from_ref(&key),
                ))?
            {
                eprintln!("`{key}` is not set here; the cluster has the change (through node `{node}`)");
                return Ok(());
            }
            let unset = crate::cli::runtime::runtime()?
                .block_on(edit::unset(&ctx.paths, &key))
                .with_context(|| format!("failed to unset `{key}`"))?;
            if !crate::config::shared::consul_configured(&ctx.paths) {
                to_the_cluster(ctx, &key, &crate::config::Mapping::new(), std::slice::from_ref(&key))?;
            }
            match unset {
                edit::Unset::Removed(n) => eprintln!("removed {n} key(s)"),
                edit::Unset::FellBack(keys) => {
                    for k in keys {
                        eprintln!("`{k}` falls back to its module value");
                    }
                }
            }
            Ok(())
        }
    }
}

fn normalize(key: &str) -> anyhow::Result<String> {
    mapping::normalize_key(key).map_err(|e| anyhow::anyhow!("invalid key: {e}"))
}

fn show(ctx: &Context, origins: bool, secrets: bool) -> anyhow::Result<()> {
    let mut config = ctx.config()?;
    for (k, v) in config.mapping.iter_mut() {
        *v = mapping::shown(k, v, secrets).into_owned();
    }
    if ctx.json && origins {
        #[derive(serde::Serialize)]
        struct Entry<'a> {
            value: &'a Value,
            #[serde(flatten)]
            origin: Option<&'a Origin>,
        }
        let out: BTreeMap<&String, Entry> = config
            .mapping
            .iter()
            .map(|(k, v)| {
                (
                    k,
                    Entry {
                        value: v,
                        origin: config.origins.get(k),
                    },
                )
            })
            .collect();
        print_json(&out);
    } else if ctx.json {
        print_json(&config.mapping);
    } else {
        let rows: Vec<Vec<String>> = config
            .mapping
            .iter()
            .map(|(k, v)| {
                let origin = config
                    .origins
                    .get(k)
                    .map(|o| describe_origin(ctx, o))
                    .unwrap_or_default();
                vec![k.clone(), origin, mapping::display_value(v)]
            })
            .collect();
        print_table(&["KEY", "FROM", "VALUE"], &rows);
    }
    Ok(())
}

/// `builtin compute/docker/raptiformica.toml`: the layer and the file, relative where short.
fn describe_origin(ctx: &Context, origin: &Origin) -> String {
    let Some(file) = &origin.file else {
        return origin.layer.to_string();
    };
    let short = [
        ctx.paths.install_dir.as_deref(),
        Some(ctx.paths.user_modules_dir().as_path()),
    ]
    .into_iter()
    .flatten()
    .find_map(|root| file.strip_prefix(root).ok())
    .unwrap_or(file);
    format!("{} {}", origin.layer, short.display())
}

fn get(ctx: &Context, key: &str, secrets: bool) -> anyhow::Result<()> {
    let key = normalize(key)?;
    let mut config = ctx.config()?;
    for (k, v) in config.mapping.iter_mut() {
        *v = mapping::shown(k, v, secrets).into_owned();
    }
    if let Some(value) = config.mapping.get(&key) {
        if ctx.json {
            print_json(value);
        } else {
            println!("{}", mapping::display_value(value));
        }
        return Ok(());
    }
    let below: mapping::Mapping = mapping::subtree(&config.mapping, &key)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if below.is_empty() {
        bail!("`{key}` is not set (`raptiformica config` lists every key)");
    }
    if ctx.json {
        print_json(&below);
    } else {
        for (k, v) in &below {
            println!("{k} = {}", mapping::display_value(v));
        }
    }
    Ok(())
}

/// Values the agent and the mesh read are checked when they are set, not when a node trips
/// over them later.
fn check_known_setting(key: &str, value: &Value) -> anyhow::Result<()> {
    let one = crate::config::Mapping::from([(key.to_string(), value.clone())]);
    if key.starts_with("raptiformica/agent/") {
        crate::agent::settings::Settings::from_mapping(&one)?;
    }
    match key {
        crate::mesh::plan::LINKS_KEY => crate::mesh::plan::links(&one).map(|_| ()),
        crate::mesh::plan::SERVERS_KEY => crate::mesh::plan::servers(&one).map(|_| ()),
        _ => Ok(()),
    }
}

/// On a workstation that knows nodes, `config set`/`unset` makes the same change on one node,
/// which shares it through consul's KV (the cache alone reached new machines only). A secret
/// is not sent: it would be on a command line there.
fn to_the_cluster(ctx: &Context, key: &str, set: &crate::config::Mapping, removed: &[String]) -> anyhow::Result<()> {
    if crate::sys::mapping::is_secret(key) {
        eprintln!(
            "`{key}` is a secret: it is set here and goes to machines slaved from here; to change it in the cluster, \
             set it on a node (`raptiformica ssh NODE -- raptiformica config set ...`)"
        );
        return Ok(());
    }
    let pushed = crate::cli::runtime::runtime()?
        .block_on(crate::cluster::shared::push(ctx, set, removed))
        .with_context(|| format!("`{key}` is changed here, but not in the cluster yet; run the command again"))?;
    if let Some(node) = pushed {
        eprintln!("the cluster has the change (through node `{node}`)");
    }
    Ok(())
}
