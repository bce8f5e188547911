//! Consul session locks: one acting agent at a time, one seeder of an empty KV. The session
//! has a TTL and is renewed while the holder works; a holder that dies loses it within the TTL.

use std::time::Duration;

use super::api::ConsulApi;

/// The agents' lock (rules, promotions, replacements). Lock keys lie outside `raptiformica/`,
/// so that they are not part of the shared config.
pub const RULES_LOCK: &str = "raptiformica-agent/lock/rules";
/// Held while the KV is seeded.
pub const SEED_LOCK: &str = "raptiformica-agent/lock/seed";
const TTL: Duration = Duration::from_secs(30);

/// A held lock; release it with [`Held::release`] (else it lapses with its session).
pub struct Held {
    key: String,
    session: String,
    renew: tokio::task::JoinHandle<()>,
}

/// Takes the lock `key` for `holder` (a name for humans), or None when another holds it.
pub async fn try_acquire(api: &ConsulApi, key: &str, holder: &str) -> anyhow::Result<Option<Held>> {
    let session = api.create_session(&format!("raptiformica {holder}"), TTL).await?;
    if !api.acquire(key, &session, holder).await? {
        let _ = api.destroy_session(&session).await;
        return Ok(None);
    }
    let id = session.clone();
    let base_renew = ConsulApi::new(api.base(), Duration::from_secs(5))?;
    let renew = tokio::spawn(async move {
        loop {
            tokio::time::sleep(TTL / 3).await;
            match base_renew.renew_session(&id).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!("the agent's lock session expired");
                    return;
                }
                Err(e) => tracing::debug!("renewing the lock session: {e:#}"),
            }
        }
    });
    Ok(Some(Held {
        key: key.to_string(),
        session,
        renew,
    }))
}

impl Held {
    pub async fn release(self, api: &ConsulApi) {
        self.renew.abort();
        let _ = api.release(&self.key, &self.session).await;
        let _ = api.destroy_session(&self.session).await;
    }
}
