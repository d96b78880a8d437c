//! A held site: what a forwarded request keeps until its work has really ended.
//!
//! Two words, used everywhere in the guard: a **permit** ([`SitePermit`]) is one name's lock,
//! taken; a **hold** is what a request keeps while the guard works on it and, once forwarded,
//! until the inner service has ended (also when the guard finishes it detached, its client gone):
//! the permits of every name the site goes by, and what its end must forget and remember.

use super::shared::Shared;
use crate::lock::{HeldNames, LockError, SiteNames, SitePermit};
use crate::rejection::{Chain, Rejection};
use crate::site::Site;
use futures_util::FutureExt;
use http::StatusCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether a request the guard holds a site for can provision a product.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Provides {
    /// A provision of a product: held under every name of the site, or not at all.
    Product,
    /// A connection request or a cancel: held under the name given when the site's other names
    /// cannot be learned.
    Nothing,
}

/// A held site (see the module's docs).
///
/// Once the request is forwarded, its end forgets the site's cached paths before it frees the
/// site: what was forwarded may have changed what the site may get, and nothing this process
/// read while it was under way (a dashboard's lookup, say) may outlive it. A cancel answered
/// 2xx also forgets the provisions remembered of the site (what it gave back is an upgrade
/// again), and tells every process sharing the guard's peers to forget both. A cancel that
/// failed, or whose outcome is unknown, leaves that memory as it is: a provision still settling
/// stays remembered, so a downgrade or a repeat of it cannot pass on an answer that does not
/// show it yet. A provision's end need not tell the peers: it only takes products off a site's
/// paths, so the others' cached refusals stay true, and the provision itself is remembered
/// where they look (see `recent.rs`). A request that a fail-open route forwards without its
/// lock still forgets at its end: then it holds no permit.
pub(crate) struct Hold {
    /// Every name the site is held under (see `lock/names.rs`).
    names: HeldNames,
    /// How long taking the permits took.
    waited: Duration,
    /// `None` when the request is forwarded without the site's lock (a fail-open route).
    permit: Option<SitePermit>,
    /// Set once the request is forwarded.
    end: Option<End>,
}

/// A forwarded cancel, as its end reads its answer.
pub(super) struct Cancel {
    /// Whether the answer's status tells nothing: the cancel asked WordPress.com for its
    /// envelope (`http_envelope`), which is 200 whatever happened. Its end then forgets no
    /// provision, as for a cancel whose outcome is unknown.
    pub(super) answer_in_body: bool,
}

/// What a forwarded request's end does.
struct End {
    shared: Arc<Shared>,
    /// Set when the request gives products back (a cancel): answered 2xx, the provisions
    /// remembered of the site are forgotten too, in every process sharing the guard's peers.
    cancel: Option<Cancel>,
    /// The product of a forwarded provision: remembered for the settling window, unless its
    /// answer says it failed.
    provision: Option<String>,
    /// The status the inner service answered with; `None` while unknown (not answered yet, or
    /// the inner service failed or was given up on).
    answered: Option<StatusCode>,
}

impl Hold {
    /// Holds `site` under every name it goes by (a lookup until a name is known), waiting at
    /// most `wait` in all; 503 `site_busy` past it.
    pub(super) async fn take(
        shared: &Shared,
        site: &Site,
        provides: Provides,
        wait: Duration,
    ) -> Result<Self, Rejection> {
        let names = match shared.names.of(site, shared.lookups.client()).await {
            Ok(names) => names,
            // Nothing is provisioned: the name given is enough to hold (a cancel, a repair,
            // which a failing site lookup must not block).
            Err(error) if provides == Provides::Nothing => {
                log_unnamed(site, &error);
                SiteNames::given(site)
            }
            Err(error) => return Err(Rejection::Upstream(error)),
        };
        let mut permit: Option<SitePermit> = None;
        let mut waited = Duration::ZERO;
        for name in names.iter() {
            let (taken, wait) = lock(shared, name, wait.saturating_sub(waited)).await;
            waited += wait;
            let taken = taken.map_err(|error| {
                shared.stats.site_busy();
                Rejection::SiteBusy(error)
            })?;
            // Freed together, in the order they were taken.
            permit = Some(match permit {
                None => taken,
                Some(held) => SitePermit::new((held, taken)),
            });
        }
        if !waited.is_zero() {
            shared.stats.lock_waited(waited);
        }
        Ok(Self {
            names,
            waited,
            permit,
            end: None,
        })
    }

    /// A site forwarded without its lock: its end still forgets.
    pub(super) fn unlocked(site: &Site) -> Self {
        Self {
            names: HeldNames::only(site),
            waited: Duration::ZERO,
            permit: None,
            end: None,
        }
    }

    /// Every name the site is held under.
    pub(super) fn names(&self) -> &HeldNames {
        &self.names
    }

    /// How long taking the site's lock took, when the site is locked.
    pub(super) fn lock_wait(&self) -> Option<Duration> {
        self.permit.as_ref().map(|_| self.waited)
    }

    /// The request is forwarded: forgets the site's cached paths now and again at its end; a
    /// `provision` is remembered at its end, a `cancel` answered 2xx forgets what was (see
    /// `recent.rs`).
    pub(super) fn forwarded(
        &mut self,
        shared: &Arc<Shared>,
        cancel: Option<Cancel>,
        provision: Option<String>,
    ) {
        let end = End {
            shared: shared.clone(),
            cancel,
            provision,
            answered: None,
        };
        end.forget(&self.names, false);
        self.end = Some(end);
    }

    /// The inner service answered the forwarded request with `status`.
    pub(super) fn answered(&mut self, status: StatusCode) {
        if let Some(end) = &mut self.end {
            end.answered = Some(status);
        }
    }
}

impl End {
    /// Forgets the cached paths of every name in `names`; `everywhere`, also the provisions
    /// remembered of the site, here and in every peer (under the site's own names: nothing is
    /// remembered under the lock private sites share).
    fn forget(&self, names: &HeldNames, everywhere: bool) {
        for site in names.iter() {
            self.shared.lookups.forget(site);
        }
        if everywhere {
            for site in names.of_the_site() {
                self.shared.recent.forget_everywhere(site);
            }
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // Runs before the fields drop: the site is forgotten while it is still held.
        let Some(end) = self.end.take() else {
            return;
        };
        // A provision that may have been made is remembered before anyone can check the site
        // again: here at once, by the peers before the site's lock is freed.
        if let Some(product) = &end.provision
            && end.answered.is_none_or(|status| status.is_success())
            && let Some(told) = end.shared.recent.remember(&self.names, product)
        {
            let permit = self.permit.take();
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn(async move {
                        told.await;
                        drop(permit);
                    });
                }
                // The runtime is going away: a shared lock's lease frees the site, and the
                // peers never hear of the provision.
                Err(_) => tracing::warn!(
                    site = %self.names.iter().next().expect("a site has a name"),
                    "no Tokio runtime: the other processes are not told of a provision just made"
                ),
            }
        }
        let gave_back = end
            .cancel
            .as_ref()
            .is_some_and(|cancel| !cancel.answer_in_body)
            && end.answered.is_some_and(|status| status.is_success());
        end.forget(&self.names, gave_back);
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("names", &self.names)
            .field("locked", &self.permit.is_some())
            .field("forwarded", &self.end.is_some())
            .finish_non_exhaustive()
    }
}

/// Takes one name's lock, waiting at most `wait`; says how long it waited.
async fn lock(
    shared: &Shared,
    site: &Site,
    wait: Duration,
) -> (Result<SitePermit, LockError>, Duration) {
    // Bounded here too, so a lock implementation that overstays its wait cannot hang requests;
    // the margin leaves a shared lock time to finish its last attempt and report it.
    let bound = wait.saturating_add(Duration::from_secs(5));
    let mut acquire = shared.locks.acquire(site, wait);
    // A free site's lock is taken on the first poll: no timer for that (registering one and
    // taking it off the timer wheel again costs more than taking the lock). Only a wait is
    // bounded, from its start.
    if let Some(acquired) = (&mut acquire).now_or_never() {
        return (acquired, Duration::ZERO);
    }
    let started = Instant::now();
    let acquired = tokio::time::timeout(bound, acquire)
        .await
        .unwrap_or(Err(LockError::Busy));
    let waited = started.elapsed();
    log_waited(site, waited, acquired.is_ok());
    (acquired, waited)
}

// Out of line: a `tracing` macro expanded in an `async fn` grows its future, which every
// request carries (see `log_lookup` in `cache.rs`).

#[cold]
fn log_unnamed(site: &Site, error: &crate::upstream::LookupError) {
    tracing::warn!(%site, error = %Chain(error), "the site lookup failed; held under the name given");
}

fn log_waited(site: &Site, waited: Duration, ok: bool) {
    tracing::debug!(%site, ?waited, ok, "waited for the site's lock");
}
