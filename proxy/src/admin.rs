//! The admin listener (`--admin`): `GET /metrics`, `GET /healthz` and `GET /readyz`, on an
//! address of its own so that nothing of it is reachable through the proxy's port (as Envoy's
//! admin listener).
//!
//! - `/healthz` is liveness: 200 `{"status":"ok"}` while the process serves at all. Restart the
//!   process when it fails.
//! - `/readyz` is readiness: 200 when the proxy can serve a guarded route, 503 when it can't, so
//!   that a load balancer sends provisions to the other replicas meanwhile (see [`Readiness`]).
//!   The body says which check failed: `{"status":"not_ready","checks":{"redis":"unreachable"}}`.

use crate::forward::{ProxyBody, error_response};
use crate::metrics::{self, Metrics};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_service::Service;
use upgrade_guard::{LockError, RedisLocks, Site, SiteLocks, TokenError, TokenSource};

/// How long one readiness check may take before it counts as failed: a probe answers within a
/// load balancer's timeout (often a few seconds) even when Redis hangs.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The site whose lock start-up and readiness take and free to see that Redis answers: one no
/// request can name (`.invalid` is reserved).
pub(crate) fn probe_site() -> Site {
    Site::parse("start-up-probe.upgrade-guard-proxy.invalid").expect("a valid domain")
}

/// What `/readyz` checks: each dependency without which a guarded route can only answer 503.
///
/// - With `--redis`: Redis answers (a lock on a site no request names is taken and freed; a
///   lock held by another replica's probe counts as an answer).
/// - With `--client-id`/`--client-secret`: the token endpoint does not refuse the credentials.
///   A token already in hand is reused, so this costs no token request while one is valid; once
///   the upstream refuses it, the guard asks for a new one, and a refusal then shows here. An
///   unreachable token endpoint is not a reason to take a replica out: every replica shares it,
///   and the guard's own answer (503 `upgrade_paths_unavailable`) says more than a closed port.
///
/// Neither check runs when its flag is not given; then `/readyz` is 200 whenever the process
/// serves.
#[derive(Clone, Debug, Default)]
pub(crate) struct Readiness {
    redis: Option<RedisLocks>,
    tokens: Option<TokenSource>,
}

impl Readiness {
    /// Checks Redis through `locks` (`--redis`).
    #[must_use]
    pub(crate) fn redis(mut self, locks: RedisLocks) -> Self {
        self.redis = Some(locks);
        self
    }

    /// Checks that the token endpoint accepts the credentials of `tokens`; a source that can't
    /// refresh (a fixed token, the caller's) has nothing to check.
    #[must_use]
    pub(crate) fn tokens(mut self, tokens: TokenSource) -> Self {
        self.tokens = tokens.can_refresh().then_some(tokens);
        self
    }

    /// Runs the checks: whether all passed, and each one's result as `(name, "ok" or why not)`.
    pub(crate) async fn check(&self) -> (bool, Vec<(&'static str, &'static str)>) {
        let mut checks = Vec::new();
        if let Some(locks) = &self.redis {
            let site = probe_site();
            let result = match tokio::time::timeout(
                CHECK_TIMEOUT,
                locks.acquire(&site, Duration::ZERO),
            )
            .await
            {
                // Busy: another replica is probing at the same moment, and Redis answered it.
                Ok(Ok(_) | Err(LockError::Busy)) => "ok",
                Ok(Err(error)) => {
                    let error = anyhow::Error::new(error);
                    tracing::warn!(
                        error = format_args!("{error:#}"),
                        "not ready: Redis (--redis) can't be reached"
                    );
                    "unreachable"
                }
                Err(_) => {
                    tracing::warn!(timeout = ?CHECK_TIMEOUT, "not ready: Redis (--redis) did not answer in time");
                    "unreachable"
                }
            };
            checks.push(("redis", result));
        }
        if let Some(tokens) = &self.tokens {
            let result = match tokio::time::timeout(CHECK_TIMEOUT, tokens.token()).await {
                Ok(Err(error @ TokenError::Refused { .. })) => {
                    tracing::warn!(error = %error, "not ready: the token endpoint refuses --client-id/--client-secret");
                    "refused"
                }
                Ok(Err(error)) => {
                    tracing::debug!(error = %error, "the token endpoint could not be asked; ready all the same");
                    "ok"
                }
                Ok(Ok(_)) | Err(_) => "ok",
            };
            checks.push(("credentials", result));
        }
        let ready = checks.iter().all(|(_, result)| *result == "ok");
        (ready, checks)
    }
}

/// Answers the admin endpoints.
#[derive(Clone, Debug)]
pub(crate) struct Admin {
    metrics: Metrics,
    readiness: Readiness,
}

impl Admin {
    /// The admin endpoints, rendering `metrics` and checking `readiness`.
    pub(crate) fn new(metrics: Metrics, readiness: Readiness) -> Self {
        Self { metrics, readiness }
    }

    async fn answer(self, method: Method, path: String) -> Response<ProxyBody> {
        if method != Method::GET && method != Method::HEAD {
            return error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the admin endpoints answer GET only",
            );
        }
        let (status, content_type, body) = match path.as_str() {
            "/metrics" => (StatusCode::OK, metrics::CONTENT_TYPE, self.metrics.render()),
            // The process is up and serving; whether it can serve a provision is /readyz's.
            "/healthz" => (
                StatusCode::OK,
                "application/json",
                r#"{"status":"ok"}"#.to_owned(),
            ),
            "/readyz" => {
                let (ready, checks) = self.readiness.check().await;
                self.metrics.set_ready(ready);
                let checks: serde_json::Map<String, serde_json::Value> = checks
                    .into_iter()
                    .map(|(name, result)| (name.to_owned(), result.into()))
                    .collect();
                let (status, word) = if ready {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
                };
                let body = serde_json::json!({ "status": word, "checks": checks });
                (status, "application/json", body.to_string())
            }
            _ => {
                return error_response(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "the admin listener serves /metrics, /healthz and /readyz",
                );
            }
        };
        let mut response = Response::new(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

impl<B> Service<Request<B>> for Admin {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        let admin = self.clone();
        Box::pin(async move { Ok(admin.answer(method, path).await) })
    }
}
