//! Review A (attacker): request paths the proxy passes through unguarded that WordPress.com
//! serves as a provision or a partner-cancel.
//!
//! `WPCOM_JSON_API::setup_inputs()` (Automattic/jetpack `class.json-api.php`) does not read the
//! raw request target: it builds `esc_url_raw(set_url_scheme('http://' . HTTP_HOST .
//! REQUEST_URI))` and routes on that URL's path (and parses that URL's query). WordPress core's
//! `esc_url()` *removes* every character outside `a-z0-9-~+_.?#=!&;,/:%@$|*'()[]` and bytes
//! 0x80-0xff, and then removes `%0a`, `%0A`, `%0d`, `%0D` until none is left (`_deep_replace`).
//! hyper (http 1.5) accepts `"`, `{`, `}` and `^` in a path, the proxy's `PlainPath` takes them
//! as plain printable ASCII, and `could_name` never looks at a spelling that only becomes the
//! name once `%0a` is cut out of `%0%0aa`.
//!
//! The PHP oracle for the routing is `tests/php/review_a_route.php` (`php -n -S`).

mod common;

use common::{multipart, send_raw};
use http::{Method, Request};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use upgrade_guard::fake::FakeUpstream;
use upgrade_guard_proxy::routes::{Route, route};

/// The spellings: each is `/rest/v1.3/jpphp/provision` (or a partner route) to WordPress.com.
const SPELLINGS: [(&str, &str); 9] = [
    ("/rest/v1.3/jpphp/provi\"sion", "/rest/v1.3/jpphp/provision"),
    ("/rest/v1.3/jpphp/provi{sion", "/rest/v1.3/jpphp/provision"),
    ("/rest/v1.3/jpphp/provi}sion", "/rest/v1.3/jpphp/provision"),
    ("/rest/v1.3/jpphp/provi^sion", "/rest/v1.3/jpphp/provision"),
    ("/re\"st/v1.3/jp^php/provision", "/rest/v1.3/jpphp/provision"),
    ("/rest/v1.3/jpphp/provi%0%0aasion", "/rest/v1.3/jpphp/provision"),
    ("/rest/v1.3/jpphp/provi%0%0D%0Aasion", "/rest/v1.3/jpphp/provision"),
    (
        "/rest/v1.3/jpphp/1003/partner-provi{}sion",
        "/rest/v1.3/jpphp/1003/partner-provision",
    ),
    (
        "/rest/v1.3/jpphp/1003/partner-can\"cel",
        "/rest/v1.3/jpphp/1003/partner-cancel",
    ),
];

/// WordPress core's `esc_url_raw()` on a path and query, as far as it changes one: characters
/// outside its set removed, then `%0a`/`%0A`/`%0d`/`%0D` removed until none is left.
fn wpcom_reading(target: &str) -> String {
    let kept: String = target
        .chars()
        .filter(|&c| {
            c.is_ascii_alphanumeric() || "-~+_.?#=!&;,/:%@$|*'()[]".contains(c) || !c.is_ascii()
        })
        .collect();
    let mut text = kept;
    loop {
        let next = ["%0d", "%0a", "%0D", "%0A"]
            .iter()
            .fold(text.clone(), |t, needle| t.replace(needle, ""));
        if next == text {
            return text;
        }
        text = next;
    }
}

#[test]
fn wpcom_reads_each_spelling_as_a_guarded_endpoint() {
    for (sent, wpcom) in SPELLINGS {
        assert_eq!(wpcom_reading(sent), wpcom, "{sent}");
    }
}

#[test]
fn the_proxy_guards_or_refuses_every_spelling_wpcom_serves_as_a_guarded_endpoint() {
    let mut passed = Vec::new();
    for (sent, _) in SPELLINGS {
        let taken = route(&Method::POST, sent);
        if taken == Route::Passthrough {
            passed.push(sent);
        }
    }
    assert!(
        passed.is_empty(),
        "passed through unguarded, yet a provision or cancel at WordPress.com: {passed:#?}"
    );
}

/// What stands for WordPress.com's own reading of the request target: relays each request to
/// `upstream` with its path and query read as `esc_url_raw()` reads them.
async fn wpcom_path_reading(upstream: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let upstream = upstream.trim_end_matches('/').to_owned();
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (client, upstream) = (client.clone(), upstream.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (client, upstream) = (client.clone(), upstream.clone());
                    async move {
                        let (mut parts, body) = request.into_parts();
                        let target = parts
                            .uri
                            .path_and_query()
                            .map(|p| p.as_str().to_owned())
                            .unwrap_or_default();
                        parts.uri = format!("{upstream}{}", wpcom_reading(&target))
                            .parse()
                            .unwrap();
                        parts.headers.remove("host");
                        let response = client
                            .request(Request::from_parts(parts, body))
                            .await
                            .expect("the fake answers");
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_downgrade_spelled_with_a_quote_in_the_path_reaches_wordpress_com_unchecked() {
    // proxy -> (WordPress.com's reading of the target) -> the fake WordPress.com.
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let wpcom = wpcom_path_reading(fake.url()).await;
    let proxy = upgrade_guard_proxy::start(common::config(
        &format!("http://{wpcom}"),
        &["--token", &fake.token()],
    ))
    .await
    .expect("the proxy starts");
    let bearer = format!("Bearer {}", fake.token());
    // Realtime Backups on the site holding Professional: a downgrade.
    let (content_type, form) = multipart(&[
        ("siteurl", "https://professional.example.com/"),
        ("local_user", "admin"),
        ("plan", "jetpack-backup-realtime"),
    ]);
    // Spelled plainly, the guard refuses it.
    let (status, answer) = send_raw(
        proxy.addr(),
        "POST",
        "/rest/v1.3/jpphp/provision",
        &[("authorization", &bearer), ("content-type", &content_type)],
        &form,
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    let mut outcomes = Vec::new();
    for path in [
        "/rest/v1.3/jpphp/provi\"sion",
        "/rest/v1.3/jpphp/provi%0%0aasion",
    ] {
        let (status, answer) = send_raw(
            proxy.addr(),
            "POST",
            path,
            &[("authorization", &bearer), ("content-type", &content_type)],
            &form,
        )
        .await;
        outcomes.push(format!("{path}: {status} {answer}"));
    }
    let stats = fake.stats();
    proxy.shutdown().await;
    assert_eq!(
        (stats.provisions, stats.leaks),
        (0, 0),
        "downgrades reached the provision call: {outcomes:#?}"
    );
}
