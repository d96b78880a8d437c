use super::check::Config;
use super::future::ResponseFuture;
use super::layer::UpgradeGuardLayer;
use crate::body::GuardBody;
use crate::upstream::UpgradePathsClient;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Forwards a provision request to the inner service only when the product is an upgrade for
/// the site; answers every other request itself. Built by [`UpgradeGuardLayer`].
///
/// The inner service receives the request with its body as a [`GuardBody`]: the original body
/// when the route reads nothing from it, otherwise the same bytes, buffered. Responses and errors
/// of the inner service pass through untouched; the guard's own answers are JSON (see
/// [`Rejection`](crate::Rejection)).
///
/// `poll_ready` is the inner service's: the guard calls the very service that was ready, after
/// its check. So while a request is being checked (reading its body, waiting for its site, the
/// lookup), the inner service's readiness is held for it: a concurrency limit *outside* the guard
/// counts the request from its arrival, and one *inside* sees its slot taken during the check.
///
/// # Bounds
///
/// The inner service's future must be `Send + 'static`: when the client goes away after the
/// request was forwarded, the guard moves that future to a Tokio task that finishes it while the
/// site stays held (see [`UpgradeGuardLayer::detached_ceiling`]). axum routes, hyper services on
/// Tokio and `tower::ServiceBuilder` stacks of `Send` services meet it. An inner service whose
/// future is not `Send` does not get a guard that would silently free the site early: it does
/// not compile. In edition 2024, a function returning `impl Service<.., Future = impl Send>` that
/// takes a reference captures it in the future's type; write `impl Send + use<..>` without it.
#[derive(Clone, Debug)]
pub struct UpgradeGuard<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> UpgradeGuard<S> {
    pub(super) fn from_config(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// A layer that wraps services in guards asking `client`; the same as
    /// [`UpgradeGuardLayer::new`].
    pub fn layer(client: UpgradePathsClient) -> UpgradeGuardLayer {
        UpgradeGuardLayer::new(client)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for UpgradeGuard<S>
where
    S: Service<Request<GuardBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    S::Future: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<GuardBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The ready service is the one to call; the clone stays behind for the next request.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let check = config.clone();
        ResponseFuture::new(
            // Not wrapped in an `async` block of its own: that would keep a second copy of the
            // request in the boxed future (moved-from variables keep their room in a future).
            Box::pin(check.check(request)),
            ready,
            config,
        )
    }
}

impl<S> Layer<S> for UpgradeGuardLayer {
    type Service = UpgradeGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        UpgradeGuard::from_config(inner, self.config.clone())
    }
}
