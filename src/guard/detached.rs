//! Finishing alone: the inner service's work for a request whose client went away after it was
//! forwarded.
//!
//! Once the guard has forwarded a provision, the handler may already have sent it to
//! WordPress.com, and dropping the handler's future cannot take back bytes on the wire. Freeing
//! the site then would let the next request for it be checked against the paths from before a
//! provision that is still landing. So a [`ResponseFuture`](super::ResponseFuture) dropped after
//! forwarding hands the inner future and the site's permit to a task that drives the future to
//! its end, bounded by the route's ceiling, and only then frees the site.

use super::check::{Config, SiteHold};
use crate::Site;
use crate::decision::{DecisionReport, Finished, Outcome};
use http::StatusCode;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tracing::Instrument;

/// How long the guard keeps finishing a forwarded request whose client went away, by default:
/// long enough for a provision at WordPress.com.
pub(crate) const DEFAULT_DETACHED_CEILING: Duration = Duration::from_secs(60);

/// Polls an inner future to its end and reads the status of its answer, erasing the response's
/// body type (which [`ResponseFuture`](super::ResponseFuture)'s `Drop` cannot name).
pub(super) type PollStatus<F> = fn(Pin<&mut F>, &mut Context<'_>) -> Poll<Option<StatusCode>>;

/// `PollStatus` for an inner future answering `Result<Response<_>, _>`: the status, or `None`
/// when the inner service failed. The response itself is dropped: its client has gone.
pub(super) fn poll_status<F, ResBody, E>(
    future: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<Option<StatusCode>>
where
    F: Future<Output = Result<http::Response<ResBody>, E>>,
{
    future
        .poll(cx)
        .map(|output| output.ok().map(|response| response.status()))
}

/// A route's settings for finishing alone, and the tracker shared by every route of a layer.
#[derive(Clone, Debug)]
pub(super) struct Hold {
    pub(super) ceiling: Duration,
    pub(super) detached: Detached,
}

impl Default for Hold {
    fn default() -> Self {
        Self {
            ceiling: DEFAULT_DETACHED_CEILING,
            detached: Detached::default(),
        }
    }
}

/// What a forwarded request was, for the report of its finishing alone.
pub(super) struct Forwarded {
    pub(super) site: Option<Site>,
    pub(super) product: Option<String>,
    /// Why the route let it through, when it did on its merits (not through a bypass).
    pub(super) admission: Option<crate::Admission>,
    pub(super) at: Instant,
}

/// The inner service's work still under way for requests whose clients went away, on every route
/// of one layer; from [`UpgradeGuardLayer::detached`](super::UpgradeGuardLayer::detached).
///
/// A server that stops should wait for it after it has stopped accepting requests and before the
/// runtime goes away: a provision finished alone holds its site until it ends, and a runtime that
/// shuts down drops it half-way, as if no guard had held the site. Each one ends within its
/// route's [`detached_ceiling`](super::UpgradeGuardLayer::detached_ceiling), so the wait does too.
///
/// ```no_run
/// # use upgrade_guard::{UpgradeGuardLayer, UpgradePathsClient};
/// # async fn run(app: axum::Router, listener: tokio::net::TcpListener, guard: UpgradeGuardLayer) -> std::io::Result<()> {
/// let detached = guard.detached();
/// axum::serve(listener, app)
///     .with_graceful_shutdown(async { tokio::signal::ctrl_c().await.unwrap_or(()) })
///     .await?;
/// // Connections are closed; provisions whose clients left may still be landing.
/// detached.wait().await;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Detached {
    tracker: Arc<Tracker>,
}

#[derive(Default)]
struct Tracker {
    running: AtomicUsize,
    idle: Notify,
}

impl Detached {
    /// How many forwarded requests the guard is finishing alone right now.
    pub fn in_progress(&self) -> usize {
        self.tracker.running.load(Ordering::SeqCst)
    }

    /// Waits until no forwarded request is being finished alone. Requests whose clients go away
    /// during the wait are waited for too, so stop accepting requests first.
    pub async fn wait(&self) {
        loop {
            let idle = self.tracker.idle.notified();
            let mut idle = std::pin::pin!(idle);
            // Registered before the count is read, so a task ending in between still wakes us.
            idle.as_mut().enable();
            if self.in_progress() == 0 {
                return;
            }
            idle.await;
        }
    }

    fn start(&self) -> Running {
        self.tracker.running.fetch_add(1, Ordering::SeqCst);
        Running(self.tracker.clone())
    }
}

impl fmt::Debug for Detached {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Detached")
            .field("in_progress", &self.in_progress())
            .finish()
    }
}

/// One request being finished alone; counted out when its task ends, whichever way.
struct Running(Arc<Tracker>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Drives `future` to its end in a task of its own, holding `permit` (whatever the guard holds
/// while forwarding: the site's lock) until then or until the route's ceiling passes, then
/// reports how it ended.
pub(super) fn finish_alone<F>(
    config: Arc<Config>,
    mut future: Pin<Box<F>>,
    poll_status: PollStatus<F>,
    mut permit: Option<Box<SiteHold>>,
    forwarded: Forwarded,
) where
    F: Future + Send + 'static,
{
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        // Dropped outside any runtime: nothing can drive the future. Say so rather than pretend.
        tracing::warn!(
            site = forwarded.site.as_ref().map(Site::as_str),
            product = forwarded.product.as_deref(),
            "a forwarded request was dropped outside a Tokio runtime: its work is cancelled and its site freed now, while a provision it sent may still land"
        );
        return;
    };
    let running = config.after_drop.detached.start();
    let ceiling = config.after_drop.ceiling;
    let work = async move {
        let ended =
            tokio::time::timeout(ceiling, poll_fn(|cx| poll_status(future.as_mut(), cx))).await;
        // Past the ceiling the work is cancelled here, before the site is freed.
        drop(future);
        if let (Ok(Some(status)), Some(permit)) = (&ended, permit.as_mut()) {
            permit.answered(*status);
        }
        drop(permit);
        let finished = match ended {
            Ok(Some(status)) => Finished::Answered(status),
            Ok(None) => Finished::Failed,
            Err(_) => Finished::CeilingPassed,
        };
        report(&config, &forwarded, finished);
        drop(running);
    };
    // In the request's span, so the logs of the work and of its end read with the request's.
    runtime.spawn(work.instrument(tracing::Span::current()));
}

/// Logs how a request finished alone and hands it to the route's `on_decision`.
fn report(config: &Config, forwarded: &Forwarded, finished: Finished) {
    let latency = forwarded.at.elapsed();
    let site = forwarded.site.as_ref().map(Site::as_str);
    let product = forwarded.product.as_deref();
    let outcome = Outcome::FinishedAlone(finished);
    let latency_ms = latency.as_secs_f64() * 1000.0;
    match finished {
        Finished::Answered(status) => tracing::info!(
            site,
            product,
            outcome = outcome.as_str(),
            status = status.as_u16(),
            latency_ms,
            "the client went away after the request was forwarded; the guard finished it alone"
        ),
        Finished::Failed => tracing::info!(
            site,
            product,
            outcome = outcome.as_str(),
            latency_ms,
            "the client went away after the request was forwarded; the inner service failed"
        ),
        Finished::CeilingPassed => tracing::warn!(
            site,
            product,
            outcome = outcome.as_str(),
            ceiling_ms = config.after_drop.ceiling.as_millis() as u64,
            "the client went away after the request was forwarded and the inner service did not finish within the ceiling: its work was cancelled and the site freed, while a provision it sent may still land"
        ),
    }
    if let Some(callback) = &config.on_decision {
        callback(&DecisionReport {
            outcome,
            admission: forwarded.admission,
            mode: config.mode,
            site: forwarded.site.as_ref(),
            product,
            rejection: None,
            lock_wait: None,
            latency,
        });
    }
}
