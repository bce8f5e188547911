//! `raptiformica artifacts`: fetch and list the binaries a node needs.

use super::{print_json, print_table};
use crate::cli::args::ArtifactsAction;
use crate::config::context::Context;
use crate::provision::artifacts;
use crate::sys::progress::Progress;

pub fn run(ctx: &Context, action: ArtifactsAction) -> anyhow::Result<()> {
    let dir = artifacts::dir(ctx);
    match action {
        ArtifactsAction::Fetch => {
            let step = Progress::new(ctx.json).step("artifacts", "fetch consul and yggdrasil");
            artifacts::fetch(ctx)?;
            step.done(&dir.display().to_string());
            Ok(())
        }
        ArtifactsAction::List => {
            let rows = artifacts::verify(&dir)?;
            if ctx.json {
                let list: Vec<_> = rows
                    .iter()
                    .map(|(n, s, ok)| serde_json::json!({"name": n, "sha256": s, "ok": ok, "path": dir.join(n)}))
                    .collect();
                print_json(&list);
            } else {
                let table: Vec<Vec<String>> = rows
                    .iter()
                    .map(|(n, s, ok)| {
                        vec![
                            n.clone(),
                            s.clone(),
                            if *ok { "ok" } else { "CHANGED OR MISSING" }.into(),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "SHA256", "CHECK"], &table);
            }
            if rows.iter().all(|r| r.2) {
                Ok(())
            } else {
                anyhow::bail!("some artifacts do not match `{}`", dir.join(artifacts::SUMS).display())
            }
        }
    }
}
