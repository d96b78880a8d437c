//! One site, one lock, whatever it is called: the names a site's lock is taken under.
//!
//! A request may name a site by its blog ID or by its URL, and two provisions of one site must
//! be serialized however each names it. The guard therefore holds a site under every name it
//! knows the site by: the name the request gave, the blog ID and the URL WordPress.com's public
//! site lookup gives for it (`GET /rest/v1.1/sites/{site}`, asked until known, then remembered;
//! see `upstream/names.rs`), and, for each URL, its *loose* form: the host without a leading
//! `www.` and the path in lower case, the spellings in which a URL a partner sends and the one
//! WordPress.com keeps for the site most often differ. Two requests naming one site both ways
//! then share the blog ID's lock.
//!
//! A name WordPress.com does not know yet (a new site, by URL) is held under that name and its
//! loose form. Its first provision registers it; a request naming the new blog ID a moment later
//! learns the site's URL from the lookup and waits on that URL's loose lock, which the first
//! provision still holds, as long as the URL WordPress.com keeps differs from the one the first
//! provision sent at most by `www.` and case. A site WordPress.com does not describe publicly (a
//! private site) is held under its names and under one lock shared by every such request: they
//! are serialized with each other, since which of them name one site cannot be told. The
//! provisions just made are remembered under the names the request gave (see `recent.rs`), not
//! under that shared lock: a private site named by blog ID and then by URL within the settling
//! window is not recognised as the one just provisioned, where remembering under the shared lock
//! would make every private site wait for, or refuse, every other's provision.
//!
//! The locks are taken in one order (blog IDs, which are digits, before URLs; then as strings),
//! the same in every process, so two requests taking several never wait on each other in turn.

use crate::site::{Site, SiteHashing, SiteKind};
use crate::upstream::{LookupError, SiteLookup, UpgradePathsClient};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How long a site's names are remembered: a blog ID and its URL part only when a site moves
/// to another address, and a stale pair only ever makes the guard hold one lock more.
const NAMES_TTL: Duration = Duration::from_secs(60 * 60);

/// The lock every request takes whose site WordPress.com would not name (a private site).
/// `.invalid` is reserved (RFC 2606): no real site has this name.
static UNNAMED: LazyLock<Site> =
    LazyLock::new(|| Site::parse("unnamed-sites.invalid").expect("a valid site"));

/// How the guard tells that a blog ID and a URL name one site; set on
/// [`UpgradeGuardBuilder::site_aliases`](crate::UpgradeGuardBuilder::site_aliases).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SiteAliases {
    /// Ask WordPress.com's public site lookup (`GET /rest/v1.1/sites/{site}`, without a token)
    /// for the other name of each site a request names, and hold the site under all its names:
    /// provisions naming one site by blog ID and by URL are serialized together, within one
    /// process and across processes sharing the [locks](crate::SiteLocks). A name once known is
    /// remembered for an hour; a name WordPress.com does not know (a new site) or describes not
    /// (a private site) is asked about again by each request naming it, one call more. When the
    /// lookup fails, a request naming a product is refused with 503
    /// `upgrade_paths_unavailable`, as for any failed lookup; a connection request or a cancel,
    /// which provision nothing, is held under the name it gave.
    #[default]
    Resolve,
    /// Hold a site under the name the request gave only. Provisions naming one site by blog ID
    /// and by URL are then **not** serialized together, and two such requests at once can both
    /// pass: only for deployments whose every route names sites one way (every source a path
    /// parameter holding blog IDs, say).
    AsNamed,
}

/// The names one request's site is held under, in the order their locks are taken: cheap to
/// clone, and small, since every forwarded request carries one.
#[derive(Clone, Debug)]
pub(crate) enum HeldNames {
    /// The name the request gave, alone.
    Named(Site),
    /// Several names, sorted, without repeats: at most the request's name, the blog ID and the
    /// URL, or the name and [`UNNAMED`].
    Several(Arc<[Site]>),
}

impl HeldNames {
    fn new(names: impl IntoIterator<Item = Option<Site>>) -> Self {
        let mut names: Vec<Site> = names.into_iter().flatten().collect();
        names.sort_by(order);
        names.dedup();
        match <[Site; 1]>::try_from(names) {
            Ok([site]) => Self::Named(site),
            Err(names) => Self::Several(names.into()),
        }
    }

    /// A site held under the name the request gave alone.
    pub(crate) fn only(site: &Site) -> Self {
        Self::Named(site.clone())
    }

    /// The names, in lock order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Site> {
        match self {
            Self::Named(site) => std::slice::from_ref(site).iter(),
            Self::Several(names) => names.iter(),
        }
    }

    /// The names that name this site: all but the lock every private site shares, which names
    /// none of them. What is remembered of a site is kept under these only: under the shared
    /// lock, one private site's provision would be every private site's.
    pub(crate) fn of_the_site(&self) -> impl Iterator<Item = &Site> {
        self.iter().filter(|name| **name != *UNNAMED)
    }
}

/// The lock order: blog IDs before URLs, then by identifier.
fn order(a: &Site, b: &Site) -> std::cmp::Ordering {
    let kind = |site: &Site| site.kind() == SiteKind::Url;
    kind(a).cmp(&kind(b)).then_with(|| a.cmp(b))
}

/// The names the guard knows each site by, learned from WordPress.com.
pub(crate) struct SiteNames {
    aliases: SiteAliases,
    /// What the lookup said of each name asked about, and of the names it gave.
    known: NameTable,
}

impl SiteNames {
    pub(crate) fn new(aliases: SiteAliases, capacity: u64) -> Self {
        Self {
            aliases,
            known: NameTable::new(capacity, NAMES_TTL),
        }
    }

    /// The names to hold `site` under. Remembered names cost no call; another costs one lookup.
    pub(crate) async fn of(
        &self,
        site: &Site,
        client: &UpgradePathsClient,
    ) -> Result<HeldNames, LookupError> {
        if self.aliases == SiteAliases::AsNamed {
            return Ok(HeldNames::only(site));
        }
        if let Some(names) = self.known.get(site) {
            return Ok(names);
        }
        // Boxed: a name is looked up once, and inline its future (a whole GET and read) would
        // swell the check's, which every request carries.
        match Box::pin(client.site_lookup(site)).await? {
            SiteLookup::Known { blog_id, url } => {
                let names = with_loose([Some(site.clone()), blog_id, url]);
                self.known
                    .insert(names.iter().filter(|name| !is_loose(name)), &names);
                Ok(names)
            }
            // Not remembered: the site may be registered a moment from now.
            SiteLookup::Unknown => Ok(Self::given(site)),
            SiteLookup::Private => Ok(with_loose([Some(site.clone()), Some(UNNAMED.clone())])),
        }
    }

    /// Every name the guard knows `site` by, without asking WordPress.com: what a lookup
    /// learned, or else the name given (and its loose form).
    pub(crate) fn known(&self, site: &Site) -> HeldNames {
        match self.aliases {
            SiteAliases::AsNamed => HeldNames::only(site),
            SiteAliases::Resolve => self.known.get(site).unwrap_or_else(|| Self::given(site)),
        }
    }

    /// The names to hold `site` under without asking WordPress.com: the name given (and its
    /// loose form), for a request that provisions nothing when the lookup failed.
    pub(crate) fn given(site: &Site) -> HeldNames {
        with_loose([Some(site.clone())])
    }
}

/// The suffix of loose names: `.invalid` is reserved (RFC 2606), so no site is called that.
const LOOSE: &str = ".loose.invalid";

/// `names`, with the loose form of each URL among them.
fn with_loose<const N: usize>(names: [Option<Site>; N]) -> HeldNames {
    let loose: Vec<Option<Site>> = names.iter().flatten().map(loose).collect();
    HeldNames::new(names.into_iter().chain(loose))
}

/// The loose form of a URL: the host without a leading `www.`, the path in lower case, under a
/// reserved domain (`example.com.loose.invalid::blog` for `www.Example.com/Blog`). `None` for a
/// blog ID.
fn loose(site: &Site) -> Option<Site> {
    if site.kind() != SiteKind::Url || is_loose(site) || *site == *UNNAMED {
        return None;
    }
    let mut parts = site.as_str().split("::");
    let host = parts.next().unwrap_or_default();
    let host = host.strip_prefix("www.").unwrap_or(host);
    let mut loose = format!("{host}{LOOSE}");
    for segment in parts {
        loose.push_str("::");
        loose.push_str(&segment.to_ascii_lowercase());
    }
    Site::parse(&loose).ok()
}

fn is_loose(site: &Site) -> bool {
    site.as_str()
        .split("::")
        .next()
        .is_some_and(|host| host.ends_with(LOOSE))
}

/// The names learned of each site, by every name the site goes by: a plain table rather than a
/// moka cache, because it is as big as the cache of answers. moka keeps about 260 bytes of its
/// own for each entry (its node, and its place in the access and expiry orders), as much as an
/// answer and its entry, and a site has an entry here for each of its names; an entry here is
/// its key, the names and when they expire. What a cache would add is not needed: an entry
/// expires when it is read past its time, and a full table makes room by dropping what has
/// expired, then an arbitrary eighth of it. A name dropped early costs one lookup more.
struct NameTable {
    entries: Mutex<HashMap<Site, Learned, SiteHashing>>,
    capacity: usize,
    ttl: Duration,
}

/// The names learned of a site, and until when they hold.
struct Learned {
    names: HeldNames,
    until: Instant,
}

impl NameTable {
    fn new(capacity: u64, ttl: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            capacity: usize::try_from(capacity).unwrap_or(usize::MAX).max(1),
            ttl,
        }
    }

    fn get(&self, site: &Site) -> Option<HeldNames> {
        let mut entries = self.entries();
        let learned = entries.get(site)?;
        if learned.until > Instant::now() {
            return Some(learned.names.clone());
        }
        entries.remove(site);
        None
    }

    /// Remembers `names` under each of `keys`.
    fn insert<'a>(&self, keys: impl Iterator<Item = &'a Site>, names: &HeldNames) {
        let until = Instant::now() + self.ttl;
        let mut entries = self.entries();
        for key in keys {
            if entries.len() >= self.capacity && !entries.contains_key(key) {
                make_room(&mut entries, self.capacity);
            }
            let names = names.clone();
            entries.insert(key.clone(), Learned { names, until });
        }
    }

    fn len(&self) -> usize {
        self.entries().len()
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<Site, Learned, SiteHashing>> {
        // Every update leaves the table consistent, so a panic elsewhere cannot corrupt it.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Drops what has expired from a full table, and if that is not an eighth of it, an arbitrary
/// eighth: room for that many names before the next full pass, so inserting stays O(1) on
/// average.
fn make_room(entries: &mut HashMap<Site, Learned, SiteHashing>, capacity: usize) {
    let now = Instant::now();
    entries.retain(|_, learned| learned.until > now);
    let mut excess = (entries.len() + capacity / 8 + 1).saturating_sub(capacity);
    entries.retain(|_, _| {
        let keep = excess == 0;
        excess = excess.saturating_sub(1);
        keep
    });
}

impl std::fmt::Debug for SiteNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteNames")
            .field("aliases", &self.aliases)
            .field("known", &self.known.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> Site {
        Site::parse(s).unwrap()
    }

    fn names(held: &HeldNames) -> Vec<&str> {
        held.iter().map(Site::as_str).collect()
    }

    #[test]
    fn names_are_held_in_one_order_without_repeats() {
        let held = HeldNames::new([
            Some(site("example.com")),
            Some(site("1002")),
            Some(site("example.com")),
        ]);
        assert_eq!(names(&held), ["1002", "example.com"]);
        let held = HeldNames::new([Some(site("b.example")), None, Some(site("a.example"))]);
        assert_eq!(names(&held), ["a.example", "b.example"]);
        // Blog IDs first, whatever the strings compare as.
        let held = HeldNames::new([Some(site("0.example")), Some(site("99")), None]);
        assert_eq!(names(&held), ["99", "0.example"]);
        assert_eq!(names(&HeldNames::only(&site("7"))), ["7"]);
    }

    #[test]
    fn a_url_is_also_held_under_its_loose_form() {
        assert_eq!(
            names(&SiteNames::given(&site("https://www.Example.com/Blog/"))),
            ["example.com.loose.invalid::blog", "www.example.com::Blog"]
        );
        // The spellings a partner and WordPress.com may use for one site share it.
        let sent = SiteNames::given(&site("example.com/blog"));
        let kept = with_loose([Some(site("1234")), Some(site("www.example.com::BLOG"))]);
        assert!(
            sent.iter()
                .any(|name| kept.iter().any(|other| other == name))
        );
        assert_eq!(names(&SiteNames::given(&site("7"))), ["7"]);
    }

    #[test]
    fn learned_names_expire_and_a_full_table_makes_room() {
        let one = with_loose([Some(site("1")), Some(site("one.example"))]);
        let table = NameTable::new(8, Duration::from_secs(3600));
        table.insert(one.iter().filter(|name| !is_loose(name)), &one);
        for name in ["1", "one.example"] {
            assert_eq!(names(&table.get(&site(name)).unwrap()), names(&one));
        }
        assert!(table.get(&site("one.example.loose.invalid")).is_none());

        // Past its time a name is not known, and reading it drops it.
        let gone = NameTable::new(8, Duration::ZERO);
        gone.insert([site("2")].iter(), &HeldNames::only(&site("2")));
        assert!(gone.get(&site("2")).is_none());
        assert_eq!(gone.len(), 0);

        // However many names are learned, the table keeps at most its capacity, and the name
        // learned last is known.
        for id in 100..1_000 {
            let name = site(&id.to_string());
            table.insert([name.clone()].iter(), &HeldNames::only(&name));
            assert!(table.len() <= 8);
            assert!(table.get(&name).is_some());
        }
    }
}
