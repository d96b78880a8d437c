//! The provisions the guard just forwarded, remembered until WordPress.com's answers show them.
//!
//! WordPress.com grants a product through its own jobs: an upgrade-paths answer read right after
//! a provision may not show it yet, and still list the product just provisioned (or, for a site's
//! first provision, not know the site). Judged from such an answer, a product the site is about
//! to hold could pass as an upgrade (Professional provisioned, then Realtime Backups: forwarded),
//! and a retry of the provision would be forwarded a second time. So after a provision of product
//! P for a site is forwarded and answered 2xx (or its outcome is unknown: the inner service
//! failed, the guard finished it alone past its ceiling), the guard remembers it for a settling
//! window, under every name of the site it was held by (not the lock every private site shares,
//! see `lock/names.rs`):
//!
//! - an answer for the site that still lists P, or does not know the site, is *stale*: the guard
//!   does not judge from it, and asks again (see `guard/check.rs`);
//! - an answer that no longer lists P shows the provision: answers are trusted again;
//! - a provision of P itself while it is remembered is answered `409 already_provisioned`;
//! - a cancel answered 2xx (or a change the guard is told of, here or in another process sharing
//!   the locks) forgets what is remembered of the site: what it gave back is an upgrade again at
//!   once. A cancel that failed, or whose outcome is unknown, forgets none of it: it may have
//!   given nothing back, and a provision still settling must stay remembered.
//!
//! This needs no knowledge of which product contains which: only "the answer does not show what
//! was just provisioned". Memory follows the provisions of the last window, not every site.
//!
//! With [`Peers`], every provision is also remembered where the other processes look, before
//! the site is freed, and what they remember of a site is recalled with the site held: a
//! provision forwarded by one replica makes the others' stale answers stale too. Whether an
//! answer has shown a provision stays each process's own reading.

use crate::lock::HeldNames;
use crate::peers::{Peers, PeersError};
use crate::site::{Site, SiteHashing};
use crate::upstream::UpgradePaths;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a provision is remembered by default.
pub(crate) const DEFAULT_SETTLING_WINDOW: Duration = Duration::from_secs(60);

/// The provisions forwarded in the last window, by site name.
#[derive(Debug)]
pub(crate) struct RecentProvisions {
    window: Duration,
    sites: Mutex<HashMap<Site, Vec<Recent>, SiteHashing>>,
    peers: Option<Arc<dyn Peers>>,
}

/// One provision remembered.
#[derive(Clone, Debug)]
struct Recent {
    product: Box<str>,
    until: Instant,
    /// Whether an answer has shown it: from then on, answers are trusted again.
    shown: bool,
}

/// What an upgrade-paths lookup of a remembered site answered.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Seen<'a> {
    /// The site's paths.
    Paths(&'a UpgradePaths),
    /// WordPress.com does not know the site.
    UnknownSite,
}

impl RecentProvisions {
    /// Provisions are remembered for `window` (`Duration::ZERO` remembers nothing), here and,
    /// when there are `peers`, there too.
    pub(crate) fn new(window: Duration, peers: Option<Arc<dyn Peers>>) -> Self {
        Self {
            window,
            sites: Mutex::default(),
            peers,
        }
    }

    /// Remembers a provision of `product` for the site held under `names`. With peers, returns
    /// the work of remembering it there, which must end before the site is freed.
    pub(crate) fn remember(
        &self,
        names: &HeldNames,
        product: &str,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        if self.window.is_zero() {
            return None;
        }
        self.remember_here(names, product, self.window);
        let peers = self.peers.clone()?;
        let (names, product, window) = (names.clone(), product.to_owned(), self.window);
        Some(async move {
            for name in names.of_the_site() {
                if let Err(error) = peers.remember_provision(name, &product, window).await {
                    tracing::warn!(
                        site = %name,
                        product,
                        error = %crate::rejection::Chain(&error),
                        "could not tell the other processes of a provision just made"
                    );
                }
            }
        })
    }

    /// Adds to what this process remembers of the site held under `names` what its peers
    /// remember of it. Without peers, there is nothing to recall.
    pub(crate) async fn recall(&self, names: &HeldNames) -> Result<(), PeersError> {
        let Some(peers) = self.peers.as_ref().filter(|_| !self.window.is_zero()) else {
            return Ok(());
        };
        for name in names.of_the_site() {
            for remembered in peers.recall_provisions(name).await? {
                let window = remembered.remaining.min(self.window);
                self.remember_here(&HeldNames::only(name), &remembered.product, window);
            }
        }
        Ok(())
    }

    /// Remembers a provision of `product` for `window` here. One already remembered keeps what
    /// this process's answers have shown of it, and the later of the two ends.
    fn remember_here(&self, names: &HeldNames, product: &str, window: Duration) {
        let now = Instant::now();
        let until = now + window;
        let mut sites = self.sites();
        // Now and then, the whole table: sites whose window passed go.
        if sites.len() > 64 && sites.len().is_power_of_two() {
            sites.retain(|_, recent| {
                recent.retain(|r| r.until > now);
                !recent.is_empty()
            });
        }
        for name in names.of_the_site() {
            let remembered = sites.entry(name.clone()).or_default();
            remembered.retain(|r| r.until > now);
            match remembered.iter_mut().find(|r| *r.product == *product) {
                Some(known) => known.until = known.until.max(until),
                None => remembered.push(Recent {
                    product: product.into(),
                    until,
                    shown: false,
                }),
            }
        }
    }

    /// Forgets what is remembered of `site` here and tells the peers to forget it too (with
    /// its cached paths): a cancel gave products back, or the guard was told of a change.
    pub(crate) fn forget_everywhere(&self, site: &Site) {
        self.forget_site(site);
        if let Some(peers) = &self.peers {
            peers.announce_forget(site);
        }
    }

    /// Forgets what is remembered under `site`'s name, as another process announced.
    pub(crate) fn forget_site(&self, site: &Site) {
        if self.window.is_zero() {
            return;
        }
        self.sites().remove(site);
    }

    /// Whether a provision of `product` for the site held under `names` was forwarded within the
    /// window.
    pub(crate) fn provisioned(&self, names: &HeldNames, product: &str) -> bool {
        if self.window.is_zero() {
            return false;
        }
        let now = Instant::now();
        let sites = self.sites();
        names.of_the_site().any(|name| {
            sites.get(name).is_some_and(|recent| {
                recent
                    .iter()
                    .any(|r| r.until > now && *r.product == *product)
            })
        })
    }

    /// Whether `seen` is stale for the site held under `names`: it still lists a product
    /// provisioned within the window that no answer has shown yet, or does not know the site
    /// although something was provisioned on it. Marks as shown what `seen` shows.
    pub(crate) fn stale(&self, names: &HeldNames, seen: Seen<'_>) -> bool {
        if self.window.is_zero() {
            return false;
        }
        let now = Instant::now();
        let mut sites = self.sites();
        let mut stale = false;
        for name in names.of_the_site() {
            let Some(recent) = sites.get_mut(name) else {
                continue;
            };
            recent.retain(|r| r.until > now);
            for r in recent.iter_mut().filter(|r| !r.shown) {
                match seen {
                    Seen::Paths(paths) if !paths.allows(&r.product) => r.shown = true,
                    _ => stale = true,
                }
            }
            if recent.is_empty() {
                sites.remove(name);
            }
        }
        stale
    }

    /// How many site names are remembered now (idle: none once the window has passed).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sites().len()
    }

    fn sites(&self) -> MutexGuard<'_, HashMap<Site, Vec<Recent>, SiteHashing>> {
        // Every update leaves the table consistent, so a panic elsewhere cannot corrupt it.
        self.sites.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(site: &str) -> HeldNames {
        HeldNames::only(&Site::parse(site).unwrap())
    }

    fn paths(json: &str) -> UpgradePaths {
        UpgradePaths::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn an_answer_is_stale_until_it_shows_the_provision() {
        let recent = RecentProvisions::new(Duration::from_secs(60), None);
        let site = names("1001");
        let before = paths(
            r#"{"jetpack-plans":["professional"],"jetpack-backup":["jetpack-backup-realtime"]}"#,
        );
        let after = paths("{}");
        assert!(
            !recent.stale(&site, Seen::Paths(&before)),
            "nothing remembered"
        );
        let _ = recent.remember(&site, "professional");
        assert!(recent.provisioned(&site, "professional"));
        assert!(!recent.provisioned(&site, "premium"));
        assert!(recent.stale(&site, Seen::Paths(&before)));
        assert!(recent.stale(&site, Seen::UnknownSite));
        // Shown: answers are trusted again, the provision still remembered for retries.
        assert!(!recent.stale(&site, Seen::Paths(&after)));
        assert!(!recent.stale(&site, Seen::Paths(&before)));
        assert!(recent.provisioned(&site, "professional"));
        recent.forget_site(&Site::parse("1001").unwrap());
        assert!(!recent.provisioned(&site, "professional"));
        assert_eq!(recent.len(), 0);
    }

    #[test]
    fn the_window_ends_the_memory() {
        let recent = RecentProvisions::new(Duration::from_millis(1), None);
        let site = names("1001");
        let _ = recent.remember(&site, "professional");
        let until = Instant::now() + Duration::from_millis(1);
        while Instant::now() <= until {
            std::hint::spin_loop();
        }
        assert!(!recent.provisioned(&site, "professional"));
        assert!(!recent.stale(&site, Seen::UnknownSite));
        assert_eq!(recent.len(), 0);
        let off = RecentProvisions::new(Duration::ZERO, None);
        let _ = off.remember(&site, "professional");
        assert!(!off.provisioned(&site, "professional"));
    }
}
