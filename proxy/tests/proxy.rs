//! The proxy in front of the fake WordPress.com, over HTTPS with a test certificate: the partner
//! tooling's own calls, passthrough byte for byte, the proxy's own errors, the admin listener,
//! graceful shutdown, and the caller's own token.

mod common;

use bytes::Bytes;
use common::{Answer, TestCert, echo_upstream, full, http_client, multipart, send, start_https};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::time::Duration;
use upgrade_guard::fake::{Endpoint, FakeSite, FakeUpstream, Fault};

/// What the partner tooling sends for a provision: the multipart form, with its token.
fn provision(
    proxy: &str,
    token: &str,
    siteurl: &str,
    plan: Option<&str>,
) -> Request<common::TestBody> {
    let mut fields = vec![("siteurl", siteurl), ("local_user", "admin")];
    if let Some(plan) = plan {
        fields.push(("plan", plan));
    }
    let (content_type, body) = multipart(&fields);
    Request::post(format!("{proxy}/rest/v1.3/jpphp/provision"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .body(full(body))
        .unwrap()
}

/// The token the tooling fetches first, through the proxy.
async fn fetch_token(client: &common::HttpsClient, proxy: &str, fake: &FakeUpstream) -> String {
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}&scope=jetpack-partner",
        fake.client_id(),
        fake.client_secret()
    );
    let answer = send(
        client,
        Request::post(format!("{proxy}/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(full(form))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

#[tokio::test]
async fn partner_tooling_provisions_upgrades_and_is_refused_downgrades() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let cert = TestCert::new();
    let proxy = start_https(fake.url(), &cert, &["--token", &fake.token()]).await;
    let (client, url) = (cert.client(), proxy.url());
    assert!(url.starts_with("https://"));

    let token = fetch_token(&client, &url, &fake).await;
    assert_eq!(fake.stats().token_requests, 1);

    // An upgrade: Realtime Backups to Professional.
    let upgrade = send(
        &client,
        provision(
            &url,
            &token,
            "https://realtime.example.com/",
            Some("professional"),
        ),
    )
    .await;
    assert_eq!(upgrade.status, 200, "{}", upgrade.text());
    assert_eq!(upgrade.json()["success"], true);
    assert_eq!(
        fake.held_products("realtime.example.com").unwrap(),
        ["professional"]
    );

    // A downgrade: Realtime Backups over Professional, refused before WordPress.com.
    let provisions = fake.stats().provisions;
    let downgrade = send(
        &client,
        provision(
            &url,
            &token,
            "https://professional.example.com/",
            Some("jetpack-backup-realtime"),
        ),
    )
    .await;
    assert_eq!(downgrade.status, StatusCode::CONFLICT);
    assert_eq!(downgrade.headers["content-type"], "application/json");
    assert!(
        downgrade
            .text()
            .contains(r#""error":"upgrade_not_allowed""#),
        "{}",
        downgrade.text()
    );
    assert_eq!(
        fake.stats().provisions,
        provisions,
        "the downgrade was forwarded"
    );

    // Another spelling of the provision path is still a provision, and still guarded.
    let (content_type, body) = multipart(&[
        ("siteurl", "https://professional.example.com/"),
        ("plan", "personal"),
    ]);
    let variant = send(
        &client,
        Request::post(format!("{url}/rest/v1.3/jpphp/Provision/"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", content_type)
            .body(full(body))
            .unwrap(),
    )
    .await;
    assert_eq!(variant.status, StatusCode::CONFLICT, "{}", variant.text());

    // The site just upgraded may not go back down either: the guard saw the provision.
    let back_down = send(
        &client,
        provision(
            &url,
            &token,
            "https://realtime.example.com/",
            Some("jetpack-backup-realtime"),
        ),
    )
    .await;
    assert_eq!(
        back_down.status,
        StatusCode::CONFLICT,
        "{}",
        back_down.text()
    );
    assert_eq!(fake.stats().leaks, 0);

    // The upstream's own refusals pass through as WordPress.com gave them.
    let refused = send(
        &client,
        provision(
            &url,
            "not-the-token",
            "https://free.example.com/",
            Some("personal"),
        ),
    )
    .await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        refused.text()
    );
    assert!(refused.text().contains(r#""error":""#));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_new_site_and_a_connection_request_pass() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let cert = TestCert::new();
    let proxy = start_https(fake.url(), &cert, &["--token", &fake.token()]).await;
    let (client, url) = (cert.client(), proxy.url());
    let token = fetch_token(&client, &url, &fake).await;

    let new_site = send(
        &client,
        provision(
            &url,
            &token,
            "https://brand-new.example.com/",
            Some("jetpack-scan"),
        ),
    )
    .await;
    assert_eq!(new_site.status, 200, "{}", new_site.text());
    assert_eq!(
        fake.held_products("brand-new.example.com").unwrap(),
        ["jetpack-scan"]
    );

    let connect = send(
        &client,
        provision(&url, &token, "https://free.example.com/", None),
    )
    .await;
    assert_eq!(connect.status, 200, "{}", connect.text());
    assert_eq!(fake.stats().leaks, 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_cancel_drops_the_sites_cached_paths() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let cert = TestCert::new();
    let proxy = start_https(fake.url(), &cert, &["--token", &fake.token()]).await;
    let (client, url, token) = (cert.client(), proxy.url(), fake.token());

    // Refused, and the site's (empty) paths cached.
    let site = "https://professional.example.com/";
    let refused = send(
        &client,
        provision(&url, &token, site, Some("jetpack-backup-realtime")),
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text());

    let cancel = send(
        &client,
        Request::post(format!(
            "{url}/rest/v1.3/jpphp/professional.example.com/partner-cancel"
        ))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(full("plan=professional"))
        .unwrap(),
    )
    .await;
    assert_eq!(cancel.status, 200, "{}", cancel.text());

    // The same product is an upgrade now, at once, not after --cache-ttl.
    let allowed = send(
        &client,
        provision(&url, &token, site, Some("jetpack-backup-realtime")),
    )
    .await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(fake.stats().leaks, 0);
    proxy.shutdown().await;
}

/// Deterministic bytes that are not all alike, so a reordering or a lost chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
}

#[tokio::test]
async fn other_paths_pass_through_byte_for_byte() {
    let upstream = echo_upstream().await;
    let cert = TestCert::new();
    let proxy = start_https(&format!("http://{upstream}"), &cert, &["--token", "t"]).await;
    let (client, url) = (cert.client(), proxy.url());

    // Several MiB with a Content-Length, a query string kept exactly as sent.
    let body = pattern(5 * 1024 * 1024 + 7);
    let query =
        "/rest/v1.4/jpphp/1002/backups?after=2026-01-01T00%3A00%3A00Z&page=2&empty=&x=%2F..%2F";
    let answer = send(
        &client,
        Request::put(format!("{url}{query}"))
            .header("authorization", "Bearer caller-token")
            .header("x-partner-trace", "abc")
            .header("connection", "x-hop-secret")
            .header("x-hop-secret", "for the proxy only")
            .header("keep-alive", "timeout=5")
            // curl's habit with large uploads; the proxy answers it, the upstream never sees it.
            .header("expect", "100-continue")
            .body(full(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-echo-method"], "PUT");
    assert_eq!(answer.headers["x-echo-uri"], query);
    assert_eq!(answer.headers["x-echo-host"], upstream.to_string());
    let seen = answer.headers["x-echo-headers"].to_str().unwrap();
    for kept in ["authorization", "x-partner-trace", "content-length"] {
        assert!(
            seen.split(',').any(|h| h == kept),
            "{kept} not forwarded: {seen}"
        );
    }
    for dropped in ["x-hop-secret", "keep-alive", "expect"] {
        assert!(
            !seen.split(',').any(|h| h == dropped),
            "{dropped} forwarded: {seen}"
        );
    }
    assert!(
        !answer.headers.contains_key("x-upstream-hop"),
        "upstream hop-by-hop header relayed"
    );
    assert_eq!(answer.body.len(), body.len());
    assert!(answer.body == body, "the body changed on the way");

    // Chunked, in uneven pieces, streamed both ways (the echo streams it back as it comes).
    let pieces: Vec<Vec<u8>> = pattern(3 * 1024 * 1024)
        .chunks(65_521)
        .map(<[u8]>::to_vec)
        .collect();
    let expected: Vec<u8> = pieces.concat();
    let stream = futures_stream(pieces);
    let answer = send(
        &client,
        Request::post(format!("{url}/rest/v1.3/jpphp/1002/anything?chunked=1"))
            .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["x-echo-transfer-encoding"], "chunked");
    assert!(
        answer.body == expected,
        "the chunked body changed on the way"
    );

    // A GET of the provision path is not a provision: passed through, unguarded.
    let get = send(
        &client,
        Request::get(format!("{url}/rest/v1.3/jpphp/provision?siteurl=x"))
            .body(full(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(get.status, 200);
    assert_eq!(get.headers["x-echo-method"], "GET");
    proxy.shutdown().await;
}

/// A request body as a stream of data frames.
fn futures_stream(
    pieces: Vec<Vec<u8>>,
) -> impl futures_core::Stream<Item = Result<Frame<Bytes>, common::BoxError>> + Send {
    let mut pieces = pieces.into_iter();
    futures_util::stream::poll_fn(move |_| {
        std::task::Poll::Ready(pieces.next().map(|p| Ok(Frame::data(Bytes::from(p)))))
    })
}

#[tokio::test]
async fn the_fakes_answers_pass_through_unchanged() {
    let fake = FakeUpstream::builder()
        .site(
            FakeSite::new(1002)
                .url("https://example.com/")
                .holding(["jetpack-scan"]),
        )
        .start()
        .await
        .unwrap();
    let cert = TestCert::new();
    let proxy = start_https(fake.url(), &cert, &["--token", &fake.token()]).await;
    let (client, url) = (cert.client(), proxy.url());
    let direct = http_client();
    for path in [
        "/rest/v1.3/jpphp/1002/upgrade-paths",
        "/rest/v1.4/jpphp/1002/status?x=1",
        "/no/such/path",
    ] {
        let request = |base: &str| {
            Request::get(format!("{base}{path}"))
                .header("authorization", format!("Bearer {}", fake.token()))
                .body(full(Bytes::new()))
                .unwrap()
        };
        let through: Answer = send(&client, request(&url)).await;
        let straight: Answer = send(&direct, request(fake.url())).await;
        assert_eq!(through.status, straight.status, "{path}");
        assert_eq!(through.body, straight.body, "{path}");
        assert_eq!(
            through.headers.get("content-type"),
            straight.headers.get("content-type")
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_json() {
    // A port that was free a moment ago and is closed now.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let cert = TestCert::new();
    let proxy = start_https(&format!("http://{closed}"), &cert, &["--token", "t"]).await;
    let client = cert.client();
    for request in [
        Request::get(format!("{}/rest/v1.4/jpphp/1/status", proxy.url())).body(full(Bytes::new())),
        Request::post(format!("{}/oauth2/token", proxy.url())).body(full("grant_type=x")),
    ] {
        let answer = send(&client, request.unwrap()).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
        assert_eq!(answer.headers["content-type"], "application/json");
        assert!(
            answer
                .text()
                .starts_with(r#"{"error":"upstream_unreachable","message":""#),
            "{}",
            answer.text()
        );
    }
    // The guard's own lookup can't reach it either: 503, nothing forwarded.
    let answer = send(
        &client,
        provision(&proxy.url(), "t", "https://example.com/", Some("personal")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer
            .text()
            .contains(r#""error":"upgrade_paths_unavailable""#)
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_silent_upstream_is_504_after_the_request_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let cert = TestCert::new();
    let proxy = start_https(
        &format!("http://{silent}"),
        &cert,
        &["--token", "t", "--request-timeout", "1"],
    )
    .await;
    let answer = send(
        &cert.client(),
        Request::get(format!("{}/anything", proxy.url()))
            .body(full(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(answer.text().contains(r#""error":"upstream_timeout""#));
    held.abort();
    proxy.shutdown().await;
}

#[tokio::test]
async fn metrics_and_health_are_on_the_admin_listener_only() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let cert = TestCert::new();
    let proxy = start_https(fake.url(), &cert, &["--token", &fake.token()]).await;
    let (client, url) = (cert.client(), proxy.url());
    let token = fake.token();
    let refused = send(
        &client,
        provision(
            &url,
            &token,
            "https://professional.example.com/",
            Some("personal"),
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    let allowed = send(
        &client,
        provision(&url, &token, "https://free.example.com/", Some("personal")),
    )
    .await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());

    // A cancel goes to the upstream on its own route, counted there whatever it answers.
    let cancel = send(
        &client,
        Request::post(format!(
            "{url}/rest/v1.3/jpphp/free.example.com/partner-cancel"
        ))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(full("plan=personal"))
        .unwrap(),
    )
    .await;
    let cancelled = format!(
        r#"upgrade_guard_proxy_requests_total{{route="cancel",status="{}"}} 1"#,
        cancel.status.as_u16()
    );

    let admin = http_client();
    let admin_url = format!("http://{}", proxy.admin_addr());
    let get = |path: &str| {
        Request::get(format!("{admin_url}{path}"))
            .body(full(Bytes::new()))
            .unwrap()
    };
    let health = send(&admin, get("/healthz")).await;
    assert_eq!(health.status, 200);
    let metrics = send(&admin, get("/metrics")).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = metrics.text();
    for line in [
        r#"upgrade_guard_decisions_total{outcome="rejected",code="upgrade_not_allowed",admission="none"} 1"#,
        r#"upgrade_guard_decisions_total{outcome="allowed",code="none",admission="upgrade"} 1"#,
        r#"upgrade_guard_decisions_total{outcome="allowed",code="none",admission="cancellation"} 1"#,
        r#"upgrade_guard_proxy_requests_total{route="provision",status="409"} 1"#,
        r#"upgrade_guard_proxy_requests_total{route="provision",status="200"} 1"#,
        r#"upgrade_guard_proxy_upstream_seconds_count{route="provision"} 1"#,
        &cancelled,
        "upgrade_guard_lookups_total 2",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
    assert_eq!(send(&admin, get("/nothing")).await.status, 404);

    // On the proxy's port, /metrics, /healthz and /readyz are the upstream's paths like any other.
    for path in ["/metrics", "/healthz", "/readyz"] {
        let through = send(
            &client,
            Request::get(format!("{url}{path}"))
                .body(full(Bytes::new()))
                .unwrap(),
        )
        .await;
        assert_eq!(through.status, 404, "{path}");
        assert!(
            through.text().contains(r#""error":"not_found""#),
            "{}",
            through.text()
        );
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_the_requests_under_way_and_stops_accepting() {
    // An upstream that holds each request until the test releases it.
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (release_tx, release) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (arrived_tx, release) = (arrived_tx.clone(), release.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let (arrived_tx, mut release) = (arrived_tx.clone(), release.clone());
                    async move {
                        let _ = arrived_tx.send(());
                        let _ = release.wait_for(|go| *go).await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(full("finished")))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    let cert = TestCert::new();
    let proxy = start_https(&format!("http://{upstream}"), &cert, &["--token", "t"]).await;
    let (client, addr) = (cert.client(), proxy.addr());
    let under_way = tokio::spawn({
        let (client, url) = (client.clone(), proxy.url());
        async move {
            send(
                &client,
                Request::get(format!("{url}/slow"))
                    .body(full(Bytes::new()))
                    .unwrap(),
            )
            .await
        }
    });
    arrived
        .recv()
        .await
        .expect("the request reached the upstream");

    let shutdown = tokio::spawn(proxy.shutdown());
    // New connections are refused once the listener is closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still accepting after shutdown"
        );
        tokio::task::yield_now().await;
    }
    assert!(
        !shutdown.is_finished(),
        "shutdown did not wait for the request under way"
    );
    release_tx.send(true).unwrap();
    let answer = under_way.await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body, "finished");
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown ends once the request is done")
        .unwrap();
}

#[tokio::test]
async fn each_caller_is_checked_with_its_own_token() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let cert = TestCert::new();
    // No --token: the guard's lookups carry each request's own bearer token.
    let proxy = start_https(fake.url(), &cert, &[]).await;
    let (client, url) = (cert.client(), proxy.url());
    let token = fake.token();

    // The partner's caller: its lookup is answered, and caches the site's paths.
    let downgrade = send(
        &client,
        provision(
            &url,
            &token,
            "https://professional.example.com/",
            Some("personal"),
        ),
    )
    .await;
    assert_eq!(
        downgrade.status,
        StatusCode::CONFLICT,
        "{}",
        downgrade.text()
    );
    let lookups = fake.stats().lookups;

    // Another caller, whose token WordPress.com refuses, asks about the same site: it gets the
    // upstream's own 401, never the answer fetched with the first caller's token.
    let stranger = send(
        &client,
        provision(
            &url,
            "someone-elses-token",
            "https://professional.example.com/",
            Some("personal"),
        ),
    )
    .await;
    assert_eq!(
        stranger.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        stranger.text()
    );
    assert!(
        stranger.text().contains(r#""error":"invalid_token""#),
        "{}",
        stranger.text()
    );
    assert!(
        fake.stats().lookups > lookups,
        "the stranger was answered from the cache"
    );

    // And the other way round: a refused caller's failure is not reused for the partner.
    let upgrade = send(
        &client,
        provision(
            &url,
            &token,
            "https://realtime.example.com/",
            Some("professional"),
        ),
    )
    .await;
    assert_eq!(upgrade.status, 200, "{}", upgrade.text());
    assert_eq!(fake.stats().leaks, 0);
    proxy.shutdown().await;
}

#[tokio::test]
async fn every_spelling_wordpress_com_serves_as_a_provision_is_guarded() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let cert = TestCert::new();
    let proxy = start_https(fake.url(), &cert, &["--token", &fake.token()]).await;
    let (client, url, token) = (cert.client(), proxy.url(), fake.token());
    // WordPress.com upper-cases the method and reads the version with
    // `#^/rest/v(\d+(\.\d+)*)#` and version_compare: each of these is its provision endpoint.
    for (method, path) in [
        ("post", "/rest/v1.3/jpphp/provision"),
        ("Post", "/rest/v1.3/jpphp/provision"),
        ("POST", "/rest/v01.3/jpphp/provision"),
        ("POST", "/rest/v1.3.0/jpphp/provision"),
        ("POST", "/rest/v2/jpphp/provision"),
    ] {
        let (content_type, body) = multipart(&[
            ("siteurl", "https://professional.example.com/"),
            ("local_user", "admin"),
            ("plan", "jetpack-backup-realtime"),
        ]);
        let answer = send(
            &client,
            Request::builder()
                .method(http::Method::from_bytes(method.as_bytes()).unwrap())
                .uri(format!("{url}{path}"))
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", content_type)
                .body(full(body))
                .unwrap(),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::CONFLICT,
            "{method} {path}: {}",
            answer.text()
        );
        assert!(
            answer.text().contains(r#""error":"upgrade_not_allowed""#),
            "{method} {path}: {}",
            answer.text()
        );
    }
    assert_eq!(fake.stats().provisions, 0, "a downgrade was forwarded");
    assert_eq!(fake.stats().leaks, 0);

    // partner-cancel spelled another way is held and invalidating like the usual spelling.
    let cancel = send(
        &client,
        Request::builder()
            .method(http::Method::from_bytes(b"post").unwrap())
            .uri(format!(
                "{url}/rest/v1.3.0/jpphp/professional.example.com/partner-cancel"
            ))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(full("plan=professional"))
            .unwrap(),
    )
    .await;
    let metrics = send(
        &http_client(),
        Request::get(format!("http://{}/metrics", proxy.admin_addr()))
            .body(full(Bytes::new()))
            .unwrap(),
    )
    .await
    .text();
    let line = format!(
        r#"upgrade_guard_proxy_requests_total{{route="cancel",status="{}"}} 1"#,
        cancel.status.as_u16()
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "no {line:?} in\n{metrics}"
    );
    proxy.shutdown().await;
}

/// What Jetpack's `wp jetpack partner_provision` (`class.jetpack-provision.php`) sends: the
/// site's blog ID in the path, a tracking ID in the query, `Host: public-api.wordpress.com`, and
/// the arguments as JSON (`wp_json_encode`) with no content type of its own, which WordPress'
/// HTTP API sends labelled `application/x-www-form-urlencoded`.
fn partner_provision(
    proxy: &str,
    token: &str,
    blog_id: u64,
    plan: Option<&str>,
) -> Request<common::TestBody> {
    let mut body = serde_json::json!({
        "jp_version": "14.1",
        "redirect_uri": "https://example.com/wp-login.php?action=jetpack-sso&redirect_to=https%3A%2F%2Fexample.com%2Fwp-admin%2F",
        "scope": "administrator:0123456789abcdef",
        "secret": "s3cr3t",
        "user_id": 1,
        "user_email": "admin@example.com",
        "user_login": "admin",
        "onboarding": 1,
        "force_connect": 1,
    });
    if let Some(plan) = plan {
        body["plan"] = plan.into();
    }
    Request::post(format!(
        "{proxy}/rest/v1.3/jpphp/{blog_id}/partner-provision?partner_tracking_id=abc"
    ))
    .header("authorization", format!("Bearer {token}"))
    .header("host", "public-api.wordpress.com")
    .header("content-type", "application/x-www-form-urlencoded")
    .body(full(body.to_string()))
    .unwrap()
}

#[tokio::test]
async fn jetpacks_own_partner_provision_is_checked_as_a_provision() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let cert = TestCert::new();
    let proxy = start_https(fake.url(), &cert, &["--token", &fake.token()]).await;
    let (client, url, token) = (cert.client(), proxy.url(), fake.token());

    // Realtime Backups over Professional (blog 1003): refused before WordPress.com.
    let downgrade = send(
        &client,
        partner_provision(&url, &token, 1003, Some("jetpack-backup-realtime")),
    )
    .await;
    assert_eq!(
        downgrade.status,
        StatusCode::CONFLICT,
        "{}",
        downgrade.text()
    );
    assert_eq!(downgrade.json()["error"], "upgrade_not_allowed");
    assert_eq!(downgrade.json()["site"], "1003");

    // A blog ID WordPress.com doesn't know: the guard's 404, nothing forwarded.
    let unknown = send(
        &client,
        partner_provision(&url, &token, 999_999, Some("personal")),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text());
    assert_eq!(unknown.json()["error"], "unknown_site");

    // An upgrade (Realtime Backups to Professional, blog 1002) and a connection request (no
    // plan) are forwarded, and the fake's partner-provision provisions them.
    for (blog_id, plan) in [(1002, Some("professional")), (1001, None)] {
        let forwarded = send(&client, partner_provision(&url, &token, blog_id, plan)).await;
        assert_eq!(
            forwarded.status,
            StatusCode::OK,
            "{plan:?}: {}",
            forwarded.text()
        );
    }
    assert_eq!(fake.held_products("1002").unwrap(), ["professional"]);
    let metrics = send(
        &http_client(),
        Request::get(format!("http://{}/metrics", proxy.admin_addr()))
            .body(full(Bytes::new()))
            .unwrap(),
    )
    .await
    .text();
    for line in [
        r#"upgrade_guard_decisions_total{outcome="rejected",code="upgrade_not_allowed",admission="none"} 1"#,
        r#"upgrade_guard_decisions_total{outcome="allowed",code="none",admission="upgrade"} 1"#,
        r#"upgrade_guard_decisions_total{outcome="allowed",code="none",admission="connection"} 1"#,
        r#"upgrade_guard_proxy_requests_total{route="partner_provision",status="409"} 1"#,
        r#"upgrade_guard_proxy_requests_total{route="partner_provision",status="404"} 1"#,
        r#"upgrade_guard_proxy_requests_total{route="partner_provision",status="200"} 2"#,
        // Each of the four took the site's lock (the refusal and the unknown blog ID too: both
        // were looked up under it), and each wait is in the histogram.
        "upgrade_guard_lock_wait_seconds_count 4",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    assert_eq!(fake.stats().leaks, 0);
    proxy.shutdown().await;
}

/// The proxy's `/metrics` text.
async fn metrics_of(proxy: &upgrade_guard_proxy::Running) -> String {
    send(
        &http_client(),
        Request::get(format!("http://{}/metrics", proxy.admin_addr()))
            .body(full(Bytes::new()))
            .unwrap(),
    )
    .await
    .text()
}

#[tokio::test]
async fn a_provision_past_the_request_timeout_keeps_its_site_held_until_it_lands() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let cert = TestCert::new();
    let proxy = start_https(
        fake.url(),
        &cert,
        &["--token", &fake.token(), "--request-timeout", "2"],
    )
    .await;
    let (client, url, token) = (cert.client(), proxy.url(), fake.token());
    // The provision lands a second after the proxy gives up on it.
    fake.inject(Endpoint::Provision, Fault::Delay(Duration::from_secs(3)))
        .once();

    let site = "https://free.example.com/";
    let timed_out = send(&client, provision(&url, &token, site, Some("professional"))).await;
    assert_eq!(
        timed_out.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        timed_out.text()
    );
    assert_eq!(timed_out.json()["error"], "upstream_timeout");

    // Scan is an upgrade for the free site as it was, a downgrade once Professional lands. The
    // site is still held: this waits for the provision to land, then is checked against the
    // paths after it.
    let racing = send(&client, provision(&url, &token, site, Some("jetpack-scan"))).await;
    assert_eq!(racing.status, StatusCode::CONFLICT, "{}", racing.text());
    assert_eq!(
        fake.held_products("free.example.com").unwrap(),
        ["professional"]
    );
    assert_eq!(fake.stats().leaks, 0);

    // The provision finished alone is counted as such, not as a second decision.
    let finished = r#"upgrade_guard_finished_alone_total{finished="answered",status="200"} 1"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = metrics_of(&proxy).await;
        if metrics.lines().any(|l| l == finished) {
            break metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {finished:?} in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for line in [
        r#"upgrade_guard_decisions_total{outcome="allowed",code="none",admission="upgrade"} 1"#,
        r#"upgrade_guard_decisions_total{outcome="rejected",code="upgrade_not_allowed",admission="none"} 1"#,
        "upgrade_guard_decision_seconds_count 2",
        r#"upgrade_guard_proxy_requests_total{route="provision",status="504"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("outcome=\"detached\""),
        "finished alone counted as a decision:\n{metrics}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn shutdown_waits_past_the_grace_for_a_provision_finished_alone() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let cert = TestCert::new();
    let proxy = start_https(
        fake.url(),
        &cert,
        &["--token", &fake.token(), "--shutdown-grace", "1"],
    )
    .await;
    let (client, url, token) = (cert.client(), proxy.url(), fake.token());
    fake.inject(Endpoint::Provision, Fault::Delay(Duration::from_secs(3)))
        .once();
    let under_way = tokio::spawn({
        let request = provision(
            &url,
            &token,
            "https://free.example.com/",
            Some("professional"),
        );
        // The connection is closed under it at the end of the grace: no answer.
        async move { client.request(request).await.map(|r| r.status()) }
    });
    // The lookup is done: the provision is forwarded at once, well within the grace.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.stats().lookups == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no lookup");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let started = tokio::time::Instant::now();
    proxy.shutdown().await;
    // Not after the 1 s grace: only once the provision had landed, about 3 s in.
    assert_eq!(
        fake.held_products("free.example.com").unwrap(),
        ["professional"],
        "shutdown returned after {:?}, before the provision landed",
        started.elapsed()
    );
    assert!(
        under_way.await.unwrap().is_err(),
        "the client was answered: its connection should have been closed after the grace"
    );
    assert_eq!(fake.stats().leaks, 0);
}

#[tokio::test]
async fn via_names_the_proxy_both_ways() {
    let upstream = echo_upstream().await;
    let cert = TestCert::new();
    let proxy = start_https(&format!("http://{upstream}"), &cert, &["--token", "t"]).await;
    let answer = send(
        &cert.client(),
        Request::get(format!("{}/rest/v1.4/jpphp/1002/status", proxy.url()))
            .header("via", "1.0 fred, 1.1 p.example.net")
            .body(full(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, 200);
    // The entries already there first, in order, then this proxy's.
    assert_eq!(
        answer.headers["x-echo-via"],
        "1.0 fred, 1.1 p.example.net, 1.1 upgrade-guard-proxy"
    );
    let via: Vec<_> = answer.headers.get_all("via").iter().collect();
    assert_eq!(via, ["1.1 upgrade-guard-proxy"]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn no_spelling_a_normalising_front_reads_as_a_guarded_route_passes_unchecked() {
    // proxy -> a front that normalises paths eagerly -> the fake WordPress.com. Without the
    // proxy's refusal, each spelling below reaches the fake as a provision of a downgrade.
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let front = common::normalising_front(fake.url()).await;
    let proxy = upgrade_guard_proxy::start(common::config(
        &format!("http://{front}"),
        &["--token", &fake.token()],
    ))
    .await
    .expect("the proxy starts");
    let bearer = format!("Bearer {}", fake.token());
    // Realtime Backups over Professional: a downgrade, by URL in the form, by blog ID (1003)
    // in the path.
    let (content_type, form) = multipart(&[
        ("siteurl", "https://professional.example.com/"),
        ("local_user", "admin"),
        ("plan", "jetpack-backup-realtime"),
    ]);
    let json = r#"{"plan":"jetpack-backup-realtime"}"#;
    let mut spellings = Vec::new();
    for path in [
        "/rest/v1.3/jpphp/x/../provision",
        "/rest/v1.3/jpphp/./provision",
        "/rest/v1.3/jpphp/x/%2e%2e/provision",
        "/rest/v1.3/jpphp/x/.%2E/provision",
        "/rest/v1.3/jpphp/x/%252e%252e/provision",
        "/rest/v1.3/jpphp/x%2F..%2Fprovision",
        "/rest/v1.3/jpphp;x/provision",
        "/rest/v1.3/jpphp/provision;x",
        "/rest/v1.3/jpphp\\provision",
        "/rest/v1.3/jpphp%5Cprovision",
        "/rest/v1.3/jpphp/provision%20",
        "/rest/v1.3/jpphp/provision%09",
        "/rest/v1.3/jpphp/provision%00",
        "/rest/v1.3/jpphp/provision%3Fx",
        "//REST/v1.3//JPPHP/x/%2E%2E//Provision;x%20",
    ] {
        spellings.push((path, content_type.as_str(), form.as_ref()));
    }
    for path in [
        "/rest/v1.3/jpphp/1003/./partner-provision",
        "/rest/v1.3/jpphp/1003;x/partner-provision",
        // The guard must not check 1001 (free: Realtime Backups is an upgrade there) while the
        // front sends the provision to 1003.
        "/rest/v1.3/jpphp/1001/../1003/partner-provision",
        "/rest/v1.3/jpphp/1003%20/partner-provision",
    ] {
        spellings.push((path, "application/x-www-form-urlencoded", json.as_bytes()));
    }
    // Each of these is a provision of a downgrade to the front.
    for (path, _, _) in &spellings {
        let normalised = common::eagerly_normalised(path);
        assert!(
            normalised == "/rest/v1.3/jpphp/provision"
                || normalised == "/rest/v1.3/jpphp/1003/partner-provision",
            "{path} -> {normalised}"
        );
    }

    for (path, content_type, body) in &spellings {
        let (status, answer) = common::send_raw(
            proxy.addr(),
            "POST",
            path,
            &[("authorization", &bearer), ("content-type", content_type)],
            body,
        )
        .await;
        // Refused by the proxy itself, or by the guard: never forwarded as a passthrough.
        assert!(
            (status == 400 && answer.starts_with(r#"{"error":"ambiguous_path","message":""#))
                || (status == 409 && answer.contains(r#""error":"upgrade_not_allowed""#)),
            "{path}: {status} {answer}"
        );
    }
    let stats = fake.stats();
    assert_eq!(stats.provisions, 0, "a provision reached the fake");
    assert_eq!(stats.leaks, 0);
    // The proxy answered all of them itself: the front saw none, not even a lookup.
    assert_eq!(stats.requests, 0, "{stats:?}");
    let metrics = metrics_of(&proxy).await;
    let line = format!(
        r#"upgrade_guard_proxy_requests_total{{route="ambiguous_path",status="400"}} {}"#,
        spellings.len()
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "no {line:?} in\n{metrics}"
    );

    // A spelling no reading makes a guarded route is passed through, and the front does
    // normalise: the status call reaches the fake as `/rest/v1.4/jpphp/1003/status`.
    let (status, answer) = common::send_raw(
        proxy.addr(),
        "GET",
        "/rest/v1.4/jpphp/x/%2e%2e/1003/status",
        &[("authorization", &bearer)],
        b"",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(fake.stats().status_requests, 1);
    // And sent to the front directly, the first spelling is a downgrade provisioned.
    let (content_type, form) = (spellings[0].1, spellings[0].2);
    let (status, answer) = common::send_raw(
        front,
        "POST",
        spellings[0].0,
        &[("authorization", &bearer), ("content-type", content_type)],
        form,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("plan_downgrade_disallowed"), "{answer}");
    assert_eq!(fake.stats().leaks, 1);
    proxy.shutdown().await;
}
