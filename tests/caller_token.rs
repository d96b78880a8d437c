//! A guard with no token of its own looks each site up with the bearer token of the request it
//! checks (issue 13, item 4): no caller is ever served an answer fetched with another caller's
//! token, from the cache or by joining a lookup in flight; a refused token gets WordPress.com's own
//! answer; a request without a token is 401 without a lookup.

mod common;

use bytes::Bytes;
use common::{Answer, PROFESSIONAL, Recorder, eventually, recording_guard, send};
use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::Full;
use std::time::Duration;
use tower::{Layer, ServiceExt};
use upgrade_guard::fake::{Endpoint, FakeSite, FakeUpstream, Fault};
use upgrade_guard::{UpgradeGuardLayer, UpgradePathsClient};

/// The partner's own tooling.
const TOOL_A: &str = "tool-a-token";
/// A second tool (or a colleague) with a token of its own, which WordPress.com accepts too.
const TOOL_B: &str = "tool-b-token";
/// A token WordPress.com does not accept: expired, revoked, or never issued.
const REVOKED: &str = "revoked-token";

/// What site 1003 (which holds Professional, so is offered nothing) looks like to tool B in the
/// tests that give B a view of its own: Personal on offer.
const B_VIEW: &str = r#"{"jetpack-plans":["personal"]}"#;

async fn fake() -> FakeUpstream {
    FakeUpstream::builder()
        .site(
            FakeSite::new(PROFESSIONAL)
                .url("https://professional.example.com/")
                .holding(["professional"]),
        )
        .token(TOOL_A)
        .accept_token(TOOL_B)
        .start()
        .await
        .expect("the fake upstream starts on loopback")
}

/// A client with no token of its own, pointed at `fake`.
fn caller_client(fake: &FakeUpstream) -> UpgradePathsClient {
    UpgradePathsClient::builder()
        .base_url(fake.url())
        .caller_token()
        .lookup_timeout(Duration::from_secs(5))
        .max_retries(0)
        .build()
        .expect("the client builds")
}

/// The provision form for Personal on site 1003, with `token` as the bearer token.
fn personal(token: Option<&str>) -> Request<Full<Bytes>> {
    let mut request = Request::post("/rest/v1.3/jpphp/provision")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from("siteurl=1003&plan=personal&local_user=admin"))
        .unwrap();
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        request.headers_mut().insert(header::AUTHORIZATION, value);
    }
    request
}

/// What the fake answers a lookup of site 1003 with `token`, asked directly.
async fn direct_answer(fake: &FakeUpstream, token: &str) -> (StatusCode, Bytes) {
    let answer = reqwest::Client::new()
        .get(format!("{}/rest/v1.3/jpphp/1003/upgrade-paths", fake.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    (status, answer.bytes().await.unwrap())
}

#[tokio::test]
async fn the_same_callers_second_request_uses_the_cache() {
    let fake = fake().await;
    let guard = recording_guard(caller_client(&fake));
    let inner = Recorder::default();

    for _ in 0..3 {
        let answer = send(&guard, &inner, personal(Some(TOOL_A))).await;
        assert_eq!(answer.status, StatusCode::CONFLICT);
        assert_eq!(answer.error(), "upgrade_not_allowed");
    }

    assert_eq!(
        fake.lookups_with(TOOL_A),
        1,
        "one lookup, with the caller's token"
    );
    assert_eq!(fake.stats().lookups, 1);
    assert_eq!(guard.stats().snapshot().cache_hits, 2);
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn two_callers_with_different_tokens_never_share_a_cached_answer() {
    let fake = fake().await;
    let guard = recording_guard(caller_client(&fake));
    let inner = Recorder::default();

    // Tool A's lookup says Personal is not on offer, and is cached.
    let a = send(&guard, &inner, personal(Some(TOOL_A))).await;
    assert_eq!(a.status, StatusCode::CONFLICT);

    // Tool B's token is told otherwise. Served A's cached refusal, B would be answered 409.
    fake.inject(Endpoint::UpgradePaths, Fault::status_with_body(200, B_VIEW))
        .once();
    let b = send(&guard, &inner, personal(Some(TOOL_B))).await;
    assert_eq!(b.status, StatusCode::OK, "{:?}", b.body);
    assert_eq!(inner.calls(), 1, "B's own answer let B's provision through");
    assert_eq!(fake.lookups_with(TOOL_B), 1);

    // A token WordPress.com refuses is not served either answer.
    let revoked = send(&guard, &inner, personal(Some(REVOKED))).await;
    assert_eq!(revoked.status, StatusCode::UNAUTHORIZED);
    assert_eq!(fake.lookups_with(REVOKED), 1);

    // A is still refused, by a lookup with A's own token (B's forwarded provision dropped the
    // site's entry).
    let a = send(&guard, &inner, personal(Some(TOOL_A))).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(fake.lookups_with(TOOL_A), 2);
    assert_eq!(inner.calls(), 1);
}

#[tokio::test]
async fn an_entry_fetched_by_one_caller_is_not_another_callers_refusal() {
    let fake = fake().await;
    let guard = recording_guard(caller_client(&fake));
    let inner = Recorder::default();

    // B's token sees site 1003 as offered nothing but Personal: Premium is refused, and cached.
    let scan = |token| {
        let mut request = personal(Some(token));
        *request.body_mut() = Full::from("siteurl=1003&plan=premium&local_user=admin");
        request
    };
    fake.inject(Endpoint::UpgradePaths, Fault::status_with_body(200, B_VIEW))
        .once();
    let b = send(&guard, &inner, scan(TOOL_B)).await;
    assert_eq!(b.status, StatusCode::CONFLICT);
    let b = send(&guard, &inner, scan(TOOL_B)).await;
    assert_eq!(b.status, StatusCode::CONFLICT);
    assert_eq!(
        fake.lookups_with(TOOL_B),
        1,
        "B's second request used the cache"
    );

    // For A the entry is not there: A asks with its own token, and gets A's answer, with A's
    // paths in it (the real ones: nothing on offer).
    let a = send(&guard, &inner, scan(TOOL_A)).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.json()["upgrade_paths"], serde_json::json!({}));
    assert_eq!(fake.lookups_with(TOOL_A), 1);
    assert_eq!(guard.stats().snapshot().cache_hits, 1);
}

#[tokio::test]
async fn a_caller_does_not_join_another_callers_lookup_in_flight() {
    let fake = fake().await;
    let guard = recording_guard(caller_client(&fake));
    let inner = Recorder::default();
    let service = guard.layer(inner.service::<Full<Bytes>>());
    // A's lookup is slow, so the others arrive while it is out.
    fake.inject(Endpoint::UpgradePaths, Fault::Delay(Duration::from_secs(1)))
        .once();
    let first = tokio::spawn(service.clone().oneshot(personal(Some(TOOL_A))));
    eventually("A's lookup to reach the fake", || fake.stats().faults == 1).await;
    // The next lookup is B's own (A's is out already): B's token is told Personal is on offer.
    fake.inject(Endpoint::UpgradePaths, Fault::status_with_body(200, B_VIEW))
        .once();

    let same = tokio::spawn(service.clone().oneshot(personal(Some(TOOL_A))));
    let other = tokio::spawn(service.clone().oneshot(personal(Some(TOOL_B))));

    let status = |answer: tokio::task::JoinHandle<Result<http::Response<_>, _>>| async move {
        answer.await.unwrap().unwrap().status()
    };
    assert_eq!(status(first).await, StatusCode::CONFLICT);
    assert_eq!(status(same).await, StatusCode::CONFLICT);
    assert_eq!(
        status(other).await,
        StatusCode::OK,
        "B was answered by its own lookup, not by A's refusal"
    );
    assert_eq!(
        fake.lookups_with(TOOL_A),
        1,
        "A's second request joined A's lookup"
    );
    assert_eq!(fake.lookups_with(TOOL_B), 1);
    assert_eq!(guard.stats().snapshot().coalesced, 1);
    assert_eq!(inner.calls(), 1);
}

#[tokio::test]
async fn an_abandoned_lookup_serves_its_own_caller_only() {
    let fake = fake().await;
    let guard = recording_guard(caller_client(&fake));
    let inner = Recorder::default();
    let service = guard.layer(inner.service::<Full<Bytes>>());
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::Delay(Duration::from_millis(500)),
    )
    .once();

    // A goes away during its lookup: the site is free, the lookup goes on in a task of its own.
    let first = tokio::spawn(service.clone().oneshot(personal(Some(TOOL_A))));
    eventually("A's lookup to reach the fake", || fake.stats().faults == 1).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    // B takes the site while A's lookup is still out, and must not wait for it nor use it.
    fake.inject(Endpoint::UpgradePaths, Fault::status_with_body(200, B_VIEW))
        .once();
    let b = service
        .clone()
        .oneshot(personal(Some(TOOL_B)))
        .await
        .unwrap();
    assert_eq!(b.status(), StatusCode::OK);
    assert_eq!(fake.lookups_with(TOOL_B), 1);

    // B's provision was forwarded, so the site was forgotten, A's abandoned lookup with it (its
    // answer predates the provision): A, asking again, looks the site up afresh with its own token.
    let a = service.oneshot(personal(Some(TOOL_A))).await.unwrap();
    assert_eq!(a.status(), StatusCode::CONFLICT);
    assert_eq!(fake.lookups_with(TOOL_A), 2);
    assert_eq!(fake.lookups_with(TOOL_B), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_each_get_their_own_tokens_answer() {
    let fake = fake().await;
    let guard = recording_guard(caller_client(&fake));
    let inner = Recorder::default();
    let service = guard.layer(inner.service::<Full<Bytes>>());
    let (refused_status, refused_body) = direct_answer(&fake, REVOKED).await;
    fake.reset_stats();
    // The first lookup is slow, so everything else arrives while it (and then others) are out.
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::Delay(Duration::from_millis(200)),
    )
    .once();
    let first = tokio::spawn(service.clone().oneshot(personal(Some(TOOL_A))));
    eventually("A's lookup to reach the fake", || fake.stats().faults == 1).await;

    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..60 {
        let token = [TOOL_A, TOOL_B, REVOKED][n % 3];
        let service = service.clone();
        tasks.spawn(async move {
            let response = service.oneshot(personal(Some(token))).await.unwrap();
            let status = response.status();
            let body = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (token, status, body)
        });
    }
    let answers = tasks.join_all().await;

    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::CONFLICT);
    for (token, status, body) in answers {
        if token == REVOKED {
            assert_eq!(status, refused_status, "{body:?}");
            assert_eq!(
                body, refused_body,
                "the upstream's own refusal, never an answer"
            );
        } else {
            assert_eq!(status, StatusCode::CONFLICT, "{token}: {body:?}");
        }
    }
    for token in [TOOL_A, TOOL_B, REVOKED] {
        assert!(
            fake.lookups_with(token) >= 1,
            "{token} looked up with its own token"
        );
    }
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn a_refused_caller_token_gets_the_upstreams_401_with_its_body() {
    let fake = fake().await;
    let guard = recording_guard(caller_client(&fake));
    let inner = Recorder::default();
    let (status, body) = direct_answer(&fake, REVOKED).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    fake.reset_stats();

    let answer = send(&guard, &inner, personal(Some(REVOKED))).await;

    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.body, body, "WordPress.com's own body, byte for byte");
    assert_eq!(answer.error(), "invalid_token");
    assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert!(answer.headers.get(header::RETRY_AFTER).is_none());
    assert_eq!(inner.calls(), 0);
    // A refusal is never cached: the next request asks again.
    send(&guard, &inner, personal(Some(REVOKED))).await;
    assert_eq!(fake.lookups_with(REVOKED), 2);
}

/// A first provision's second check (v1.4 `status`) is made with the caller's token too, and its
/// refusal of that token is the caller's, relayed as a lookup's is: not a 502 that blames the
/// partner.
#[tokio::test]
async fn a_caller_token_refused_by_the_status_check_is_relayed() {
    let fake = fake().await;
    let guard = recording_guard(caller_client(&fake));
    let inner = Recorder::default();
    let refused = r#"{"error":"invalid_token","message":"The OAuth2 token is invalid."}"#;
    fake.inject(Endpoint::Status, Fault::status_with_body(401, refused))
        .always();
    let mut request = Request::post("/rest/v1.3/jpphp/provision")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from(
            "siteurl=https%3A%2F%2Fnew.example.com%2F&plan=personal&local_user=admin",
        ))
        .unwrap();
    let bearer = HeaderValue::from_str(&format!("Bearer {TOOL_B}")).unwrap();
    request.headers_mut().insert(header::AUTHORIZATION, bearer);

    let answer = send(&guard, &inner, request).await;

    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(&answer.body[..], refused.as_bytes());
    assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(inner.calls(), 0);
    assert_eq!(fake.lookups_with(TOOL_B), 1);
}

#[tokio::test]
async fn requests_with_one_refused_token_share_its_lookup_in_flight() {
    let fake = fake().await;
    let guard = recording_guard(caller_client(&fake));
    let inner = Recorder::default();
    let service = guard.layer(inner.service::<Full<Bytes>>());
    fake.inject(Endpoint::UpgradePaths, Fault::Delay(Duration::from_secs(1)))
        .once();
    let first = tokio::spawn(service.clone().oneshot(personal(Some(REVOKED))));
    eventually("the lookup to reach the fake", || fake.stats().faults == 1).await;

    let mut others = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let service = service.clone();
        others.spawn(async move {
            let response = service.oneshot(personal(Some(REVOKED))).await.unwrap();
            response.status()
        });
    }
    let statuses = others.join_all().await;

    assert_eq!(
        first.await.unwrap().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert_eq!(
        fake.lookups_with(REVOKED),
        1,
        "one upstream call refused all 21"
    );
    let stats = guard.stats().snapshot();
    assert_eq!(stats.coalesced, 20);
    assert_eq!(
        stats.lock_waits, 0,
        "none queued for the site to be refused again"
    );
}

#[tokio::test]
async fn a_refusing_403_is_relayed_with_its_challenge_and_a_non_json_one_is_answered_as_json() {
    let fake = fake().await;
    let guard = recording_guard(caller_client(&fake));
    let inner = Recorder::default();

    let scope = r#"{"error":"invalid_scope","message":"this token may not use the partner API"}"#;
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::status_with_body(403, scope).header(
            header::WWW_AUTHENTICATE,
            "Bearer error=\"insufficient_scope\"",
        ),
    )
    .once();
    let answer = send(&guard, &inner, personal(Some(TOOL_A))).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.body, scope.as_bytes());
    assert_eq!(
        answer.headers[header::WWW_AUTHENTICATE],
        "Bearer error=\"insufficient_scope\""
    );

    // Not WordPress.com's JSON (a proxy's HTML page): the guard's own JSON, with the same status.
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::status_with_body(403, "<html>Forbidden</html>")
            .header(header::CONTENT_TYPE, "text/html"),
    )
    .once();
    let answer = send(&guard, &inner, personal(Some(TOOL_A))).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.error(), "caller_unauthorized");

    // `invalid_blog` is still an unknown site, whoever asks.
    let unknown = Request::post("/rest/v1.3/jpphp/provision")
        .header("content-type", "application/x-www-form-urlencoded")
        .header(header::AUTHORIZATION, format!("Bearer {TOOL_A}"))
        .body(Full::from("siteurl=4242&plan=personal&local_user=admin"))
        .unwrap();
    let answer = send(&guard, &inner, unknown).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.error(), "unknown_site");
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn a_request_without_a_bearer_token_is_401_without_a_lookup() {
    let fake = fake().await;
    let guard = recording_guard(caller_client(&fake));
    let inner = Recorder::default();
    // Cache a refusal for A first: a request without a token must not be answered from it.
    send(&guard, &inner, personal(Some(TOOL_A))).await;
    fake.reset_stats();

    let basic = {
        let mut request = personal(None);
        let value = HeaderValue::from_static("Basic dG9vbDpzZWNyZXQ=");
        request.headers_mut().insert(header::AUTHORIZATION, value);
        request
    };
    let empty = {
        let mut request = personal(None);
        let value = HeaderValue::from_static("Bearer ");
        request.headers_mut().insert(header::AUTHORIZATION, value);
        request
    };
    let twice = {
        let mut request = personal(Some(TOOL_A));
        let value = HeaderValue::from_str(&format!("Bearer {TOOL_B}")).unwrap();
        request.headers_mut().append(header::AUTHORIZATION, value);
        request
    };
    for request in [personal(None), basic, empty, twice] {
        let answer: Answer = send(&guard, &inner, request).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.error(), "missing_token");
        assert_eq!(answer.headers[header::WWW_AUTHENTICATE], "Bearer");
    }
    assert_eq!(fake.stats().lookups, 0);
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn a_client_with_a_token_of_its_own_ignores_the_callers() {
    let fake = fake().await;
    let client = UpgradePathsClient::builder()
        .base_url(fake.url())
        .bearer_token(TOOL_A)
        .build()
        .unwrap();
    assert!(!client.uses_caller_token());
    let guard = UpgradeGuardLayer::new(client);
    let inner = Recorder::default();

    for token in [Some(REVOKED), None] {
        let answer = send(&guard, &inner, personal(token)).await;
        assert_eq!(answer.status, StatusCode::CONFLICT);
    }
    assert_eq!(fake.lookups_with(TOOL_A), 1);
    assert_eq!(fake.lookups_with(REVOKED), 0);

    // The partner's own token refused is still the partner's problem, whatever the caller
    // carries: 502, not the upstream's 401.
    fake.rotate_token();
    let fresh = UpgradeGuardLayer::new(
        UpgradePathsClient::builder()
            .base_url(fake.url())
            .bearer_token(TOOL_A)
            .build()
            .unwrap(),
    );
    let answer = send(&fresh, &inner, personal(Some(TOOL_B))).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.error(), "upstream_unauthorized");
}

#[tokio::test]
async fn the_client_looks_up_with_the_token_it_is_given() {
    let fake = fake().await;
    let client = caller_client(&fake);
    let site = upgrade_guard::Site::parse("1003").unwrap();

    let missing = client.upgrade_paths(&site).await.unwrap_err();
    assert!(
        matches!(missing, upgrade_guard::LookupError::MissingToken),
        "{missing:?}"
    );
    assert_eq!(fake.stats().lookups, 0);

    let mut headers = http::HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("bearer {TOOL_B}")).unwrap(),
    );
    let token = upgrade_guard::Token::from_headers(&headers).unwrap();
    let paths = client.upgrade_paths_with(&site, &token).await.unwrap();
    assert!(!paths.allows("personal"));
    assert_eq!(fake.lookups_with(TOOL_B), 1);

    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {REVOKED}")).unwrap(),
    );
    let token = upgrade_guard::Token::from_headers(&headers).unwrap();
    match client.upgrade_paths_with(&site, &token).await {
        Err(upgrade_guard::LookupError::CallerRefused(refusal)) => {
            assert_eq!(refusal.status(), StatusCode::UNAUTHORIZED);
            let json = refusal.json().expect("the fake's JSON error");
            assert!(json.starts_with(br#"{"error":"invalid_token""#));
            // Never refreshed: the client has nothing to refresh it from.
            assert_eq!(fake.stats().token_requests, 0);
        }
        other => panic!("{other:?}"),
    }
}
