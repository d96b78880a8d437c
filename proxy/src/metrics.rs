//! The proxy's numbers, kept and rendered by `prometheus-client` in Prometheus' text exposition
//! format (version 0.0.4) on the admin listener.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `upgrade_guard_decisions_total` | counter | `outcome` (allowed, rejected, ...), `code` (the rejection's, or `none`), `admission` (upgrade, first provision, connection, cancellation, or `none`) |
//! | `upgrade_guard_decision_seconds` | histogram | from the request's arrival to the guard's decision |
//! | `upgrade_guard_finished_alone_total` | counter | `finished` (answered, failed, ceiling_passed), `status` (the upstream's, or `none`): forwarded requests the guard finished after their client went away (or `--request-timeout` passed); each was counted once already, as a decision |
//! | `upgrade_guard_lookups_total`, `upgrade_guard_cache_hits_total`, `upgrade_guard_coalesced_total` | counter | |
//! | `upgrade_guard_lock_wait_seconds` | histogram | how long each guarded request that took its site's lock waited for it (zero when the site was free) |
//! | `upgrade_guard_lock_waits_total`, `upgrade_guard_site_busy_total` | counter | requests that had to wait, requests answered `site_busy` |
//! | `upgrade_guard_detached_in_progress` | gauge | forwarded requests the guard is finishing alone now (their clients went away): what a SIGTERM waits for |
//! | `upgrade_guard_proxy_requests_total` | counter | `route` (provision, partner_provision, cancel, passthrough, ambiguous_path), `status` |
//! | `upgrade_guard_proxy_upstream_seconds` | histogram | `route` (the four forwarded): until the upstream's response head |
//! | `upgrade_guard_proxy_open_connections` | gauge | client connections open on `--listen` |
//! | `upgrade_guard_proxy_guarded_in_flight` | gauge | requests on the guarded routes (provision, partner_provision, cancel) not yet answered |
//! | `upgrade_guard_proxy_ready` | gauge | 1 when `/readyz` last answered 200, 0 when 503 or before its first check |
//! | `upgrade_guard_proxy_tls_reloads_total` | counter | `result` (loaded, failed): certificate reloads on SIGHUP |

use crate::routes::Route;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use upgrade_guard::{DecisionReport, Detached, DetachedEnd, GuardStats, Outcome};

/// The content type of what [`Metrics::render`] writes.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the latency buckets, in seconds: a cached decision is sub-millisecond, a
/// lookup or a provision a few hundred milliseconds, a stalled upstream seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    outcome: &'static str,
    code: &'static str,
    admission: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FinishedLabels {
    finished: &'static str,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    result: &'static str,
}

/// The proxy's metrics; cheap to clone, clones share the numbers.
#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    decision_latency: Histogram,
    lock_wait: Histogram,
    finished_alone: Family<FinishedLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    /// `upgrade_guard_proxy_upstream_seconds`, one series per route in [`Route::FORWARDED`]'s
    /// order: resolved once, so a request observes its route's histogram without looking its
    /// labels up in the family (a lock and a hash) first.
    upstream_latency: [Histogram; 4],
    open_connections: Gauge,
    guarded_in_flight: Gauge,
    ready: Gauge,
    tls_reloads: Family<ReloadLabels, Counter>,
}

impl Metrics {
    /// Metrics around a guard's own counters and the requests it is finishing alone.
    pub(crate) fn new(guard: GuardStats, detached: Detached) -> Self {
        let mut registry = Registry::default();
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "upgrade_guard_decisions",
            "Decisions of the guard, by outcome, rejection code and admission",
            decisions.clone(),
        );
        let decision_latency = latency_histogram();
        registry.register(
            "upgrade_guard_decision_seconds",
            "From a guarded request's arrival to the guard's decision",
            decision_latency.clone(),
        );
        let lock_wait = latency_histogram();
        registry.register(
            "upgrade_guard_lock_wait_seconds",
            "How long each guarded request that took its site's lock waited for it",
            lock_wait.clone(),
        );
        let finished_alone = Family::<FinishedLabels, Counter>::default();
        registry.register(
            "upgrade_guard_finished_alone",
            "Forwarded requests the guard finished after their client went away, by how they ended",
            finished_alone.clone(),
        );
        // The ends an alert watches are there at 0 from the start: a rule on a counter that has
        // no sample yet sees nothing, not zero. (An answered end carries the upstream's status,
        // which only its first sample can say.)
        for finished in ["failed", "ceiling_passed"] {
            finished_alone.get_or_create_owned(&FinishedLabels {
                finished,
                status: "none".to_owned(),
            });
        }
        // The library keeps these counters itself; they are read at each scrape.
        registry.register_collector(Box::new(GuardCollector { guard, detached }));

        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "upgrade_guard_proxy_requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        let upstream_latency: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        // Every route's series exists from the start, so a rate over it is 0, not absent.
        let upstream_by_route = Route::FORWARDED.map(|route| {
            upstream_latency
                .get_or_create(&RouteLabels {
                    route: route.as_str(),
                })
                .clone()
        });
        registry.register(
            "upgrade_guard_proxy_upstream_seconds",
            "Until the upstream's response head, by route",
            upstream_latency.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "upgrade_guard_proxy_open_connections",
            "Client connections open on --listen",
            open_connections.clone(),
        );
        let guarded_in_flight = Gauge::default();
        registry.register(
            "upgrade_guard_proxy_guarded_in_flight",
            "Requests on the guarded routes not yet answered",
            guarded_in_flight.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "upgrade_guard_proxy_ready",
            "1 when /readyz answers 200, 0 when it answers 503, as of its last check",
            ready.clone(),
        );
        let tls_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "upgrade_guard_proxy_tls_reloads",
            "Certificate reloads on SIGHUP, by result",
            tls_reloads.clone(),
        );
        for result in ["loaded", "failed"] {
            tls_reloads.get_or_create_owned(&ReloadLabels { result });
        }
        Self {
            inner: Arc::new(Inner {
                registry,
                decisions,
                decision_latency,
                lock_wait,
                finished_alone,
                requests,
                upstream_latency: upstream_by_route,
                open_connections,
                guarded_in_flight,
                ready,
                tls_reloads,
            }),
        }
    }

    /// Counts one of the guard's decisions (its `on_decision` callback).
    ///
    /// A request finished alone was reported (and counted here) once already, when it was
    /// forwarded; its second report says how its work ended, and its latency runs from
    /// forwarding, not from arrival: it is counted on its own, not as a decision.
    pub(crate) fn decision(&self, report: &DecisionReport<'_>) {
        if let Outcome::Detached(finished) = report.outcome {
            let (finished, status) = match finished {
                DetachedEnd::Answered(status) => ("answered", status.as_str().to_owned()),
                DetachedEnd::Failed => ("failed", "none".to_owned()),
                DetachedEnd::CeilingPassed => ("ceiling_passed", "none".to_owned()),
                // A way of ending this proxy doesn't know yet: still counted, not lost.
                _ => ("other", "none".to_owned()),
            };
            self.inner
                .finished_alone
                .get_or_create(&FinishedLabels { finished, status })
                .inc();
            return;
        }
        let labels = DecisionLabels {
            outcome: report.outcome.as_str(),
            code: report.rejection.map_or("none", |why| why.code()),
            admission: report
                .admission
                .map_or("none", |admission| admission.as_str()),
        };
        self.inner.decisions.get_or_create(&labels).inc();
        self.inner
            .decision_latency
            .observe(report.latency.as_secs_f64());
        if let Some(waited) = report.lock_wait {
            self.inner.lock_wait.observe(waited.as_secs_f64());
        }
    }

    /// Counts a request the proxy answered on `route` with `status`.
    pub(crate) fn answered(&self, route: Route, status: u16) {
        self.inner
            .requests
            .get_or_create(&RequestLabels {
                route: route.as_str(),
                status,
            })
            .inc();
    }

    /// Records how long the upstream took to start answering on `route`.
    pub(crate) fn upstream_latency(&self, route: Route, latency: Duration) {
        // A route never forwarded (none is) would be counted with the passthroughs, not lost.
        let index = Route::FORWARDED
            .iter()
            .position(|forwarded| *forwarded == route)
            .unwrap_or(Route::FORWARDED.len() - 1);
        self.inner.upstream_latency[index].observe(latency.as_secs_f64());
    }

    /// Counts a client connection open until the returned value is dropped.
    pub(crate) fn connection_opened(&self) -> Open {
        Open::new(&self.inner.open_connections)
    }

    /// Counts a request on a guarded route in flight until the returned value is dropped.
    pub(crate) fn guarded_request(&self) -> Open {
        Open::new(&self.inner.guarded_in_flight)
    }

    /// Records what `/readyz` last answered.
    pub(crate) fn set_ready(&self, ready: bool) {
        self.inner.ready.set(i64::from(ready));
    }

    /// Counts a certificate reload on SIGHUP.
    pub(crate) fn tls_reloaded(&self, loaded: bool) {
        let result = if loaded { "loaded" } else { "failed" };
        self.inner
            .tls_reloads
            .get_or_create(&ReloadLabels { result })
            .inc();
    }

    /// Everything, in Prometheus' text exposition format (version 0.0.4, [`CONTENT_TYPE`]).
    pub(crate) fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// One unit of a gauge (an open connection, a request in flight), given back when dropped, so
/// that every way out of a connection's task or a request's future is counted.
#[derive(Debug)]
pub(crate) struct Open(Gauge);

impl Open {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The library's counters and its detached requests, read at each scrape.
#[derive(Debug)]
struct GuardCollector {
    guard: GuardStats,
    detached: Detached,
}

impl Collector for GuardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = self.guard.snapshot();
        for (name, help, value) in [
            (
                "upgrade_guard_lookups",
                "Upstream upgrade-paths lookups made",
                stats.lookups,
            ),
            (
                "upgrade_guard_cache_hits",
                "Decisions answered from the cache",
                stats.cache_hits,
            ),
            (
                "upgrade_guard_coalesced",
                "Requests that joined a lookup in flight",
                stats.coalesced,
            ),
            (
                "upgrade_guard_lock_waits",
                "Requests that waited for another provision of their site",
                stats.lock_waits,
            ),
            (
                "upgrade_guard_site_busy",
                "Requests answered site_busy",
                stats.site_busy,
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let detached =
            ConstGauge::new(i64::try_from(self.detached.in_progress()).unwrap_or(i64::MAX));
        detached.encode(encoder.encode_descriptor(
            "upgrade_guard_detached_in_progress",
            "Forwarded requests the guard is finishing alone because their clients went away",
            None,
            detached.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counted() {
        let metrics = Metrics::new(GuardStats::default(), Detached::default());
        metrics.upstream_latency(Route::Passthrough, Duration::from_micros(300));
        metrics.upstream_latency(Route::Passthrough, Duration::from_millis(30));
        metrics.upstream_latency(Route::Passthrough, Duration::from_secs(60));
        metrics.answered(Route::Passthrough, 200);
        metrics.answered(Route::Passthrough, 200);
        let open = metrics.connection_opened();
        let _in_flight = metrics.guarded_request();
        drop(metrics.guarded_request());
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
            "upgrade_guard_detached_in_progress 0",
            "upgrade_guard_proxy_open_connections 1",
            "upgrade_guard_proxy_guarded_in_flight 1",
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
        drop(open);
        assert!(
            metrics
                .render()
                .lines()
                .any(|l| l == "upgrade_guard_proxy_open_connections 0")
        );
    }
}
