//! What every route of one guard shares.

use crate::cache::Lookups;
use crate::catalogue::Catalogue;
use crate::lock::{SiteLocks, SiteNames};
use crate::recent::RecentProvisions;
use crate::site::Site;
use crate::stats::GuardStats;
use std::sync::Arc;

/// The lookups and their cache, the site locks and the names they are taken under, the peers,
/// what the answers can judge, the provisions just made, the stats.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) lookups: Lookups,
    pub(super) locks: Arc<dyn SiteLocks>,
    pub(super) names: Arc<SiteNames>,
    pub(super) catalogue: Catalogue,
    /// The provisions forwarded within the settling window, shared with the peers.
    pub(super) recent: Arc<RecentProvisions>,
    pub(super) stats: GuardStats,
}

impl Shared {
    /// Forgets the site's cached paths and the provisions remembered of it, here and in every
    /// peer: the site changed in a way the guard did not see.
    pub(super) fn forget_everywhere(&self, site: &Site) {
        self.lookups.forget(site);
        self.recent.forget_everywhere(site);
    }
}
