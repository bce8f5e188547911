//! Access for the workstations: the keys the shared config lists under
//! `raptiformica/workstations/` (see [`workstations`]) authorized on this node for root and
//! for the user it was slaved as (`ssh_user`), in a block of `authorized_keys` this duty alone
//! writes. A blocking query waits for a change, so a calm cluster costs nothing; a key
//! registered by `attach` is authorized on every node within seconds, and a revoked one (its
//! entry unset) goes the same way.

use std::time::Duration;

use super::status::Recorder;
use crate::consensus::api::{ConsulApi, LOCAL_HTTP, WATCH_WAIT, blocking_timeout};
use crate::mesh::neighbours;
use crate::remote::workstations::{self, WORKSTATIONS};

/// How long to wait after a failed query (consul not up yet, no leader).
const RETRY: Duration = Duration::from_secs(5);

/// The workstations' keys (name, key) and the node's own login they were last written for.
type Applied = (Vec<(String, String)>, Option<String>);

/// Keeps the workstations' keys authorized here while the agent runs.
pub async fn follow(me: String, rec: Recorder) {
    let api = match ConsulApi::new(LOCAL_HTTP, blocking_timeout(WATCH_WAIT)) {
        Ok(api) => api,
        Err(e) => return tracing::warn!("the workstations' keys are not followed: {e:#}"),
    };
    let mut index = 0;
    let mut applied: Option<Applied> = None;
    loop {
        match api.watch_subtree(WORKSTATIONS, index, WATCH_WAIT).await {
            Ok((tree, next)) => {
                // An index that went back (a rebuilt store) starts the watch over.
                index = if next < index { 0 } else { next };
                let keys = workstations::keys(&tree);
                // Read again at every answer (a change, or the wait's end): a node slaved
                // again as another user gets the keys for that user too.
                let user = api
                    .get_value(&neighbours::key(&me, "ssh_user"))
                    .await
                    .ok()
                    .flatten()
                    .and_then(|v| v.as_str().map(str::to_string));
                let wanted = (keys, user);
                if applied.as_ref() != Some(&wanted) {
                    let (keys, user) = &wanted;
                    match authorize(keys, user.as_deref()) {
                        Ok(changed) => {
                            if changed {
                                let names: Vec<&str> = keys.iter().map(|(n, _)| n.as_str()).collect();
                                rec.event("access", format!("workstations' keys authorized: {}", names.join(", ")));
                            }
                            applied = Some(wanted);
                        }
                        Err(e) => {
                            tracing::warn!("cannot authorize the workstations' keys: {e:#}");
                            tokio::time::sleep(RETRY).await;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!("cannot read the workstations' keys: {e:#}");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Writes `keys` into root's `authorized_keys` and, for a node slaved as another user, that
/// user's. Whether any file changed.
fn authorize(keys: &[(String, String)], user: Option<&str>) -> anyhow::Result<bool> {
    let mut changed = false;
    let mut logins = vec!["root"];
    if let Some(u) = user.filter(|u| *u != "root" && crate::config::known::check_user(u).is_ok()) {
        logins.push(u);
    }
    for login in logins {
        let Some((file, uid, gid)) = workstations::authorized_keys_of(login) else {
            tracing::warn!("no user `{login}` here: the workstations' keys are not authorized for it");
            continue;
        };
        changed |= workstations::apply(&file, uid, gid, keys)?;
    }
    Ok(changed)
}
