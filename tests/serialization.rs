//! One provision per site at a time; cached, coalesced lookups; cancellation in every phase.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tower::{Layer, ServiceExt, service_fn};
use upgrade_guard::fake::{Endpoint, Fault};
use upgrade_guard::{
    DetachedEnd, GuardBody, LocalLocks, Outcome, SiteLocks, SitePermit, UpgradeGuardLayer,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_conflicting_provisions_never_leak() {
    const SITES: u64 = 40;
    let fake = free_sites(SITES).await;
    let guard = UpgradeGuardLayer::new(client(&fake));

    let statuses = race(&fake, std::slice::from_ref(&guard), SITES).await;

    assert_clean_race(&fake, &statuses, SITES);
}

/// Locks that lock nothing: what a guard without serialization would do.
#[derive(Debug)]
struct NoLocks;

impl SiteLocks for NoLocks {
    fn acquire<'a>(
        &'a self,
        _: &'a upgrade_guard::Site,
        _: Duration,
    ) -> upgrade_guard::Acquire<'a> {
        Box::pin(async { Ok(SitePermit::new(())) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_lock_the_same_race_leaks() {
    // The control for the test above: it would see a missing lock.
    const SITES: u64 = 40;
    let fake = free_sites(SITES).await;
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .site_locks(NoLocks)
        .build();

    race(&fake, std::slice::from_ref(&guard), SITES).await;

    assert!(
        fake.stats().leaks > 0,
        "the race test detects a missing lock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_refused_requests_cost_one_lookup() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    let inner = Recorder::default();
    let service = guard.layer(inner.service::<Full<Bytes>>());

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let service = service.clone();
        tasks.spawn(async move {
            service
                .oneshot(form("siteurl=1003&plan=personal"))
                .await
                .unwrap()
                .status()
        });
    }
    let statuses = tasks.join_all().await;

    assert!(statuses.iter().all(|s| *s == StatusCode::CONFLICT));
    assert_eq!(fake.stats().lookups, 1);
    let stats = guard.stats().snapshot();
    assert_eq!(stats.lookups, 1);
    assert_eq!(stats.cache_hits + stats.coalesced, 299);
    assert_eq!(stats.rejected, 300);
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn a_forwarded_provision_drops_the_cached_paths() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    let service = guard.layer(relay::<GuardBody<Full<Bytes>>>(&fake));

    let refused = service
        .clone()
        .oneshot(form("siteurl=1002&plan=premium"))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let refused = service
        .clone()
        .oneshot(form("siteurl=1002&plan=personal"))
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(
        fake.stats().lookups,
        1,
        "the second answer came from the cache"
    );

    let upgraded = service
        .clone()
        .oneshot(form("siteurl=1002&plan=professional&local_user=a"))
        .await
        .unwrap();
    assert_eq!(upgraded.status(), StatusCode::OK);
    // The site holds Professional now: Realtime Backups is no longer an upgrade, and the guard
    // knows it because it looked up afresh.
    let downgrade = service
        .oneshot(form(
            "siteurl=1002&plan=jetpack-backup-realtime&local_user=a",
        ))
        .await
        .unwrap();
    assert_eq!(downgrade.status(), StatusCode::CONFLICT);
    // The cache refused twice with one lookup; the upgrade was confirmed by a fresh one; after
    // the forward the paths were looked up afresh.
    assert_eq!(fake.stats().lookups, 3);
    assert_eq!(fake.stats().leaks, 0);
}

#[tokio::test]
async fn a_zero_ttl_turns_the_cache_off() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .cache_ttl(Duration::ZERO)
        .build();
    let inner = Recorder::default();
    for _ in 0..3 {
        assert_eq!(
            send(&guard, &inner, form("siteurl=1003&plan=personal"))
                .await
                .status,
            StatusCode::CONFLICT
        );
    }
    assert_eq!(fake.stats().lookups, 3);
}

#[tokio::test]
async fn errors_are_never_cached() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    let inner = Recorder::default();
    fake.inject(Endpoint::UpgradePaths, Fault::status(503))
        .once();
    assert_eq!(
        send(&guard, &inner, form("siteurl=1003&plan=personal"))
            .await
            .status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        send(&guard, &inner, form("siteurl=1003&plan=personal"))
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(fake.stats().lookups, 2);
}

/// An inner service that signals when a request reaches it, then holds it until released.
#[derive(Clone)]
struct Gate {
    reached: Arc<Semaphore>,
    released: Arc<Semaphore>,
}

impl Gate {
    fn new() -> Self {
        Self {
            reached: Arc::new(Semaphore::new(0)),
            released: Arc::new(Semaphore::new(0)),
        }
    }

    /// Lets `n` held (or future) requests through.
    fn release(&self, n: usize) {
        self.released.add_permits(n);
    }

    fn service(
        &self,
    ) -> impl tower::Service<
        Request<GuardBody<Full<Bytes>>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send + use<>,
    >
    + Clone
    + Send
    + 'static
    + use<> {
        let gate = self.clone();
        service_fn(move |_request: Request<GuardBody<Full<Bytes>>>| {
            let gate = gate.clone();
            async move {
                gate.reached.add_permits(1);
                gate.released.acquire().await.unwrap().forget();
                Ok::<_, Infallible>(Response::new(Full::from("provisioned")))
            }
        })
    }

    async fn wait_reached(&self) {
        self.reached.acquire().await.unwrap().forget();
    }
}

#[tokio::test]
async fn a_waiting_request_gets_site_busy_after_the_lock_wait() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake)).lock_wait(Duration::from_millis(50));
    let gate = Gate::new();
    let service = guard.layer(gate.service());

    let holder = tokio::spawn(
        service
            .clone()
            .oneshot(form("siteurl=1001&plan=jetpack-scan")),
    );
    gate.wait_reached().await;

    let answer = service
        .clone()
        .oneshot(form("siteurl=1001&plan=personal"))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.headers()["retry-after"], "1");
    let body = http_body_util::BodyExt::collect(answer.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(
        body.starts_with(br#"{"error":"site_busy","message":""#),
        "{body:?}"
    );

    // Another site is not held up.
    let other = tokio::spawn(
        service
            .clone()
            .oneshot(form("siteurl=1002&plan=professional")),
    );
    gate.wait_reached().await;
    gate.release(2);
    assert_eq!(holder.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(other.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(guard.stats().snapshot().site_busy, 1);
}

#[tokio::test]
async fn cancelled_while_waiting_for_the_lock() {
    let fake = fake().await;
    let locks = LocalLocks::new();
    // The gate provisions nothing upstream: no answer would ever show what it was given.
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .site_locks(locks.clone())
        .settling_window(Duration::ZERO)
        .build();
    let gate = Gate::new();
    let service = guard.layer(gate.service());

    let holder = tokio::spawn(
        service
            .clone()
            .oneshot(form("siteurl=1001&plan=jetpack-scan")),
    );
    gate.wait_reached().await;
    let waiter = tokio::spawn(service.clone().oneshot(form("siteurl=1001&plan=personal")));
    let stats = guard.stats();
    // Once the waiter is queued behind the holder, the client goes away.
    let site = upgrade_guard::Site::parse("1001").unwrap();
    eventually("the waiter to queue", || locks.users(&site) == 2).await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());

    gate.release(1);
    assert_eq!(holder.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(locks.sites_in_use(), 0, "nothing stays held");
    // The next request for the site proceeds at once.
    let next = tokio::spawn(
        service
            .clone()
            .oneshot(form("siteurl=1001&plan=jetpack-anti-spam")),
    );
    gate.wait_reached().await;
    gate.release(1);
    assert_eq!(next.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(locks.sites_in_use(), 0);
    assert_eq!(stats.snapshot().site_busy, 0);
}

#[tokio::test]
async fn cancelled_during_the_lookup_the_lookup_still_serves_the_next_request() {
    let fake = fake().await;
    let locks = LocalLocks::new();
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .site_locks(locks.clone())
        .build();
    let inner = Recorder::default();
    let service = guard.layer(inner.service::<Full<Bytes>>());
    // The upstream takes a while: long enough to cancel the caller and queue another request.
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::Delay(Duration::from_millis(500)),
    )
    .once();

    let first = tokio::spawn(service.clone().oneshot(form("siteurl=1003&plan=personal")));
    eventually("the lookup to reach the fake", || fake.stats().lookups == 1).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!(
        locks.sites_in_use(),
        0,
        "the lock went with the cancelled request"
    );

    let answer = service
        .oneshot(form("siteurl=1003&plan=personal"))
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CONFLICT);
    assert_eq!(
        fake.stats().lookups,
        1,
        "the abandoned lookup answered the next request"
    );
    assert_eq!(guard.stats().snapshot().coalesced, 1);
    assert_eq!(locks.sites_in_use(), 0);
}

#[tokio::test]
async fn cancelled_during_the_inner_call_the_site_stays_held_until_it_ends() {
    let fake = fake().await;
    let locks = LocalLocks::new();
    let finished = Arc::new(std::sync::Mutex::new(Vec::new()));
    let guard = {
        let finished = finished.clone();
        // The gate provisions nothing upstream: no answer would ever show what it was given.
        UpgradeGuardLayer::builder(client(&fake))
            .site_locks(locks.clone())
            .settling_window(Duration::ZERO)
            .build()
            .on_decision(move |report| {
                if let Outcome::Detached(how) = report.outcome {
                    finished.lock().unwrap().push(how);
                }
            })
    };
    let gate = Gate::new();
    let service = guard.layer(gate.service());

    let first = tokio::spawn(
        service
            .clone()
            .oneshot(form("siteurl=1001&plan=jetpack-scan")),
    );
    gate.wait_reached().await;
    let held = || locks.users(&upgrade_guard::Site::parse("1001").unwrap());
    assert_eq!(held(), 1);
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!(
        held(),
        1,
        "the handler may have sent the provision: the site stays held"
    );
    assert_eq!(guard.detached().in_progress(), 1);

    // The next request for the site waits for the handler the client left.
    let lookups = fake.stats().lookups;
    let next = tokio::spawn(
        service
            .clone()
            .oneshot(form("siteurl=1001&plan=jetpack-anti-spam")),
    );
    let site = upgrade_guard::Site::parse("1001").unwrap();
    eventually("the next request to queue", || locks.users(&site) == 2).await;
    assert_eq!(fake.stats().lookups, lookups, "not checked while held");
    gate.release(1);
    gate.wait_reached().await;
    assert_eq!(
        *finished.lock().unwrap(),
        [DetachedEnd::Answered(StatusCode::OK)],
        "the handler the client left ended first, and was reported"
    );
    assert_eq!(guard.detached().in_progress(), 0);
    gate.release(1);
    assert_eq!(next.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(fake.stats().lookups, lookups + 1);
    assert_eq!(locks.sites_in_use(), 0);
}

/// An inner future that never ends, and says when it is dropped.
fn never_ending(
    reached: Arc<Semaphore>,
    dropped: Arc<std::sync::atomic::AtomicBool>,
) -> impl tower::Service<
    Request<GuardBody<Full<Bytes>>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send + use<>,
> + Clone
+ use<> {
    struct OnDrop(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    service_fn(move |_request: Request<GuardBody<Full<Bytes>>>| {
        let (reached, on_drop) = (reached.clone(), OnDrop(dropped.clone()));
        async move {
            let _on_drop = on_drop;
            reached.add_permits(1);
            std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>().await
        }
    })
}

#[tokio::test]
async fn an_inner_call_that_never_ends_frees_the_site_after_the_ceiling_with_a_warning() {
    const CEILING: Duration = Duration::from_millis(200);
    let (logs, _logging) = capture_logs();
    let fake = fake().await;
    let locks = LocalLocks::new();
    let (report_tx, report_rx) = tokio::sync::oneshot::channel();
    let report_tx = std::sync::Mutex::new(Some(report_tx));
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .site_locks(locks.clone())
        .build()
        .detached_ceiling(CEILING)
        .on_decision(move |report| {
            if let Outcome::Detached(how) = report.outcome {
                let tx = report_tx.lock().unwrap().take();
                tx.expect("one report").send(how).unwrap();
            }
        });
    let reached = Arc::new(Semaphore::new(0));
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let service = guard.layer(never_ending(reached.clone(), dropped.clone()));

    let first = tokio::spawn(service.oneshot(form("siteurl=1001&plan=jetpack-scan")));
    reached.acquire().await.unwrap().forget();
    // Before the abort, so no later than the drop that starts the ceiling.
    let left = tokio::time::Instant::now();
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!(
        locks.users(&upgrade_guard::Site::parse("1001").unwrap()),
        1,
        "held while the ceiling runs"
    );

    let finished = tokio::time::timeout(Duration::from_secs(10), report_rx)
        .await
        .expect("the ceiling ends the wait")
        .unwrap();
    assert_eq!(finished, DetachedEnd::CeilingPassed);
    assert!(left.elapsed() >= CEILING, "not before the ceiling");
    assert_eq!(locks.sites_in_use(), 0, "freed at the ceiling");
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "the never-ending work was cancelled before the site was freed"
    );
    guard.detached().wait().await;
    let logs = logs.text();
    let warning = logs
        .lines()
        .find(|line| line.contains("did not finish within the ceiling"))
        .unwrap_or_else(|| panic!("no warning in:\n{logs}"));
    assert!(
        warning.contains("WARN")
            && warning.contains("site=\"1001\"")
            && warning.contains("ceiling_ms=200"),
        "{warning}"
    );
}

#[tokio::test]
async fn an_inner_call_that_panics_frees_the_site() {
    let fake = fake().await;
    let locks = LocalLocks::new();
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .site_locks(locks.clone())
        .build();
    let service = guard.layer(service_fn(
        |_request: Request<GuardBody<Full<Bytes>>>| async move {
            if true {
                panic!("the handler panics");
            }
            Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("never")))
        },
    ));

    let first = tokio::spawn(service.oneshot(form("siteurl=1001&plan=jetpack-scan")));
    assert!(first.await.unwrap_err().is_panic());
    assert_eq!(guard.detached().in_progress(), 0, "nothing left to finish");
    assert_eq!(locks.sites_in_use(), 0);
}

#[tokio::test]
async fn waiting_for_detached_work_ends_when_the_last_one_does() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    let detached = guard.detached();
    // Nothing detached: the wait ends at once.
    detached.wait().await;

    let gate = Gate::new();
    let service = guard.layer(gate.service());
    let mut clients = Vec::new();
    for site in ["1001", "1002"] {
        let body = format!("siteurl={site}&plan=jetpack-scan");
        clients.push(tokio::spawn(service.clone().oneshot(form(&body))));
        gate.wait_reached().await;
    }
    for client in clients {
        client.abort();
        assert!(client.await.unwrap_err().is_cancelled());
    }
    assert_eq!(detached.in_progress(), 2);
    let mut wait = std::pin::pin!(detached.wait());
    assert!(futures_util::FutureExt::now_or_never(wait.as_mut()).is_none());
    gate.release(1);
    eventually("one to end", || detached.in_progress() == 1).await;
    assert!(futures_util::FutureExt::now_or_never(wait.as_mut()).is_none());
    gate.release(1);
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the wait ends with the last detached request");
    assert_eq!(detached.in_progress(), 0);
}

/// The README's layer order: a timeout outside the guard drops the guard's future, and the guard
/// finishes the handler alone.
#[tokio::test]
async fn a_timeout_outside_the_guard_keeps_the_site_until_the_handler_ends() {
    let fake = fake().await;
    let locks = LocalLocks::new();
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .site_locks(locks.clone())
        .build();
    let gate = Gate::new();
    let service = tower::ServiceBuilder::new()
        .timeout(Duration::from_millis(50))
        .layer(guard.clone())
        .service(gate.service());

    let answer = service
        .oneshot(form("siteurl=1001&plan=jetpack-scan"))
        .await;
    assert!(answer.unwrap_err().is::<tower::timeout::error::Elapsed>());
    gate.wait_reached().await;
    assert_eq!(
        locks.users(&upgrade_guard::Site::parse("1001").unwrap()),
        1,
        "held past the timeout"
    );
    assert_eq!(guard.detached().in_progress(), 1);
    gate.release(1);
    guard.detached().wait().await;
    assert_eq!(locks.sites_in_use(), 0);
}

/// What the guard cannot hold: a timeout inside it drops the handler's future and answers the
/// guard with an error, so the guard sees the work as over and frees the site, while whatever the
/// dropped handler had sent may still land. The README says to put timeouts outside.
#[tokio::test]
async fn a_timeout_inside_the_guard_ends_the_hold_with_the_handler() {
    let fake = fake().await;
    let locks = LocalLocks::new();
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .site_locks(locks.clone())
        .build();
    let gate = Gate::new();
    let service = guard.layer(tower::timeout::Timeout::new(
        gate.service(),
        Duration::from_millis(50),
    ));

    let answer = service
        .oneshot(form("siteurl=1001&plan=jetpack-scan"))
        .await;
    assert!(answer.unwrap_err().is::<tower::timeout::error::Elapsed>());
    gate.wait_reached().await;
    assert_eq!(locks.sites_in_use(), 0, "the site went with the handler");
    assert_eq!(guard.detached().in_progress(), 0);
}

#[tokio::test]
async fn sequential_lookups_reuse_pooled_connections() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .cache_ttl(Duration::ZERO)
        .build()
        // A product of no family: refused on a route that takes only judged products.
        .unjudged_products(upgrade_guard::UnjudgedProducts::Refuse);
    let inner = Recorder::default();
    for site in [
        "1001", "1002", "1003", "1004", "1001", "1002", "1003", "1004",
    ] {
        let body = format!("siteurl={site}&plan=nothing-at-all");
        assert_eq!(
            send(&guard, &inner, form(&body)).await.status,
            StatusCode::CONFLICT
        );
    }
    let stats = fake.stats();
    assert_eq!(stats.lookups, 8);
    assert_eq!(
        stats.connections, 1,
        "one pooled connection served every lookup"
    );
}

#[tokio::test]
async fn locks_of_idle_sites_are_freed() {
    let locks = LocalLocks::new();
    for id in 1..=20_000u32 {
        let site = upgrade_guard::Site::parse(&id.to_string()).unwrap();
        let permit = locks.acquire(&site, Duration::ZERO).await.unwrap();
        drop(permit);
    }
    assert_eq!(locks.sites_in_use(), 0);
}

#[tokio::test]
async fn a_provision_under_another_spelling_cannot_make_a_cached_answer_allow_a_downgrade() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    let service = guard.layer(relay::<GuardBody<Full<Bytes>>>(&fake));
    let status = |body: &'static str| {
        let service = service.clone();
        async move { service.oneshot(form(body)).await.unwrap().status() }
    };

    // Cached under the URL: Premium is refused, Professional and Scan are listed.
    assert_eq!(
        status("siteurl=realtime.example.com&plan=premium").await,
        StatusCode::CONFLICT
    );
    // Professional provisioned under the blog ID: the URL's entry is not the one dropped.
    assert_eq!(
        status("siteurl=1002&plan=professional&local_user=a").await,
        StatusCode::OK
    );
    // The URL's stale entry still lists Scan, but an upgrade is only ever confirmed afresh.
    assert_eq!(
        status("siteurl=realtime.example.com&plan=jetpack-scan&local_user=a").await,
        StatusCode::CONFLICT
    );
    assert_eq!(fake.stats().leaks, 0);
}

#[test]
fn a_lookup_task_that_dies_with_its_runtime_does_not_wedge_the_site() {
    // The fake runs on a runtime of its own, so the guard's first runtime can go away alone.
    let upstream = tokio::runtime::Runtime::new().unwrap();
    let fake = upstream.block_on(fake());
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::Delay(Duration::from_secs(3600)),
    )
    .once();
    let guard = UpgradeGuardLayer::new(client(&fake));
    let inner = Recorder::default();

    let first = tokio::runtime::Runtime::new().unwrap();
    let (guard1, inner1) = (guard.clone(), inner.clone());
    first.spawn(async move { send(&guard1, &inner1, form("siteurl=1003&plan=personal")).await });
    // Once the lookup is under way, its runtime (and the lookup task) goes away.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while fake.stats().lookups == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the lookup never started"
        );
        std::thread::yield_now();
    }
    // Waits until the runtime has dropped its tasks, the lookup among them: a lookup dying in
    // the background while the next request joins it would answer that one request 503.
    first.shutdown_timeout(Duration::from_secs(10));

    let second = tokio::runtime::Runtime::new().unwrap();
    let answer = second.block_on(send(&guard, &inner, form("siteurl=1003&plan=personal")));
    assert_eq!(answer.status, StatusCode::CONFLICT, "{:?}", answer.body);
    assert_eq!(inner.calls(), 0);
    drop(fake);
    upstream.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_join_a_lookup_under_way_without_waiting_for_the_site() {
    let fake = fake().await;
    // No cache: only the lookup under way can answer the others.
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .cache_ttl(Duration::ZERO)
        .build();
    let inner = Recorder::default();
    let service = guard.layer(inner.service::<Full<Bytes>>());
    // The upstream is slow enough that every request arrives while the first lookup is out.
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::Delay(Duration::from_millis(300)),
    )
    .always();

    let first = tokio::spawn(service.clone().oneshot(form("siteurl=1003&plan=personal")));
    eventually("the first lookup to reach the fake", || {
        fake.stats().lookups == 1
    })
    .await;
    let mut others = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let service = service.clone();
        others.spawn(async move {
            service
                .oneshot(form("siteurl=1003&plan=premium"))
                .await
                .unwrap()
                .status()
        });
    }
    let statuses = others.join_all().await;

    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::CONFLICT);
    assert!(statuses.iter().all(|s| *s == StatusCode::CONFLICT));
    assert_eq!(fake.stats().lookups, 1, "one upstream call answered all 51");
    let stats = guard.stats().snapshot();
    assert_eq!(stats.coalesced, 50);
    assert_eq!(stats.lock_waits, 0, "refusals never queued for the site");
}

/// A lookup that started while the previous provision of the site was under way (here a
/// partner's dashboard asking [`UpgradeGuardLayer::upgrade_paths`]) read the site as it was
/// before that provision. The next request to hold the site must never decide on it: Realtime
/// Backups, waiting behind Professional, is refused once Professional has landed.
#[tokio::test]
async fn a_lookup_started_during_a_provision_never_decides_the_next_one() {
    let fake = free_sites(1).await;
    let locks = LocalLocks::new();
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .site_locks(locks.clone())
        .build();
    dashboard_lookup_during_a_provision(&fake, &locks, &guard, &guard).await;
}

/// The same across two processes sharing the site locks (here two guards sharing `LocalLocks`,
/// as replicas share `RedisLocks`): the process that will check next is not told of the other's
/// provision, so only the rule "join no lookup started before you took the lock" keeps its
/// dashboard's stale lookup from deciding, and from landing in its cache afterwards.
#[tokio::test]
async fn across_processes_a_lookup_started_during_a_provision_never_decides_the_next_one() {
    let fake = free_sites(1).await;
    let locks = LocalLocks::new();
    let replica = || {
        UpgradeGuardLayer::builder(client(&fake))
            .site_locks(locks.clone())
            .build()
    };
    dashboard_lookup_during_a_provision(&fake, &locks, &replica(), &replica()).await;
}

/// Through `a`, Professional on a free site, its provision slow; through `b`, Realtime Backups
/// waiting for the site, and a dashboard lookup started during that provision that answers after
/// it. Realtime is refused, the stale answer never lands in `b`'s cache, nothing leaks.
async fn dashboard_lookup_during_a_provision(
    fake: &upgrade_guard::fake::FakeUpstream,
    locks: &LocalLocks,
    a: &UpgradeGuardLayer,
    b: &UpgradeGuardLayer,
) {
    let site = upgrade_guard::Site::parse(&FIRST_FREE_SITE.to_string()).unwrap();
    let provision = |plan: &str| {
        form(&format!(
            "siteurl={FIRST_FREE_SITE}&plan={plan}&local_user=admin"
        ))
    };

    fake.inject(
        Endpoint::Provision,
        Fault::Delay(Duration::from_millis(400)),
    )
    .once();
    let first = tokio::spawn(
        a.layer(relay::<GuardBody<Full<Bytes>>>(fake))
            .oneshot(provision("professional")),
    );
    eventually("Professional's provision to reach the fake", || {
        fake.stats().faults == 1
    })
    .await;
    let second = tokio::spawn(
        b.layer(relay::<GuardBody<Full<Bytes>>>(fake))
            .oneshot(provision("jetpack-backup-realtime")),
    );
    eventually("Realtime Backups to wait for the site", || {
        locks.users(&site) == 2
    })
    .await;

    // The dashboard's lookup reads the site before Professional lands, and answers after.
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::slow_answer(8, Duration::from_millis(40)),
    )
    .once();
    let dashboard = tokio::spawn({
        let (b, site) = (b.clone(), site.clone());
        async move { b.upgrade_paths(&site).await }
    });
    eventually("the dashboard's lookup to reach the fake", || {
        fake.stats().faults == 2
    })
    .await;

    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(
        second.await.unwrap().unwrap().status(),
        StatusCode::CONFLICT
    );
    let before = dashboard.await.unwrap().unwrap();
    assert!(
        before.allows("jetpack-backup-realtime"),
        "read before Professional landed"
    );
    // The stale answer did not land in B's cache over the fresh one.
    let now = b.upgrade_paths(&site).await.unwrap();
    assert!(!now.allows("jetpack-backup-realtime"), "{now:?}");
    let stats = fake.stats();
    assert_eq!((stats.provisioned, stats.leaks), (1, 0));
}
