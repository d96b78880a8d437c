//! The sites the fake knows and the products each holds.

use super::catalogue::{PRODUCTS, Product};

/// The family of plans, which a cancellation without `plan` cancels.
const PLANS: &str = "jetpack-plans";
use crate::site::{Site, SiteKind};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A site to seed the fake with, known by its blog ID, its URL, or both.
///
/// ```
/// use upgrade_guard::fake::FakeSite;
///
/// let site = FakeSite::new(1002)
///     .url("https://example.com/blog/")
///     .holding(["jetpack-backup-realtime"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeSite {
    blog_id: Option<u64>,
    url: Option<(String, Site)>,
    held: Vec<&'static str>,
    connected: bool,
    /// Products provisioned but not granted yet (the fake's grant delay), with when they are.
    pending: Vec<(Instant, &'static Product)>,
    /// For a site registered by a first provision under a grant delay: when upgrade-paths and
    /// status start knowing it.
    known_from: Option<Instant>,
}

impl FakeSite {
    /// A site known by its blog ID, holding nothing (a free site).
    pub fn new(blog_id: u64) -> Self {
        Self::unnamed().blog_id(blog_id)
    }

    /// A site known only by its URL (no blog ID), holding nothing.
    ///
    /// # Panics
    ///
    /// As [`url`](Self::url).
    pub fn from_url(url: &str) -> Self {
        Self::unnamed().url(url)
    }

    fn unnamed() -> Self {
        Self {
            blog_id: None,
            url: None,
            held: Vec::new(),
            connected: true,
            pending: Vec::new(),
            known_from: None,
        }
    }

    /// Grants the products whose time has come.
    fn settle(&mut self, now: Instant) {
        let (due, later): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(at, _)| *at <= now);
        self.pending = later;
        for (_, product) in due {
            grant(&mut self.held, product);
        }
    }

    /// What the site holds once every provision made is granted.
    fn held_eventually(&self) -> Vec<&'static str> {
        let mut held = self.held.clone();
        for (_, product) in &self.pending {
            grant(&mut held, product);
        }
        held
    }

    /// Whether upgrade-paths and status know the site at `now`.
    fn known_at(&self, now: Instant) -> bool {
        self.known_from.is_none_or(|from| from <= now)
    }

    /// Sets the blog ID.
    #[must_use]
    pub fn blog_id(mut self, blog_id: u64) -> Self {
        self.blog_id = Some(blog_id);
        self
    }

    /// Sets the URL, in any form [`Site::parse`] accepts (`https://example.com/blog/`,
    /// `example.com/blog`, `example.com::blog`); requests naming the site by any of these match.
    ///
    /// # Panics
    ///
    /// If `url` is not a valid site URL (a blog ID is not a URL either).
    #[must_use]
    pub fn url(mut self, url: &str) -> Self {
        let site = Site::parse(url)
            .ok()
            .filter(|site| site.kind() == SiteKind::Url)
            .unwrap_or_else(|| panic!("FakeSite::url: {url:?} is not a site URL"));
        self.url = Some((url.to_owned(), site));
        self
    }

    /// Adds products the site already holds.
    ///
    /// # Panics
    ///
    /// If a slug is not in the [catalogue](super::catalogue::PRODUCTS): a typo would silently
    /// change what the site is offered.
    #[must_use]
    pub fn holding<I, S>(mut self, products: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for slug in products {
            let slug = slug.as_ref();
            let product = Product::find(slug)
                .unwrap_or_else(|| panic!("FakeSite::holding: no product {slug:?}"));
            hold(&mut self.held, product);
        }
        self
    }

    /// Marks the site as registered but no longer connected (its `status` says
    /// `"is_connected":false`), as a site in need of a repair is; any provision, with or without
    /// a plan, connects it again.
    #[must_use]
    pub fn disconnected(mut self) -> Self {
        self.connected = false;
        self
    }

    fn shares_a_name_with(&self, other: &FakeSite) -> bool {
        (self.blog_id.is_some() && self.blog_id == other.blog_id)
            || matches!((&self.url, &other.url), (Some((_, a)), Some((_, b))) if a == b)
    }

    fn snapshot(&self) -> SiteSnapshot {
        SiteSnapshot {
            blog_id: self.blog_id,
            url: self.url.as_ref().map(|(given, _)| given.clone()),
            site_id: self.url.as_ref().map(|(_, site)| site.clone()),
            held: self.held.iter().map(|&s| s.to_owned()).collect(),
            connected: self.connected,
        }
    }
}

/// Grants `product`: the products it supersedes go, it is held.
fn grant(held: &mut Vec<&'static str>, product: &'static Product) {
    held.retain(|slug| Product::find(slug).is_none_or(|held| !product.supersedes(held)));
    hold(held, product);
}

/// Adds `product` to `held`, keeping catalogue order and no duplicates.
fn hold(held: &mut Vec<&'static str>, product: &'static Product) {
    if !held.contains(&product.slug) {
        held.push(product.slug);
        held.sort_by_key(|slug| PRODUCTS.iter().position(|p| p.slug == *slug));
    }
}

/// A site as the fake holds it now, from [`FakeUpstream::sites`](super::FakeUpstream::sites).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SiteSnapshot {
    /// The blog ID, if the site has one.
    pub blog_id: Option<u64>,
    /// The URL as it was given to [`FakeSite::url`].
    pub url: Option<String>,
    /// The URL as upgrade-paths names it (`example.com::blog`).
    pub site_id: Option<Site>,
    /// The products held, in catalogue order.
    pub held: Vec<String>,
    /// Whether the site is connected (`status`'s `is_connected`).
    pub connected: bool,
}

/// Why a provision was refused by the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProvisionError {
    /// A blog ID the fake does not know: a blog ID exists only once a site is registered.
    UnknownBlogId,
    NotOffered,
}

/// What a provision did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Provisioned {
    /// The site's blog ID (a new one when the provision registered the site).
    pub(crate) blog_id: Option<u64>,
    /// Whether the site was unknown and the provision registered it.
    pub(crate) registered: bool,
}

/// What a cancellation removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cancel {
    /// This product.
    Product(&'static Product),
    /// The site's plan (`jetpack-plans` family), when `plan` is not given.
    Plan,
    /// Everything (`cancel-all`).
    All,
}

/// Why a cancellation was refused by the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CancelError {
    UnknownSite,
    /// Nothing held matched: the answer is `{"success":false}`.
    NotHeld,
}

/// The fake's sites, behind one lock so that check-then-provision is atomic.
#[derive(Debug, Default)]
pub(crate) struct Store {
    sites: Mutex<Sites>,
    /// How long a provision takes to show in upgrade-paths and status.
    grant_delay: Duration,
}

impl Store {
    /// A store whose provisions show `grant_delay` after they are made.
    pub(crate) fn new(grant_delay: Duration) -> Self {
        Self {
            sites: Mutex::default(),
            grant_delay,
        }
    }

    /// Adds `site`, replacing any site known by the same blog ID or URL.
    pub(crate) fn add(&self, site: FakeSite) {
        self.lock().add(site);
    }

    /// What the site holds as upgrade-paths sees it (provisions granted so far); `None` for a
    /// site upgrade-paths does not know.
    pub(crate) fn held(&self, site: &Site) -> Option<Vec<&'static str>> {
        let now = Instant::now();
        self.lock().find(site).filter(|s| s.known_at(now)).map(|s| {
            s.settle(now);
            s.held.clone()
        })
    }

    pub(crate) fn snapshots(&self) -> Vec<SiteSnapshot> {
        let now = Instant::now();
        self.lock()
            .list
            .iter_mut()
            .map(|s| {
                s.settle(now);
                s.snapshot()
            })
            .collect()
    }

    /// The site's blog ID and URL (as it was given), for a site the fake knows: the public site
    /// lookup knows a site from its registration on.
    pub(crate) fn names(&self, site: &Site) -> Option<(Option<u64>, Option<String>)> {
        self.lock()
            .find(site)
            .map(|s| (s.blog_id, s.url.as_ref().map(|(given, _)| given.clone())))
    }

    /// The site's connection state and held products as status sees them; `None` for a site
    /// it does not know.
    pub(crate) fn status(&self, site: &Site) -> Option<(bool, Vec<&'static str>)> {
        let now = Instant::now();
        self.lock().find(site).filter(|s| s.known_at(now)).map(|s| {
            s.settle(now);
            (s.connected, s.held.clone())
        })
    }

    /// Provisions `product` on `site` if the site gains from it once every provision already
    /// made is granted (the products it supersedes are dropped), or with no product only
    /// connects it. A site named by URL that the fake does not know is registered first, with a
    /// new blog ID and nothing held, as WordPress.com's provision does. Under a grant delay the
    /// product shows in upgrade-paths and status only once the delay has passed (and so does a
    /// site registered now).
    pub(crate) fn provision(
        &self,
        site: &Site,
        product: Option<&'static Product>,
    ) -> Result<Provisioned, ProvisionError> {
        let now = Instant::now();
        let delay = self.grant_delay;
        let mut sites = self.lock();
        let registered = sites.find(site).is_none();
        if registered {
            if site.kind() != SiteKind::Url {
                return Err(ProvisionError::UnknownBlogId);
            }
            let blog_id = sites.by_id.keys().max().copied().unwrap_or(0) + 1;
            let url = format!("https://{}/", site.as_str().replace("::", "/"));
            let mut new = FakeSite::new(blog_id).url(&url);
            new.known_from = (!delay.is_zero()).then_some(now + delay);
            sites.add(new);
        }
        let found = sites
            .find(site)
            .expect("the site is known or was just registered");
        found.settle(now);
        if let Some(product) = product {
            if !product.is_offered(found.held_eventually()) {
                return Err(ProvisionError::NotOffered);
            }
            if delay.is_zero() {
                grant(&mut found.held, product);
            } else {
                found.pending.push((now + delay, product));
            }
        }
        found.connected = true;
        Ok(Provisioned {
            blog_id: found.blog_id,
            registered,
        })
    }

    /// Takes products off `site`: what a partner's cancellation does (every provision already
    /// made granted first).
    pub(crate) fn cancel(&self, site: &Site, cancel: Cancel) -> Result<(), CancelError> {
        let mut sites = self.lock();
        let site = sites.find(site).ok_or(CancelError::UnknownSite)?;
        site.held = site.held_eventually();
        site.pending.clear();
        site.known_from = None;
        let before = site.held.len();
        match cancel {
            Cancel::All => site.held.clear(),
            Cancel::Product(product) => site.held.retain(|slug| *slug != product.slug),
            Cancel::Plan => site
                .held
                .retain(|slug| Product::find(slug).is_none_or(|p| p.family != PLANS)),
        }
        if site.held.len() == before && cancel != Cancel::All {
            return Err(CancelError::NotHeld);
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Sites> {
        // Every update leaves the list valid, so a panic elsewhere does not poison it.
        self.sites.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sites, indexed by each of their names: a load test seeds a hundred thousand, and every
/// call finds one.
#[derive(Debug, Default)]
struct Sites {
    list: Vec<FakeSite>,
    by_id: HashMap<u64, usize>,
    by_url: HashMap<Site, usize>,
}

impl Sites {
    /// The site a request names, by blog ID or by URL.
    fn find(&mut self, site: &Site) -> Option<&mut FakeSite> {
        let at = match site.kind() {
            SiteKind::BlogId => self.by_id.get(&site.as_str().parse().ok()?),
            SiteKind::Url => self.by_url.get(site),
        };
        at.map(|&at| &mut self.list[at])
    }

    /// Adds `site`, replacing any site known by the same blog ID or URL.
    fn add(&mut self, site: FakeSite) {
        let id = site.blog_id.and_then(|id| self.by_id.get(&id));
        let url = site.url.as_ref().and_then(|(_, url)| self.by_url.get(url));
        if id.is_some() || url.is_some() {
            self.list.retain(|s| !s.shares_a_name_with(&site));
            self.list.push(site);
            self.reindex();
            return;
        }
        self.index(self.list.len(), &site);
        self.list.push(site);
    }

    fn index(&mut self, at: usize, site: &FakeSite) {
        if let Some(id) = site.blog_id {
            self.by_id.insert(id, at);
        }
        if let Some((_, url)) = &site.url {
            self.by_url.insert(url.clone(), at);
        }
    }

    fn reindex(&mut self) {
        self.by_id.clear();
        self.by_url.clear();
        let list = std::mem::take(&mut self.list);
        for (at, site) in list.iter().enumerate() {
            self.index(at, site);
        }
        self.list = list;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> Site {
        Site::parse(s).unwrap()
    }

    #[test]
    fn sites_are_found_by_blog_id_or_url() {
        let store = Store::default();
        store.add(
            FakeSite::new(7)
                .url("https://Example.com/blog/")
                .holding(["jetpack-scan"]),
        );
        store.add(FakeSite::from_url("other.example"));
        assert_eq!(store.held(&site("7")), Some(vec!["jetpack-scan"]));
        assert_eq!(
            store.held(&site("example.com::blog")),
            Some(vec!["jetpack-scan"])
        );
        assert_eq!(store.held(&site("example.com")), None);
        assert_eq!(store.held(&site("other.example")), Some(vec![]));
        assert_eq!(store.held(&site("8")), None);

        store.add(FakeSite::new(7));
        assert_eq!(store.held(&site("7")), Some(vec![]));
        assert_eq!(store.held(&site("example.com/blog")), None);
        assert_eq!(store.snapshots().len(), 2);
    }

    #[test]
    fn provisioning_supersedes_smaller_products() {
        let store = Store::default();
        store.add(FakeSite::new(1).holding(["jetpack-scan", "jetpack-backup-realtime"]));
        let product = |slug| Product::find(slug).unwrap();
        assert_eq!(
            store.provision(&site("1"), Some(product("premium"))),
            Err(ProvisionError::NotOffered)
        );
        assert_eq!(
            store.provision(&site("2"), Some(product("premium"))),
            Err(ProvisionError::UnknownBlogId)
        );
        store
            .provision(&site("1"), Some(product("professional")))
            .unwrap();
        assert_eq!(store.held(&site("1")), Some(vec!["professional"]));
    }

    #[test]
    fn a_first_provision_by_url_registers_the_site() {
        let store = Store::default();
        store.add(FakeSite::new(41));
        let scan = Product::find("jetpack-scan").unwrap();
        let done = store.provision(&site("https://new.example/"), Some(scan));
        assert_eq!(
            done,
            Ok(Provisioned {
                blog_id: Some(42),
                registered: true
            })
        );
        assert_eq!(store.held(&site("42")), Some(vec!["jetpack-scan"]));
        assert_eq!(store.held(&site("new.example")), Some(vec!["jetpack-scan"]));
        // Without a product it connects and changes nothing.
        let done = store.provision(&site("new.example"), None).unwrap();
        assert!(!done.registered);
        assert_eq!(store.held(&site("42")), Some(vec!["jetpack-scan"]));
    }

    #[test]
    fn cancellations_give_products_back() {
        let store = Store::default();
        store.add(FakeSite::new(1).holding(["jetpack-scan", "professional"]));
        let scan = Product::find("jetpack-scan").unwrap();
        store.cancel(&site("1"), Cancel::Plan).unwrap();
        assert_eq!(store.held(&site("1")), Some(vec!["jetpack-scan"]));
        assert_eq!(
            store.cancel(&site("1"), Cancel::Plan),
            Err(CancelError::NotHeld)
        );
        store.cancel(&site("1"), Cancel::Product(scan)).unwrap();
        assert_eq!(store.held(&site("1")), Some(vec![]));
        store.cancel(&site("1"), Cancel::All).unwrap();
        assert_eq!(
            store.cancel(&site("2"), Cancel::All),
            Err(CancelError::UnknownSite)
        );
    }

    #[test]
    #[should_panic(expected = "no product")]
    fn holding_an_unknown_product_is_a_test_bug() {
        let _ = FakeSite::new(1).holding(["jetpack-backup-realtim"]);
    }
}
