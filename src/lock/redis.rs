//! Site locks shared by every process through Redis.

use super::local::LocalLocks;
use super::{Acquire, LockError, SiteLocks, SitePermit};
use crate::peers::{ForgetListener, Peers, PeersError, PeersFuture, Remembered};
use crate::site::Site;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, IntoConnectionInfo, RedisError, Script, Value};
use futures_util::StreamExt;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::runtime::Handle;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// How long a site's Redis key lives by default without a renewal: how long a process that dies
/// holding a lock blocks its site.
pub(crate) const DEFAULT_LEASE: Duration = Duration::from_secs(10);
/// The default bound on each Redis command.
pub(crate) const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// The default prefix of the sites' Redis keys.
pub(crate) const DEFAULT_KEY_PREFIX: &str = "upgrade-guard:site:";

/// What the forgotten-sites channel is named after the key prefix.
const FORGET_CHANNEL: &str = "forgotten";
/// How long a quiet subscription waits before it checks its connection with a `PING`.
const SUBSCRIPTION_PING: Duration = Duration::from_secs(5);

/// The first pause between two tries of a busy site; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_millis(50);
/// The longest pause between two tries to subscribe again.
const MAX_SUBSCRIBE_BACKOFF: Duration = Duration::from_secs(1);

/// Deletes the key only while it still holds our token: a lock whose lease ran out and that
/// another process took since is theirs, not ours to free.
const RELEASE: &str = r#"
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
"#;

/// Remembers a provision (`ARGV[1]`) of a site (`KEYS[1]`) until Redis's own clock passes
/// `ARGV[2]` milliseconds from now; the key goes with the last one it remembers.
const REMEMBER: &str = r#"
local now = redis.call("TIME")
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call("HSET", KEYS[1], ARGV[1], ms + tonumber(ARGV[2]))
if redis.call("PTTL", KEYS[1]) < tonumber(ARGV[2]) then
    redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 1
"#;

/// The provisions of a site (`KEYS[1]`) still remembered, with the milliseconds each has left,
/// by Redis's own clock: no two processes' clocks need agree.
const RECALL: &str = r#"
local now = redis.call("TIME")
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local held = redis.call("HGETALL", KEYS[1])
local left = {}
for i = 1, #held, 2 do
    local remaining = tonumber(held[i + 1]) - ms
    if remaining > 0 then
        table.insert(left, held[i])
        table.insert(left, remaining)
    end
end
return left
"#;

/// Extends the lease only while the key still holds our token.
const RENEW: &str = r#"
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
"#;

/// Per-site locks shared through Redis, for a partner API that runs as several processes.
///
/// [`LocalLocks`] serializes the provisions of a site within one process; behind a load
/// balancer, two processes could still both pass the check for one site. `RedisLocks` holds a
/// site in Redis, so every process that points at the same Redis (and key prefix) takes turns:
///
/// - **Acquire**: `SET <prefix><site> <token> NX PX <lease>` with a token unique to this
///   request. A busy site is tried again after a short, jittered, growing pause until the wait
///   passes: then [`LockError::Busy`], which the guard answers with `503 site_busy`. Within one
///   process the requests for a site first queue on a [`LocalLocks`], so only one of them polls
///   Redis and the next one gets the site the moment the previous one has released it.
/// - **Hold**: while the permit lives, a task extends the lease every third of it, with a
///   script that extends the key only if it still holds the token. The permit lives as long as
///   the inner service's work, also when the guard finishes it alone after its client left.
/// - **Release**: dropping the permit never blocks: it stops the renewal and spawns a script
///   that deletes the key only if it still holds the token. A request that goes away while its
///   `SET` is under way frees the key the same way, so a cancellation never leaves the site
///   held.
/// - **Failure**: every command is bounded by the command timeout. Redis unreachable, slow or
///   answering with an error gives [`LockError::Unavailable`]: the guard answers `503 site_busy`
///   and forwards nothing (except on a route in [`Mode::FailOpen`](crate::Mode::FailOpen), which
///   forwards with a bypass marker). A process that dies holding a site blocks it until the lease
///   expires, no longer.
///
/// # Limits
///
/// A lease is time: a holder paused for longer than the lease (a long GC or a frozen VM, with the
/// renewal task frozen too) loses the site to the next process while its own provision may still
/// be under way. A lost renewal is logged at `warn`. A Redis failover can lose a key that was not
/// yet replicated, letting a second holder in. The lease (default 10 s) trades the
/// first risk against how long a crashed process blocks a site. WordPress.com still refuses a
/// provision that is not an upgrade; the lock is what keeps two checks of one site from passing
/// together.
///
/// # The guard's peers too
///
/// `RedisLocks` is also [`Peers`]: give the same value to
/// [`site_locks`](crate::UpgradeGuardBuilder::site_locks) and
/// [`peers`](crate::UpgradeGuardBuilder::peers). What follows is what the peers share.
///
/// **The provisions just made.** Before a process frees a site it has forwarded a provision for,
/// it writes the product to the hash [`recent_key`](Self::recent_key) (`<prefix>recent:<site>`,
/// under every name the site was held by), with the end of its settling window by Redis's own
/// clock; the key expires with its last window. A process that takes the site reads the hash
/// first, so its own answers that do not show the provision yet are stale too, and a retry
/// through it is `409 already_provisioned`. A read that fails answers `503 site_busy`.
///
/// **Forgotten sites.**
/// Each process keeps its own cache of upgrade paths. A provision only takes products off a
/// site's paths, so another process's cached refusals stay true after it: they need no news of
/// it. A cancellation gives products back, so a process that forwards one (on a
/// [`cancels`](crate::UpgradeGuardLayer::cancels) route), or is told of a change with
/// [`forget`](crate::UpgradeGuardLayer::forget), tells the others: it `PUBLISH`es the site on the
/// channel [`forget_channel`](Self::forget_channel) (`<prefix>forgotten`), once when the cancel
/// is forwarded and again when it has finished, and deletes the site's remembered provisions.
/// Every guard with these peers listens on that channel on a connection of its own and drops the
/// site from its cache (disowning any lookup of it in flight) and from its memory of provisions.
///
/// - **The window** is one Redis round trip: from the cancel's end in one process to the others'
///   forgetting it, measured at well under a millisecond on loopback (see the README). A request
///   for the site on another process within that window may still be refused from the cache.
/// - **Lost messages**: Redis pub/sub delivers to whoever listens at the time. A listener whose
///   connection broke (noticed when the stream ends, or by a `PING` unanswered within the command
///   timeout after 5 s of silence) reconnects and, as it cannot know what it
///   missed, forgets *every* site's cached paths once it listens again (not the provisions it
///   remembers: forgetting those could trust an answer that does not show one yet). While Redis
///   is away, a process may keep refusing a product a cancel elsewhere gave back, for at most the
///   cache's time to live (or the settling window, for a product provisioned within it).
/// - None of this can forward a downgrade: the cache only ever refuses (see
///   [`UpgradeGuardBuilder::cache_ttl`](crate::UpgradeGuardBuilder::cache_ttl)), and an upgrade is always confirmed by a fresh lookup made under
///   the site's lock.
///
/// # Example
///
/// ```no_run
/// use std::time::Duration;
/// use upgrade_guard::{RedisLocks, UpgradeGuardLayer, UpgradePathsClient};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// // In every replica, inside the Tokio runtime:
/// let locks = RedisLocks::builder("redis://:secret@redis.internal:6379/0")
///     .lease(Duration::from_secs(10))
///     .command_timeout(Duration::from_millis(500))
///     .build()?;
/// let client = UpgradePathsClient::builder().bearer_token("partner-token").build()?;
/// let guard = UpgradeGuardLayer::builder(client)
///     .site_locks(locks.clone())
///     .peers(locks)
///     .build();
/// # Ok(()) }
/// ```
///
/// Clones share one connection (a [`redis::aio::ConnectionManager`](::redis::aio::ConnectionManager)
/// that reconnects by itself) and one in-process queue per site.
#[derive(Clone)]
pub struct RedisLocks {
    inner: Arc<Inner>,
}

struct Inner {
    /// For the forgotten-sites subscriptions, which need connections of their own.
    client: Client,
    connection: ConnectionManager,
    local: LocalLocks,
    key_prefix: String,
    lease: Duration,
    command_timeout: Duration,
    release: Script,
    renew: Script,
    remember: Script,
    recall: Script,
    /// The Redis address with any password hidden, for `Debug`.
    address: String,
    /// The guards' forgotten-sites listeners, stopped with the locks.
    listeners: std::sync::Mutex<Vec<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let listeners = self
            .listeners
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for listener in listeners.drain(..) {
            listener.abort();
        }
    }
}

/// Builds [`RedisLocks`]; from [`RedisLocks::builder`].
#[must_use]
pub struct RedisLocksBuilder {
    client: Result<Client, RedisError>,
    key_prefix: String,
    lease: Duration,
    command_timeout: Duration,
}

/// Why [`RedisLocksBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisBuildError {
    /// The Redis address could not be read.
    #[error("the Redis address is invalid")]
    InvalidAddress(#[source] RedisError),
    /// `build` was called outside a Tokio runtime, where the connection's tasks cannot run.
    #[error("RedisLocks must be built inside a Tokio runtime")]
    NoRuntime,
    /// The lease is shorter than the command timeout allows renewing it in.
    #[error("the lease must be longer than three command timeouts, so it can be renewed in time")]
    LeaseTooShort,
}

impl RedisLocks {
    /// A builder for locks on the Redis at `address`: a URL such as `redis://127.0.0.1:6379/0`,
    /// `redis://:password@host/1` or `rediss://…` (TLS, when the `redis` crate is built with a
    /// TLS feature), or a [`redis::ConnectionInfo`](::redis::ConnectionInfo).
    ///
    /// Nothing connects before the first lock is taken: a Redis that is down at start-up makes
    /// the guard answer `503 site_busy` until it is up, and the process need not wait for it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use upgrade_guard::RedisLocks;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), upgrade_guard::RedisBuildError> {
    /// let locks = RedisLocks::builder("redis://:secret@127.0.0.1:6379/0")
    ///     .key_prefix("partner-api:provision-lock:")
    ///     .build()?;
    /// // The password never shows.
    /// assert!(!format!("{locks:?}").contains("secret"));
    /// # Ok(()) }
    /// ```
    pub fn builder(address: impl IntoConnectionInfo) -> RedisLocksBuilder {
        RedisLocksBuilder::new(Client::open(address))
    }

    /// A builder for locks through an existing [`redis::Client`](::redis::Client), for settings
    /// a URL cannot carry.
    pub fn builder_for_client(client: Client) -> RedisLocksBuilder {
        RedisLocksBuilder::new(Ok(client))
    }

    /// The Redis key that holds `site`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use upgrade_guard::{RedisLocks, Site};
    ///
    /// let locks = RedisLocks::builder("redis://127.0.0.1/").build().unwrap();
    /// let site = Site::parse("https://example.com/blog/").unwrap();
    /// assert_eq!(locks.key(&site), "upgrade-guard:site:example.com::blog");
    /// # }
    /// ```
    pub fn key(&self, site: &Site) -> String {
        format!("{}{}", self.inner.key_prefix, site.as_str())
    }

    /// The Redis key of the provisions of `site` remembered for the settling window (a hash of
    /// product to the end of its window): `<prefix>recent:<site>`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use upgrade_guard::{RedisLocks, Site};
    ///
    /// let locks = RedisLocks::builder("redis://127.0.0.1/").build().unwrap();
    /// let site = Site::parse("1001").unwrap();
    /// assert_eq!(locks.recent_key(&site), "upgrade-guard:site:recent:1001");
    /// # }
    /// ```
    pub fn recent_key(&self, site: &Site) -> String {
        format!("{}recent:{}", self.inner.key_prefix, site.as_str())
    }

    /// How long a key lives without renewal.
    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// The Redis channel forgotten sites are published on: `<prefix>forgotten`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use upgrade_guard::RedisLocks;
    ///
    /// let locks = RedisLocks::builder("redis://127.0.0.1/").build().unwrap();
    /// assert_eq!(locks.forget_channel(), "upgrade-guard:site:forgotten");
    /// # }
    /// ```
    pub fn forget_channel(&self) -> String {
        format!("{}{FORGET_CHANNEL}", self.inner.key_prefix)
    }
}

impl RedisLocksBuilder {
    fn new(client: Result<Client, RedisError>) -> Self {
        Self {
            client,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            lease: DEFAULT_LEASE,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// The prefix of the sites' keys; default `upgrade-guard:site:`. Every process that guards
    /// the same sites must use the same prefix (and Redis database).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// How long a site's key lives without renewal; default 10 s. A holder renews
    /// it every third of the lease, so this is not a limit on the inner service's time: it is
    /// how long a process that dies holding a site blocks it, and how long a frozen holder keeps
    /// it. It must exceed three command timeouts.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The bound on each Redis command (and on connecting); default
    /// 1 s. Past it the request gets [`LockError::Unavailable`].
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// The locks. Must be called inside a Tokio runtime: the connection is made lazily, on the
    /// first lock, and remade by itself after Redis comes back.
    pub fn build(self) -> Result<RedisLocks, RedisBuildError> {
        let client = self.client.map_err(RedisBuildError::InvalidAddress)?;
        if Handle::try_current().is_err() {
            return Err(RedisBuildError::NoRuntime);
        }
        if self.lease <= self.command_timeout.saturating_mul(3) {
            return Err(RedisBuildError::LeaseTooShort);
        }
        let address = redacted(&client);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.command_timeout))
            .set_response_timeout(Some(self.command_timeout))
            // Commands are bounded and fail closed: a quick reconnect attempt, then the next
            // command tries again.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(self.command_timeout);
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(RedisBuildError::InvalidAddress)?;
        Ok(RedisLocks {
            inner: Arc::new(Inner {
                client,
                connection,
                local: LocalLocks::new(),
                key_prefix: self.key_prefix,
                lease: self.lease,
                command_timeout: self.command_timeout,
                release: Script::new(RELEASE),
                renew: Script::new(RENEW),
                remember: Script::new(REMEMBER),
                recall: Script::new(RECALL),
                address,
                listeners: std::sync::Mutex::default(),
            }),
        })
    }
}

impl SiteLocks for RedisLocks {
    fn acquire<'a>(&'a self, site: &'a Site, wait: Duration) -> Acquire<'a> {
        Box::pin(async move {
            let deadline = Instant::now() + wait;
            // Queue behind this process's own requests for the site first.
            let local = self.inner.local.acquire(site, wait).await?;
            let mut claim = Claim {
                inner: self.inner.clone(),
                key: self.key(site),
                token: token(),
                maybe_set: false,
                held: false,
                local: Some(local),
            };
            let mut backoff = MIN_BACKOFF;
            loop {
                // From here until Redis answers, our SET may have landed: a drop frees the key.
                claim.maybe_set = true;
                if self.inner.set_nx(&claim.key, &claim.token).await? {
                    break;
                }
                claim.maybe_set = false;
                let now = Instant::now();
                if now >= deadline {
                    return Err(LockError::Busy);
                }
                tokio::time::sleep(jitter(backoff).min(deadline - now)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            claim.held = true;
            let renewal = self.inner.clone().spawn_renewal(&claim);
            Ok(SitePermit::new(Held {
                _renewal: renewal,
                _claim: claim,
            }))
        })
    }
}

impl Peers for RedisLocks {
    /// Deletes the site's remembered provisions and `PUBLISH`es the site on the
    /// [`forget_channel`](Self::forget_channel), in a task.
    fn announce_forget(&self, site: &Site) {
        let Ok(runtime) = Handle::try_current() else {
            tracing::warn!(%site, "no Tokio runtime: the other processes are not told to forget a site");
            return;
        };
        let inner = self.inner.clone();
        let channel = self.forget_channel();
        let recent = self.recent_key(site);
        let site = site.as_str().to_owned();
        runtime.spawn(async move {
            let mut connection = inner.connection.clone();
            let deleted = inner
                .run(
                    "DEL",
                    ::redis::cmd("DEL")
                        .arg(&recent)
                        .query_async::<i64>(&mut connection),
                )
                .await;
            if let Err(error) = deleted {
                tracing::warn!(
                    site,
                    %error,
                    "could not forget the provisions remembered of a site; they last until \
                     their settling window passes"
                );
            }
            let published = inner
                .run(
                    "PUBLISH",
                    ::redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(&site)
                        .query_async::<i64>(&mut connection),
                )
                .await;
            if let Err(error) = published {
                tracing::warn!(
                    site,
                    %error,
                    "could not tell the other processes to forget a site; their cached refusals \
                     of it last until they expire"
                );
            }
        });
    }

    fn listen_for_forgets(&self, listener: ForgetListener) {
        let Ok(runtime) = Handle::try_current() else {
            // Built outside a runtime (the locks were not, so this is a guard built later).
            tracing::warn!(
                "guard built outside a Tokio runtime: it will not hear the sites other processes \
                 forget, and keeps their cached refusals until they expire"
            );
            return;
        };
        let task = runtime.spawn(listen(
            self.inner.client.clone(),
            self.forget_channel(),
            self.inner.command_timeout,
            listener,
        ));
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(task.abort_handle());
    }

    fn remember_provision<'a>(
        &'a self,
        site: &'a Site,
        product: &'a str,
        window: Duration,
    ) -> PeersFuture<'a, ()> {
        Box::pin(async move {
            let mut connection = self.inner.connection.clone();
            let _: i64 = self
                .inner
                .run(
                    "remember",
                    self.inner
                        .remember
                        .key(self.recent_key(site))
                        .arg(product)
                        .arg(millis(window))
                        .invoke_async(&mut connection),
                )
                .await
                .map_err(PeersError::new)?;
            Ok(())
        })
    }

    fn recall_provisions<'a>(&'a self, site: &'a Site) -> PeersFuture<'a, Vec<Remembered>> {
        Box::pin(async move {
            let mut connection = self.inner.connection.clone();
            let left: Vec<(String, u64)> = self
                .inner
                .run(
                    "recall",
                    self.inner
                        .recall
                        .key(self.recent_key(site))
                        .invoke_async(&mut connection),
                )
                .await
                .map_err(PeersError::new)?;
            Ok(left
                .into_iter()
                .map(|(product, millis)| Remembered::new(product, Duration::from_millis(millis)))
                .collect())
        })
    }
}

/// Hands `listener` every site published on `channel`, for as long as the task lives: it holds
/// no reference to the locks, so the locks' drop can stop it.
async fn listen(client: Client, channel: String, timeout: Duration, listener: ForgetListener) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let subscribed = tokio::time::timeout(timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        })
        .await;
        match subscribed {
            Ok(Ok(pubsub)) => {
                // What was published while nobody here listened is lost: forget every site.
                listener(None);
                backoff = MIN_BACKOFF;
                tracing::debug!(channel, "listening for forgotten sites");
                let (mut sink, mut stream) = pubsub.split();
                loop {
                    match tokio::time::timeout(SUBSCRIPTION_PING, stream.next()).await {
                        Ok(Some(message)) => {
                            let site = message.get_payload::<String>().ok();
                            match site.as_deref().map(Site::parse) {
                                Some(Ok(site)) => listener(Some(&site)),
                                _ => tracing::debug!(channel, "ignored a malformed forgotten site"),
                            }
                        }
                        Ok(None) => break,
                        // Quiet for a while: make sure the connection is still there.
                        Err(_) => {
                            let pong = tokio::time::timeout(timeout, sink.ping::<String>()).await;
                            if !matches!(pong, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                tracing::warn!(
                    channel,
                    "lost the subscription to forgotten sites; subscribing again"
                );
            }
            Ok(Err(error)) => {
                tracing::debug!(channel, %error, "could not subscribe to forgotten sites");
            }
            Err(_) => tracing::debug!(channel, "subscribing to forgotten sites timed out"),
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(MAX_SUBSCRIBE_BACKOFF);
    }
}

impl Inner {
    /// Runs one Redis command within the command timeout.
    async fn run<T>(
        &self,
        what: &'static str,
        command: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, LockError> {
        match tokio::time::timeout(self.command_timeout, command).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(LockError::Unavailable(Box::new(error))),
            Err(_) => Err(LockError::Unavailable(Box::new(TimedOut {
                what,
                after: self.command_timeout,
            }))),
        }
    }

    /// `SET key token NX PX lease`: whether the site is ours now.
    async fn set_nx(&self, key: &str, token: &str) -> Result<bool, LockError> {
        let mut connection = self.connection.clone();
        let answer: Value = self
            .run(
                "SET NX",
                ::redis::cmd("SET")
                    .arg(key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(self.lease))
                    .query_async(&mut connection),
            )
            .await?;
        Ok(!matches!(answer, Value::Nil))
    }

    /// Extends the lease of `key` if it still holds `token`: whether it did.
    async fn renew(&self, key: &str, token: &str) -> Result<bool, LockError> {
        let mut connection = self.connection.clone();
        let renewed: i64 = self
            .run(
                "renew",
                self.renew
                    .key(key)
                    .arg(token)
                    .arg(millis(self.lease))
                    .invoke_async(&mut connection),
            )
            .await?;
        Ok(renewed == 1)
    }

    /// Deletes `key` if it still holds `token`.
    async fn release(&self, key: &str, token: &str) -> Result<(), LockError> {
        let mut connection = self.connection.clone();
        let _: i64 = self
            .run(
                "release",
                self.release
                    .key(key)
                    .arg(token)
                    .invoke_async(&mut connection),
            )
            .await?;
        Ok(())
    }

    /// Keeps extending the lease of a held site until the returned handle aborts it.
    fn spawn_renewal(self: Arc<Self>, claim: &Claim) -> Renewal {
        let (key, token) = (claim.key.clone(), claim.token.clone());
        let every = self.lease / 3;
        let task = tokio::spawn(async move {
            let mut last_renewed = Instant::now();
            loop {
                tokio::time::sleep(every).await;
                match self.renew(&key, &token).await {
                    Ok(true) => last_renewed = Instant::now(),
                    Ok(false) => {
                        tracing::warn!(
                            key,
                            "lost a site's lock: its lease ran out before it was renewed"
                        );
                        return;
                    }
                    Err(error) if last_renewed.elapsed() >= self.lease => {
                        tracing::warn!(key, %error, "lost a site's lock: Redis could not renew it within its lease");
                        return;
                    }
                    Err(error) => {
                        tracing::debug!(key, %error, "could not renew a site's lock; trying again");
                    }
                }
            }
        });
        Renewal(task.abort_handle())
    }
}

/// A held site: the renewal stops first, then the claim frees the key.
struct Held {
    _renewal: Renewal,
    _claim: Claim,
}

struct Renewal(AbortHandle);

impl Drop for Renewal {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A token that may be in a site's key, from before our `SET` is sent until the site is freed.
struct Claim {
    inner: Arc<Inner>,
    key: String,
    token: String,
    /// Whether the key may hold the token: false only when Redis said the `SET` did not take.
    maybe_set: bool,
    /// Whether the site was acquired (rather than given up on, or its Redis unavailable).
    held: bool,
    /// This process's own lock on the site. After a hold it is kept until the key is deleted,
    /// so the next request here finds the site free in Redis; after a failed acquire it goes at
    /// once, so the next request need not wait for a cleanup that may time out.
    local: Option<SitePermit>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.maybe_set {
            return;
        }
        // Never block in drop: delete in a task. Without a runtime (it is shutting down) the
        // lease frees the site.
        let Ok(runtime) = Handle::try_current() else {
            return;
        };
        let inner = self.inner.clone();
        let key = std::mem::take(&mut self.key);
        let token = std::mem::take(&mut self.token);
        let local = if self.held { self.local.take() } else { None };
        runtime.spawn(async move {
            if let Err(error) = inner.release(&key, &token).await {
                tracing::warn!(key, %error, "could not free a site's lock; its lease will");
            }
            drop(local);
        });
    }
}

impl fmt::Debug for RedisLocks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLocks")
            .field("redis", &self.inner.address)
            .field("key_prefix", &self.inner.key_prefix)
            .field("lease", &self.inner.lease)
            .field("command_timeout", &self.inner.command_timeout)
            .field("sites_in_use_here", &self.inner.local.sites_in_use())
            .finish()
    }
}

impl fmt::Debug for RedisLocksBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLocksBuilder")
            .field(
                "redis",
                &self.client.as_ref().map(redacted).map_err(|_| "invalid"),
            )
            .field("key_prefix", &self.key_prefix)
            .field("lease", &self.lease)
            .field("command_timeout", &self.command_timeout)
            .finish()
    }
}

/// A Redis command that took longer than the command timeout.
#[derive(Debug, thiserror::Error)]
#[error("Redis did not answer {what} within {after:?}")]
struct TimedOut {
    what: &'static str,
    after: Duration,
}

/// `redis://user:***@host:port/db`: the address without its password.
fn redacted(client: &Client) -> String {
    let info = client.get_connection_info();
    let settings = info.redis_settings();
    let scheme = match info.addr() {
        ::redis::ConnectionAddr::Tcp(..) => "redis",
        ::redis::ConnectionAddr::TcpTls { .. } => "rediss",
        _ => "redis+unix",
    };
    let user = match (settings.username(), settings.password()) {
        (Some(user), Some(_)) => format!("{user}:***@"),
        (Some(user), None) => format!("{user}@"),
        (None, Some(_)) => ":***@".to_owned(),
        (None, None) => String::new(),
    };
    format!("{scheme}://{user}{}/{}", info.addr(), settings.db())
}

/// A token no other request, here or in another process, uses: the process, a counter, the
/// time, and 128 bits from std's randomly keyed hasher.
fn token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let high = RandomState::new().hash_one((pid, count, now));
    let low = RandomState::new().hash_one((now, count, pid));
    format!("{pid}:{count}:{high:016x}{low:016x}")
}

/// A pause between half and all of `backoff`, so processes polling one site spread out.
fn jitter(backoff: Duration) -> Duration {
    let random = RandomState::new().hash_one(Instant::now());
    let half = backoff / 2;
    half + half.mul_f64((random % 1024) as f64 / 1024.0)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique() {
        let tokens: std::collections::HashSet<String> = (0..1000).map(|_| token()).collect();
        assert_eq!(tokens.len(), 1000);
    }

    #[test]
    fn jitter_stays_within_the_backoff() {
        for _ in 0..100 {
            let pause = jitter(Duration::from_millis(40));
            assert!(pause >= Duration::from_millis(20) && pause <= Duration::from_millis(40));
        }
    }

    #[tokio::test]
    async fn debug_hides_the_password() {
        for (url, shown) in [
            (
                "redis://:hunter2@10.0.0.1:6380/3",
                "redis://:***@10.0.0.1:6380/3",
            ),
            (
                "redis://app:hunter2@localhost/",
                "redis://app:***@localhost:6379/0",
            ),
            ("redis://localhost", "redis://localhost:6379/0"),
        ] {
            let builder = RedisLocks::builder(url);
            let text = format!("{builder:?}");
            assert!(text.contains(shown) && !text.contains("hunter2"), "{text}");
            let locks = builder.build().unwrap();
            let text = format!("{locks:?}");
            assert!(text.contains(shown) && !text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn building_needs_a_runtime_and_a_valid_address() {
        assert!(matches!(
            RedisLocks::builder("redis://localhost").build(),
            Err(RedisBuildError::NoRuntime)
        ));
        assert!(matches!(
            RedisLocks::builder("nonsense://").build(),
            Err(RedisBuildError::InvalidAddress(_))
        ));
    }

    #[tokio::test]
    async fn a_lease_must_leave_time_to_renew() {
        let built = RedisLocks::builder("redis://localhost")
            .lease(Duration::from_secs(1))
            .command_timeout(Duration::from_secs(1))
            .build();
        assert!(matches!(built, Err(RedisBuildError::LeaseTooShort)));
    }
}
