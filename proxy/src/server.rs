//! Start-up (config → service stack → listeners), the accept loops, and graceful shutdown.

use crate::admin::{Admin, Readiness, probe_site};
use crate::config::{Config, Credentials, redacted_url};
use crate::forward::{Forwarder, InvalidUpstream, ProxyBody, Upstream};
use crate::metrics::Metrics;
use crate::request_id::{self, MakeRequestUuid, SetRequestIdLayer};
use crate::routes::Proxy;
use crate::telemetry::{self, Telemetry};
use crate::tls::{self, Certificates, TlsError};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceBuilder;
use tower_service::Service;
use upgrade_guard::{
    BuildError, Detached, LockError, RedisBuildError, RedisLocks, SiteLocks, UpgradeGuardLayer,
    UpgradePathsClient,
};

/// How long a client has to finish its TLS handshake, and to send a request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long start-up waits for Redis to answer before calling it unreachable.
const REDIS_PROBE_WAIT: Duration = Duration::from_secs(3);
/// How long the guard finishes a forwarded request whose client went away (60 s, as the
/// library's default), set on the guard here so that shutdown waits for exactly as long.
const DETACHED_CEILING: Duration = Duration::from_secs(60);
/// Added to that ceiling when shutdown waits for such requests: each ends within the ceiling
/// from the moment it was left alone, which for the last ones is a little after the wait began.
const DETACHED_SLACK: Duration = Duration::from_secs(1);

/// Why the proxy did not start. Each says which flag to look at.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `--upstream` is not a URL the proxy can forward to.
    #[error(transparent)]
    Upstream(#[from] InvalidUpstream),
    /// The certificate or key can't be served, or no CA certificates to reach the upstream.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The guard's upgrade-paths client could not be built from the flags.
    #[error("the guard's upstream client (--upstream, --token, --client-id/--client-secret)")]
    Client(#[source] BuildError),
    /// `--redis` can't be read.
    #[error("--redis {url}")]
    RedisAddress {
        /// The URL, password hidden.
        url: String,
        /// Why.
        #[source]
        source: RedisBuildError,
    },
    /// `--redis` did not answer.
    #[error("cannot reach Redis at {url} (--redis)")]
    RedisUnreachable {
        /// The URL, password hidden.
        url: String,
        /// Why.
        #[source]
        source: LockError,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({flag})")]
    Listen {
        /// The flag that named the address.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A started proxy: both listeners are accepting.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    https: bool,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    detached: Detached,
    reloader: Reloader,
}

impl Running {
    /// Where the proxy listens (with the port chosen when `--listen` said port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the admin endpoints listen.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The proxy's base URL, `http://` or `https://`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// What reloads the certificate (on SIGHUP), usable while the proxy serves.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// Stops accepting, lets the requests under way finish (at most `--shutdown-grace`), closes
    /// the connections still open then, and returns when every forwarded request the guard is
    /// finishing alone has ended (at most the guard's detached ceiling, 60 s, more).
    ///
    /// Closing a connection drops its requests; a guarded one that was already forwarded is then
    /// finished by the guard alone, holding its site until the provision lands. The process must
    /// outlive those: a runtime that ends drops them half-way, as if no guard had held the site,
    /// and `--shutdown-grace` (made for clients) may be far shorter than a provision.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        let in_progress = self.detached.in_progress();
        if in_progress > 0 {
            tracing::info!(
                in_progress,
                ceiling = ?DETACHED_CEILING,
                "waiting for forwarded requests whose clients went away to finish"
            );
        }
        if tokio::time::timeout(DETACHED_CEILING + DETACHED_SLACK, self.detached.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_progress = self.detached.in_progress(),
                "forwarded requests whose clients went away still running past the guard's ceiling"
            );
        }
    }
}

/// Reloads the certificate and key the proxy serves (`--tls-cert`, `--tls-key`), as the binary
/// does on SIGHUP; see [`reload`](Self::reload).
#[derive(Clone, Debug)]
pub struct Reloader {
    certificates: Option<Certificates>,
    metrics: Metrics,
}

impl Reloader {
    /// Reads the certificate and key again: connections accepted from now on get the new pair,
    /// those open keep theirs. A pair that can't be served is logged and the old one kept.
    /// Returns whether a new pair is served; `false` without `--tls-cert` too.
    pub fn reload(&self) -> bool {
        let Some(certificates) = &self.certificates else {
            tracing::info!("no --tls-cert to reload");
            return false;
        };
        let loaded = match certificates.reload() {
            Ok(()) => {
                tracing::info!(cert = %certificates.cert_path().display(), "certificate reloaded; new connections get it");
                true
            }
            Err(error) => {
                let error = anyhow::Error::new(error);
                tracing::warn!(
                    error = format_args!("{error:#}"),
                    "certificate reload failed; still serving the previous one"
                );
                false
            }
        };
        self.metrics.tls_reloaded(loaded);
        loaded
    }
}

/// Builds the service stack from `config`, binds both listeners and starts serving on the
/// current Tokio runtime.
///
/// Every check that can fail does so here, with a [`StartError`] naming the flag: the upstream
/// URL, the credentials, the certificate and key, Redis (a lock is taken and freed, so an
/// unreachable Redis is found now rather than as 503s later), and both addresses.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let upstream = Upstream::parse(&config.upstream)?;
    let certificates = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(Certificates::load(cert, key)?),
        _ => None,
    };
    let connector = tls::upstream_connector(upstream.is_https())?;

    let client = lookup_client(&config)?;
    // With client credentials, /readyz says whether the token endpoint refuses them.
    let mut readiness = Readiness::default().tokens(client.token_source().clone());
    let mut guard = UpgradeGuardLayer::builder(client).cache_ttl(config.cache_ttl());
    for family in &config.covered_families {
        guard = guard.covered_family(family);
    }
    for (product, family) in &config.product_families {
        guard = guard.product_family(product, family);
    }
    // Without --redis, the builder's default: in-process locks.
    if let Some(url) = &config.redis {
        let locks = redis_locks(url).await?;
        readiness = readiness.redis(locks.clone());
        // One Redis is both: the replicas take turns on a site and tell each other what they
        // forgot and provisioned.
        guard = guard.site_locks(locks.clone()).peers(locks);
    }
    let guard = guard
        .build()
        .detached_ceiling(DETACHED_CEILING)
        .lock_wait(config.lock_wait())
        .body_timeout(config.body_timeout())
        .unjudged_products(config.unjudged_products.into());
    let metrics = Metrics::new(guard.stats(), guard.detached());
    let guard = guard.on_decision({
        let metrics = metrics.clone();
        move |report| {
            metrics.decision(report);
            telemetry::record_decision(report);
        }
    });
    let forwarder = Forwarder::new(
        upstream,
        connector,
        config.request_timeout(),
        metrics.clone(),
    );
    let proxy = ServiceBuilder::new()
        .map_request(request_id::drop_invalid)
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .service(Telemetry::new(
            Proxy::new(&guard, &forwarder, metrics.clone()),
            metrics.clone(),
        ));
    let detached = guard.detached();

    let listener = bind("--listen", config.listen).await?;
    let admin_listener = bind("--admin", config.admin).await?;
    let addr = local_addr("--listen", &listener, config.listen)?;
    let admin_addr = local_addr("--admin", &admin_listener, config.admin)?;

    let (stop, stopped) = watch::channel(false);
    let grace = config.shutdown_grace();
    let https = certificates.is_some();
    let reloader = Reloader {
        certificates: certificates.clone(),
        metrics: metrics.clone(),
    };
    let servers = vec![
        tokio::spawn(serve(
            listener,
            certificates,
            proxy,
            Some(metrics.clone()),
            stopped.clone(),
            grace,
        )),
        tokio::spawn(serve(
            admin_listener,
            None,
            Admin::new(metrics, readiness),
            None,
            stopped,
            grace,
        )),
    ];
    tracing::info!(?config, %addr, %admin_addr, https, "upgrade-guard-proxy listening");
    Ok(Running {
        addr,
        admin_addr,
        https,
        stop,
        servers,
        detached,
        reloader,
    })
}

/// The guard's upgrade-paths client, with the credentials the flags give.
fn lookup_client(config: &Config) -> Result<UpgradePathsClient, StartError> {
    let builder = UpgradePathsClient::builder().base_url(config.upstream.trim_end_matches('/'));
    let builder = match config.credentials() {
        Credentials::Token(token) => builder.bearer_token(token),
        Credentials::ClientCredentials { id, secret } => builder.client_credentials(id, secret),
        // No credentials of its own: each lookup carries the checked request's bearer token, so
        // the tooling needs no change, and no caller is ever served another caller's answer.
        Credentials::Caller => builder.caller_token(),
    };
    builder.build().map_err(StartError::Client)
}

/// The library's Redis locks, after making sure Redis answers: a lock on a site no request
/// names is taken and freed.
async fn redis_locks(url: &str) -> Result<RedisLocks, StartError> {
    let shown = redacted_url(url);
    let locks = RedisLocks::builder(url)
        .build()
        .map_err(|source| StartError::RedisAddress {
            url: shown.clone(),
            source,
        })?;
    match locks.acquire(&probe_site(), REDIS_PROBE_WAIT).await {
        // Busy: another replica is probing at the same moment, and Redis answered it.
        Ok(_) | Err(LockError::Busy) => Ok(locks),
        Err(source) => Err(StartError::RedisUnreachable { url: shown, source }),
    }
}

async fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { flag, addr, source })
}

fn local_addr(
    flag: &'static str,
    listener: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Listen { flag, addr, source })
}

/// Accepts connections until `stopped` turns true, then waits (at most `grace`) for the
/// connections to finish their requests; idle keep-alive connections close at once, and those
/// still busy after `grace` are closed, dropping their requests (see [`Running::shutdown`]).
/// With `metrics`, the connections open are counted there.
async fn serve<S>(
    listener: TcpListener,
    tls: Option<Certificates>,
    service: S,
    metrics: Option<Metrics>,
    mut stopped: watch::Receiver<bool>,
    grace: Duration,
) where
    S: Service<Request<Incoming>, Response = Response<ProxyBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    // Every connection's task, so those still open after the grace can be closed.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            // Shutdown, or the `Running` handle dropped without it: either way, stop accepting.
            _ = stopped.changed() => break,
            // Forget the connections that have ended, so the set stays as large as what is open.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: pause instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let watcher = graceful.watcher();
        // The certificate current at this connection's handshake, kept for its whole life.
        let tls = tls.as_ref().map(Certificates::acceptor);
        let service = TowerToHyperService::new(service.clone());
        let open = metrics.as_ref().map(Metrics::connection_opened);
        connections.spawn(async move {
            // Dropped with the task, however it ends (closed, failed, or cut at shutdown).
            let _open = open;
            let mut http = http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let served = match tls {
                None => {
                    watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await
                }
                Some(tls) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            watcher
                                .watch(http.serve_connection(TokioIo::new(stream), service))
                                .await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "requests still under way after the shutdown grace; closing their connections"
        );
    }
    // Dropping a connection's task drops its requests: a guarded one already forwarded is handed
    // to the guard, which finishes it alone (`Running::shutdown` waits for those).
    connections.shutdown().await;
}
