//! Slaving every host of an inventory: jump hosts first (in waves), N hosts at a time, each
//! with its own progress lines, and one outcome per host for the summary.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

use super::inventory::Inventory;
use super::preflight::Given;
use crate::config::Config;
use crate::config::context::Context;
use crate::provision::slave::{self, SlaveOptions};
use crate::remote::reach::hop;
use crate::remote::ssh::Identity;
use crate::sys::progress::Progress;

/// How a host fared.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Result {
    /// Slaved (uploaded, provisioned or meshed).
    Slaved,
    /// Complete and an alive member already: left alone.
    Unchanged,
    /// Not tried: a jump host on its way failed.
    Skipped(String),
    Failed(String),
}

impl Result {
    pub fn is_failure(&self) -> bool {
        matches!(self, Result::Failed(_) | Result::Skipped(_))
    }
}

/// One host's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `dst:port`.
    pub host: String,
    pub result: Result,
    #[serde(serialize_with = "as_secs")]
    pub took: Duration,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 10.0).round() / 10.0)
}

/// What to do with each host.
pub struct Plan {
    pub concurrent: usize,
    pub server_type: Option<String>,
    pub provision: bool,
    /// Join the hosts to the cluster (`--no-assimilate` says no).
    pub assimilate: bool,
    /// Fire the `after_assimilate` and the `after_mesh` hooks.
    pub after_assimilate: bool,
    pub after_mesh: bool,
    /// How long a host's first SSH contact is retried.
    pub patience: Duration,
    /// Hosts whose probe gave up already (see [`super::preflight`]): failed without a contact.
    pub unreachable: BTreeMap<usize, Given>,
}

/// Slaves every host of `inventory`, wave by wave (a host after the hosts it jumps through);
/// a host whose jump host failed is skipped, and one whose probe gave up already fails
/// without a contact. Outcomes in inventory order.
pub async fn rollout(
    ctx: &Context,
    config: &Arc<Config>,
    identity: &Identity,
    progress: &Progress,
    inventory: &Inventory,
    plan: &Plan,
) -> Vec<Outcome> {
    let entries = &inventory.entries;
    let mut outcomes: Vec<Option<Outcome>> = vec![None; entries.len()];
    let permits = Arc::new(Semaphore::new(plan.concurrent.max(1)));
    for wave in inventory.waves() {
        let runs = wave.iter().map(|&i| {
            let permits = permits.clone();
            let outcomes = &outcomes;
            async move {
                let e = &entries[i];
                let host = hop(&e.dst, e.port);
                if let Some(outcome) = settled(inventory, i, outcomes, &plan.unreachable) {
                    return (i, outcome);
                }
                let jumps = inventory.jumps(i);
                let _permit = permits.acquire().await.expect("the semaphore is never closed");
                let opts = SlaveOptions {
                    server_type: plan.server_type.clone(),
                    provision: plan.provision,
                    assimilate: plan.assimilate,
                    after_assimilate: plan.after_assimilate,
                    after_mesh: plan.after_mesh,
                    // Machines just started (their sshd coming up) are waited for a little.
                    patience: plan.patience,
                    via: jumps.iter().map(|&j| hop(&entries[j].dst, entries[j].port)).collect(),
                    host_key: None,
                    skip_if_healthy: true,
                    machine: None,
                    login: crate::remote::ssh::Login::recorded(e.user.as_deref()),
                    sudo_password: None,
                };
                let t = Instant::now();
                let result = match slave::slave(ctx, config, identity, progress, &e.dst, e.port, &opts).await {
                    Ok(report) if report.unchanged() => Result::Unchanged,
                    Ok(_) => Result::Slaved,
                    Err(err) => Result::Failed(format!("{err:#}")),
                };
                (
                    i,
                    Outcome {
                        host,
                        result,
                        took: t.elapsed(),
                    },
                )
            }
        });
        for (i, outcome) in futures_util::future::join_all(runs).await {
            outcomes[i] = Some(outcome);
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.expect("every entry is in a wave"))
        .collect()
}

/// The outcome of entry `i` when it is decided without contacting the host: skipped when a
/// jump host on its way failed, failed when its probe gave up already.
fn settled(
    inventory: &Inventory,
    i: usize,
    outcomes: &[Option<Outcome>],
    unreachable: &BTreeMap<usize, Given>,
) -> Option<Outcome> {
    let entries = &inventory.entries;
    let host = hop(&entries[i].dst, entries[i].port);
    let failed = |j: usize| outcomes[j].as_ref().is_none_or(|o| o.result.is_failure());
    if let Some(&bad) = inventory.jumps(i).iter().find(|&&j| failed(j)) {
        let why = format!("its jump host {} failed", hop(&entries[bad].dst, entries[bad].port));
        return Some(Outcome {
            host,
            result: Result::Skipped(why),
            took: Duration::ZERO,
        });
    }
    unreachable.get(&i).map(|(why, took)| Outcome {
        host,
        result: Result::Failed(why.clone()),
        took: *took,
    })
}

/// The outcomes when no host answered: each first hop failed with its reason, every host
/// behind one skipped; nothing contacted.
pub fn unreached(inventory: &Inventory, unreachable: &BTreeMap<usize, Given>) -> Vec<Outcome> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; inventory.entries.len()];
    for i in inventory.waves().into_iter().flatten() {
        outcomes[i] = settled(inventory, i, &outcomes, unreachable);
    }
    outcomes
        .into_iter()
        .zip(&inventory.entries)
        .map(|(o, e)| {
            o.unwrap_or_else(|| Outcome {
                host: hop(&e.dst, e.port),
                result: Result::Skipped("not tried: no host answered".into()),
                took: Duration::ZERO,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::inventory::Format;

    #[test]
    fn unreached_hosts_fail_with_their_reason_and_the_hosts_behind_them_are_skipped() {
        let inv = Inventory::parse(
            r#"[{"dst":"h","via":"j"},{"dst":"j"},{"dst":"x","port":2222}]"#,
            Format::Json,
            std::path::Path::new("i.json"),
        )
        .unwrap();
        let gone = BTreeMap::from([
            (1, ("nothing answers on j:22".to_string(), Duration::from_secs(10))),
            (2, ("cannot reach x:2222".to_string(), Duration::from_secs(30))),
        ]);
        let outcomes = unreached(&inv, &gone);
        let results: Vec<(&str, &Result)> = outcomes.iter().map(|o| (o.host.as_str(), &o.result)).collect();
        assert_eq!(
            results,
            vec![
                ("h:22", &Result::Skipped("its jump host j:22 failed".into())),
                ("j:22", &Result::Failed("nothing answers on j:22".into())),
                ("x:2222", &Result::Failed("cannot reach x:2222".into())),
            ]
        );
        assert_eq!(outcomes[1].took, Duration::from_secs(10));
    }
}
