//! What the processes guarding the same sites tell each other.
//!
//! Locks (`lock/`) make the processes take turns on a site; [`Peers`] is everything else they
//! share, apart from locking:
//!
//! - **Forgets.** When one process forwards a cancellation (or is told of a change with
//!   [`forget`](crate::UpgradeGuardLayer::forget)), the others drop their cached paths of the
//!   site and what they remember of its provisions. A stale cached path could never forward a
//!   downgrade (the cache only ever refuses, see `cache.rs`), but after a cancellation it would
//!   refuse what is an upgrade again, until it expired.
//! - **The provisions just made.** A provision one process forwarded is remembered where every
//!   process looks, for the settling window (see `recent.rs`): another process's upgrade-paths
//!   answer that does not show it yet is stale there too, and a retry of it through another
//!   process is `409 already_provisioned`.
//!
//! One process needs no peers (the default). With the `redis` feature, `RedisLocks` is both the
//! locks and the peers of every process pointing at the same Redis; any other engine can
//! implement [`Peers`].

use crate::site::Site;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Handed the sites other processes forgot (see [`Peers::listen_for_forgets`]); `None` when
/// some may have been missed (a lost connection): every site is forgotten.
pub type ForgetListener = Arc<dyn Fn(Option<&Site>) + Send + Sync>;

/// A future of a [`Peers`] call.
pub type PeersFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PeersError>> + Send + 'a>>;

/// A provision another process (or this one) forwarded, as the peers remember it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Remembered {
    /// The product provisioned.
    pub product: String,
    /// How much longer it is remembered.
    pub remaining: Duration,
}

impl Remembered {
    /// A provision of `product`, remembered for `remaining` more.
    pub fn new(product: impl Into<String>, remaining: Duration) -> Self {
        Self {
            product: product.into(),
            remaining,
        }
    }
}

/// The processes guarding the same sites, as one process sees them (see the module docs).
///
/// Give the same peers to every process of a deployment with
/// [`UpgradeGuardBuilder::peers`](crate::UpgradeGuardBuilder::peers), beside locks shared the
/// same way. A guard calls [`recall_provisions`](Self::recall_provisions) with the site held, and
/// [`remember_provision`](Self::remember_provision) before it frees the site, so a process that
/// takes the site next reads what the last one forwarded.
pub trait Peers: fmt::Debug + Send + Sync + 'static {
    /// Tells every other process that `site`'s upgrade paths changed, so that they drop their
    /// cached copy, and forgets the provisions remembered of it. Must not block (send it from a
    /// task).
    fn announce_forget(&self, site: &Site);

    /// Starts handing `listener` the sites other processes announce, for as long as the peers
    /// live. Called once by each guard built on these peers.
    fn listen_for_forgets(&self, listener: ForgetListener);

    /// Remembers, for `window`, that a provision of `product` was forwarded for the site named
    /// `site`. The guard waits for it (within the engine's own bound) before it frees the site.
    fn remember_provision<'a>(
        &'a self,
        site: &'a Site,
        product: &'a str,
        window: Duration,
    ) -> PeersFuture<'a, ()>;

    /// The provisions remembered of the site named `site` whose window has not passed.
    fn recall_provisions<'a>(&'a self, site: &'a Site) -> PeersFuture<'a, Vec<Remembered>>;
}

/// The guard's peers could not be reached (or answered with an error). A guard that cannot
/// recall a site's provisions answers `503 site_busy` and forwards nothing: what the peers
/// share is part of holding the site.
#[derive(Debug, thiserror::Error)]
#[error("the guard's peers could not be reached")]
pub struct PeersError(#[source] Box<dyn std::error::Error + Send + Sync>);

impl PeersError {
    /// Wraps the engine's own error.
    pub fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(error.into())
    }
}
