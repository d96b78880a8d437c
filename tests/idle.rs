//! Memory that follows the load, not the history: once no request is under way, the per-site
//! lock table holds no site, whatever the requests before did (allowed, refused, raced, given up
//! during the check, or given up after they were forwarded). A count, not a time (issue 14).

mod common;

use common::*;
use http::StatusCode;
use std::time::Duration;
use tower::{Layer, ServiceExt};
use upgrade_guard::fake::{Endpoint, Fault};
use upgrade_guard::{LocalLocks, UpgradeGuardLayer};

fn guard(fake: &upgrade_guard::fake::FakeUpstream, locks: &LocalLocks) -> UpgradeGuardLayer {
    UpgradeGuardLayer::builder(client(fake))
        .site_locks(locks.clone())
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_table_is_empty_after_a_race() {
    let fake = free_sites(20).await;
    let locks = LocalLocks::new();
    let statuses = race(&fake, &[guard(&fake, &locks)], 20).await;
    assert_clean_race(&fake, &statuses, 20);
    assert!(statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::CONFLICT));
    assert_eq!(
        locks.sites_in_use(),
        0,
        "no site is held once every answer is in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_table_empties_after_requests_given_up() {
    let fake = free_sites(4).await;
    let locks = LocalLocks::new();
    let layer = guard(&fake, &locks);
    let recorder = Recorder::default();
    let site = |n: u64| format!("siteurl={}&plan=jetpack-scan", FIRST_FREE_SITE + n);

    // Given up during the check: the lookup is slow, the caller's timeout fires first.
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::Delay(Duration::from_millis(300)),
    )
    .always();
    for n in 0..3 {
        let service = layer.layer(recorder.service());
        let gave_up =
            tokio::time::timeout(Duration::from_millis(20), service.oneshot(form(&site(n))));
        assert!(gave_up.await.is_err(), "the caller gave up");
    }
    fake.clear_faults();
    eventually("the abandoned checks to free their sites", || {
        locks.sites_in_use() == 0
    })
    .await;

    // Given up once forwarded: the inner service is slow; the guard finishes it alone, then
    // frees the site.
    let slow = tower::service_fn(|_request: http::Request<_>| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, std::convert::Infallible>(http::Response::new(
            http_body_util::Full::<bytes::Bytes>::default(),
        ))
    });
    let service = layer.layer(slow);
    let gave_up = tokio::time::timeout(Duration::from_millis(50), service.oneshot(form(&site(3))));
    assert!(gave_up.await.is_err(), "the caller gave up after the check");
    eventually("the detached provision to free its site", || {
        locks.sites_in_use() == 0
    })
    .await;

    // And the sites are usable again.
    let answer = send(&layer, &recorder, form(&site(0))).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(locks.sites_in_use(), 0);
}
