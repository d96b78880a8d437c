//! The proxy's numbers, rendered in Prometheus' text exposition format on the admin listener.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `upgrade_guard_decisions_total` | counter | `outcome` (allowed, rejected, ...), `code` (the rejection's, or `none`), `admission` (upgrade, first provision, connection, cancellation, or `none`) |
//! | `upgrade_guard_decision_seconds` | histogram | from the request's arrival to the guard's decision |
//! | `upgrade_guard_finished_alone_total` | counter | `finished` (answered, failed, ceiling_passed), `status` (the upstream's, or `none`): forwarded requests the guard finished after their client went away (or `--request-timeout` passed); each was counted once already, as a decision |
//! | `upgrade_guard_lookups_total`, `upgrade_guard_cache_hits_total`, `upgrade_guard_coalesced_total` | counter | |
//! | `upgrade_guard_lock_wait_seconds` | histogram | how long each guarded request that took its site's lock waited for it (zero when the site was free) |
//! | `upgrade_guard_lock_waits_total`, `upgrade_guard_site_busy_total` | counter | requests that had to wait, requests answered `site_busy` |
//! | `upgrade_guard_proxy_requests_total` | counter | `route` (provision, partner_provision, cancel, passthrough, ambiguous_path), `status` |
//! | `upgrade_guard_proxy_upstream_seconds` | histogram | `route` (the four forwarded): until the upstream's response head |

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use upgrade_guard::{DecisionReport, Finished, GuardStats, Outcome};

/// Which route of the proxy a request took.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// `POST /rest/v1.3/jpphp/provision`, through the guard.
    Provision,
    /// `POST /rest/v1.3/jpphp/{site}/partner-provision` (Jetpack's `wp jetpack
    /// partner_provision`), through the guard.
    PartnerProvision,
    /// `POST /rest/v1.3/jpphp/{site}/partner-cancel`.
    Cancel,
    /// Everything else, passed through.
    Passthrough,
    /// A path that is not plain and could be read as a guarded route's: answered by the proxy
    /// (400 `ambiguous_path`), never forwarded. Last: it has no upstream latency.
    AmbiguousPath,
}

impl Route {
    /// The route's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provision => "provision",
            Self::PartnerProvision => "partner_provision",
            Self::Cancel => "cancel",
            Self::Passthrough => "passthrough",
            Self::AmbiguousPath => "ambiguous_path",
        }
    }

    /// The routes that reach the upstream, indexed by their discriminant.
    const FORWARDED: [Self; 4] = [
        Self::Provision,
        Self::PartnerProvision,
        Self::Cancel,
        Self::Passthrough,
    ];
}

/// Upper bounds of the latency buckets, in seconds: a cached decision is sub-millisecond, a
/// lookup or a provision a few hundred milliseconds, a stalled upstream seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The proxy's metrics; cheap to clone, clones share the numbers.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    guard: GuardStats,
    decisions: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    decision_latency: Histogram,
    lock_wait: Histogram,
    finished_alone: Mutex<BTreeMap<(&'static str, Option<u16>), u64>>,
    requests: Mutex<BTreeMap<(Route, u16), u64>>,
    upstream_latency: [Histogram; Route::FORWARDED.len()],
}

impl Metrics {
    /// Metrics around a guard's own counters.
    pub fn new(guard: GuardStats) -> Self {
        Self {
            inner: Arc::new(Inner {
                guard,
                decisions: Mutex::default(),
                decision_latency: Histogram::default(),
                lock_wait: Histogram::default(),
                finished_alone: Mutex::default(),
                requests: Mutex::default(),
                upstream_latency: Default::default(),
            }),
        }
    }

    /// Counts one of the guard's decisions (its `on_decision` callback).
    ///
    /// A request finished alone was reported (and counted here) once already, when it was
    /// forwarded; its second report says how its work ended, and its latency runs from
    /// forwarding, not from arrival: it is counted on its own, not as a decision.
    pub fn decision(&self, report: &DecisionReport<'_>) {
        if let Outcome::FinishedAlone(finished) = report.outcome {
            let (how, status) = match finished {
                Finished::Answered(status) => ("answered", Some(status.as_u16())),
                Finished::Failed => ("failed", None),
                Finished::CeilingPassed => ("ceiling_passed", None),
                // A way of ending this proxy doesn't know yet: still counted, not lost.
                _ => ("other", None),
            };
            *lock(&self.inner.finished_alone)
                .entry((how, status))
                .or_default() += 1;
            return;
        }
        let code = report.rejection.map_or("none", |why| why.code());
        let admission = report
            .admission
            .map_or("none", |admission| admission.as_str());
        *lock(&self.inner.decisions)
            .entry((report.outcome.as_str(), code, admission))
            .or_default() += 1;
        self.inner.decision_latency.observe(report.latency);
        if let Some(waited) = report.lock_wait {
            self.inner.lock_wait.observe(waited);
        }
    }

    /// Counts a request the proxy answered on `route` with `status`.
    pub fn answered(&self, route: Route, status: u16) {
        *lock(&self.inner.requests)
            .entry((route, status))
            .or_default() += 1;
    }

    /// Records how long the upstream took to start answering on `route`.
    pub fn upstream_latency(&self, route: Route, latency: Duration) {
        if let Some(histogram) = self.inner.upstream_latency.get(route as usize) {
            histogram.observe(latency);
        }
    }

    /// Everything, in Prometheus' text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let inner = &*self.inner;
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP upgrade_guard_decisions_total Decisions of the guard, by outcome, rejection code and admission.\n");
        out.push_str("# TYPE upgrade_guard_decisions_total counter\n");
        for ((outcome, code, admission), n) in lock(&inner.decisions).iter() {
            let _ = writeln!(
                out,
                "upgrade_guard_decisions_total{{outcome=\"{outcome}\",code=\"{code}\",admission=\"{admission}\"}} {n}"
            );
        }
        inner.decision_latency.render(
            &mut out,
            "upgrade_guard_decision_seconds",
            "From a guarded request's arrival to the guard's decision.",
            &[""],
        );
        inner.lock_wait.render(
            &mut out,
            "upgrade_guard_lock_wait_seconds",
            "How long each guarded request that took its site's lock waited for it.",
            &[""],
        );
        out.push_str("# HELP upgrade_guard_finished_alone_total Forwarded requests the guard finished after their client went away, by how they ended.\n");
        out.push_str("# TYPE upgrade_guard_finished_alone_total counter\n");
        for ((how, status), n) in lock(&inner.finished_alone).iter() {
            let status = status.map_or_else(|| "none".to_owned(), |s| s.to_string());
            let _ = writeln!(
                out,
                "upgrade_guard_finished_alone_total{{finished=\"{how}\",status=\"{status}\"}} {n}"
            );
        }

        let stats = inner.guard.snapshot();
        let counters: [(&str, &str, f64); 5] = [
            (
                "lookups",
                "Upstream upgrade-paths lookups made.",
                stats.lookups as f64,
            ),
            (
                "cache_hits",
                "Decisions answered from the cache.",
                stats.cache_hits as f64,
            ),
            (
                "coalesced",
                "Requests that joined a lookup in flight.",
                stats.coalesced as f64,
            ),
            (
                "lock_waits",
                "Requests that waited for another provision of their site.",
                stats.lock_waits as f64,
            ),
            (
                "site_busy",
                "Requests answered site_busy.",
                stats.site_busy as f64,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP upgrade_guard_{name}_total {help}");
            let _ = writeln!(out, "# TYPE upgrade_guard_{name}_total counter");
            let _ = writeln!(out, "upgrade_guard_{name}_total {value}");
        }

        out.push_str(
            "# HELP upgrade_guard_proxy_requests_total Requests answered, by route and status.\n",
        );
        out.push_str("# TYPE upgrade_guard_proxy_requests_total counter\n");
        for ((route, status), n) in lock(&inner.requests).iter() {
            let route = route.as_str();
            let _ = writeln!(
                out,
                "upgrade_guard_proxy_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let mut first = true;
        for route in Route::FORWARDED {
            let label = format!("route=\"{}\"", route.as_str());
            inner.upstream_latency[route as usize].render(
                &mut out,
                "upgrade_guard_proxy_upstream_seconds",
                if first {
                    "Until the upstream's response head, by route."
                } else {
                    ""
                },
                &[&label],
            );
            first = false;
        }
        out
    }
}

/// A counter map stays usable even if a holder panicked: counts are plain numbers.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A fixed-bucket latency histogram, lock-free.
#[derive(Debug, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative), the last one past every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    fn observe(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// Writes the histogram; `help` empty when another series of the same name came first.
    fn render(&self, out: &mut String, name: &str, help: &str, labels: &[&str]) {
        if !help.is_empty() {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} histogram");
        }
        let labels = labels
            .iter()
            .filter(|l| !l.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(",");
        let with = |extra: &str| match (labels.is_empty(), extra.is_empty()) {
            (true, true) => String::new(),
            (true, false) => format!("{{{extra}}}"),
            (false, true) => format!("{{{labels}}}"),
            (false, false) => format!("{{{labels},{extra}}}"),
        };
        let mut cumulative = 0;
        for (i, count) in self.buckets.iter().enumerate() {
            cumulative += count.load(Relaxed);
            let le = BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
            let _ = writeln!(
                out,
                "{name}_bucket{} {cumulative}",
                with(&format!("le=\"{le}\""))
            );
        }
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{} {sum}", with(""));
        let _ = writeln!(out, "{name}_count{} {cumulative}", with(""));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counted() {
        let metrics = Metrics::new(GuardStats::default());
        metrics.upstream_latency(Route::Passthrough, Duration::from_micros(300));
        metrics.upstream_latency(Route::Passthrough, Duration::from_millis(30));
        metrics.upstream_latency(Route::Passthrough, Duration::from_secs(60));
        metrics.answered(Route::Passthrough, 200);
        metrics.answered(Route::Passthrough, 200);
        let text = metrics.render();
        for line in [
            "upgrade_guard_proxy_upstream_seconds_bucket{route=\"passthrough\",le=\"0.0005\"} 1",
            "upgrade_guard_proxy_upstream_seconds_bucket{route=\"passthrough\",le=\"0.05\"} 2",
            "upgrade_guard_proxy_upstream_seconds_bucket{route=\"passthrough\",le=\"10\"} 2",
            "upgrade_guard_proxy_upstream_seconds_bucket{route=\"passthrough\",le=\"+Inf\"} 3",
            "upgrade_guard_proxy_upstream_seconds_count{route=\"passthrough\"} 3",
            "upgrade_guard_proxy_upstream_seconds_bucket{route=\"provision\",le=\"+Inf\"} 0",
            "upgrade_guard_proxy_requests_total{route=\"passthrough\",status=\"200\"} 2",
            "upgrade_guard_lookups_total 0",
            "# TYPE upgrade_guard_decision_seconds histogram",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        // One TYPE line per metric name, as the format requires.
        assert_eq!(
            text.matches("# TYPE upgrade_guard_proxy_upstream_seconds ")
                .count(),
            1
        );
    }
}
