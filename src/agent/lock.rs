//! One acting agent at a time: a consul session lock. The session has a TTL and is renewed
//! while the holder works; an agent that dies loses it within the TTL.

use std::time::Duration;

use crate::consensus::api::ConsulApi;

/// The lock's key: outside `raptiformica/`, so that it is not part of the shared config.
pub const RULES_LOCK: &str = "raptiformica-agent/lock/rules";
const TTL: Duration = Duration::from_secs(30);

/// A held lock; release it with [`Held::release`] (else it lapses with its session).
pub struct Held {
    session: String,
    renew: tokio::task::JoinHandle<()>,
}

/// Takes the lock for `holder` (a name for humans), or None when another agent holds it.
pub async fn try_acquire(api: &ConsulApi, holder: &str) -> anyhow::Result<Option<Held>> {
    let session = api.create_session(&format!("raptiformica agent {holder}"), TTL).await?;
    if !api.acquire(RULES_LOCK, &session, holder).await? {
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
    Ok(Some(Held { session, renew }))
}

impl Held {
    pub async fn release(self, api: &ConsulApi) {
        self.renew.abort();
        let _ = api.release(RULES_LOCK, &self.session).await;
        let _ = api.destroy_session(&self.session).await;
    }
}
