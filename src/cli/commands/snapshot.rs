//! `raptiformica snapshot save|restore`: consul's snapshot of the cluster to a file, and its KV
//! back into a cluster (see [`crate::consensus::snapshot`]).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context as _, bail};

use crate::cli::args::SnapshotAction;
use crate::config::context::Context;
use crate::consensus::snapshot;
use crate::remote::cluster_link;

pub fn run(ctx: &Context, action: SnapshotAction) -> anyhow::Result<()> {
    match action {
        SnapshotAction::Save { file } => crate::cli::runtime::runtime()?.block_on(async {
            let reached = cluster_link::reach(ctx).await?;
            let archive = reached.api().save_snapshot().await;
            let through = reached.through();
            reached.close().await;
            let archive = archive.context("consul gave no snapshot")?;
            let meta = snapshot::check(&archive).context("consul's snapshot does not check out")?;
            crate::sys::fs_atomic::write_atomic(&file, &archive)
                .with_context(|| format!("cannot write `{}`", file.display()))?;
            eprintln!(
                "saved the cluster's snapshot (index {}, {} bytes) to {} through {through}",
                meta.index,
                archive.len(),
                file.display()
            );
            Ok(())
        }),
        SnapshotAction::Restore { file, yes } => {
            let archive = std::fs::read(&file).with_context(|| format!("cannot read `{}`", file.display()))?;
            let meta = snapshot::check(&archive).with_context(|| format!("`{}` is refused", file.display()))?;
            let consul = snapshot::consul_binary(&ctx.paths.artifacts_dir)?;
            crate::cli::runtime::runtime()?.block_on(async {
                let pairs = snapshot::kv_of(&consul, archive).await?;
                let (restored, kept): (Vec<_>, Vec<_>) = pairs.into_iter().partition(|p| snapshot::is_restored(&p.key));
                let reached = cluster_link::reach(ctx).await?;
                // A log restored over one the cluster already has would mix two histories
                // (and its nodes have applied the other one): refused, nothing written.
                let mut clashing = Vec::new();
                for name in snapshot::state_logs(&restored) {
                    let log = crate::consensus::state_log::Log::new(&name);
                    if let Some((raw, _)) = reached.api().get_raw(&log.index_key()).await? {
                        clashing.push(format!("`{name}` (at index {})", String::from_utf8_lossy(&raw).trim()));
                    }
                }
                if !clashing.is_empty() {
                    let through = reached.through();
                    reached.close().await;
                    bail!(
                        "nothing restored: the cluster reached through {through} already has the log of state machine {}, \
                         which the snapshot holds too; restore into a new cluster (a state machine's log cannot be merged)",
                        clashing.join(", ")
                    );
                }
                let question = format!(
                    "restore {} keys from {} (index {}) into the cluster reached through {}? \
                     Keys it has too are replaced; its own {} ({} keys in the snapshot) stay as they are.",
                    restored.len(),
                    file.display(),
                    meta.index,
                    reached.through(),
                    snapshot::KEPT.join(", "),
                    kept.len()
                );
                if !yes && !confirm(&question)? {
                    reached.close().await;
                    bail!("nothing restored");
                }
                let written = reached.api().import_kv(&restored).await;
                let through = reached.through();
                reached.close().await;
                written.context("the restore stopped part way; run it again")?;
                eprintln!("restored {} keys through {through}", restored.len());
                Ok(())
            })
        }
    }
}

/// Asks on the terminal; without one, `--yes` is needed.
fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{question}\nno terminal to ask on: pass --yes to restore");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}
