//! Ways past the guard an attacker tried (issue 21, and a later review), each through the
//! layer: a `Connection` header that makes the next hop drop what the guard read, a query string
//! or a header name WordPress.com reads otherwise than sent, two names of one site, a site held
//! by a request whose body never ends, a request without the bearer token its route relays.
//! The proxy's side (path spellings, the proxy's own hop-by-hop removal) is in
//! `proxy/tests/proxy.rs`; the table of what was tried and what held is in TESTING.md.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{Full, StreamBody};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tower::{Layer, ServiceExt, service_fn};
use upgrade_guard::fake::{FakeSite, FakeUpstream};
use upgrade_guard::{
    GuardBody, LocalLocks, Site, SiteAliases, Source, UpgradeGuardLayer, UpgradePathsClient,
};

fn site(s: &str) -> Site {
    Site::parse(s).unwrap()
}

/// The provision form `curl -F` sends, with a third field hiding another site and product in
/// its value: read as multipart it names `siteurl` and `plan`; read as an urlencoded form (its
/// Content-Type dropped), the hidden ones.
fn multipart_with_a_hidden_form(site: &str, plan: &str, hidden: &str) -> Request<Full<Bytes>> {
    multipart(
        "multipart/form-data; boundary=x1y2",
        "x1y2",
        &[
            ("siteurl", site.as_bytes()),
            ("plan", plan.as_bytes()),
            ("local_user", hidden.as_bytes()),
        ],
    )
}

#[tokio::test]
async fn a_connection_header_naming_a_header_the_guard_read_is_refused() {
    let fake = fake().await;
    // The recorder provisions nothing upstream: no answer would ever show what it was given.
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .settling_window(Duration::ZERO)
        .build();
    let inner = Recorder::default();
    // Professional on the free site is an upgrade: only the hidden realtime backup on the
    // Professional site would be a downgrade, and WordPress.com reads it once a relay drops
    // the Content-Type.
    let hidden = "x&siteurl=https://professional.example.com/&plan=jetpack-backup-realtime&z=";
    for connection in [
        "Content-Type",
        "keep-alive, content-type",
        "Content-Length",
        "close, Content-Length",
    ] {
        let mut request = multipart_with_a_hidden_form("1001", "professional", hidden);
        let length = request.body().clone();
        request.headers_mut().insert(
            "content-length",
            http_body::Body::size_hint(&length).exact().unwrap().into(),
        );
        request
            .headers_mut()
            .insert("connection", connection.parse().unwrap());
        let answer = send(&guard, &inner, request).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{connection}");
        assert_eq!(answer.error(), "invalid_connection_header", "{connection}");
    }
    // A JSON body leaks the same way.
    let mut request = json(r#"{"siteurl":"1001","plan":"professional"}"#);
    request
        .headers_mut()
        .insert("connection", "Content-Type".parse().unwrap());
    let answer = send(&guard, &inner, request).await;
    assert_eq!(answer.error(), "invalid_connection_header");
    // And a header a route's own source reads.
    let by_header = guard
        .clone()
        .site(Source::from_fn(|parts| {
            parts
                .headers
                .get("x-site")?
                .to_str()
                .ok()
                .map(str::to_owned)
        }))
        .product(Source::query("plan"));
    let request = Request::post("/provision?plan=professional")
        .header("x-site", "1001")
        .header("connection", "X-Site")
        .body(Full::<Bytes>::default())
        .unwrap();
    let answer = send(&by_header, &inner, request).await;
    assert_eq!(answer.error(), "invalid_connection_header");
    assert_eq!(inner.calls(), 0);
    assert_eq!(fake.stats().lookups, 0, "refused before any lookup");

    // The connection's own options are no reason to refuse.
    for connection in ["keep-alive", "close", "Upgrade, HTTP2-Settings", "TE"] {
        let mut request = multipart_with_a_hidden_form("1001", "professional", "admin");
        request
            .headers_mut()
            .insert("connection", connection.parse().unwrap());
        let answer = send(&guard, &inner, request).await;
        assert_eq!(answer.status, StatusCode::OK, "{connection}");
    }
    assert_eq!(inner.calls(), 4);
}

/// WordPress.com parses the query of `esc_url_raw('http://' . HTTP_HOST . REQUEST_URI)`
/// (`WPCOM_JSON_API::setup_inputs()`), and `esc_url()` removes characters such as `{`, `^` and
/// `` ` `` and then every `%0a`/`%0d`: each of these queries is `force=secure` to it, and its
/// `input()` then reads another body (`get_secure_body`) than the one the guard checked.
#[tokio::test]
async fn a_query_wordpress_com_reads_through_esc_url_raw_is_refused() {
    let fake = fake().await;
    let guard = recording_guard(client(&fake));
    let inner = Recorder::default();
    let provision = |query: &str| {
        Request::post(format!("/rest/v1.3/jpphp/provision?{query}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::from(
                "siteurl=1001&plan=professional&local_user=admin&secure_key=k",
            ))
            .unwrap()
    };
    for (query, found) in [
        ("force=secure", "force=secure"),
        ("force%0A=secure", "`%0A`"),
        ("force=sec%0aure", "`%0a`"),
        ("for%0Dce=secure", "`%0D`"),
        ("forc%0%0aae=secure", "`%0a`"),
        ("forc{e=secure", "`{`"),
        ("force=secur^e", "`^`"),
        ("force=sec`ure", "```"),
    ] {
        let answer = send(&guard, &inner, provision(query)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer.error(), "invalid_body", "{query}");
        let message = answer.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(found), "{query}: {message}");
    }
    // A route reading the product from the query: `pl%0Aan` is `plan` to WordPress.com, a
    // downgrade for the Professional site the guard would have taken for a connection request.
    let by_query = guard
        .clone()
        .site(Source::query("siteurl"))
        .product(Source::query("plan"));
    let request = |query: &str| {
        Request::post(format!("/provision?{query}"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let downgrade = request("siteurl=1003&pl%0Aan=jetpack-backup-realtime");
    let answer = send(&by_query, &inner, downgrade).await;
    assert_eq!(answer.error(), "invalid_body");
    assert_eq!(inner.calls(), 0);
    assert_eq!(fake.stats().lookups, 0, "refused before any lookup");

    // Plain urlencoded queries, as partner tooling sends them, are read as before.
    let answer = send(&guard, &inner, provision("x=%7B%5E%60&y=a%0Bb")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = send(&by_query, &inner, request("siteurl=1001&plan=professional")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(inner.calls(), 2);
}

/// PHP registers a header `Content_Type` as `HTTP_CONTENT_TYPE`, which `setup_inputs()` prefers
/// to `CONTENT_TYPE`: behind a front that passes such names (nginx drops them by default),
/// WordPress.com reads this body as JSON (a downgrade for the Professional site) while the guard
/// reads it, by its `Content-Type`, as a form naming the free site.
#[tokio::test]
async fn content_type_or_length_spelled_with_an_underscore_or_a_dot_is_refused() {
    let fake = fake().await;
    let guard = recording_guard(client(&fake));
    let inner = Recorder::default();
    let body = r#"{"siteurl":"1003","plan":"jetpack-backup-realtime","x":"&siteurl=1001&plan=professional&y="}"#;
    for (name, value) in [
        ("Content_Type", "application/json"),
        ("content_type", "application/json"),
        // PHP reads a `.` in a variable's name as `_` too.
        ("Content.Type", "application/json"),
        ("CONTENT_LENGTH", "5"),
    ] {
        let request = Request::post("/rest/v1.3/jpphp/provision")
            .header("content-type", "text/plain")
            .header(name, value)
            .body(Full::from(body))
            .unwrap();
        let answer = send(&guard, &inner, request).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(answer.error(), "invalid_body", "{name}");
        let message = answer.json()["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains(&format!("`{}`", name.to_ascii_lowercase())),
            "{message}"
        );
    }
    assert_eq!(inner.calls(), 0);
    assert_eq!(fake.stats().lookups, 0, "refused before any lookup");
}

/// An inner service that relays the provision to the fake (where it lands at once), then
/// waits at a gate before answering: the provision is made, the site still held.
#[derive(Clone)]
struct RelayThenGate {
    reached: Arc<Semaphore>,
    released: Arc<Semaphore>,
}

impl RelayThenGate {
    fn new() -> Self {
        Self {
            reached: Arc::new(Semaphore::new(0)),
            released: Arc::new(Semaphore::new(0)),
        }
    }

    fn service(
        &self,
        fake: &FakeUpstream,
    ) -> impl tower::Service<
        Request<GuardBody<Full<Bytes>>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send + use<>,
    >
    + Clone
    + Send
    + 'static
    + use<> {
        let relay = relay::<GuardBody<Full<Bytes>>>(fake);
        let gate = self.clone();
        service_fn(move |request: Request<GuardBody<Full<Bytes>>>| {
            let (relay, gate) = (relay.clone(), gate.clone());
            async move {
                let answer = relay.oneshot(request).await;
                gate.reached.add_permits(1);
                gate.released.acquire().await.unwrap().forget();
                answer
            }
        })
    }

    async fn wait_reached(&self) {
        tokio::time::timeout(Duration::from_secs(10), self.reached.acquire())
            .await
            .expect("a request reached the inner service")
            .unwrap()
            .forget();
    }

    fn release(&self) {
        self.released.add_permits(1);
    }
}

/// The first request names the site one way and is held at the gate, its provision made; the
/// second names it the other way. It must wait for the first (it is counted as a user of the
/// shared name's lock), and is then checked against what the first left: a downgrade, 409.
async fn two_names_one_site(
    fake: &FakeUpstream,
    locks: &LocalLocks,
    guard: &UpgradeGuardLayer,
    first: &str,
    second: &str,
    shared_name: &Site,
) -> (StatusCode, StatusCode) {
    let gate = RelayThenGate::new();
    let service = guard.layer(gate.service(fake));
    let first = tokio::spawn(service.clone().oneshot(form(first)));
    gate.wait_reached().await;
    let second = tokio::spawn(service.oneshot(form(second)));
    eventually("the second request waits for the site", || {
        locks.users(shared_name) == 2
    })
    .await;
    assert!(!second.is_finished(), "it waits for the first");
    gate.release();
    gate.release();
    let first = first.await.unwrap().unwrap().status();
    let second = second.await.unwrap().unwrap().status();
    (first, second)
}

#[tokio::test]
async fn a_site_named_by_url_and_by_blog_id_is_held_as_one() {
    let fake = fake().await;
    let locks = LocalLocks::new();
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .site_locks(locks.clone())
        .build();
    // Professional by URL, then Realtime Backups by blog ID while the first is held.
    let statuses = two_names_one_site(
        &fake,
        &locks,
        &guard,
        "siteurl=https://free.example.com/&plan=professional&local_user=a",
        "siteurl=1001&plan=jetpack-backup-realtime&local_user=b",
        &site("1001"),
    )
    .await;
    assert_eq!(statuses, (StatusCode::OK, StatusCode::CONFLICT));
    // The other way round, on the site holding Realtime Backups.
    let statuses = two_names_one_site(
        &fake,
        &locks,
        &guard,
        "siteurl=1002&plan=professional&local_user=a",
        "siteurl=realtime.example.com&plan=jetpack-backup-daily&local_user=b",
        &site("1002"),
    )
    .await;
    assert_eq!(statuses, (StatusCode::OK, StatusCode::CONFLICT));
    let stats = fake.stats();
    assert_eq!((stats.provisioned, stats.leaks), (2, 0));
    // One lookup a site: its answer named the site both ways, and both were remembered.
    assert_eq!(stats.site_lookups, 2);
    assert_eq!(locks.sites_in_use(), 0);
}

#[tokio::test]
async fn a_first_provision_and_the_blog_id_it_made_are_held_as_one() {
    let fake = fake().await;
    let locks = LocalLocks::new();
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .site_locks(locks.clone())
        .build();
    let gate = RelayThenGate::new();
    let service = guard.layer(gate.service(&fake));
    // A site WordPress.com does not know yet: its first provision registers it.
    let first = tokio::spawn(service.clone().oneshot(form(
        "siteurl=https://new.example.net/&plan=professional&local_user=a",
    )));
    gate.wait_reached().await;
    let blog_id = fake
        .sites()
        .into_iter()
        .find(|s| s.url.as_deref() == Some("https://new.example.net/"))
        .and_then(|s| s.blog_id)
        .expect("registered by its first provision");
    // The new blog ID, named at once: its URL is learned, and its lock is the first's.
    let second = tokio::spawn(service.oneshot(form(&format!(
        "siteurl={blog_id}&plan=jetpack-backup-realtime&local_user=b"
    ))));
    eventually("the second request waits for the new site", || {
        locks.users(&site("new.example.net")) == 2
    })
    .await;
    assert!(!second.is_finished());
    gate.release();
    gate.release();
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(
        second.await.unwrap().unwrap().status(),
        StatusCode::CONFLICT
    );
    assert_eq!(fake.stats().leaks, 0);
}

#[tokio::test]
async fn as_named_holds_a_site_under_the_name_given_only() {
    let fake = fake().await;
    let locks = LocalLocks::new();
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .site_locks(locks.clone())
        .site_aliases(SiteAliases::AsNamed)
        .build();
    let gate = RelayThenGate::new();
    let service = guard.layer(gate.service(&fake));
    let first =
        tokio::spawn(service.oneshot(form("siteurl=1001&plan=jetpack-scan&local_user=admin")));
    gate.wait_reached().await;
    assert_eq!(locks.sites_in_use(), 1);
    assert_eq!(fake.stats().site_lookups, 0);
    gate.release();
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_site_lookup_that_fails_forwards_nothing() {
    use upgrade_guard::fake::{Endpoint, Fault};
    let fake = fake().await;
    let guard = UpgradeGuardLayer::new(client(&fake));
    let inner = Recorder::default();
    fake.inject(Endpoint::SiteLookup, Fault::status(500))
        .always();
    let answer = send(&guard, &inner, form("siteurl=1001&plan=professional")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.error(), "upgrade_paths_unavailable");
    // A connection request provisions nothing: held under the name given, and forwarded.
    let answer = send(&guard, &inner, form("siteurl=1001&local_user=admin")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(inner.calls(), 1);
    // A private site (WordPress.com does not describe it publicly): held under its names and
    // one lock every such request shares, and checked as usual.
    fake.clear_faults();
    make_sites_private(&fake);
    let answer = send(&guard, &inner, form("siteurl=1001&plan=professional")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(inner.calls(), 2);
    // Any other refusal of the lookup is an error: nothing is forwarded.
    fake.clear_faults();
    fake.inject(Endpoint::SiteLookup, Fault::status(403))
        .always();
    let answer = send(&guard, &inner, form("siteurl=1002&plan=professional")).await;
    assert_eq!(answer.error(), "upgrade_paths_unavailable");
    assert_eq!(inner.calls(), 2);
}

#[tokio::test]
async fn a_url_spelled_otherwise_than_wordpress_com_keeps_it_shares_its_loose_lock() {
    // WordPress.com keeps the site as `www.example.org/Blog`; a partner names it
    // `example.org/blog`, which the site lookup does not find: held under that name and its
    // loose form, which the blog ID's names share.
    let fake = FakeUpstream::builder()
        .site(FakeSite::new(77).url("https://www.example.org/Blog/"))
        .start()
        .await
        .unwrap();
    let locks = LocalLocks::new();
    // The fake registers `example.org/blog` as a site of its own, which WordPress.com would not:
    // what the first provision made is not remembered, or the second would wait for it to show.
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .site_locks(locks.clone())
        .settling_window(Duration::ZERO)
        .build();
    let gate = RelayThenGate::new();
    let service = guard.layer(gate.service(&fake));
    let first = tokio::spawn(service.clone().oneshot(form(
        "siteurl=https://example.org/blog/&plan=professional&local_user=a",
    )));
    gate.wait_reached().await;
    let second = tokio::spawn(service.oneshot(form("siteurl=77&plan=jetpack-scan&local_user=b")));
    eventually("the blog ID waits on the loose lock", || {
        locks.users(&site("example.org.loose.invalid::blog")) == 2
    })
    .await;
    assert!(!second.is_finished());
    gate.release();
    gate.release();
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    second.await.unwrap().unwrap();
    assert_eq!(locks.sites_in_use(), 0);
}

/// A body that sends `first` and then never ends (until the test drops the sender).
fn endless_body(
    first: &'static str,
) -> (
    StreamBody<tokio_stream_like::Receiver>,
    tokio::sync::mpsc::Sender<Result<http_body::Frame<Bytes>, Infallible>>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    sender
        .try_send(Ok(http_body::Frame::data(Bytes::from_static(
            first.as_bytes(),
        ))))
        .unwrap();
    (
        StreamBody::new(tokio_stream_like::Receiver(receiver)),
        sender,
    )
}

/// A `Stream` over a tokio channel, without a dependency for it.
mod tokio_stream_like {
    use bytes::Bytes;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct Receiver(
        pub tokio::sync::mpsc::Receiver<Result<http_body::Frame<Bytes>, Infallible>>,
    );

    impl futures_util::Stream for Receiver {
        type Item = Result<http_body::Frame<Bytes>, Infallible>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
}

#[tokio::test]
async fn no_site_is_held_while_a_body_is_on_its_way() {
    let fake = fake().await;
    let locks = LocalLocks::new();
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .site_locks(locks.clone())
        .build()
        .body_timeout(Duration::from_millis(300))
        .lock_wait(Duration::from_millis(100));
    let cancel = guard
        .clone()
        .site(Source::path(
            "/rest/v1.3/jpphp/{site}/partner-cancel",
            "site",
        ))
        .cancels();
    let inner = Recorder::default();

    // A cancel whose body never ends, on a route that reads nothing from its body.
    let (body, sender) = endless_body("cancel-all=");
    let slow = Request::post("/rest/v1.3/jpphp/1001/partner-cancel")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .unwrap();
    let slow = tokio::spawn(cancel.layer(inner.service()).oneshot(slow));
    // Meanwhile the site is free: a provision of it passes at once.
    let answer = send(
        &guard,
        &inner,
        form("siteurl=1001&plan=jetpack-scan&local_user=admin"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(locks.sites_in_use(), 0);

    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT);
    let body = http_body_util::BodyExt::collect(slow.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(body.starts_with(br#"{"error":"body_timeout","#), "{body:?}");
    drop(sender);
    assert_eq!(inner.calls(), 1, "only the provision was forwarded");
}

#[tokio::test]
async fn a_request_without_the_bearer_token_its_route_relays_holds_nothing() {
    let fake = fake().await;
    let locks = LocalLocks::new();
    let client = UpgradePathsClient::builder()
        .base_url(fake.url())
        .caller_token()
        .build()
        .unwrap();
    let guard = UpgradeGuardLayer::builder(client)
        .site_locks(locks.clone())
        .build();
    let cancel = guard
        .clone()
        .site(Source::path(
            "/rest/v1.3/jpphp/{site}/partner-cancel",
            "site",
        ))
        .cancels();
    let inner = Recorder::default();
    let request = Request::post("/rest/v1.3/jpphp/1001/partner-cancel")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from("cancel-all=true"))
        .unwrap();
    let answer = send(&cancel, &inner, request).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.error(), "missing_token");
    // A connection request (no product) likewise.
    let answer = send(&guard, &inner, form("siteurl=1001&local_user=admin")).await;
    assert_eq!(answer.error(), "missing_token");
    assert_eq!(inner.calls(), 0);
    let stats = fake.stats();
    assert_eq!((stats.lookups, stats.site_lookups), (0, 0));
    assert_eq!(locks.sites_in_use(), 0);
}
