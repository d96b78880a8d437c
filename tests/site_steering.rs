//! Site identifiers that try to steer the upstream URL are refused before any upstream request.

mod common;

use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use upgrade_guard::{Source, UpgradeGuardLayer};

const STEERING: &[&str] = &[
    "../../oauth2/token",
    "example.com/../../oauth2",
    "example.com/%2e%2e/admin",
    "example.com%2F..%2Fadmin",
    "example.com/a%2Fb",
    "example.com?redirect=evil",
    "example.com#x",
    "example.com/?x",
    "example.com:8443",
    "https://user:pass@example.com/",
    "https://evil.example@example.com",
    "127.0.0.1",
    "http://127.0.0.1/",
    "[::1]",
    "http://[::1]:80/",
    "file:///etc/passwd",
    "example.com\\..\\admin",
    "exa mple.com",
    "example.com/a b",
    "example.com/\u{0}",
    "example.com::..::admin",
    "0777",
];

#[tokio::test]
async fn steering_through_a_form_field_is_400_and_the_fake_sees_nothing() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    for site in STEERING {
        let body = serde_urlencoded::to_string([("siteurl", *site), ("plan", "personal")]).unwrap();
        let inner = Recorder::default();
        let answer = send(&guard, &inner, form(&body)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{site:?}");
        assert_eq!(answer.error(), "invalid_site", "{site:?}");
        assert_eq!(inner.calls(), 0);
    }
    assert_eq!(fake.stats().requests, 0, "no request reached the upstream");
}

#[tokio::test]
async fn steering_through_the_path_is_400_and_the_fake_sees_nothing() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake))
        .site(Source::path("/sites/{site}/plans", "site"))
        .product(Source::query("plan"));
    for site in [
        "..",
        "%2e%2e",
        "example.com%2F..",
        "example.com%3A8080",
        "a%40example.com",
        "127.0.0.1",
        "%5B%3A%3A1%5D",
    ] {
        let request = Request::post(format!("/sites/{site}/plans?plan=personal"))
            .body(Full::default())
            .unwrap();
        let inner = Recorder::default();
        let answer = send(&guard, &inner, request).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{site:?}");
        assert_eq!(answer.error(), "invalid_site", "{site:?}");
        assert_eq!(inner.calls(), 0);
    }
    assert_eq!(fake.stats().requests, 0);
}
