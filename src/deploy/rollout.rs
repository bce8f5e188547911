//! Slaving every host of an inventory: jump hosts first (in waves), N hosts at a time, each
//! with its own progress lines, and one outcome per host for the summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;

use super::inventory::Inventory;
use crate::config::Config;
use crate::context::Context;
use crate::progress::Progress;
use crate::slave::{self, SlaveOptions};
use crate::ssh::{Identity, hop};

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
    /// How long a host's first SSH contact is retried.
    pub patience: Duration,
}

/// Slaves every host of `inventory`, wave by wave (a host after the hosts it jumps through);
/// a host whose jump host failed is skipped. Outcomes in inventory order.
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
                let jumps = inventory.jumps(i);
                if let Some(bad) = jumps
                    .iter()
                    .find(|&&j| outcomes[j].as_ref().is_none_or(|o| o.result.is_failure()))
                {
                    let why = format!("its jump host {} failed", hop(&entries[*bad].dst, entries[*bad].port));
                    return (
                        i,
                        Outcome {
                            host,
                            result: Result::Skipped(why),
                            took: Duration::ZERO,
                        },
                    );
                }
                let _permit = permits.acquire().await.expect("the semaphore is never closed");
                let opts = SlaveOptions {
                    server_type: plan.server_type.clone(),
                    provision: plan.provision,
                    assimilate: true,
                    // Machines just started (their sshd coming up) are waited for a little.
                    patience: plan.patience,
                    via: jumps.iter().map(|&j| hop(&entries[j].dst, entries[j].port)).collect(),
                    host_key: None,
                    skip_if_healthy: true,
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
