//! Every decision is a `tracing` event; bypasses are warnings; no token reaches the logs.
//!
//! One test in its own binary: `tracing` caches per call site whether anyone listens, and a
//! test on another thread without a subscriber could make a capture here miss events.

mod common;

use common::*;
use upgrade_guard::fake::{Endpoint, Fault};
use upgrade_guard::{Mode, UpgradeGuardLayer};

#[tokio::test]
async fn decisions_are_logged_with_site_product_outcome_and_latency() {
    let (logs, _logging) = capture_logs();
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    let inner = Recorder::default();

    send(&guard, &inner, form("siteurl=1002&plan=professional")).await;
    send(&guard, &inner, form("siteurl=1003&plan=personal")).await;
    fake.inject(Endpoint::UpgradePaths, Fault::status(503))
        .once();
    send(
        &guard.clone().mode(Mode::FailOpen),
        &inner,
        form("siteurl=1001&plan=personal"),
    )
    .await;
    send(
        &guard.clone().mode(Mode::Shadow),
        &inner,
        form("siteurl=1003&plan=premium"),
    )
    .await;

    let logs = logs.text();
    for expected in [
        "upgrade allowed",
        "site=\"1002\"",
        "product=\"professional\"",
        "outcome=\"rejected\"",
        "code=\"upgrade_not_allowed\"",
        "latency_ms=",
        "outcome=\"failed_open\"",
        "outcome=\"shadowed\"",
    ] {
        assert!(logs.contains(expected), "{expected} in:\n{logs}");
    }
    let bypasses: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("would have stopped"))
        .collect();
    assert_eq!(bypasses.len(), 2, "{logs}");
    assert!(
        bypasses.iter().all(|l| l.contains("WARN")),
        "bypasses are warnings: {bypasses:?}"
    );
    assert!(
        !logs.contains(&fake.token()),
        "the token never reaches the logs"
    );
}
