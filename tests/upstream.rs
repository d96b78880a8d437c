//! The upstream client against the fake: client-credentials tokens (one fetch, one refresh),
//! retries of passing failures within the deadline. (Secrets in output and logs: `upstream_secrets.rs`.)

use http::StatusCode;
use std::time::Duration;
use upgrade_guard::fake::{Endpoint, FakeUpstream, Fault};
use upgrade_guard::{LookupError, Rejection, Site, TokenError, TokenSource, UpgradePathsClient};

const CLIENT_ID: &str = "partner-7";
const CLIENT_SECRET: &str = "client-s3cret-9f2b";
const TOKEN: &str = "t0k3n-s3cret-41c7";

async fn fake() -> FakeUpstream {
    FakeUpstream::builder()
        .demo_sites()
        .token(TOKEN)
        .client_credentials(CLIENT_ID, CLIENT_SECRET)
        .start()
        .await
        .expect("the fake upstream starts on loopback")
}

fn site() -> Site {
    Site::parse("1001").unwrap()
}

/// A client-credentials client for `fake`, with the default deadlines and retries.
fn client(fake: &FakeUpstream) -> UpgradePathsClient {
    UpgradePathsClient::builder()
        .base_url(fake.url())
        .client_credentials(CLIENT_ID, CLIENT_SECRET)
        .build()
        .unwrap()
}

fn unauthorized_status(result: Result<impl std::fmt::Debug, LookupError>) -> StatusCode {
    match result {
        Err(LookupError::Unauthorized { status }) => status,
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

/// The token endpoint's status when it refused the client credentials: the lookup's error
/// keeps the token source's as its source.
fn refused_credentials_status(result: Result<impl std::fmt::Debug, LookupError>) -> StatusCode {
    match result {
        Err(LookupError::Token(TokenError::Refused { status, .. })) => status,
        other => panic!("expected the token endpoint's refusal, got {other:?}"),
    }
}

// ---- tokens ----

/// A token fetch whose every waiter went away is not lost: the next caller gets that fetch's
/// token, with no second fetch. (That it also runs on meanwhile, in a task, so it cannot stall
/// past its deadline unpolled, is not visible from outside without waiting out that deadline.)
#[tokio::test]
async fn a_token_fetch_left_by_every_waiter_still_finishes() {
    let fake = fake().await;
    let tokens = client(&fake).token_source().clone();
    fake.inject(Endpoint::Token, Fault::Delay(Duration::from_millis(300)))
        .once();
    let waiter = tokio::spawn({
        let tokens = tokens.clone();
        async move { tokens.token().await }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.stats().token_requests == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no token request");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    let token = tokio::time::timeout(Duration::from_secs(10), tokens.token())
        .await
        .expect("the fetch ends by itself")
        .expect("a token");
    assert_eq!(token.secret(), TOKEN);
    assert_eq!(fake.stats().token_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_first_lookups_fetch_one_token() {
    let fake = fake().await;
    let client = client(&fake);
    let lookups: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.upgrade_paths(&site()).await })
        })
        .collect();
    for lookup in lookups {
        assert!(lookup.await.unwrap().unwrap().allows("professional"));
    }
    let stats = fake.stats();
    assert_eq!((stats.token_requests, stats.lookups), (1, 100));
}

#[tokio::test]
async fn a_revoked_token_is_refreshed_once_and_the_lookup_succeeds() {
    let fake = fake().await;
    let client = client(&fake);
    client.upgrade_paths(&site()).await.unwrap();
    let new = fake.rotate_token();
    client.upgrade_paths(&site()).await.unwrap();
    let stats = fake.stats();
    // The first lookup, the refused one, and the one with the new token.
    assert_eq!((stats.token_requests, stats.lookups), (2, 3));
    assert_eq!(client.token_source().token().await.unwrap().secret(), new);
    // Clones share the refreshed token.
    client.clone().upgrade_paths(&site()).await.unwrap();
    assert_eq!(fake.stats().token_requests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_refused_together_share_one_refresh() {
    let fake = fake().await;
    let client = client(&fake);
    client.upgrade_paths(&site()).await.unwrap();
    fake.rotate_token();
    let lookups: Vec<_> = (0..50)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.upgrade_paths(&site()).await })
        })
        .collect();
    for lookup in lookups {
        lookup.await.unwrap().unwrap();
    }
    assert_eq!(fake.stats().token_requests, 2);
}

#[tokio::test]
async fn a_refused_refresh_is_unauthorized() {
    let fake = fake().await;
    let client = client(&fake);
    client.upgrade_paths(&site()).await.unwrap();
    fake.rotate_token();
    let refused = r#"{"error":"invalid_client","message":"unknown client or wrong secret"}"#;
    fake.inject(Endpoint::Token, Fault::status_with_body(400, refused))
        .always();
    let error = client.upgrade_paths(&site()).await.unwrap_err();
    assert_eq!(
        refused_credentials_status(Err::<(), _>(error.clone())),
        StatusCode::BAD_REQUEST
    );
    let stats = fake.stats();
    // No retry of a refusal: one refused lookup, one refused refresh.
    assert_eq!((stats.token_requests, stats.lookups), (2, 2));
    let rejection = Rejection::Upstream(error);
    assert_eq!(
        (rejection.status(), rejection.code()),
        (StatusCode::BAD_GATEWAY, "upstream_unauthorized")
    );
}

#[tokio::test]
async fn wrong_client_credentials_are_unauthorized_without_a_lookup() {
    let fake = fake().await;
    let client = UpgradePathsClient::builder()
        .base_url(fake.url())
        .client_credentials(CLIENT_ID, "a-wrong-secret")
        .build()
        .unwrap();
    assert_eq!(
        refused_credentials_status(client.upgrade_paths(&site()).await),
        StatusCode::BAD_REQUEST
    );
    let stats = fake.stats();
    assert_eq!((stats.token_requests, stats.lookups), (1, 0));
}

#[tokio::test]
async fn a_refused_static_token_is_unauthorized_at_once() {
    let fake = fake().await;
    let client = UpgradePathsClient::builder()
        .base_url(fake.url())
        .bearer_token(TOKEN)
        .build()
        .unwrap();
    client.upgrade_paths(&site()).await.unwrap();
    fake.rotate_token();
    assert_eq!(
        unauthorized_status(client.upgrade_paths(&site()).await),
        StatusCode::UNAUTHORIZED
    );
    let stats = fake.stats();
    assert_eq!((stats.token_requests, stats.lookups), (0, 2));
}

#[tokio::test]
async fn a_403_for_the_token_refreshes_but_invalid_blog_does_not() {
    let fake = fake().await;
    let client = client(&fake);
    fake.inject(Endpoint::UpgradePaths, Fault::status(403))
        .once();
    client.upgrade_paths(&site()).await.unwrap();
    assert_eq!(fake.stats().token_requests, 2);
    let unknown = Site::parse("424242").unwrap();
    assert!(matches!(
        client.upgrade_paths(&unknown).await,
        Err(LookupError::UnknownSite)
    ));
    assert_eq!((fake.stats().token_requests, fake.stats().lookups), (2, 3));
}

#[tokio::test]
async fn an_unavailable_token_endpoint_is_retried_then_503_class() {
    let fake = fake().await;
    let client = client(&fake);
    fake.inject(Endpoint::Token, Fault::status(503)).once();
    client.upgrade_paths(&site()).await.unwrap();
    assert_eq!(fake.stats().token_requests, 2);

    let fake = self::fake().await;
    let client = self::client(&fake);
    fake.inject(Endpoint::Token, Fault::status(503)).always();
    let error = client.upgrade_paths(&site()).await.unwrap_err();
    assert!(
        matches!(
            error,
            LookupError::Token(TokenError::Status {
                status: StatusCode::SERVICE_UNAVAILABLE,
                ..
            })
        ),
        "{error:?}"
    );
    // The first try and the two default retries.
    assert_eq!((fake.stats().token_requests, fake.stats().lookups), (3, 0));
    let rejection = Rejection::Upstream(error);
    assert_eq!(rejection.status(), StatusCode::SERVICE_UNAVAILABLE);
    // The client (and the log) learn what went wrong underneath, from the error's chain.
    assert_eq!(
        rejection.to_string(),
        "the site's upgrade paths could not be checked (no partner token for the lookup: the token endpoint answered HTTP 503 Service Unavailable); try again"
    );

    fake.clear_faults();
    fake.inject(Endpoint::Token, Fault::DropConnection).always();
    assert!(matches!(
        client.upgrade_paths(&site()).await,
        Err(LookupError::Token(TokenError::Transport(_)))
    ));
}

#[tokio::test]
async fn a_token_source_refreshes_only_a_stale_token() {
    let fake = fake().await;
    let source = TokenSource::client_credentials(CLIENT_ID, CLIENT_SECRET)
        .base_url(fake.url())
        .build()
        .unwrap();
    let first = source.token().await.unwrap();
    assert_eq!(first.secret(), TOKEN);
    assert_eq!(source.token().await.unwrap().secret(), TOKEN);
    assert_eq!(fake.stats().token_requests, 1);

    let rotated = fake.rotate_token();
    let second = source.refresh(&first).await.unwrap();
    assert_eq!(second.secret(), rotated);
    // `first` is no longer current: refreshing it again hands out the current token.
    assert_eq!(source.refresh(&first).await.unwrap().secret(), rotated);
    assert_eq!(fake.stats().token_requests, 2);
    // A refresh of the current token fetches, even when the endpoint hands out the same text.
    assert_eq!(source.refresh(&second).await.unwrap().secret(), rotated);
    assert_eq!(fake.stats().token_requests, 3);

    // A failed fetch is not remembered: the next call fetches again.
    let fresh = TokenSource::client_credentials(CLIENT_ID, CLIENT_SECRET)
        .base_url(fake.url())
        .build()
        .unwrap();
    fake.inject(Endpoint::Token, Fault::status(502)).once();
    assert!(matches!(
        fresh.token().await,
        Err(TokenError::Status {
            status: StatusCode::BAD_GATEWAY,
            ..
        })
    ));
    assert_eq!(fresh.token().await.unwrap().secret(), rotated);
    assert_eq!(fake.stats().token_requests, 5);
}

// ---- retries ----

#[tokio::test]
async fn one_passing_failure_is_retried() {
    let fake = fake().await;
    let client = client(&fake);
    client.upgrade_paths(&site()).await.unwrap();
    for fault in [
        Fault::status(500),
        Fault::status(502),
        Fault::status(503),
        Fault::status(504),
        Fault::DropConnection,
    ] {
        fake.reset_stats();
        fake.inject(Endpoint::UpgradePaths, fault.clone()).once();
        let paths = client.upgrade_paths(&site()).await;
        assert!(paths.is_ok(), "{fault:?}: {paths:?}");
        assert_eq!(fake.stats().lookups, 2, "{fault:?}");
    }
}

#[tokio::test]
async fn a_timed_out_attempt_is_retried() {
    let fake = fake().await;
    let client = UpgradePathsClient::builder()
        .base_url(fake.url())
        .client_credentials(CLIENT_ID, CLIENT_SECRET)
        .attempt_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::Delay(Duration::from_secs(60)),
    )
    .once();
    client.upgrade_paths(&site()).await.unwrap();
    assert_eq!(fake.stats().lookups, 2);
}

#[tokio::test]
async fn answers_that_would_not_change_are_not_retried() {
    let fake = fake().await;
    let client = client(&fake);
    client.upgrade_paths(&site()).await.unwrap();
    for fault in [
        Fault::status(400),
        Fault::status(404),
        Fault::status(418),
        Fault::status(501),
        Fault::status_with_body(403, r#"{"error":"invalid_blog","message":"unknown blog"}"#),
        Fault::status_with_body(200, "<html>maintenance</html>"),
    ] {
        fake.reset_stats();
        fake.inject(Endpoint::UpgradePaths, fault.clone()).once();
        let paths = client.upgrade_paths(&site()).await;
        assert!(paths.is_err(), "{fault:?}");
        let stats = fake.stats();
        assert_eq!((stats.lookups, stats.token_requests), (1, 0), "{fault:?}");
    }
}

#[tokio::test]
async fn a_429_is_retried_after_its_retry_after() {
    let fake = fake().await;
    let client = client(&fake);
    client.upgrade_paths(&site()).await.unwrap();
    fake.reset_stats();
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::status(429).header(http::header::RETRY_AFTER, "1"),
    )
    .once();
    let started = std::time::Instant::now();
    client.upgrade_paths(&site()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(fake.stats().lookups, 2);
}

#[tokio::test]
async fn a_429_asking_past_the_deadline_gives_up_at_once() {
    let fake = fake().await;
    let client = client(&fake);
    client.upgrade_paths(&site()).await.unwrap();
    fake.reset_stats();
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::status(429).header(http::header::RETRY_AFTER, "30"),
    )
    .always();
    let started = std::time::Instant::now();
    let error = client.upgrade_paths(&site()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(
        error,
        LookupError::Status {
            status: StatusCode::TOO_MANY_REQUESTS,
            ..
        }
    ));
    assert_eq!(error.retry_after(), Some(Duration::from_secs(30)));
    assert_eq!(fake.stats().lookups, 1);
}

/// A client whose retries are bounded by the deadline rather than by their count.
fn eager_client(fake: &FakeUpstream) -> UpgradePathsClient {
    UpgradePathsClient::builder()
        .base_url(fake.url())
        .client_credentials(CLIENT_ID, CLIENT_SECRET)
        .lookup_timeout(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(2))
        .max_retries(1000)
        .build()
        .unwrap()
}

// On a paused clock only timers move time: the fake answers at once over loopback, so the virtual
// time that passes is the client's backoff (and, below, the fake's delay and the attempt timeouts).
#[tokio::test(start_paused = true)]
async fn retries_of_an_always_failing_upstream_end_by_the_deadline() {
    let fake = fake().await;
    let client = eager_client(&fake);
    fake.inject(Endpoint::UpgradePaths, Fault::status(503))
        .always();
    let started = tokio::time::Instant::now();
    let error = client.upgrade_paths(&site()).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed <= Duration::from_secs(5), "{elapsed:?}");
    assert!(matches!(
        error,
        LookupError::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            ..
        }
    ));
    // Waits of 100-200 ms, 200-400 ms, ... capped at 1 s fit between 5 and 10 attempts in 5 s.
    let lookups = fake.stats().lookups;
    assert!((5..=10).contains(&lookups), "{lookups} attempts");
    assert_eq!(fake.stats().token_requests, 1);
}

#[tokio::test(start_paused = true)]
async fn retries_of_a_hanging_upstream_end_at_the_deadline() {
    let fake = fake().await;
    let client = eager_client(&fake);
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::Delay(Duration::from_secs(3600)),
    )
    .always();
    let started = tokio::time::Instant::now();
    let error = client.upgrade_paths(&site()).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(error, LookupError::Timeout), "{error:?}");
    assert!(
        elapsed >= Duration::from_secs(5) && elapsed <= Duration::from_millis(5050),
        "{elapsed:?}"
    );
    // Two attempts cut at 2 s, a third at the deadline.
    assert_eq!(fake.stats().lookups, 3);
}

// ---- the calls around the lookup: the site's names, its status ----

/// Sends a provision form through a guard on `client` in front of a handler that answers 200:
/// the answer's status and its `message`.
async fn provision_through_a_guard(client: UpgradePathsClient, form: &str) -> (StatusCode, String) {
    let (status, message, _) = provision_answer(client, form).await;
    (status, message)
}

/// As [`provision_through_a_guard`], with the answer's `Retry-After`.
async fn provision_answer(
    client: UpgradePathsClient,
    form: &str,
) -> (StatusCode, String, Option<String>) {
    use http_body_util::{BodyExt, Full};
    use tower::{Layer, ServiceExt, service_fn};
    let handler = service_fn(|_: http::Request<_>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::new())))
    });
    let guard = upgrade_guard::UpgradeGuardLayer::new(client).layer(handler);
    let request = http::Request::post("/provision")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(bytes::Bytes::from(form.to_owned())))
        .unwrap();
    let response = guard.oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .map(|value| value.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|json| json["message"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, message, retry_after)
}

/// The public site lookup, which tells the guard a site's other name before its first check, is
/// retried as the upgrade-paths lookup is: a connection dropped once, or one passing 5xx, must
/// not refuse the first provision of a site whose names are not known yet.
#[tokio::test]
async fn one_passing_failure_of_the_site_lookup_is_retried() {
    let fake = fake().await;
    for (n, fault) in [Fault::DropConnection, Fault::status(503)]
        .into_iter()
        .enumerate()
    {
        fake.reset_stats();
        fake.inject(Endpoint::SiteLookup, fault.clone()).once();
        // A fresh guard each time: a site's names, once learned, are remembered.
        let form = format!("siteurl=100{}&plan=jetpack-scan&local_user=a", n + 1);
        let (status, message) = provision_through_a_guard(client(&fake), &form).await;
        assert_eq!(status, StatusCode::OK, "{fault:?}: {message}");
        assert_eq!(fake.stats().site_lookups, 2, "{fault:?}");
    }
}

/// A site lookup that keeps failing ends, after the retries, in the guard's 503, whose message
/// says what failed without calling it the upgrade-paths lookup.
#[tokio::test]
async fn a_site_lookup_that_keeps_failing_is_503_after_the_retries() {
    let fake = fake().await;
    fake.inject(Endpoint::SiteLookup, Fault::DropConnection)
        .always();
    let (status, message) =
        provision_through_a_guard(client(&fake), "siteurl=1001&plan=jetpack-scan&local_user=a")
            .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{message}");
    assert!(
        message.contains("the connection to WordPress.com failed"),
        "{message}"
    );
    assert!(!message.contains("upgrade-paths lookup"), "{message}");
    // The default two retries.
    assert_eq!(fake.stats().site_lookups, 3);
    assert_eq!(fake.stats().lookups, 0);
}

/// The status call that confirms a first provision's site is new is retried too: one passing
/// failure does not refuse the first provision.
#[tokio::test]
async fn one_passing_failure_of_the_status_call_is_retried() {
    let fake = fake().await;
    fake.inject(Endpoint::Status, Fault::status(502)).once();
    let (status, message) = provision_through_a_guard(
        client(&fake),
        "siteurl=https://brand-new.example/&plan=jetpack-scan&local_user=a",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{message}");
    assert_eq!(fake.stats().status_requests, 2);
}

/// A status call answered 429 asks for a wait longer than the lookup deadline: not tried again
/// at once (one call), and the guard's 503 passes the wait on.
#[tokio::test]
async fn a_status_call_answered_429_honours_its_retry_after() {
    let fake = fake().await;
    fake.inject(
        Endpoint::Status,
        Fault::status(429).header(http::header::RETRY_AFTER, "30"),
    )
    .always();
    let (status, message, retry_after) = provision_answer(
        client(&fake),
        "siteurl=https://brand-new.example/&plan=jetpack-scan&local_user=a",
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{message}");
    assert_eq!(retry_after.as_deref(), Some("30"));
    assert_eq!(fake.stats().status_requests, 1);
}
