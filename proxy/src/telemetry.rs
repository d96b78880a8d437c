//! What an operator sees of each request on the proxy's port: the guarded requests in flight
//! (a gauge in [`metrics`](crate::metrics)).

use crate::forward::ProxyBody;
use crate::metrics::Metrics;
use crate::routes;
use http::{Request, Response};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower_service::Service;

/// Wraps the proxy's front service (see [`Proxy`](crate::routes::Proxy)).
#[derive(Clone, Debug)]
pub struct Telemetry<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> Telemetry<S> {
    /// `inner`, observed into `metrics`.
    pub fn new(inner: S, metrics: Metrics) -> Self {
        Self { inner, metrics }
    }
}

impl<S, B> Service<Request<B>> for Telemetry<S>
where
    S: Service<Request<B>, Response = Response<ProxyBody>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let route = routes::route(request.method(), request.uri().path());
        // Given back when the answer is in hand or the client goes away, whichever is first.
        let in_flight = route.is_guarded().then(|| self.metrics.guarded_request());
        let answered = self.inner.call(request);
        Box::pin(async move {
            let response = answered.await;
            drop(in_flight);
            response
        })
    }
}
