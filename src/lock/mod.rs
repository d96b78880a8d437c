//! Per-site serialization: one provision per site at a time.
//!
//! An upgrade-paths answer is good for one provision only. Two provisions for one site that both
//! checked first could both pass, and the second would be exactly the downgrade the guard exists
//! to stop. So the guard holds the site's lock from before the lookup until the inner service's
//! work has finished (when its client went away, the guard finishes it alone, up to a ceiling); a
//! request that waits sees the paths as they are after the previous provision.
//!
//! A site is held under every name it goes by (its blog ID and its URL), learned from
//! WordPress.com: see [`SiteAliases`] and `names.rs`.
//!
//! [`LocalLocks`] serializes within one process. A partner running several processes needs a
//! lock shared between them: with the `redis` feature, `RedisLocks` holds each site in Redis
//! (leases renewed while held, freed on drop, bounded waits, fail closed when Redis is away); or
//! implement [`SiteLocks`] on another shared engine.
//!
//! What the processes tell each other besides taking turns (forgotten sites, the provisions
//! just made) is not the locks' business: see [`Peers`](crate::Peers).

mod local;
mod names;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{RedisBuildError, RedisLocks, RedisLocksBuilder};
pub use local::LocalLocks;
pub use names::SiteAliases;
pub(crate) use names::{HeldNames, SiteNames};

use crate::site::Site;
use std::{fmt, future::Future, pin::Pin, time::Duration};

/// How long a request waits by default for another provision of its site to finish.
pub(crate) const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(20);

/// A future that resolves to a held site lock.
pub type Acquire<'a> = Pin<Box<dyn Future<Output = Result<SitePermit, LockError>> + Send + 'a>>;

/// Per-site mutual exclusion, the guard's way to make check-then-provision atomic.
///
/// Implementations must give out at most one [`SitePermit`] per site at a time and free the site
/// when the permit is dropped. They should keep no state for idle sites.
pub trait SiteLocks: fmt::Debug + Send + Sync + 'static {
    /// Waits at most `wait` for `site`'s lock. Dropping the returned future gives up waiting and
    /// leaves nothing held.
    fn acquire<'a>(&'a self, site: &'a Site, wait: Duration) -> Acquire<'a>;
}

/// A held site lock; dropping it frees the site.
#[must_use = "the site is free again as soon as the permit is dropped"]
pub struct SitePermit {
    _held: Box<dyn Send + Sync>,
}

impl SitePermit {
    /// A permit that frees the site when `held` is dropped.
    pub fn new(held: impl Send + Sync + 'static) -> Self {
        Self {
            _held: Box::new(held),
        }
    }
}

impl fmt::Debug for SitePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SitePermit")
    }
}

/// Why a site lock was not acquired.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another provision held the site for longer than the wait.
    #[error("another provision of this site held it for longer than the wait")]
    Busy,
    /// The lock's engine could not be reached.
    #[error("the site lock could not be taken")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}
