//! What an operations team relies on: `/metrics` as Prometheus reads it, JSON logs with a
//! request ID and no secret, readiness, and certificates reloaded without a restart.

mod common;

use common::{full, http_client, multipart, send};
use http::{Request, StatusCode};
use prometheus_parse::{Scrape, Value};
use std::process::Command;
use upgrade_guard::fake::FakeUpstream;

/// What the partner tooling sends for a provision: the multipart form, with its token.
fn provision(proxy: &str, token: &str, siteurl: &str, plan: &str) -> Request<common::TestBody> {
    let (content_type, body) = multipart(&[
        ("siteurl", siteurl),
        ("local_user", "admin"),
        ("plan", plan),
    ]);
    Request::post(format!("{proxy}/rest/v1.3/jpphp/provision"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .body(full(body))
        .unwrap()
}

/// `curl -sS <url>`, as an operator (or a scraper) would fetch it.
fn curl(url: &str) -> String {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", url])
        .output()
        .expect("curl runs (Debian's curl package)");
    assert!(output.status.success(), "curl {url}: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8 metrics")
}

/// The samples named `name` whose labels include all of `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
    scrape
        .samples
        .iter()
        .find(|sample| {
            sample.metric == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .map(|sample| sample.value.clone())
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let token = fake.token();
    let proxy = upgrade_guard_proxy::start(common::config(fake.url(), &["--token", &token]))
        .await
        .unwrap();
    let (client, url) = (http_client(), format!("http://{}", proxy.addr()));
    let refused = send(
        &client,
        provision(
            &url,
            &token,
            "https://professional.example.com/",
            "personal",
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    let allowed = send(
        &client,
        provision(&url, &token, "https://free.example.com/", "personal"),
    )
    .await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());

    let admin = format!("http://{}", proxy.admin_addr());
    let text = tokio::task::spawn_blocking(move || curl(&format!("{admin}/metrics")))
        .await
        .unwrap();
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("parses");

    let counter = |name: &str, labels: &[(&str, &str)]| match value(&scrape, name, labels) {
        Some(Value::Counter(n)) => n,
        other => panic!("{name}{labels:?}: {other:?} in\n{text}"),
    };
    let gauge = |name: &str| match value(&scrape, name, &[]) {
        Some(Value::Gauge(n)) => n,
        other => panic!("{name}: {other:?} in\n{text}"),
    };
    assert_eq!(
        counter(
            "upgrade_guard_decisions_total",
            &[
                ("outcome", "rejected"),
                ("code", "upgrade_not_allowed"),
                ("admission", "none")
            ]
        ),
        1.0
    );
    assert_eq!(
        counter(
            "upgrade_guard_decisions_total",
            &[
                ("outcome", "allowed"),
                ("code", "none"),
                ("admission", "upgrade")
            ]
        ),
        1.0
    );
    assert_eq!(
        counter(
            "upgrade_guard_proxy_requests_total",
            &[("route", "provision"), ("status", "409")]
        ),
        1.0
    );
    assert_eq!(counter("upgrade_guard_lookups_total", &[]), 2.0);
    assert_eq!(counter("upgrade_guard_site_busy_total", &[]), 0.0);
    // The process metrics: both answers are in, none is being finished alone, and the
    // client's keep-alive connection is still open.
    assert_eq!(gauge("upgrade_guard_proxy_guarded_in_flight"), 0.0);
    assert_eq!(gauge("upgrade_guard_detached_in_progress"), 0.0);
    assert!(
        gauge("upgrade_guard_proxy_open_connections") >= 1.0,
        "{text}"
    );
    match value(&scrape, "upgrade_guard_decision_seconds", &[]) {
        Some(Value::Histogram(buckets)) => {
            assert_eq!(buckets.last().unwrap().less_than, f64::INFINITY);
            assert_eq!(buckets.last().unwrap().count, 2.0);
        }
        other => panic!("decision_seconds: {other:?}"),
    }
    match value(
        &scrape,
        "upgrade_guard_proxy_upstream_seconds",
        &[("route", "cancel")],
    ) {
        Some(Value::Histogram(buckets)) => assert_eq!(buckets.last().unwrap().count, 0.0),
        other => panic!("upstream_seconds: {other:?}"),
    }
    // Every metric says what it is.
    for sample in &scrape.samples {
        let family = sample
            .metric
            .trim_end_matches("_count")
            .trim_end_matches("_sum");
        assert!(
            scrape.docs.contains_key(family) || scrape.docs.contains_key(&sample.metric),
            "no HELP for {}",
            sample.metric
        );
    }
    proxy.shutdown().await;
}
