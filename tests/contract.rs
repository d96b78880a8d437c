//! The two scenarios of WordPress.com's upgrade-paths doc, and every row of the guard's contract.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use upgrade_guard::fake::{Endpoint, Fault};
use upgrade_guard::{UnknownSites, UpgradeGuardLayer};

#[tokio::test]
async fn realtime_backups_to_professional_is_forwarded() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    let inner = Recorder::default();
    let body = "siteurl=https%3A%2F%2Frealtime.example.com%2F&plan=professional&local_user=admin";

    let answer = send(&guard, &inner, form(body)).await;

    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(&answer.body[..], br#"{"success":true}"#);
    assert_eq!(inner.calls(), 1);
    assert_eq!(&inner.seen()[0].body[..], body.as_bytes());
    assert_eq!(fake.stats().lookups, 1);
}

#[tokio::test]
async fn professional_to_realtime_backups_is_409_and_never_forwarded() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    let inner = Recorder::default();

    let answer = send(
        &guard,
        &inner,
        form("siteurl=https://professional.example.com/&plan=jetpack-backup-realtime&local_user=admin"),
    )
    .await;

    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.error(), "upgrade_not_allowed");
    let json = answer.json();
    assert_eq!(json["site"], "professional.example.com");
    assert_eq!(json["product"], "jetpack-backup-realtime");
    assert_eq!(json["upgrade_paths"], serde_json::json!({}));
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn the_409_lists_what_may_be_provisioned_instead() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    let inner = Recorder::default();

    let answer = send(&guard, &inner, form("siteurl=1002&plan=premium")).await;

    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.error(), "upgrade_not_allowed");
    let paths = &answer.json()["upgrade_paths"];
    assert!(
        paths["jetpack-plans"]
            .as_array()
            .unwrap()
            .contains(&"professional".into()),
        "{paths}"
    );
    assert_eq!(inner.calls(), 0);
}

/// Sends `request` and asserts the answer is `status` + `code` and nothing was forwarded.
async fn refused(
    guard: &UpgradeGuardLayer,
    request: Request<Full<bytes::Bytes>>,
    status: u16,
    code: &str,
) -> Answer {
    let inner = Recorder::default();
    let answer = send(guard, &inner, request).await;
    assert_eq!(answer.status.as_u16(), status, "{code}: {:?}", answer.body);
    assert_eq!(answer.error(), code);
    assert_eq!(inner.calls(), 0, "{code}: nothing is forwarded");
    answer
}

#[tokio::test]
async fn missing_site_and_product() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    refused(&guard, form("plan=professional"), 400, "missing_site").await;
    refused(
        &guard,
        form("siteurl=&plan=professional"),
        400,
        "missing_site",
    )
    .await;
    // On a route that requires a product (by default it is a connection request: lifecycle.rs).
    let plans = guard.clone().require_product();
    refused(&plans, form("siteurl=1001"), 400, "missing_product").await;
    refused(&plans, form("siteurl=1001&plan="), 400, "missing_product").await;
    refused(&guard, json("{}"), 400, "missing_site").await;
    // No body at all, no content type: nothing names a site.
    let empty = Request::post("/provision").body(Full::default()).unwrap();
    refused(&guard, empty, 400, "missing_site").await;
    assert_eq!(fake.stats().lookups, 0);
}

#[tokio::test]
async fn invalid_site() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    refused(
        &guard,
        form("siteurl=example.com%2F..%2Fadmin&plan=personal"),
        400,
        "invalid_site",
    )
    .await;
    refused(
        &guard,
        form("siteurl=ftp%3A%2F%2Fexample.com&plan=personal"),
        400,
        "invalid_site",
    )
    .await;
    assert_eq!(fake.stats().requests, 0);
}

#[tokio::test]
async fn invalid_body() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    refused(
        &guard,
        json(r#"{"siteurl": "1001", "plan": "#),
        400,
        "invalid_body",
    )
    .await;
    refused(&guard, json(r#"["1001", "personal"]"#), 400, "invalid_body").await;
    refused(
        &guard,
        json(r#"{"siteurl": "1001", "plan": ["personal"]}"#),
        400,
        "invalid_body",
    )
    .await;
    // PHP keeps the last `plan`; checking the first would check another product.
    refused(
        &guard,
        form("siteurl=1002&plan=professional&plan=jetpack-backup-daily"),
        400,
        "invalid_body",
    )
    .await;
    let truncated = Request::post("/provision")
        .header("content-type", "multipart/form-data; boundary=xyz")
        .body(Full::from(
            "--xyz\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\nperso",
        ))
        .unwrap();
    refused(&guard, truncated, 400, "invalid_body").await;
    let not_utf8 = multipart(
        "multipart/form-data; boundary=b",
        "b",
        &[("siteurl", b"1001"), ("plan", &[0xff, 0xfe])],
    );
    refused(&guard, not_utf8, 400, "invalid_body").await;
    assert_eq!(fake.stats().requests, 0);
}

/// A body whose stream breaks is a 400 that tells the client the body could not be read and
/// why, and keeps the stream's own error as the rejection's source.
#[tokio::test]
async fn a_broken_body_is_invalid_body_with_its_cause_kept() {
    let fake = fake().await;
    let causes: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = causes.clone();
    let guard = UpgradeGuardLayer::new(client(&fake)).on_decision(move |report| {
        let mut chain = Vec::new();
        let mut error = report.rejection.map(|r| r as &dyn std::error::Error);
        while let Some(e) = error {
            chain.push(e.to_string());
            error = e.source();
        }
        record.lock().unwrap().extend(chain);
    });
    let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
        Ok(Frame::data(Bytes::from_static(b"siteurl=1001&pl"))),
        Err(std::io::Error::other("the client's connection was reset")),
    ];
    let broken = Request::post("/provision")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let answer = send(&guard, &Recorder::default(), broken).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error(), "invalid_body");
    assert_eq!(
        answer.json()["message"],
        "the body could not be read: the client's connection was reset"
    );
    assert_eq!(
        *causes.lock().unwrap(),
        [
            "the body could not be read: the client's connection was reset",
            "the body could not be read",
            "the client's connection was reset"
        ]
    );
}

#[tokio::test]
async fn unsupported_media_type() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    // WordPress.com matches JSON types exactly and would read this one as a form.
    let json_in_capitals = Request::post("/provision")
        .header("content-type", "Application/JSON")
        .body(Full::from(r#"{"siteurl":"1001","plan":"personal"}"#))
        .unwrap();
    refused(&guard, json_in_capitals, 415, "unsupported_media_type").await;
    // PHP does not decode bodies.
    let gzip = Request::post("/provision")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-encoding", "gzip")
        .body(Full::from("siteurl=1001&plan=personal"))
        .unwrap();
    refused(&guard, gzip, 415, "unsupported_media_type").await;
    // multipart without a boundary cannot be read.
    let no_boundary = Request::post("/provision")
        .header("content-type", "multipart/form-data;")
        .body(Full::from("x"))
        .unwrap();
    refused(&guard, no_boundary, 415, "unsupported_media_type").await;
    assert_eq!(fake.stats().requests, 0);
}

#[tokio::test]
async fn body_too_large_by_content_length_and_while_streaming() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake)).body_limit(1024);
    let big = format!("siteurl=1001&plan=personal&pad={}", "x".repeat(2000));
    let declared = Request::post("/provision")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", big.len())
        .body(Full::from(big.clone()))
        .unwrap();
    refused(&guard, declared, 413, "body_too_large").await;

    // A chunked body with no length: cut off once it passes the limit, without reading it all.
    let inner = Recorder::default();
    let chunks = (0..1000).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(bytes::Bytes::from(vec![
            b'x';
            100
        ])))
    });
    let streamed = Request::post("/provision")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let answer = send(&guard, &inner, streamed).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error(), "body_too_large");
    assert_eq!(inner.calls(), 0);
    assert_eq!(fake.stats().requests, 0);
}

#[tokio::test]
async fn unknown_site_is_404() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    // A site named by URL is a first provision by default (lifecycle.rs), unless the route
    // refuses unknown sites.
    let existing_only = guard.clone().unknown_sites(UnknownSites::Refuse);
    refused(
        &existing_only,
        form("siteurl=https://nobody.example.com/&plan=personal"),
        404,
        "unknown_site",
    )
    .await;
    refused(
        &guard,
        form("siteurl=999999&plan=personal"),
        404,
        "unknown_site",
    )
    .await;
    assert_eq!(fake.stats().lookups, 2);
}

#[tokio::test]
async fn a_refused_token_is_502() {
    let fake = fake().await;
    let client = upgrade_guard::UpgradePathsClient::builder()
        .base_url(fake.url())
        .bearer_token("not-the-partner-token")
        .build()
        .unwrap();
    let guard = UpgradeGuardLayer::new(client);
    let answer = refused(
        &guard,
        form("siteurl=1001&plan=personal"),
        502,
        "upstream_unauthorized",
    )
    .await;
    assert!(!String::from_utf8_lossy(&answer.body).contains("not-the-partner-token"));
    fake.inject(Endpoint::UpgradePaths, Fault::status(403))
        .once();
    let guard = UpgradeGuardLayer::new(common::client(&fake));
    refused(
        &guard,
        form("siteurl=1001&plan=personal"),
        502,
        "upstream_unauthorized",
    )
    .await;
}

/// Asserts an unavailable upstream is 503 with Retry-After, and returns the Retry-After.
async fn unavailable(guard: &UpgradeGuardLayer) -> String {
    let answer = refused(
        guard,
        form("siteurl=1001&plan=personal"),
        503,
        "upgrade_paths_unavailable",
    )
    .await;
    answer.headers["retry-after"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn upstream_failures_are_503_with_retry_after() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    for status in [500, 502, 503, 504, 400, 418] {
        fake.inject(Endpoint::UpgradePaths, Fault::status(status))
            .once();
        assert_eq!(unavailable(&guard).await, "5", "HTTP {status}");
    }
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::status(429).header(http::header::RETRY_AFTER, "17"),
    )
    .once();
    assert_eq!(unavailable(&guard).await, "17");
    fake.inject(Endpoint::UpgradePaths, Fault::DropConnection)
        .once();
    unavailable(&guard).await;
    // The fake is healthy again: the same request is forwarded.
    let inner = Recorder::default();
    assert_eq!(
        send(&guard, &inner, form("siteurl=1001&plan=personal"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_success_status_with_the_wrong_body_is_503_never_allowed() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    // PHP's `[]` is "no upgrade paths" (409, in lifecycle.rs); any other array is not an answer.
    for body in [
        "",
        "[[]]",
        r#"["personal"]"#,
        "null",
        "<html>maintenance</html>",
        r#"{"jetpack-plans": "personal"}"#,
        r#"{"jetpack-plans": ["personal", 7]}"#,
        r#"{"jetpack-plans": ["personal"]"#,
    ] {
        fake.inject(Endpoint::UpgradePaths, Fault::status_with_body(200, body))
            .once();
        unavailable(&guard).await;
    }
}

#[tokio::test]
async fn an_oversized_answer_is_503() {
    let fake = fake().await;
    let client = upgrade_guard::UpgradePathsClient::builder()
        .base_url(fake.url())
        .bearer_token(fake.token())
        .max_answer_bytes(100)
        .build()
        .unwrap();
    let guard = UpgradeGuardLayer::new(client);
    let products: Vec<String> = (0..50).map(|i| format!("\"product-{i}\"")).collect();
    let body = format!(r#"{{"jetpack-plans": [{}]}}"#, products.join(","));
    fake.inject(Endpoint::UpgradePaths, Fault::status_with_body(200, body))
        .once();
    unavailable(&guard).await;
}

#[tokio::test]
async fn a_slow_upstream_is_503_at_the_deadline() {
    let fake = fake().await;
    let client = upgrade_guard::UpgradePathsClient::builder()
        .base_url(fake.url())
        .bearer_token(fake.token())
        .lookup_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let guard = UpgradeGuardLayer::new(client);
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::Delay(Duration::from_secs(30)),
    )
    .once();
    let started = std::time::Instant::now();
    unavailable(&guard).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded by the deadline"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_503() {
    // A loopback port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = upgrade_guard::UpgradePathsClient::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .bearer_token("token")
        .build()
        .unwrap();
    unavailable(&UpgradeGuardLayer::new(client)).await;
}

#[tokio::test]
async fn inner_responses_pass_through_untouched() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    let inner = tower::service_fn(
        |_request: Request<upgrade_guard::GuardBody<Full<bytes::Bytes>>>| async {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(StatusCode::IM_A_TEAPOT)
                    .header("x-inner", "yes")
                    .body(Full::from("inner body"))
                    .unwrap(),
            )
        },
    );
    use http_body_util::BodyExt;
    use tower::{Layer, ServiceExt};
    let response = guard
        .layer(inner)
        .oneshot(form("siteurl=1001&plan=personal"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(response.headers()["x-inner"], "yes");
    assert_eq!(
        &response.into_body().collect().await.unwrap().to_bytes()[..],
        b"inner body"
    );

    // Inner errors pass through as errors.
    let failing = tower::service_fn(
        |_request: Request<upgrade_guard::GuardBody<Full<bytes::Bytes>>>| async {
            Err::<http::Response<Full<bytes::Bytes>>, _>("inner failed")
        },
    );
    let error = UpgradeGuardLayer::new(client(&fake))
        .layer(failing)
        .oneshot(form("siteurl=1001&plan=personal"))
        .await
        .unwrap_err();
    assert_eq!(error, "inner failed");
}
