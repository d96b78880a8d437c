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
use upgrade_guard::fake::{FakeSite, FakeUpstream};

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

    // On the proxy's port, /metrics and /healthz are the upstream's paths like any other.
    for path in ["/metrics", "/healthz"] {
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
