//! Each way of naming the site and the product, and bodies reaching the inner service byte for
//! byte.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{Full, StreamBody};
use upgrade_guard::{Source, UpgradeGuardLayer};

/// Asserts `request` is forwarded with its body intact, and `refusal` is 409.
async fn forwarded(guard: &UpgradeGuardLayer, request: Request<Full<Bytes>>) -> Seen {
    let inner = Recorder::default();
    let sent = http_body_util::BodyExt::collect(request.body().clone())
        .await
        .unwrap()
        .to_bytes();
    let answer = send(guard, &inner, request).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(inner.calls(), 1);
    let seen = inner.seen().remove(0);
    assert_eq!(
        seen.body, sent,
        "the inner service gets the bytes that were sent"
    );
    seen
}

async fn not_an_upgrade(guard: &UpgradeGuardLayer, request: Request<Full<Bytes>>) {
    let inner = Recorder::default();
    let answer = send(guard, &inner, request).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{:?}", answer.body);
    assert_eq!(answer.error(), "upgrade_not_allowed");
    assert_eq!(inner.calls(), 0);
}

#[tokio::test]
async fn urlencoded_form() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    forwarded(
        &guard,
        form("local_user=admin&siteurl=https%3A%2F%2Frealtime.example.com&plan=professional"),
    )
    .await;
    not_an_upgrade(
        &guard,
        form("siteurl=professional.example.com&plan=jetpack-backup-realtime"),
    )
    .await;
}

#[tokio::test]
async fn multipart_form_with_every_content_type_spelling() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    let fields: &[(&str, &[u8])] = &[
        ("siteurl", b"https://realtime.example.com/"),
        ("plan", b"professional"),
        ("local_user", b"admin"),
    ];
    for content_type in [
        "multipart/form-data; boundary=------------------------abc123",
        // What curl sends when partner tooling sets `Content-Type: multipart/form-data;` by hand.
        "multipart/form-data;; boundary=------------------------abc123",
        "multipart/form-data;boundary=\"------------------------abc123\"",
    ] {
        forwarded(
            &guard,
            multipart(content_type, "------------------------abc123", fields),
        )
        .await;
    }
    not_an_upgrade(
        &guard,
        multipart(
            "multipart/form-data;; boundary=b",
            "b",
            &[("siteurl", b"1003"), ("plan", b"jetpack-backup-realtime")],
        ),
    )
    .await;
}

#[tokio::test]
async fn multipart_with_a_binary_file_part_arrives_byte_for_byte() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    let key: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let mut body = Vec::new();
    body.extend_from_slice(
        b"--XyZ\r\nContent-Disposition: form-data; name=\"siteurl\"\r\n\r\n1001\r\n",
    );
    body.extend_from_slice(
        b"--XyZ\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\njetpack-scan\r\n",
    );
    body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"ssh_private_key\"; filename=\"id_rsa\"\r\nContent-Type: application/octet-stream\r\n\r\n");
    body.extend_from_slice(&key);
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    let request = Request::post("/provision")
        .header("content-type", "multipart/form-data;; boundary=XyZ")
        .body(Full::from(body.clone()))
        .unwrap();
    let seen = forwarded(&guard, request).await;
    assert_eq!(seen.body, body);
    assert_eq!(
        seen.headers["content-type"],
        "multipart/form-data;; boundary=XyZ"
    );
}

#[tokio::test]
async fn json_object_with_a_numeric_blog_id() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake))
        .site(Source::field("blog_id"))
        .product(Source::field("product"));
    forwarded(
        &guard,
        json(r#"{"blog_id": 1002, "product": "professional", "extra": {"a": [1, 2]}}"#),
    )
    .await;
    not_an_upgrade(
        &guard,
        json(r#"{"blog_id": "1003", "product": "personal"}"#),
    )
    .await;
}

#[tokio::test]
async fn path_parameters() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake))
        .site(Source::path("/sites/{site}/plans/{plan}", "site"))
        .product(Source::path("/sites/{site}/plans/{plan}", "plan"));
    let post = |uri: &str| Request::post(uri).body(Full::default()).unwrap();
    forwarded(&guard, post("/sites/1002/plans/professional")).await;
    forwarded(
        &guard,
        post("/sites/realtime.example.com/plans/professional"),
    )
    .await;
    not_an_upgrade(&guard, post("/sites/1003/plans/jetpack-backup-daily")).await;
    // A path that does not match the template names no site.
    let inner = Recorder::default();
    let answer = send(&guard, &inner, post("/other/1002/plans/professional")).await;
    assert_eq!(answer.error(), "missing_site");
}

#[tokio::test]
async fn query_parameters_leave_the_body_unread() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake))
        .site(Source::query("site"))
        .product(Source::query("plan"));
    // The body is not a form at all: the route never reads it, and passes it on as it is.
    let request = Request::post("/provision?site=1002&plan=professional")
        .header("content-type", "application/octet-stream")
        .body(Full::from(vec![0u8, 159, 146, 150]))
        .unwrap();
    let seen = forwarded(&guard, request).await;
    assert_eq!(seen.uri.query(), Some("site=1002&plan=professional"));
    not_an_upgrade(
        &guard,
        Request::post("/p?site=1003&plan=premium")
            .body(Full::default())
            .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn a_site_url_with_a_path() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    // https://example.com/blog/ is `example.com::blog` upstream; it holds Professional.
    not_an_upgrade(
        &guard,
        form("siteurl=https%3A%2F%2Fexample.com%2Fblog%2F&plan=personal"),
    )
    .await;
    not_an_upgrade(&guard, form("siteurl=example.com::blog&plan=personal")).await;
    let inner = Recorder::default();
    let answer = send(
        &guard,
        &inner,
        form("siteurl=https://example.com/blog/&plan=personal"),
    )
    .await;
    assert_eq!(answer.json()["site"], "example.com::blog");
}

#[tokio::test]
async fn closures_and_fallbacks() {
    let fake = fake().await;
    let site = Source::from_fn(|parts| {
        parts
            .headers
            .get("x-blog-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let guard = UpgradeGuardLayer::new(client(&fake))
        .site(site.or(Source::field("siteurl")))
        .product(Source::query("plan").or(Source::field("plan")));
    let with_header = Request::post("/provision?plan=professional")
        .header("x-blog-id", "1002")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from("local_user=admin"))
        .unwrap();
    forwarded(&guard, with_header).await;
    not_an_upgrade(&guard, form("siteurl=1003&plan=professional")).await;
    // The same value in both places is one value.
    let agreeing = Request::post("/provision?plan=professional")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from("siteurl=1002&plan=professional"))
        .unwrap();
    forwarded(&guard, agreeing).await;
    // Two different values: the guard would check one while the handler provisions the other.
    for (uri, header, body) in [
        (
            "/provision?plan=professional",
            None,
            "siteurl=1002&plan=jetpack-backup-daily",
        ),
        ("/provision?plan=professional", Some("1002"), "siteurl=1003"),
    ] {
        let mut request =
            Request::post(uri).header("content-type", "application/x-www-form-urlencoded");
        if let Some(blog) = header {
            request = request.header("x-blog-id", blog);
        }
        let inner = Recorder::default();
        let answer = send(&guard, &inner, request.body(Full::from(body)).unwrap()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{uri} {body}");
        assert_eq!(answer.error(), "invalid_body");
        assert_eq!(inner.calls(), 0);
    }
}

#[tokio::test]
async fn a_streamed_chunked_body_arrives_byte_for_byte() {
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    let body = format!(
        "siteurl=1001&plan=jetpack-anti-spam&local_user=admin&note={}",
        "n".repeat(5000)
    );
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = body
        .as_bytes()
        .chunks(7)
        .map(|chunk| Ok(http_body::Frame::data(Bytes::copy_from_slice(chunk))))
        .collect();
    let request = Request::post("/provision")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("transfer-encoding", "chunked")
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    let inner = Recorder::default();
    let answer = send(&guard, &inner, request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(inner.seen()[0].body, body.as_bytes());
}
