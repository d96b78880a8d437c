use super::{Acquire, LockError, SiteLocks, SitePermit};
use crate::site::Site;
use crate::site::SiteHashing;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{Mutex as SiteMutex, OwnedMutexGuard};

/// Site locks within one process: a map of per-site mutexes holding only sites in use.
///
/// A site's entry lives while a request holds or waits for it and is removed with the last one,
/// so memory follows the number of sites being provisioned right now, not the number ever seen.
/// Waiters are served in arrival order (tokio's mutex is fair).
///
/// A key is one name of a site; the guard takes the lock of every name a site goes by (its blog
/// ID and its URL, see [`SiteAliases`](crate::SiteAliases)), so one site is one lock whatever a
/// request calls it.
#[derive(Clone, Debug, Default)]
pub struct LocalLocks {
    sites: Arc<Mutex<HashMap<Site, Slot, SiteHashing>>>,
}

/// A site in use: its mutex, and how many requests hold or wait for it.
#[derive(Debug)]
struct Slot {
    mutex: Arc<SiteMutex<()>>,
    users: usize,
}

impl LocalLocks {
    /// No site locked.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many sites are held or waited for right now.
    pub fn sites_in_use(&self) -> usize {
        self.map().len()
    }

    /// How many requests hold or wait for `site` right now.
    pub fn users(&self, site: &Site) -> usize {
        self.map().get(site).map_or(0, |slot| slot.users)
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Site, Slot, SiteHashing>> {
        // Every update leaves the map consistent, so a panic elsewhere cannot corrupt it.
        self.sites.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SiteLocks for LocalLocks {
    fn acquire<'a>(&'a self, site: &'a Site, wait: Duration) -> Acquire<'a> {
        Box::pin(async move {
            let user = User::new(self, site);
            // A free site needs no timer: taken at once (never ahead of a waiter, since tokio's
            // mutex hands a freed lock to the first one in line before anyone else can try).
            let guard = match user.mutex.clone().try_lock_owned() {
                Ok(guard) => guard,
                Err(_) => tokio::time::timeout(wait, user.mutex.clone().lock_owned())
                    .await
                    .map_err(|_| LockError::Busy)?,
            };
            Ok(SitePermit::new(Held {
                _guard: guard,
                _user: user,
            }))
        })
    }
}

/// A held lock. Field order matters: the mutex is released before the user leaves, so a slot
/// is only ever removed once its mutex is free.
struct Held {
    _guard: OwnedMutexGuard<()>,
    _user: User,
}

/// One request's use of a site, from the start of its wait to the release of its lock.
struct User {
    locks: LocalLocks,
    site: Site,
    mutex: Arc<SiteMutex<()>>,
}

impl User {
    fn new(locks: &LocalLocks, site: &Site) -> Self {
        let mut map = locks.map();
        let slot = map.entry(site.clone()).or_insert_with(|| Slot {
            mutex: Arc::default(),
            users: 0,
        });
        slot.users += 1;
        let mutex = slot.mutex.clone();
        drop(map);
        Self {
            locks: locks.clone(),
            site: site.clone(),
            mutex,
        }
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let mut map = self.locks.map();
        if let Some(slot) = map.get_mut(&self.site) {
            slot.users -= 1;
            if slot.users == 0 {
                map.remove(&self.site);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> Site {
        Site::parse(s).unwrap()
    }

    #[tokio::test]
    async fn one_holder_per_site_and_idle_sites_are_freed() {
        let locks = LocalLocks::new();
        let a = site("a.example.com");
        let held = locks.acquire(&a, Duration::from_secs(1)).await.unwrap();
        // Another site is independent.
        let other = locks
            .acquire(&site("b.example.com"), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(locks.sites_in_use(), 2);
        drop(other);
        assert_eq!(locks.sites_in_use(), 1);

        // The same site is busy until released.
        assert!(matches!(
            locks.acquire(&a, Duration::from_millis(10)).await,
            Err(LockError::Busy)
        ));
        assert_eq!(
            locks.sites_in_use(),
            1,
            "a timed-out waiter leaves nothing behind"
        );
        drop(held);
        assert_eq!(locks.sites_in_use(), 0);
        let again = locks.acquire(&a, Duration::ZERO).await.unwrap();
        drop(again);
        assert_eq!(locks.sites_in_use(), 0);
    }

    #[tokio::test]
    async fn a_waiter_gets_the_lock_when_the_holder_drops_it() {
        let locks = LocalLocks::new();
        let a = site("a.example.com");
        let held = locks.acquire(&a, Duration::ZERO).await.unwrap();
        let waiter = {
            let locks = locks.clone();
            let a = a.clone();
            tokio::spawn(async move { locks.acquire(&a, Duration::from_secs(30)).await.map(drop) })
        };
        tokio::task::yield_now().await;
        drop(held);
        waiter.await.unwrap().unwrap();
        assert_eq!(locks.sites_in_use(), 0);
    }

    #[tokio::test]
    async fn an_abandoned_wait_frees_everything() {
        let locks = LocalLocks::new();
        let a = site("a.example.com");
        let held = locks.acquire(&a, Duration::ZERO).await.unwrap();
        let mut waiting = locks.acquire(&a, Duration::from_secs(30));
        // Poll once so the waiter is queued, then abandon it.
        assert!(futures_util::FutureExt::now_or_never(&mut waiting).is_none());
        assert_eq!(locks.users(&a), 2);
        drop(waiting);
        assert_eq!(locks.users(&a), 1);
        drop(held);
        assert_eq!(locks.sites_in_use(), 0);
    }
}
