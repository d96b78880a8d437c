//! Three proxy replicas sharing one Redis: provisions of one site racing through different
//! replicas take turns, so no downgrade reaches WordPress.com. Needs `redis-server` (run with
//! `--features system-tests`, as CI's `cargo test --all-features` does).
#![cfg(feature = "system-tests")]

mod common;

use common::redis_server::RedisServer;
use common::{TestBody, TestCert, full, multipart, send, start_https};
use futures_util::future::join_all;
use http::Request;
use upgrade_guard::fake::{FakeSite, FakeUpstream};
use upgrade_guard_proxy::Running;

/// Every paid product: on a free site they race, and all but a strict-superset chain of them
/// must be refused.
const PRODUCTS: [&str; 7] = [
    "jetpack-backup-daily",
    "jetpack-backup-realtime",
    "personal",
    "premium",
    "professional",
    "jetpack-scan",
    "jetpack-anti-spam",
];

/// Three replicas in front of `fake`, sharing `redis`, each with `flags` besides.
async fn three_replicas(
    fake: &FakeUpstream,
    cert: &TestCert,
    redis: &RedisServer,
    flags: &[&str],
) -> Vec<Running> {
    let token = fake.token();
    let redis = redis.url();
    let mut args = vec!["--token", &token, "--redis", &redis];
    args.extend_from_slice(flags);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(start_https(fake.url(), cert, &args).await);
    }
    replicas
}

/// A provision of `plan` for `site` through `replica`, as the partner tooling sends it.
fn provision(replica: &Running, token: &str, site: &str, plan: &str) -> Request<TestBody> {
    let (content_type, body) =
        multipart(&[("siteurl", site), ("plan", plan), ("local_user", "admin")]);
    Request::post(format!("{}/rest/v1.3/jpphp/provision", replica.url()))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .body(full(body))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_provisions_through_three_replicas_leak_nothing() {
    let redis = RedisServer::start();
    let sites: Vec<String> = (0..6)
        .map(|i| format!("https://race{i}.example.com/"))
        .collect();
    let mut fake = FakeUpstream::builder();
    for (i, url) in sites.iter().enumerate() {
        fake = fake.site(FakeSite::new(2000 + i as u64).url(url));
    }
    let fake = fake.start().await.unwrap();
    let cert = TestCert::new();
    let token = fake.token();
    // The fake answers about Scan and Anti-spam too: their products are judged.
    let replicas = three_replicas(
        &fake,
        &cert,
        &redis,
        &["--covered-family", "jetpack-scan,jetpack-anti-spam"],
    )
    .await;
    let client = cert.client();

    // Every product for every site at once, spread over the replicas, three rounds.
    let mut requests = Vec::new();
    for round in 0..3 {
        for (s, site) in sites.iter().enumerate() {
            for (p, product) in PRODUCTS.iter().enumerate() {
                let replica = &replicas[(round + s + p) % replicas.len()];
                let request = provision(replica, &token, site, product);
                requests.push(send(&client, request));
            }
        }
    }
    let answers = join_all(requests).await;

    let stats = fake.stats();
    assert_eq!(
        stats.leaks, 0,
        "a downgrade reached the provision call: {stats:?}"
    );
    let mut allowed = 0;
    for answer in &answers {
        match answer.status.as_u16() {
            200 => allowed += 1,
            // A product again for a site: a later round repeats what an earlier one
            // provisioned, through any replica (the memory is shared through Redis).
            409 => assert!(
                answer.text().contains(r#""error":"upgrade_not_allowed""#)
                    || answer.text().contains(r#""error":"already_provisioned""#),
                "{}",
                answer.text()
            ),
            // A site held past the lock wait is fail-closed, never forwarded.
            503 => assert!(
                answer.text().contains(r#""error":"site_busy""#),
                "{}",
                answer.text()
            ),
            other => panic!("unexpected {other}: {}", answer.text()),
        }
    }
    assert_eq!(
        allowed, stats.provisioned,
        "every forwarded provision succeeded"
    );
    assert!(
        allowed >= sites.len() as u64,
        "every site got at least one product"
    );
    for replica in replicas {
        replica.shutdown().await;
    }
}

/// An upstream that shows each grant half a second late: what one replica just provisioned,
/// another replica's answer does not show yet. The provision is remembered in Redis, so the
/// other replicas wait for an answer that shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provision_shown_late_is_known_to_every_replica() {
    let redis = RedisServer::start();
    let fake = FakeUpstream::builder()
        .site(FakeSite::new(1001).url("https://late.example.com/"))
        .grant_delay(std::time::Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    let cert = TestCert::new();
    let token = fake.token();
    let replicas = three_replicas(&fake, &cert, &redis, &[]).await;
    let client = cert.client();
    let provision = |at: usize, site: &str, plan: &str| {
        send(&client, provision(&replicas[at], &token, site, plan))
    };

    let first = provision(0, "1001", "professional").await;
    assert_eq!(first.status.as_u16(), 200, "{}", first.text());
    // Right after, through the second replica: Realtime Backups, which Professional contains.
    let downgrade = provision(1, "https://late.example.com/", "jetpack-backup-realtime").await;
    assert_eq!(downgrade.status.as_u16(), 409, "{}", downgrade.text());
    assert!(
        downgrade
            .text()
            .contains(r#""error":"upgrade_not_allowed""#)
    );
    // The same provision again through the third: done already.
    let repeat = provision(2, "1001", "professional").await;
    assert_eq!(repeat.status.as_u16(), 409, "{}", repeat.text());
    assert!(repeat.text().contains(r#""error":"already_provisioned""#));
    let stats = fake.stats();
    assert_eq!((stats.provisions, stats.leaks), (1, 0), "{stats:?}");
    for replica in replicas {
        replica.shutdown().await;
    }
}
