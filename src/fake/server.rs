//! The running fake: its builder, its handle, and the accept loop.

use super::endpoints::{self, Shared};
use super::faults::{Endpoint, Fault, Injection};
use super::faulty_body;
use super::stats::{Counters, FakeStats};
use super::store::{FakeSite, SiteSnapshot, Store};
use crate::site::Site;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Configures a [`FakeUpstream`] before it starts; made by [`FakeUpstream::builder`].
#[derive(Clone, Debug)]
pub struct FakeUpstreamBuilder {
    token: String,
    other_tokens: Vec<String>,
    client_id: String,
    client_secret: String,
    sites: Vec<FakeSite>,
    empty_paths_as_array: bool,
    grant_delay: Duration,
    families: Option<Vec<String>>,
}

impl Default for FakeUpstreamBuilder {
    fn default() -> Self {
        Self {
            token: "fake-partner-token".into(),
            other_tokens: Vec::new(),
            client_id: "fake-client-id".into(),
            client_secret: "fake-client-secret".into(),
            sites: Vec::new(),
            empty_paths_as_array: false,
            grant_delay: Duration::ZERO,
            families: None,
        }
    }
}

impl FakeUpstreamBuilder {
    /// The bearer token the partner endpoints accept and `/oauth2/token` hands out
    /// (default `fake-partner-token`).
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = token.into();
        self
    }

    /// Another bearer token the partner endpoints accept, as another caller's own (a second tool,
    /// a colleague's token): for testing a proxy that looks sites up with each caller's token.
    /// It is never rotated nor handed out by `/oauth2/token`; every token sees the same sites.
    /// [`FakeUpstream::lookups_with`] counts the lookups each token made.
    #[must_use]
    pub fn accept_token(mut self, token: impl Into<String>) -> Self {
        self.other_tokens.push(token.into());
        self
    }

    /// The client credentials `/oauth2/token` accepts (default `fake-client-id` /
    /// `fake-client-secret`).
    #[must_use]
    pub fn client_credentials(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.client_id = client_id.into();
        self.client_secret = client_secret.into();
        self
    }

    /// Seeds a site; a later site with the same blog ID or URL replaces it.
    #[must_use]
    pub fn site(mut self, site: FakeSite) -> Self {
        self.sites.push(site);
        self
    }

    /// Seeds the demo sites the runnable example shows:
    ///
    /// | blog ID | URL | holds |
    /// |---|---|---|
    /// | 1001 | `https://free.example.com/` | nothing |
    /// | 1002 | `https://realtime.example.com/` | `jetpack-backup-realtime` |
    /// | 1003 | `https://professional.example.com/` | `professional` |
    /// | 1004 | `https://example.com/blog/` | `jetpack-backup-daily` |
    #[must_use]
    pub fn demo_sites(self) -> Self {
        self.site(FakeSite::new(1001).url("https://free.example.com/"))
            .site(
                FakeSite::new(1002)
                    .url("https://realtime.example.com/")
                    .holding(["jetpack-backup-realtime"]),
            )
            .site(
                FakeSite::new(1003)
                    .url("https://professional.example.com/")
                    .holding(["professional"]),
            )
            .site(
                FakeSite::new(1004)
                    .url("https://example.com/blog/")
                    .holding(["jetpack-backup-daily"]),
            )
    }

    /// Answers a site that is offered nothing with `[]`, PHP's empty array, as WordPress.com may,
    /// instead of `{}`.
    #[must_use]
    pub fn empty_paths_as_php_array(mut self) -> Self {
        self.empty_paths_as_array = true;
        self
    }

    /// Shows each provision in upgrade-paths and status only `delay` after it was made, as
    /// WordPress.com, which grants products through its own jobs, may: meanwhile they answer as
    /// before it (a site registered by its first provision is unknown to them), while the
    /// provision endpoint already refuses a product the site would not gain from once every
    /// provision made is granted. Default: at once.
    #[must_use]
    pub fn grant_delay(mut self, delay: Duration) -> Self {
        self.grant_delay = delay;
        self
    }

    /// Answers upgrade-paths about these product families only, as WordPress.com's partner docs
    /// say it does (`jetpack-plans` and `jetpack-backup` "at the time of this writing"); the
    /// provision endpoint still takes every product. Default: every family of the catalogue.
    #[must_use]
    pub fn answer_families<I, S>(mut self, families: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.families = Some(families.into_iter().map(Into::into).collect());
        self
    }

    /// Binds `127.0.0.1` on a free port and starts serving on the current tokio runtime.
    pub async fn start(self) -> io::Result<FakeUpstream> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let store = Store::new(self.grant_delay);
        for site in self.sites {
            store.add(site);
        }
        let shared = Arc::new(Shared {
            store,
            faults: Arc::default(),
            counters: Counters::default(),
            token: Mutex::new(self.token.clone()),
            other_tokens: self.other_tokens,
            lookups_by_token: Mutex::default(),
            client_id: self.client_id,
            client_secret: self.client_secret,
            empty_paths_as_array: self.empty_paths_as_array,
            families: self.families,
        });
        let task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FakeUpstream {
            addr,
            url: format!("http://{addr}"),
            first_token: self.token,
            rotations: AtomicU64::new(0),
            shared,
            task,
        })
    }
}

/// A fake WordPress.com partner API serving on a loopback port; stops when dropped.
///
/// See the [module docs](super) for what it serves and an example.
#[derive(Debug)]
pub struct FakeUpstream {
    addr: SocketAddr,
    url: String,
    /// The token it started with; rotated tokens are named after it.
    first_token: String,
    rotations: AtomicU64,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl FakeUpstream {
    /// Configures a fake before starting it.
    pub fn builder() -> FakeUpstreamBuilder {
        FakeUpstreamBuilder::default()
    }

    /// Starts a fake with the default token and credentials and no sites.
    pub async fn start() -> io::Result<Self> {
        Self::builder().start().await
    }

    /// The base URL, `http://127.0.0.1:PORT`, to use in place of `https://public-api.wordpress.com`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token it accepts now (and `/oauth2/token` hands out); it changes only when
    /// [`rotate_token`](Self::rotate_token) is called.
    pub fn token(&self) -> String {
        self.shared.token()
    }

    /// Revokes the current token and issues a new one, as when WordPress.com expires or revokes a
    /// partner's token: from now on the partner endpoints answer the old token with 401
    /// `invalid_token`, and `/oauth2/token` hands out the new one. Returns the new token, which is
    /// the starting token with `-r1`, `-r2`, ... appended.
    ///
    /// ```
    /// use upgrade_guard::fake::FakeUpstream;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let fake = FakeUpstream::start().await?;
    /// let old = fake.token();
    /// let new = fake.rotate_token();
    /// assert_ne!(old, new);
    /// assert_eq!(fake.token(), new);
    /// # Ok(())
    /// # }
    /// ```
    pub fn rotate_token(&self) -> String {
        let n = self.rotations.fetch_add(1, Ordering::Relaxed) + 1;
        let token = format!("{}-r{n}", self.first_token);
        self.shared.set_token(token.clone());
        token
    }

    /// The client ID `/oauth2/token` accepts.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// The client secret `/oauth2/token` accepts.
    pub fn client_secret(&self) -> &str {
        &self.shared.client_secret
    }

    /// Adds a site, replacing any site known by the same blog ID or URL.
    pub fn add_site(&self, site: FakeSite) {
        self.shared.store.add(site);
    }

    /// The products `site` (a blog ID or URL in any form [`Site::parse`] takes) holds now, in
    /// catalogue order; `None` for a site the fake does not know.
    pub fn held_products(&self, site: &str) -> Option<Vec<String>> {
        let site = Site::parse(site).ok()?;
        let held = self.shared.store.held(&site)?;
        Some(held.into_iter().map(str::to_owned).collect())
    }

    /// Every site the fake knows, as it is now.
    pub fn sites(&self) -> Vec<SiteSnapshot> {
        self.shared.store.snapshots()
    }

    /// Starts injecting `fault` into requests for `endpoint`; say for how many with the returned
    /// [`Injection`].
    ///
    /// ```
    /// use upgrade_guard::fake::{Endpoint, FakeUpstream, Fault};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> std::io::Result<()> {
    /// let fake = FakeUpstream::start().await?;
    /// fake.inject(Endpoint::UpgradePaths, Fault::status(503)).times(2);
    /// fake.inject(Endpoint::Any, Fault::DropConnection).always();
    /// fake.clear_faults();
    /// # Ok(())
    /// # }
    /// ```
    pub fn inject(&self, endpoint: Endpoint, fault: Fault) -> Injection {
        Injection::new(self.shared.faults.clone(), endpoint, fault)
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// The counters as they are now.
    pub fn stats(&self) -> FakeStats {
        self.shared.counters.snapshot()
    }

    /// How many upgrade-paths requests presented `token` as their bearer token, accepted or
    /// not (`""` counts those that presented none): tells whose token a client looked up with.
    ///
    /// ```
    /// use upgrade_guard::fake::{FakeSite, FakeUpstream};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let fake = FakeUpstream::builder()
    ///     .site(FakeSite::new(1001))
    ///     .accept_token("second-tool-token")
    ///     .start()
    ///     .await?;
    /// let answer = reqwest::Client::new()
    ///     .get(format!("{}/rest/v1.3/jpphp/1001/upgrade-paths", fake.url()))
    ///     .bearer_auth("second-tool-token")
    ///     .send()
    ///     .await?;
    /// assert_eq!(answer.status(), 200);
    /// assert_eq!(fake.lookups_with("second-tool-token"), 1);
    /// assert_eq!(fake.lookups_with(&fake.token()), 0);
    /// # Ok(())
    /// # }
    /// ```
    pub fn lookups_with(&self, token: &str) -> u64 {
        self.shared.lookups_with(token)
    }

    /// Sets every counter back to zero.
    pub fn reset_stats(&self) {
        self.shared.counters.reset();
        self.shared.reset_lookups_by_token();
    }

    /// Stops serving and waits until the port is closed and every connection is dropped.
    pub async fn shutdown(mut self) {
        self.task.abort();
        // The task can only end cancelled (or by a panic, which shutting down need not report).
        let _ = (&mut self.task).await;
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        // The accept task owns the connections' JoinSet, so aborting it closes them too.
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off rather than spin.
                tracing::warn!(error = %e, "fake upstream: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        Counters::bump(&shared.counters.connections);
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        connections.spawn(async move {
            let mut stream = stream;
            let service = service_fn(move |req| endpoints::handle(shared.clone(), req));
            let served = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(&mut stream), service)
                .await;
            if let Err(e) = served {
                if faulty_body::asks_for_reset(&e) {
                    // Dropped with a zero linger, the socket sends RST instead of FIN.
                    let _ = stream.set_zero_linger();
                }
                tracing::debug!(error = %e, "fake upstream: connection ended");
            }
        });
    }
}
