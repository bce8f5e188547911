//! Consul session locks: one acting agent at a time, one seeder of an empty KV. The session
//! has a TTL and is renewed while the holder works; a holder that dies loses it within the TTL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::api::ConsulApi;

/// The agents' lock (rules, promotions, replacements). Lock keys lie outside `raptiformica/`,
/// so that they are not part of the shared config.
pub const RULES_LOCK: &str = "raptiformica-agent/lock/rules";
/// Held while the KV is seeded.
pub const SEED_LOCK: &str = "raptiformica-agent/lock/seed";
const TTL: Duration = Duration::from_secs(30);

/// A held lock; release it with [`Held::release`] (else it lapses with its session). Its
/// holder asks [`Held::check`] before each write it makes under the lock: once the session
/// could not be renewed (consul said it is gone, or no renewal got through for a whole TTL,
/// after which consul lets it lapse), the lock is lost and the holder stops.
pub struct Held {
    key: String,
    session: String,
    lost: Arc<AtomicBool>,
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
    let lost = Arc::new(AtomicBool::new(false));
    let flag = lost.clone();
    let lock = key.to_string();
    let base_renew = ConsulApi::new(api.base(), Duration::from_secs(5))?;
    let renew = tokio::spawn(async move {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(TTL / 3).await;
            match base_renew.renew_session(&id).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => {
                    tracing::warn!("the lock `{lock}` is lost: its session expired");
                    break;
                }
                Err(e) if renewed.elapsed() + TTL / 3 >= TTL => {
                    tracing::warn!(
                        "the lock `{lock}` is taken as lost: no renewal for {}s ({e:#})",
                        TTL.as_secs()
                    );
                    break;
                }
                Err(e) => tracing::debug!("renewing the lock session: {e:#}"),
            }
        }
        flag.store(true, Ordering::SeqCst);
    });
    Ok(Some(Held {
        key: key.to_string(),
        session,
        lost,
        renew,
    }))
}

impl Held {
    /// The session that holds the lock (a transaction can check it with `check-session`).
    pub fn session(&self) -> &str {
        &self.session
    }

    /// Fails once the lock is lost: the holder stops before its next write.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            anyhow::bail!(
                "the lock `{}` was lost (its session could not be renewed): stopped before the next write",
                self.key
            );
        }
        Ok(())
    }

    pub async fn release(self, api: &ConsulApi) {
        self.renew.abort();
        let _ = api.release(&self.key, &self.session).await;
        let _ = api.destroy_session(&self.session).await;
    }
}
