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
    let guard = recording_guard(client(&fake));
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
    let guard = recording_guard(client(&fake));
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
    let guard = recording_guard(client(&fake));
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
    let guard = recording_guard(client(&fake))
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
    let guard = recording_guard(client(&fake))
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
    let guard = recording_guard(client(&fake))
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
    let guard = recording_guard(client(&fake));
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
    let guard = recording_guard(client(&fake))
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
    let guard = recording_guard(client(&fake));
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

/// The reader alone, on the provision form's sources: the site and the product, or the
/// rejection's code and message.
async fn read(request: Request<Full<Bytes>>) -> Result<(String, Option<String>), (String, String)> {
    let (_, named) = upgrade_guard::fake::read_request(
        Source::field("siteurl"),
        Source::field("plan"),
        64 * 1024,
        request,
    )
    .await;
    named
        .map(|(site, product)| (site.to_string(), product))
        .map_err(|rejection| (rejection.code().to_owned(), rejection.to_string()))
}

fn typed(content_type: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post("/provision")
        .header("content-type", content_type)
        .body(Full::from(body))
        .unwrap()
}

#[tokio::test]
async fn no_product_is_read_where_wordpress_com_reads_none() {
    // What a new user sent: `null` and an empty body are "no product", not a malformed body.
    for request in [
        json(r#"{"siteurl": "1001", "plan": null}"#),
        json(r#"{"siteurl": "1001", "plan": ""}"#),
        json(r#"{"siteurl": "1001"}"#),
        form("siteurl=1001&plan="),
        Request::post("/provision?siteurl=1001")
            .header("content-type", "application/json")
            .body(Full::default())
            .unwrap(),
        typed("application/json", "{}").map(|_| Full::from("{}")),
    ] {
        let uri = request.uri().clone();
        match read(request).await {
            Ok((site, product)) => {
                assert_eq!(site, "1001");
                assert_eq!(product, None, "{uri}");
            }
            Err((code, _)) => assert_eq!(code, "missing_site", "{uri}"),
        }
    }
    // A `null` after a product is PHP's last value: no product, and two values: refused.
    let (code, _) = read(json(r#"{"siteurl":"1001","plan":"premium","plan":null}"#))
        .await
        .unwrap_err();
    assert_eq!(code, "invalid_body");
}

#[tokio::test]
async fn a_product_with_white_space_around_it_is_refused_by_name() {
    for body in [
        "siteurl=1001&plan=%20premium",
        "siteurl=1001&plan=premium+",
        "siteurl=1001&plan=premium%0A",
    ] {
        let (code, message) = read(form(body)).await.unwrap_err();
        assert_eq!(code, "invalid_body", "{body}");
        assert!(message.contains("field `plan`"), "{message}");
        assert!(message.contains("white space"), "{message}");
    }
    // The body itself is trimmed by WordPress.com: a trailing newline is not part of the value.
    assert_eq!(
        read(form("siteurl=1001&plan=premium\n")).await,
        Ok(("1001".into(), Some("premium".into())))
    );
}

#[tokio::test]
async fn the_query_string_of_a_form_route_is_read_too() {
    let with_query = |uri: &str, body: &'static str| {
        Request::post(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::from(body))
            .unwrap()
    };
    assert_eq!(
        read(with_query("/provision?plan=professional", "siteurl=1001")).await,
        Ok(("1001".into(), Some("professional".into())))
    );
    assert_eq!(
        read(with_query(
            "/provision?plan=professional",
            "siteurl=1001&plan=professional"
        ))
        .await,
        Ok(("1001".into(), Some("professional".into())))
    );
    let (code, message) = read(with_query(
        "/provision?plan=professional",
        "siteurl=1001&plan=jetpack-scan",
    ))
    .await
    .unwrap_err();
    assert_eq!(code, "invalid_body");
    assert!(message.contains("query string"), "{message}");
    // `force=secure` makes WordPress.com read another body.
    let (code, _) = read(with_query(
        "/provision?force=secure",
        "siteurl=1001&plan=professional",
    ))
    .await
    .unwrap_err();
    assert_eq!(code, "invalid_body");
}

#[tokio::test]
async fn an_encoded_body_is_415_never_no_product() {
    for encoding in ["gzip", "br", "deflate", "identity, gzip"] {
        let request = Request::post("/provision")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-encoding", encoding)
            .body(Full::from("siteurl=1001"))
            .unwrap();
        let (code, _) = read(request).await.unwrap_err();
        assert_eq!(code, "unsupported_media_type", "{encoding}");
    }
}

#[tokio::test]
async fn bodies_are_read_by_content_type_as_wordpress_com_reads_them() {
    // The issue's example: urlencoded, but JSON first.
    let example = r#"{"plan":"jetpack-backup-realtime","siteurl":"https://professional.example.com/","x":"&plan=professional&siteurl=https://realtime.example.com/&local_user=admin&z="}"#;
    assert_eq!(
        read(typed("application/x-www-form-urlencoded", example)).await,
        Ok((
            "professional.example.com".into(),
            Some("jetpack-backup-realtime".into())
        ))
    );
    // Another type: `parse_str` for WordPress.com too, which finds the form hidden in the JSON.
    assert_eq!(
        read(typed("text/plain", example)).await,
        Ok(("realtime.example.com".into(), Some("professional".into())))
    );
    assert_eq!(
        read(typed("text/plain", "siteurl=1001&plan=professional")).await,
        Ok(("1001".into(), Some("professional".into())))
    );
    // No type: JSON when the body starts with `{`, else a form.
    let untyped = |body: &'static str| Request::post("/provision").body(Full::from(body)).unwrap();
    assert_eq!(
        read(untyped(r#"{"siteurl":"1001","plan":"professional"}"#)).await,
        Ok(("1001".into(), Some("professional".into())))
    );
    assert_eq!(
        read(untyped("siteurl=1001&plan=professional")).await,
        Ok(("1001".into(), Some("professional".into())))
    );
    // JSON types are matched exactly by WordPress.com: another spelling would be a form there.
    let (code, _) = read(typed("Application/JSON", r#"{"siteurl":"1001"}"#))
        .await
        .unwrap_err();
    assert_eq!(code, "unsupported_media_type");
    // A multipart part after the closing boundary is read by PHP: refused.
    let epilogue = "--b\r\nContent-Disposition: form-data; name=\"siteurl\"\r\n\r\n1001\r\n--b--\r\n\
                    --b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\njetpack-scan\r\n--b--\r\n";
    let (code, _) = read(typed("multipart/form-data; boundary=b", epilogue))
        .await
        .unwrap_err();
    assert_eq!(code, "invalid_body");
}

#[tokio::test]
async fn siteurl_zero_gets_a_message_that_makes_sense() {
    let (code, message) = read(form("siteurl=0&plan=professional")).await.unwrap_err();
    assert_eq!(code, "invalid_site");
    assert!(message.contains("blog ID"), "{message}");
    assert!(!message.contains("domain name"), "{message}");
}

/// Issue 11's body: a form hidden in a JSON string. WordPress.com reads the JSON (Realtime Backups
/// for a site holding Professional: a downgrade), so the guard must too, and refuses it.
#[tokio::test]
async fn json_sent_as_a_form_is_checked_as_the_json_wordpress_com_reads() {
    let fake = fake().await;
    let guard = recording_guard(client(&fake));
    let body = r#"{"plan":"jetpack-backup-realtime","siteurl":"https://professional.example.com/","x":"&plan=professional&siteurl=https://realtime.example.com/&local_user=admin&z="}"#;
    let request = Request::post("/rest/v1.3/jpphp/provision")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from(body))
        .unwrap();
    let inner = Recorder::default();
    let answer = send(&guard, &inner, request).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{:?}", answer.body);
    assert_eq!(answer.json()["site"], "professional.example.com");
    assert_eq!(answer.json()["product"], "jetpack-backup-realtime");
    assert_eq!(inner.calls(), 0);
}
