//! Several replicas sharing their site locks through a real Redis (feature `redis`).
//!
//! Each test runs its own `redis-server` on a free loopback port (see `common/redis_server.rs`);
//! without the binary these tests fail and say how to install it.
#![cfg(feature = "redis")]

mod common;
#[path = "common/redis_server.rs"]
mod redis_server;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use redis_server::RedisServer;
use std::convert::Infallible;
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};
use upgrade_guard::fake::FakeUpstream;
use upgrade_guard::{GuardBody, LockError, Mode, RedisLocks, Site, SiteLocks, UpgradeGuardLayer};

fn locks(redis: &RedisServer) -> RedisLocks {
    RedisLocks::builder(redis.url())
        .command_timeout(Duration::from_millis(300))
        .lease(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// One replica of a partner API: its own client, cache and Redis connection.
fn replica(fake: &FakeUpstream, locks: RedisLocks) -> UpgradeGuardLayer {
    UpgradeGuardLayer::builder(client(fake))
        .site_locks(locks.clone())
        .peers(locks)
        .build()
        .lock_wait(Duration::from_secs(60))
}

/// A replica that remembers no provision: for tests whose inner service provisions nothing, so
/// that no answer would ever show it (see `recording_guard`).
fn replica_without_memory(fake: &FakeUpstream, locks: RedisLocks) -> UpgradeGuardLayer {
    UpgradeGuardLayer::builder(client(fake))
        .site_locks(locks.clone())
        .peers(locks)
        .settling_window(Duration::ZERO)
        .build()
        .lock_wait(Duration::from_secs(60))
}

/// A plain connection to `redis`, to look at the keys.
async fn redis_connection(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn exists(connection: &mut redis::aio::MultiplexedConnection, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(connection)
        .await
        .unwrap()
        == 1
}

/// Polls until `key` is gone from Redis, failing after a deadline.
async fn key_gone(redis: &RedisServer, key: &str) {
    let mut connection = redis_connection(redis).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while exists(&mut connection, key).await {
        assert!(Instant::now() < deadline, "{key} is still in Redis");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_conflicting_provisions_never_leak() {
    const SITES: u64 = 40;
    let redis = RedisServer::start();
    let fake = free_sites(SITES).await;
    let replicas: Vec<_> = (0..3).map(|_| replica(&fake, locks(&redis))).collect();

    let statuses = race(&fake, &replicas, SITES).await;

    assert_clean_race(&fake, &statuses, SITES);
    // Every replica had its share of the work, and left no key behind.
    for guard in &replicas {
        assert!(guard.stats().snapshot().lookups > 0);
    }
    let mut connection = redis_connection(&redis).await;
    // The provisions remembered for the settling window stay; no lock key does.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("upgrade-guard:site:*")
            .query_async(&mut connection)
            .await
            .unwrap();
        let locks: Vec<_> = keys
            .iter()
            .filter(|key| !key.starts_with("upgrade-guard:site:recent:"))
            .collect();
        if locks.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "keys left behind: {locks:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_only_local_locks_leak() {
    // The control for the test above: it would see locks that are not shared.
    const SITES: u64 = 40;
    let fake = free_sites(SITES).await;
    let replicas: Vec<_> = (0..3)
        .map(|_| UpgradeGuardLayer::new(client(&fake)))
        .collect();

    race(&fake, &replicas, SITES).await;

    assert!(
        fake.stats().leaks > 0,
        "the race test detects locks that are not shared"
    );
}

#[tokio::test]
async fn a_stale_cache_on_another_replica_only_refuses() {
    let redis = RedisServer::start();
    let fake = fake().await;
    // Without memory: with it, A would refuse B's provision as done already, before any lookup.
    let (a, b) = (
        replica_without_memory(&fake, locks(&redis)),
        replica_without_memory(&fake, locks(&redis)),
    );
    let inner = Recorder::default();

    // Replica A caches the paths of a site holding Realtime Backups: Professional is listed.
    let refused = send(&a, &inner, form("siteurl=1002&plan=premium")).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    // Replica B provisions Professional: A's entry is stale now.
    let upgraded = b
        .layer(relay::<GuardBody<Full<Bytes>>>(&fake))
        .oneshot(form("siteurl=1002&plan=professional&local_user=a"))
        .await
        .unwrap();
    assert_eq!(upgraded.status(), StatusCode::OK);

    // A's stale entry still lists Professional, but an upgrade is never decided from the cache:
    // A looks up afresh and refuses.
    let lookups = fake.stats().lookups;
    let again = send(&a, &inner, form("siteurl=1002&plan=professional")).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    assert_eq!(
        fake.stats().lookups,
        lookups + 1,
        "a fresh lookup decided it"
    );
    assert_eq!(inner.calls(), 0);
    assert_eq!(fake.stats().leaks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_holder_keeps_its_site_until_the_ceiling_then_frees_it() {
    const CEILING: Duration = Duration::from_millis(500);
    let redis = RedisServer::start();
    let fake = fake().await;
    // Without memory: the stuck provision's outcome is unknown, and with memory every later
    // check of the site would wait for an answer that shows it (see `recent.rs`).
    let a = replica_without_memory(&fake, locks(&redis)).detached_ceiling(CEILING);
    let b = replica_without_memory(&fake, locks(&redis));
    let key = locks(&redis).key(&Site::parse("1001").unwrap());

    // An inner service that says when it is called and never answers.
    let (entered, mut called) = tokio::sync::mpsc::unbounded_channel();
    let stuck = service_fn(move |_: Request<GuardBody<Full<Bytes>>>| {
        let _ = entered.send(());
        std::future::pending::<Result<Response<Full<Bytes>>, Infallible>>()
    });
    let holder = tokio::spawn(
        a.layer(stuck)
            .oneshot(form("siteurl=1001&plan=jetpack-scan")),
    );
    called.recv().await.expect("the inner service was called");
    let mut connection = redis_connection(&redis).await;
    assert!(
        exists(&mut connection, &key).await,
        "held in Redis during the inner call"
    );

    // The client goes away mid inner call: the guard finishes it alone, up to the ceiling.
    let left = Instant::now();
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());
    assert!(exists(&mut connection, &key).await, "still held");
    key_gone(&redis, &key).await;
    assert!(
        left.elapsed() >= CEILING,
        "freed at the ceiling, not before"
    );
    a.detached().wait().await;

    // The next request, on another replica, proceeds at once.
    let inner = Recorder::default();
    let started = Instant::now();
    let answer = send(&b, &inner, form("siteurl=1001&plan=jetpack-anti-spam")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(inner.calls(), 1);
    key_gone(&redis, &key).await;
}

/// A handler relaying provisions to the fake, where a provision takes `transit` to land once
/// sent (it lands whatever becomes of the handler's future), and says when it has sent one.
fn relay_in_transit(
    fake: &FakeUpstream,
    transit: Duration,
    sent: tokio::sync::mpsc::UnboundedSender<()>,
) -> impl tower::Service<
    Request<GuardBody<Full<Bytes>>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send + use<>,
> + Clone
+ use<> {
    let relay = relay::<GuardBody<Full<Bytes>>>(fake);
    service_fn(move |request: Request<GuardBody<Full<Bytes>>>| {
        let (relay, sent) = (relay.clone(), sent.clone());
        async move {
            let _ = sent.send(());
            let landing = tokio::spawn(async move {
                tokio::time::sleep(transit).await;
                relay.oneshot(request).await
            });
            landing.await.unwrap()
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_mid_relay_on_one_replica_holds_the_site_for_every_replica() {
    // The provision takes several leases to land: the lease must be renewed all along.
    const LEASE: Duration = Duration::from_millis(600);
    const TRANSIT: Duration = Duration::from_millis(2000);
    let redis = RedisServer::start();
    let fake = fake().await;
    let short_lease = || {
        RedisLocks::builder(redis.url())
            .command_timeout(Duration::from_millis(150))
            .lease(LEASE)
            .build()
            .unwrap()
    };
    let (a, b) = (replica(&fake, short_lease()), replica(&fake, short_lease()));
    let key = short_lease().key(&Site::parse("1001").unwrap());

    // On replica A, Realtime Backups is sent, and its client leaves.
    let (sent, mut handed_over) = tokio::sync::mpsc::unbounded_channel();
    let first = tokio::spawn(
        a.layer(relay_in_transit(&fake, TRANSIT, sent))
            .oneshot(form(
                "siteurl=1001&plan=jetpack-backup-realtime&local_user=a",
            )),
    );
    handed_over.recv().await.expect("the provision was sent");
    let left = Instant::now();
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    assert_eq!(a.detached().in_progress(), 1);

    // On replica B, Daily Backups: a downgrade once the first provision lands.
    let second = tokio::spawn(
        b.layer(relay::<GuardBody<Full<Bytes>>>(&fake))
            .oneshot(form("siteurl=1001&plan=jetpack-backup-daily&local_user=b")),
    );
    // Past two leases, the key is still held: the renewal goes on in the detached task.
    let mut connection = redis_connection(&redis).await;
    tokio::time::sleep_until(left + LEASE * 2).await;
    assert!(
        exists(&mut connection, &key).await,
        "renewed while the provision was finished alone"
    );
    assert_eq!(fake.stats().provisioned, 0, "still in transit");

    let second = second.await.unwrap().unwrap();
    assert_eq!(
        second.status(),
        StatusCode::CONFLICT,
        "checked after it landed"
    );
    assert!(left.elapsed() >= TRANSIT);
    a.detached().wait().await;
    let stats = fake.stats();
    assert_eq!((stats.provisioned, stats.leaks), (1, 0));
    key_gone(&redis, &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_named_by_url_on_one_replica_and_by_blog_id_on_another_is_one_lock() {
    const TRANSIT: Duration = Duration::from_millis(800);
    let redis = RedisServer::start();
    let fake = fake().await;
    let (a, b) = (replica(&fake, locks(&redis)), replica(&fake, locks(&redis)));
    // On replica A, Professional by URL, taking a while to land.
    let (sent, mut handed_over) = tokio::sync::mpsc::unbounded_channel();
    let first = tokio::spawn(
        a.layer(relay_in_transit(&fake, TRANSIT, sent))
            .oneshot(form(
                "siteurl=https://free.example.com/&plan=professional&local_user=a",
            )),
    );
    handed_over.recv().await.expect("the provision was sent");
    // On replica B, Realtime Backups by blog ID: it waits for A's provision to land, and is
    // then a downgrade.
    let second = b
        .layer(relay::<GuardBody<Full<Bytes>>>(&fake))
        .oneshot(form(
            "siteurl=1001&plan=jetpack-backup-realtime&local_user=b",
        ))
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::CONFLICT);
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    let stats = fake.stats();
    assert_eq!((stats.provisioned, stats.leaks), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_held_by_another_replica_is_busy_after_the_wait() {
    let redis = RedisServer::start();
    let fake = fake().await;
    let held = locks(&redis)
        .acquire(&Site::parse("1001").unwrap(), Duration::ZERO)
        .await
        .unwrap();
    let guard = replica(&fake, locks(&redis)).lock_wait(Duration::from_millis(200));
    let inner = Recorder::default();

    let started = Instant::now();
    let answer = send(&guard, &inner, form("siteurl=1001&plan=jetpack-scan")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.error(), "site_busy");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(inner.calls(), 0);

    drop(held);
    let answer = send(
        &guard.lock_wait(Duration::from_secs(10)),
        &inner,
        form("siteurl=1001&plan=jetpack-scan"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_site_outlives_its_lease_while_renewed() {
    let redis = RedisServer::start();
    let locks = RedisLocks::builder(redis.url())
        .command_timeout(Duration::from_millis(50))
        .lease(Duration::from_millis(300))
        .build()
        .unwrap();
    let other = RedisLocks::builder(redis.url()).build().unwrap();
    let site = Site::parse("1001").unwrap();
    let held = locks.acquire(&site, Duration::ZERO).await.unwrap();

    // Let three leases' worth of time pass: the renewal keeps the key.
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert!(matches!(
        other.acquire(&site, Duration::ZERO).await,
        Err(LockError::Busy)
    ));

    drop(held);
    key_gone(&redis, &locks.key(&site)).await;
    let again = other.acquire(&site, Duration::ZERO).await.unwrap();
    drop(again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_fails_closed_and_recovers() {
    let mut redis = RedisServer::start();
    let fake = free_sites(10).await;
    let guard = replica(&fake, locks(&redis));
    let open = guard.clone().mode(Mode::FailOpen);
    let service = guard.layer(relay::<GuardBody<Full<Bytes>>>(&fake));
    let provision = |id: u64| {
        let service = service.clone();
        async move {
            let body = format!("siteurl={}&plan=jetpack-scan&local_user=admin", 5000 + id);
            let response = service.oneshot(form(&body)).await.unwrap();
            response.status()
        }
    };
    assert_eq!(provision(0).await, StatusCode::OK);

    redis.stop();
    let provisioned = fake.stats().provisioned;
    for id in 1..5 {
        let started = Instant::now();
        let inner = Recorder::default();
        let answer = send(
            &guard,
            &inner,
            form(&format!("siteurl={}&plan=jetpack-scan", 5000 + id)),
        )
        .await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(answer.error(), "site_busy");
        assert!(answer.headers.contains_key("retry-after"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "within the command timeout: {:?}",
            started.elapsed()
        );
        assert_eq!(inner.calls(), 0, "nothing forwarded without the lock");
    }
    assert_eq!(fake.stats().provisioned, provisioned);
    assert_eq!(fake.stats().leaks, 0);

    // A route in fail-open mode forwards, marked.
    let inner = Recorder::default();
    let answer = send(&open, &inner, form("siteurl=5009&plan=jetpack-scan")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = inner.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].bypass.as_ref().map(|b| b.code()), Some("site_busy"));

    // Redis comes back on the same port (empty): the guard recovers by itself.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = provision(5).await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "the guard never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(provision(6).await, StatusCode::OK);
    assert_eq!(fake.stats().leaks, 0);
}

#[test]
fn a_vanished_holder_frees_its_site_when_the_lease_expires() {
    let redis = RedisServer::start();
    let lease = Duration::from_millis(400);
    let site = Site::parse("1001").unwrap();

    // A replica takes the site, then dies: no release, no more renewals.
    let doomed = tokio::runtime::Runtime::new().unwrap();
    let taken_at = doomed.block_on(async {
        let locks = RedisLocks::builder(redis.url())
            .command_timeout(Duration::from_millis(100))
            .lease(lease)
            .build()
            .unwrap();
        let permit = locks.acquire(&site, Duration::ZERO).await.unwrap();
        std::mem::forget(permit);
        std::time::Instant::now()
    });
    doomed.shutdown_background();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let locks = RedisLocks::builder(redis.url()).build().unwrap();
        assert!(matches!(
            locks.acquire(&site, Duration::ZERO).await,
            Err(LockError::Busy)
        ));
        // The acquire itself polls until the lease runs out.
        let permit = locks.acquire(&site, Duration::from_secs(10)).await.unwrap();
        let freed_after = taken_at.elapsed();
        assert!(freed_after >= lease, "freed after {freed_after:?}");
        assert!(
            freed_after < lease + Duration::from_secs(2),
            "freed after {freed_after:?}"
        );
        drop(permit);
        key_gone(&redis, &locks.key(&site)).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_and_release_latency() {
    // Not a benchmark: numbers to read with `--nocapture`, and a sanity bound.
    let redis = RedisServer::start();
    let mine = locks(&redis);
    let other = locks(&redis);
    let site = Site::parse("1001").unwrap();
    let mut acquire = Vec::new();
    let mut handoff = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let permit = mine.acquire(&site, Duration::from_secs(5)).await.unwrap();
        acquire.push(started.elapsed());
        drop(permit);
        // Another replica polls for it.
        let started = Instant::now();
        let permit = other.acquire(&site, Duration::from_secs(5)).await.unwrap();
        handoff.push(started.elapsed());
        drop(permit);
        key_gone(&redis, &mine.key(&site)).await;
    }
    acquire.sort();
    handoff.sort();
    println!(
        "uncontended acquire: median {:?}, p99 {:?}; handoff to another replica: median {:?}, p99 {:?}",
        acquire[100], acquire[198], handoff[100], handoff[198]
    );
    assert!(acquire[100] < Duration::from_millis(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_down_at_start_up_is_waited_for_not_fatal() {
    let mut redis = RedisServer::start();
    redis.stop();
    let locks = locks(&redis);
    let site = Site::parse("1001").unwrap();
    let started = Instant::now();
    assert!(matches!(
        locks.acquire(&site, Duration::from_secs(5)).await,
        Err(LockError::Unavailable(_))
    ));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match locks.acquire(&site, Duration::ZERO).await {
            Ok(permit) => break drop(permit),
            Err(LockError::Unavailable(_)) => {
                assert!(Instant::now() < deadline, "never connected");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
}

// The partner lifecycle across replicas: a cancel forwarded by one replica, or a site forgotten
// there, reaches the others' caches.

/// Waits until `count` guards listen on `locks`' forgotten-sites channel.
async fn listening(redis: &RedisServer, locks: &RedisLocks, count: i64) {
    let mut connection = redis_connection(redis).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, listeners): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(locks.forget_channel())
            .query_async(&mut connection)
            .await
            .unwrap();
        if listeners >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{listeners} of {count} listening"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A replica's cancel route, relaying to the fake's partner-cancel.
fn cancel_route(
    fake: &FakeUpstream,
    guard: &UpgradeGuardLayer,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<GuardBody<Full<Bytes>>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    let (http, base, token) = (reqwest::Client::new(), fake.url().to_owned(), fake.token());
    guard
        .clone()
        .site(upgrade_guard::Source::path(
            "/rest/v1.3/jpphp/{site}/partner-cancel",
            "site",
        ))
        .cancels()
        .layer(service_fn(
            move |request: Request<GuardBody<Full<Bytes>>>| {
                let (http, url, token) = (
                    http.clone(),
                    format!("{base}{}", request.uri().path()),
                    token.clone(),
                );
                async move {
                    use http_body_util::BodyExt;
                    let body = request.into_body().collect().await.unwrap().to_bytes();
                    let answer = http
                        .post(url)
                        .bearer_auth(token)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
                    let mut response = Response::new(Full::from(answer.bytes().await.unwrap()));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                }
            },
        ))
}

fn cancel_all(site: &str) -> Request<Full<Bytes>> {
    Request::post(format!("/rest/v1.3/jpphp/{site}/partner-cancel"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from("cancel-all=true"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_one_replica_is_forgotten_by_the_others() {
    const ROUNDS: usize = 20;
    let redis = RedisServer::start();
    let fake = fake().await;
    let a_locks = locks(&redis);
    let a = replica(&fake, a_locks.clone());
    let b = replica(&fake, locks(&redis));
    // A bystander on the channel, to time the announcement itself.
    let mut bystander = redis::Client::open(redis.url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    bystander.subscribe(a_locks.forget_channel()).await.unwrap();
    listening(&redis, &a_locks, 3).await;
    let cancel = cancel_route(&fake, &a);
    let provision = b.layer(relay::<GuardBody<Full<Bytes>>>(&fake));
    let downgrade = "siteurl=1003&plan=jetpack-backup-realtime&local_user=admin";

    let mut windows = Vec::new();
    for round in 0..ROUNDS {
        fake.add_site(
            upgrade_guard::fake::FakeSite::new(1003)
                .url("https://professional.example.com/")
                .holding(["professional"]),
        );
        // Replica B refuses the downgrade and caches the refusal.
        for _ in 0..2 {
            let refused = provision.clone().oneshot(form(downgrade)).await.unwrap();
            assert_eq!(refused.status(), StatusCode::CONFLICT, "round {round}");
        }
        // Replica A forwards a cancel of the site.
        let cancelled = cancel.clone().oneshot(cancel_all("1003")).await.unwrap();
        assert_eq!(cancelled.status(), StatusCode::OK);
        let done = Instant::now();
        // Announced once under each of the site's names (its blog ID, its URL and the URL's
        // loose form), when the cancel had finished with a 2xx.
        let mut messages = bystander.on_message();
        let mut announced = Vec::new();
        for _ in 0..3 {
            let message = tokio::time::timeout(Duration::from_secs(5), messages.next())
                .await
                .expect("the forget is announced")
                .unwrap();
            announced.push(message.get_payload::<String>().unwrap());
        }
        if round == 0 {
            // And no more: once more would be the announcement at the forward, which a cancel
            // that may fail must not make (a bounded wait for an absence).
            let more = tokio::time::timeout(Duration::from_millis(300), messages.next()).await;
            assert!(more.is_err(), "a fourth announcement: {more:?}");
        }
        // Each is sent from a task of its own: in no given order.
        announced.sort();
        assert_eq!(
            announced,
            [
                "1003",
                "professional.example.com",
                "professional.example.com.loose.invalid"
            ]
        );
        drop(messages);
        let heard = done.elapsed();
        // B provisions it as soon as it has heard of the cancel.
        let mut stale = 0;
        loop {
            let status = provision
                .clone()
                .oneshot(form(downgrade))
                .await
                .unwrap()
                .status();
            if status == StatusCode::OK {
                break;
            }
            assert_eq!(status, StatusCode::CONFLICT);
            stale += 1;
            assert!(done.elapsed() < Duration::from_secs(5), "B kept refusing");
        }
        windows.push((heard, done.elapsed(), stale));
    }
    let stale: usize = windows.iter().map(|(_, _, stale)| stale).sum();
    let stale_rounds = windows.iter().filter(|(_, _, stale)| *stale > 0).count();
    let mut heard: Vec<_> = windows.iter().map(|w| w.0).collect();
    let mut b_ok: Vec<_> = windows.iter().map(|w| w.1).collect();
    heard.sort();
    b_ok.sort();
    println!(
        "cancel answered on A -> its last forget heard on the channel: median {:?}, max {:?}; \
         -> B's first 200: median {:?}, max {:?}; {stale} stale 409s on B in {stale_rounds} of \
         {ROUNDS} rounds",
        heard[ROUNDS / 2],
        heard[ROUNDS - 1],
        b_ok[ROUNDS / 2],
        b_ok[ROUNDS - 1]
    );
    assert_eq!(fake.stats().leaks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_on_one_replica_reaches_the_others_and_a_lost_subscription_forgets_all() {
    let mut redis = RedisServer::start();
    let fake = fake().await;
    let a_locks = locks(&redis);
    // Without memory: the holdings are changed behind the guard's back, and a provision B
    // remembers would make answers that no longer show it stale (see `recent.rs`).
    let a = replica_without_memory(&fake, a_locks.clone());
    let b = replica_without_memory(&fake, locks(&redis));
    listening(&redis, &a_locks, 2).await;
    let provision = b.layer(relay::<GuardBody<Full<Bytes>>>(&fake));
    let site = Site::parse("1003").unwrap();
    let holding_professional = || {
        upgrade_guard::fake::FakeSite::new(1003)
            .url("https://professional.example.com/")
            .holding(["professional"])
    };
    let refused = |plan: &'static str| {
        let provision = provision.clone();
        async move {
            let body = format!("siteurl=1003&plan={plan}&local_user=admin");
            provision.oneshot(form(&body)).await.unwrap().status()
        }
    };
    let eventually_ok = |plan: &'static str| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while refused(plan).await != StatusCode::OK {
            assert!(Instant::now() < deadline, "{plan} still refused");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };

    // A change made elsewhere, told to replica A only.
    assert_eq!(
        refused("jetpack-backup-realtime").await,
        StatusCode::CONFLICT
    );
    fake.add_site(
        upgrade_guard::fake::FakeSite::new(1003).url("https://professional.example.com/"),
    );
    assert_eq!(
        refused("jetpack-backup-realtime").await,
        StatusCode::CONFLICT,
        "cached"
    );
    a.forget(&site);
    eventually_ok("jetpack-backup-realtime").await;

    // Redis goes away while B holds a refusal; a forget published meanwhile is lost. Once B
    // listens again it forgets everything, since it cannot know what it missed.
    fake.add_site(holding_professional());
    assert_eq!(refused("premium").await, StatusCode::CONFLICT);
    redis.stop();
    fake.add_site(
        upgrade_guard::fake::FakeSite::new(1003).url("https://professional.example.com/"),
    );
    a.forget(&site);
    redis.restart();
    eventually_ok("premium").await;
    assert_eq!(fake.stats().leaks, 0);
}

/// Three replicas of a partner API sharing one Redis, over an upstream that shows each grant
/// `GRANT_DELAY` late: what one replica forwarded, the others' answers do not show yet.
mod provisions_shown_late {
    use super::*;
    use upgrade_guard::fake::FakeSite;

    const GRANT_DELAY: Duration = Duration::from_millis(500);

    async fn body_text<B: http_body::Body>(answer: Response<B>) -> String
    where
        B::Error: std::fmt::Debug,
    {
        use http_body_util::BodyExt;
        let bytes = answer.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// The `error` of a JSON answer; empty for any other.
    fn error_of(body: &str) -> String {
        serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|value| value["error"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    struct Replicas {
        fake: FakeUpstream,
        guards: Vec<UpgradeGuardLayer>,
        _redis: RedisServer,
    }

    impl Replicas {
        async fn start() -> Self {
            let redis = RedisServer::start();
            let fake = FakeUpstream::builder()
                .site(FakeSite::new(1001).url("https://free.example.com/"))
                .grant_delay(GRANT_DELAY)
                .start()
                .await
                .unwrap();
            let guards = (0..3).map(|_| replica(&fake, locks(&redis))).collect();
            Self {
                fake,
                guards,
                _redis: redis,
            }
        }

        /// A provision through replica `at`, relayed to the fake: its status and error code.
        async fn provision(&self, at: usize, body: &str) -> (StatusCode, String) {
            let service = self.guards[at].layer(relay::<GuardBody<Full<Bytes>>>(&self.fake));
            let answer = service.oneshot(form(body)).await.unwrap();
            let status = answer.status();
            let body = body_text(answer).await;
            (status, error_of(&body))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_downgrade_or_a_repeat_through_another_replica_never_reaches_the_upstream() {
        let replicas = Replicas::start().await;
        let professional = "siteurl=1001&plan=professional&local_user=a";
        assert_eq!(replicas.provision(0, professional).await.0, StatusCode::OK);
        // Right after, through another replica: its answer still lists Realtime Backups, which
        // Professional contains. It waits for an answer that shows Professional, and refuses.
        let realtime =
            "siteurl=https://free.example.com/&plan=jetpack-backup-realtime&local_user=b";
        assert_eq!(
            replicas.provision(1, realtime).await,
            (StatusCode::CONFLICT, "upgrade_not_allowed".to_owned())
        );
        // The same provision again through the third: done already.
        assert_eq!(
            replicas.provision(2, professional).await,
            (StatusCode::CONFLICT, "already_provisioned".to_owned())
        );
        let stats = replicas.fake.stats();
        assert_eq!(
            (stats.provisions, stats.provisioned, stats.leaks),
            (1, 1, 0)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upgrade_through_another_replica_passes_once_the_answer_shows_the_provision() {
        let replicas = Replicas::start().await;
        for (at, plan) in [(0, "jetpack-backup-daily"), (1, "professional")] {
            let (status, code) = replicas
                .provision(at, &format!("siteurl=1001&plan={plan}&local_user=a"))
                .await;
            assert_eq!(status, StatusCode::OK, "{plan}: {code}");
        }
        let stats = replicas.fake.stats();
        assert_eq!((stats.provisioned, stats.leaks), (2, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_through_one_replica_gives_the_product_back_to_every_replica_at_once() {
        let replicas = Replicas::start().await;
        let realtime = "siteurl=1001&plan=jetpack-backup-realtime&local_user=a";
        assert_eq!(replicas.provision(0, realtime).await.0, StatusCode::OK);
        let cancel = cancel_route(&replicas.fake, &replicas.guards[1]);
        let cancelled = cancel.oneshot(cancel_all("1001")).await.unwrap();
        assert_eq!(cancelled.status(), StatusCode::OK);
        // The cancel forgot what was remembered, in Redis too: the third replica provisions it
        // again as an upgrade, with no wait for an answer that shows the first provision.
        let (status, code) = replicas.provision(2, realtime).await;
        assert_eq!(status, StatusCode::OK, "{code}");
        assert_eq!(replicas.fake.stats().leaks, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_refused_through_one_replica_leaves_the_provision_remembered_by_all() {
        let replicas = Replicas::start().await;
        let professional = "siteurl=1001&plan=professional&local_user=a";
        assert_eq!(replicas.provision(0, professional).await.0, StatusCode::OK);
        // `cancel-all` beside a `plan`: WordPress.com refuses it, nothing is given back.
        let cancel = cancel_route(&replicas.fake, &replicas.guards[1]);
        let refused = Request::post("/rest/v1.3/jpphp/1001/partner-cancel")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::from("cancel-all=true&plan=professional"))
            .unwrap();
        let answer = cancel.oneshot(refused).await.unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
        // Every replica still remembers the provision, in Redis too.
        for at in [1, 2] {
            assert_eq!(
                replicas.provision(at, professional).await,
                (StatusCode::CONFLICT, "already_provisioned".to_owned()),
                "replica {at}"
            );
        }
        let stats = replicas.fake.stats();
        assert_eq!((stats.provisions, stats.leaks), (1, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_is_remembered_lives_in_redis_for_the_settling_window_only() {
        let redis = RedisServer::start();
        let fake = fake().await;
        let shared = locks(&redis);
        let guard = UpgradeGuardLayer::builder(client(&fake))
            .site_locks(shared.clone())
            .peers(shared.clone())
            .settling_window(Duration::from_secs(30))
            .build();
        let service = guard.layer(relay::<GuardBody<Full<Bytes>>>(&fake));
        let answer = service
            .oneshot(form("siteurl=1001&plan=jetpack-backup-daily&local_user=a"))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        let site = Site::parse("1001").unwrap();
        let mut connection = redis_connection(&redis).await;
        let key = shared.recent_key(&site);
        // Told before the site is freed, which happens in a task after the answer.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !exists(&mut connection, &key).await {
            assert!(Instant::now() < deadline, "{key} never written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(ttl > 0 && ttl <= 30_000, "{ttl}");
        let products: Vec<String> = redis::cmd("HKEYS")
            .arg(&key)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(products, ["jetpack-backup-daily"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peers_that_cannot_be_reached_fail_closed() {
        // Locks that work, peers whose Redis is gone: nothing is forwarded on what cannot be
        // recalled.
        let redis = RedisServer::start();
        let fake = fake().await;
        let gone = RedisLocks::builder("redis://127.0.0.1:1/")
            .command_timeout(Duration::from_millis(100))
            .lease(Duration::from_secs(1))
            .build()
            .unwrap();
        let guard = UpgradeGuardLayer::builder(client(&fake))
            .site_locks(locks(&redis))
            .peers(gone)
            .build();
        let service = guard.layer(relay::<GuardBody<Full<Bytes>>>(&fake));
        let answer = service
            .oneshot(form("siteurl=1001&plan=jetpack-backup-daily&local_user=a"))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error_of(&body_text(answer).await), "site_busy");
        assert_eq!(fake.stats().provisions, 0);
    }
}
