//! What an operator sees of each request on the proxy's port: its span on every log line, the
//! `request answered` line that ends a guarded request, and the guarded requests in flight (a
//! gauge in [`metrics`](crate::metrics)). The log fields are listed in [`logs`](crate::logs).
//!
//! The guard reports its decision through its `on_decision` callback, from inside the request's
//! future: [`record_decision`] keeps it for the request being polled (a task-local slot), and
//! the answered line is written once the response head is in hand, with the upstream's status
//! beside the decision. The library's own decision line is written inside the same span.

use crate::forward::{ProxyBody, UpstreamStatus};
use crate::logs::token_fingerprint;
use crate::metrics::Metrics;
use crate::request_id::{RequestId, X_REQUEST_ID};
use crate::routes;
use http::{Request, Response};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower_service::Service;
use tracing::Instrument;
use upgrade_guard::{DecisionReport, Outcome};

/// What the guard decided about the request being served, in the request's own task.
type Slot = Arc<Mutex<Option<Decision>>>;

tokio::task_local! {
    static DECISION: Slot;
}

/// The guard's decision, owned, for the answered line.
#[derive(Debug)]
struct Decision {
    site: Option<String>,
    product: Option<String>,
    outcome: &'static str,
    code: Option<&'static str>,
    admission: Option<&'static str>,
    decision_ms: f64,
}

/// Keeps the guard's decision for the request's `request answered` line (call it from the
/// guard's `on_decision` callback). A report made outside a request served through
/// [`Telemetry`] (a provision the guard finishes alone, after its client went away) is left to
/// the library's own log line and the metrics.
pub(crate) fn record_decision(report: &DecisionReport<'_>) {
    if matches!(report.outcome, Outcome::Detached(_)) {
        return;
    }
    let _ = DECISION.try_with(|slot| {
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Decision {
            site: report.site.map(|site| site.as_str().to_owned()),
            product: report.product.map(str::to_owned),
            outcome: report.outcome.as_str(),
            code: report.rejection.map(|why| why.code()),
            admission: report.admission.map(|admission| admission.as_str()),
            decision_ms: milliseconds(report.latency),
        });
    });
}

/// A duration in milliseconds, to the microsecond: what a log reader compares, without the
/// float noise of the last digits.
fn milliseconds(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// Wraps the proxy's front service (see [`Proxy`](crate::routes::Proxy)): each request is
/// served inside its `request` span, and counted as in flight while on a guarded route; the
/// answer carries the request's ID (see [`request_id`](crate::request_id), whose layers go
/// outside this one).
#[derive(Clone, Debug)]
pub(crate) struct Telemetry<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> Telemetry<S> {
    /// `inner`, observed into `metrics` and the logs.
    pub(crate) fn new(inner: S, metrics: Metrics) -> Self {
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
        let started = Instant::now();
        let route = routes::route(request.method(), request.uri().path());
        let id = request
            .extensions()
            .get::<RequestId>()
            .map(|id| id.header_value().clone());
        let span = tracing::info_span!(
            "request",
            request_id = id.as_ref().and_then(|id| id.to_str().ok()),
            route = route.as_str(),
            token = tracing::field::Empty,
        );
        // A hash per request only when something will write it. Recorded only when there is
        // one: recording `None` leaves a stray space in the text log's span fields.
        if !span.is_disabled()
            && let Some(token) = token_fingerprint(request.headers())
        {
            span.record("token", token);
        }
        // Given back when the answer is in hand or the client goes away, whichever is first.
        let in_flight = route.is_guarded().then(|| self.metrics.guarded_request());
        let slot = Slot::default();
        let answered =
            span.in_scope(|| DECISION.sync_scope(slot.clone(), || self.inner.call(request)));
        let answered = DECISION.scope(slot.clone(), answered);
        Box::pin(
            async move {
                let mut response = answered.await?;
                drop(in_flight);
                // The ID the proxy used, in place of any the upstream answered with.
                if let Some(id) = id {
                    response.headers_mut().insert(X_REQUEST_ID, id);
                }
                let status = response.status().as_u16();
                let upstream_status = response
                    .extensions()
                    .get::<UpstreamStatus>()
                    .map(|UpstreamStatus(status)| status.as_u16());
                let total_ms = milliseconds(started.elapsed());
                let decision = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                match decision {
                    Some(decision) => tracing::info!(
                        status,
                        upstream_status,
                        site = decision.site,
                        product = decision.product,
                        outcome = decision.outcome,
                        code = decision.code,
                        admission = decision.admission,
                        decision_ms = decision.decision_ms,
                        total_ms,
                        "request answered"
                    ),
                    // A passthrough, or a guarded request answered before any decision (its
                    // --request-timeout passed while it waited).
                    None if route.is_guarded() => {
                        tracing::info!(status, upstream_status, total_ms, "request answered")
                    }
                    None => tracing::debug!(status, upstream_status, total_ms, "request answered"),
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}
