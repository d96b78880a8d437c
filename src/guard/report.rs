//! Every decision, told once: counted, logged, and handed to the partner's callback, whether it
//! was made when the request was checked or when a detached request ended.

use crate::decision::{Admission, DecisionReport, DetachedEnd, Mode, Outcome};
use crate::rejection::Rejection;
use crate::site::Site;
use crate::stats::GuardStats;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A partner's callback for every decision.
pub(super) type OnDecision = dyn Fn(&DecisionReport<'_>) + Send + Sync;

/// Where a route's decisions are told.
#[derive(Clone)]
pub(super) struct Reporter {
    pub(super) stats: GuardStats,
    pub(super) on_decision: Option<Arc<OnDecision>>,
}

/// What a forwarded request was, for the report of its end should its client go away.
pub(super) struct Forwarded {
    pub(super) site: Option<Site>,
    pub(super) product: Option<String>,
    /// Why the route let it through, when it did on its merits (not through a bypass).
    pub(super) admission: Option<Admission>,
    pub(super) mode: Mode,
    pub(super) at: Instant,
    /// The route's detached ceiling, which a warning names when it passes.
    pub(super) ceiling: Duration,
}

impl Reporter {
    /// Counts, logs and hands `report` to the partner's callback.
    pub(super) fn report(&self, report: &DecisionReport<'_>) {
        self.tell(report, None);
    }

    /// `report`, of a request detached on a route whose ceiling is `ceiling`.
    fn tell(&self, report: &DecisionReport<'_>, ceiling: Option<Duration>) {
        match report.outcome {
            Outcome::Rejected => self.stats.rejected(),
            Outcome::Detached(_) => self.stats.detached(),
            _ => self.stats.forwarded(),
        }
        log(report, ceiling);
        if let Some(callback) = &self.on_decision {
            callback(report);
        }
    }

    /// Reports how a detached request ended.
    pub(super) fn detached(&self, forwarded: &Forwarded, end: DetachedEnd) {
        let report = DecisionReport {
            outcome: Outcome::Detached(end),
            admission: forwarded.admission,
            mode: forwarded.mode,
            site: forwarded.site.as_ref(),
            product: forwarded.product.as_deref(),
            rejection: None,
            lock_wait: None,
            latency: forwarded.at.elapsed(),
        };
        self.tell(&report, Some(forwarded.ceiling));
    }
}

fn log(report: &DecisionReport<'_>, ceiling: Option<Duration>) {
    let site = report.site.map(Site::as_str);
    let product = report.product;
    let code = report.rejection.map(Rejection::code);
    let latency_ms = millis(report.latency);
    let (outcome, mode) = (report.outcome.as_str(), report.mode.as_str());
    match (report.outcome, report.rejection) {
        (Outcome::Allowed, _) => {
            let admission = report.admission.map(Admission::as_str);
            let message = match report.admission {
                Some(Admission::FirstProvision) => "first provision of a new site forwarded",
                Some(Admission::Connection) => "connection request forwarded (no product)",
                Some(Admission::Cancellation) => "cancellation forwarded",
                Some(Admission::Unjudged) => {
                    "product not judged by the site's upgrade paths forwarded"
                }
                _ => "upgrade allowed",
            };
            tracing::info!(
                site,
                product,
                outcome,
                admission,
                mode,
                latency_ms,
                "{message}"
            );
        }
        (Outcome::Rejected, Some(why)) if why.status().is_client_error() => {
            tracing::info!(site, product, outcome, mode, code, latency_ms, reason = %why, "request stopped");
        }
        (Outcome::Detached(DetachedEnd::Answered(status)), _) => tracing::info!(
            site,
            product,
            outcome,
            status = status.as_u16(),
            latency_ms,
            "the client went away after the request was forwarded; the guard finished it alone"
        ),
        (Outcome::Detached(DetachedEnd::Failed), _) => tracing::info!(
            site,
            product,
            outcome,
            latency_ms,
            "the client went away after the request was forwarded; the inner service failed"
        ),
        (Outcome::Detached(_), _) => tracing::warn!(
            site,
            product,
            outcome,
            latency_ms,
            ceiling_ms = ceiling.map(|ceiling| ceiling.as_millis() as u64),
            "the client went away after the request was forwarded and the inner service did not \
             finish within the ceiling: its work was cancelled and the site freed, while a \
             provision it sent may still land"
        ),
        (kind, _) => {
            let message = match kind {
                Outcome::Rejected => "request stopped: the guard could not check it",
                _ => "forwarded although the guard would have stopped it",
            };
            tracing::warn!(
                site,
                product,
                outcome,
                mode,
                code,
                latency_ms,
                reason = report.rejection.map(tracing::field::display),
                "{message}"
            );
        }
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
