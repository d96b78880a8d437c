//! Rollout modes (fail closed, fail open, shadow), their markers, and decision reports.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{Full, StreamBody};
use std::sync::{Arc, Mutex};
use upgrade_guard::fake::{Endpoint, Fault};
use upgrade_guard::{BYPASS_HEADER, Bypass, Mode, Outcome, UpgradeGuardLayer};

/// What the inner service saw of the bypass marker, and the answer's header.
async fn forwarded_with_bypass(
    guard: &UpgradeGuardLayer,
    request: Request<Full<Bytes>>,
) -> (Bypass, Seen) {
    let inner = Recorder::default();
    let answer = send(guard, &inner, request).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(inner.calls(), 1, "forwarded");
    let seen = inner.seen().remove(0);
    let bypass = seen
        .bypass
        .clone()
        .expect("the handler can tell the request was not checked");
    assert_eq!(
        answer.headers[BYPASS_HEADER],
        format!("{}; error={}", bypass.mode(), bypass.code())
    );
    assert!(seen.checked.is_none(), "nothing was checked");
    (bypass, seen)
}

#[tokio::test]
async fn fail_open_forwards_only_when_the_upstream_cannot_answer() {
    let fake = fake().await;
    // The recorder provisions nothing: a provision forwarded fail-open is remembered like any
    // other, and the next one of the same product would be `already_provisioned`.
    let guard = recording_guard(client(&fake)).mode(Mode::FailOpen);

    for fault in [
        Fault::status(503),
        Fault::DropConnection,
        Fault::status_with_body(200, r#"["personal"]"#),
        Fault::status(401),
    ] {
        fake.inject(Endpoint::UpgradePaths, fault).once();
        let (bypass, _) = forwarded_with_bypass(&guard, form("siteurl=1003&plan=personal")).await;
        assert_eq!(bypass.mode(), Mode::FailOpen);
        assert!(
            ["upgrade_paths_unavailable", "upstream_unauthorized"].contains(&bypass.code()),
            "{bypass:?}"
        );
        assert_eq!(bypass.site().unwrap().as_str(), "1003");
        assert_eq!(bypass.product(), Some("personal"));
    }

    // WordPress.com answered "not an upgrade": never forwarded.
    let inner = Recorder::default();
    let answer = send(&guard, &inner, form("siteurl=1003&plan=personal")).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    // Unknown site and unreadable requests are answers too.
    let answer = send(&guard, &inner, form("siteurl=999&plan=personal")).await;
    assert_eq!(answer.error(), "unknown_site");
    let answer = send(&guard, &inner, form("plan=personal")).await;
    assert_eq!(answer.error(), "missing_site");
    assert_eq!(inner.calls(), 0);
    assert!(answer.headers.get(BYPASS_HEADER).is_none());
}

#[tokio::test]
async fn shadow_never_rejects_and_marks_what_it_would_have_stopped() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake))
        .mode(Mode::Shadow)
        .body_limit(256);

    let (bypass, seen) =
        forwarded_with_bypass(&guard, form("siteurl=1003&plan=jetpack-backup-realtime")).await;
    assert_eq!(
        (bypass.status(), bypass.code()),
        (StatusCode::CONFLICT, "upgrade_not_allowed")
    );
    assert_eq!(&seen.body[..], b"siteurl=1003&plan=jetpack-backup-realtime");

    let (bypass, _) = forwarded_with_bypass(&guard, form("plan=personal")).await;
    assert_eq!(bypass.code(), "missing_site");
    assert_eq!(bypass.site(), None);

    let (bypass, seen) = forwarded_with_bypass(&guard, json("{not json")).await;
    assert_eq!(bypass.code(), "invalid_body");
    assert_eq!(&seen.body[..], b"{not json");

    // PHP reads no fields from other multipart types: the guard refuses them (415).
    let text = Request::post("/provision")
        .header("content-type", "multipart/mixed; boundary=b")
        .body(Full::from("hello"))
        .unwrap();
    let (bypass, seen) = forwarded_with_bypass(&guard, text).await;
    assert_eq!(bypass.code(), "unsupported_media_type");
    assert_eq!(&seen.body[..], b"hello");

    // Over the limit by its declared length: passed on unread.
    let big = "x".repeat(1000);
    let declared = Request::post("/provision")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", big.len())
        .body(Full::from(big.clone()))
        .unwrap();
    let (bypass, seen) = forwarded_with_bypass(&guard, declared).await;
    assert_eq!(bypass.code(), "body_too_large");
    assert_eq!(seen.body, big.as_bytes());

    fake.inject(Endpoint::UpgradePaths, Fault::status(500))
        .once();
    let (bypass, _) = forwarded_with_bypass(&guard, form("siteurl=1001&plan=personal")).await;
    assert_eq!(bypass.code(), "upgrade_paths_unavailable");

    // An upgrade is forwarded as in any mode: checked, no marker.
    let inner = Recorder::default();
    let answer = send(&guard, &inner, form("siteurl=1002&plan=professional")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers.get(BYPASS_HEADER).is_none());
    assert!(inner.seen()[0].checked.is_some() && inner.seen()[0].bypass.is_none());
}

#[tokio::test]
async fn shadow_forwards_a_streamed_body_over_the_limit_byte_for_byte() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake))
        .mode(Mode::Shadow)
        .body_limit(100);
    let body: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = body
        .chunks(33)
        .map(|chunk| Ok(http_body::Frame::data(Bytes::copy_from_slice(chunk))))
        .collect();
    let request = Request::post("/provision")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let inner = Recorder::default();
    let answer = send(&guard, &inner, request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.headers[BYPASS_HEADER],
        "shadow; error=body_too_large"
    );
    assert_eq!(inner.seen()[0].body, body);
}

/// Outcome, error code and site of one report.
type Reported = (Outcome, Option<&'static str>, Option<String>);

#[tokio::test]
async fn every_decision_reaches_the_callback() {
    let fake = fake().await;
    let seen: Arc<Mutex<Vec<Reported>>> = Arc::default();
    let record = seen.clone();
    let guard = UpgradeGuardLayer::new(client(&fake)).on_decision(move |report| {
        record.lock().unwrap().push((
            report.outcome,
            report.rejection.map(|r| r.code()),
            report.site.map(|s| s.to_string()),
        ));
    });
    let inner = Recorder::default();

    send(&guard, &inner, form("siteurl=1002&plan=professional")).await;
    send(&guard, &inner, form("siteurl=1003&plan=personal")).await;
    send(&guard, &inner, form("plan=personal")).await;
    fake.inject(Endpoint::UpgradePaths, Fault::status(503))
        .once();
    send(&guard, &inner, form("siteurl=1001&plan=personal")).await;
    let shadow = guard.clone().mode(Mode::Shadow);
    send(&shadow, &inner, form("siteurl=1003&plan=personal")).await;

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            (Outcome::Allowed, None, Some("1002".into())),
            (
                Outcome::Rejected,
                Some("upgrade_not_allowed"),
                Some("1003".into())
            ),
            (Outcome::Rejected, Some("missing_site"), None),
            (
                Outcome::Rejected,
                Some("upgrade_paths_unavailable"),
                Some("1001".into())
            ),
            (
                Outcome::Shadowed,
                Some("upgrade_not_allowed"),
                Some("1003".into())
            ),
        ]
    );
}
