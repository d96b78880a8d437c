//! Shared test fixtures: a seeded fake upstream, a client for it, and an inner service that
//! records what reached it.
#![allow(dead_code)] // each test binary uses its own part of this module

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{Layer, ServiceExt, service_fn};
use upgrade_guard::fake::{FakeSite, FakeUpstream, catalogue::Product};
use upgrade_guard::{GuardBody, UpgradeGuardLayer, UpgradePathsClient};

pub const FREE: u64 = 1001;
pub const REALTIME: u64 = 1002;
pub const PROFESSIONAL: u64 = 1003;

/// The fake with the sites the tests use.
pub async fn fake() -> FakeUpstream {
    FakeUpstream::builder()
        .site(FakeSite::new(FREE).url("https://free.example.com/"))
        .site(
            FakeSite::new(REALTIME)
                .url("https://realtime.example.com/")
                .holding(["jetpack-backup-realtime"]),
        )
        .site(
            FakeSite::new(PROFESSIONAL)
                .url("https://professional.example.com/")
                .holding(["professional"]),
        )
        .site(
            FakeSite::new(1004)
                .url("https://example.com/blog/")
                .holding(["professional"]),
        )
        .start()
        .await
        .expect("the fake upstream starts on loopback")
}

/// Makes every site of `fake` private: WordPress.com's public site lookup answers 403
/// `unauthorized` for each, as it does for a site it does not describe publicly.
pub fn make_sites_private(fake: &FakeUpstream) {
    use upgrade_guard::fake::{Endpoint, Fault};
    fake.inject(
        Endpoint::SiteLookup,
        Fault::status_with_body(
            403,
            r#"{"error":"unauthorized","message":"User cannot access this private blog."}"#,
        ),
    )
    .always();
}

/// A client for `fake`, with a short deadline so failure tests end quickly, and without retries:
/// these tests check what one upstream answer becomes (retries are tested in `upstream.rs`).
pub fn client(fake: &FakeUpstream) -> UpgradePathsClient {
    UpgradePathsClient::builder()
        .base_url(fake.url())
        .bearer_token(fake.token())
        .lookup_timeout(Duration::from_secs(2))
        .max_retries(0)
        .build()
        .expect("the client builds")
}

/// A guard in front of an inner service that provisions nothing upstream (a [`Recorder`]): it
/// remembers no provision it forwards (`settling_window(ZERO)`), since no upgrade-paths answer
/// would ever show one, and a second provision of the site would wait for it in vain.
pub fn recording_guard(client: UpgradePathsClient) -> UpgradeGuardLayer {
    UpgradeGuardLayer::builder(client)
        .settling_window(Duration::ZERO)
        .build()
}

/// What the inner service saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub uri: http::Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub checked: Option<upgrade_guard::Checked>,
    pub bypass: Option<upgrade_guard::Bypass>,
}

/// An inner "provision handler" that records every request and answers 200.
#[derive(Clone, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The inner service, generic over the request body. Its future does not capture `&self`
    /// (`use<B>`): the guard needs the inner future to be `'static`.
    pub fn service<B>(
        &self,
    ) -> impl tower::Service<
        Request<GuardBody<B>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send + use<B>,
    >
    + Clone
    + Send
    + 'static
    + use<B>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::fmt::Debug,
    {
        let seen = self.seen.clone();
        service_fn(move |request: Request<GuardBody<B>>| {
            let seen = seen.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.expect("the body reads").to_bytes();
                seen.lock().unwrap().push(Seen {
                    checked: parts.extensions.get().cloned(),
                    bypass: parts.extensions.get().cloned(),
                    uri: parts.uri,
                    headers: parts.headers,
                    body,
                });
                Ok::<_, Infallible>(Response::new(Full::from(r#"{"success":true}"#)))
            }
        })
    }
}

/// The guard's answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The guard's `error` code, asserting the shape of its own answers on the way.
    pub fn error(&self) -> String {
        assert_eq!(self.headers["content-type"], "application/json");
        let text = std::str::from_utf8(&self.body).unwrap();
        assert!(text.contains(r#""error":""#), "compact error key: {text}");
        let json = self.json();
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
        json["error"].as_str().expect("an error code").to_owned()
    }
}

/// Sends `request` through `layer` around `recorder`.
pub async fn send<B>(layer: &UpgradeGuardLayer, recorder: &Recorder, request: Request<B>) -> Answer
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Debug,
{
    let response = layer
        .layer(recorder.service::<B>())
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("the body reads").to_bytes(),
    }
}

/// `POST /provision` with an urlencoded form.
pub fn form(body: &str) -> Request<Full<Bytes>> {
    Request::post("/provision")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from(body.to_owned()))
        .unwrap()
}

/// `POST /provision` with a JSON body.
pub fn json(body: &str) -> Request<Full<Bytes>> {
    Request::post("/provision")
        .header("content-type", "application/json")
        .body(Full::from(body.to_owned()))
        .unwrap()
}

/// A multipart body as curl sends it, with the given content type spelling.
pub fn multipart(
    content_type: &str,
    boundary: &str,
    parts: &[(&str, &[u8])],
) -> Request<Full<Bytes>> {
    let mut body = Vec::new();
    for (name, value) in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(value);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Request::post("/provision")
        .header("content-type", content_type)
        .body(Full::from(body))
        .unwrap()
}

/// An inner service that relays the form to the fake's provision endpoint, as a partner's
/// handler would, and answers with the fake's status and body. Its future does not capture
/// `fake` (`use<B>`): the guard needs the inner future to be `'static`. `B` is the body the
/// guard forwards, `GuardBody<_>` behind the guard.
pub fn relay<B>(
    fake: &FakeUpstream,
) -> impl tower::Service<
    Request<B>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send + use<B>,
>
+ Clone
+ Send
+ 'static
+ use<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: std::fmt::Debug,
{
    let http = reqwest::Client::new();
    let url = format!("{}/rest/v1.3/jpphp/provision", fake.url());
    let token = fake.token().to_owned();
    service_fn(move |request: Request<B>| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.expect("the body reads").to_bytes();
            let mut forwarded = http.post(url).bearer_auth(token).body(body);
            if let Some(content_type) = parts.headers.get("content-type") {
                forwarded = forwarded.header("content-type", content_type.clone());
            }
            let answer = forwarded.send().await.expect("the fake answers");
            let status = answer.status().as_u16();
            let body = answer.bytes().await.expect("the fake's body");
            let mut response = Response::new(Full::from(body));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(response)
        }
    })
}

/// Polls `condition` until it holds, failing the test after a generous deadline.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Everything `tracing` writes while the returned guard lives on this thread, as text.
pub fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// Captured log text.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Products that overlap without one containing the other, or contain each other: fired at one
/// free site together, all but a consistent few must be refused.
pub const CONFLICTING: [&str; 5] = [
    "professional",
    "premium",
    "personal",
    "jetpack-backup-realtime",
    "jetpack-backup-daily",
];

/// The first of the free sites [`free_sites`] seeds.
pub const FIRST_FREE_SITE: u64 = 5000;

/// A fake upstream with `count` free sites, blog IDs from [`FIRST_FREE_SITE`].
pub async fn free_sites(count: u64) -> FakeUpstream {
    let mut builder = FakeUpstream::builder();
    for id in 0..count {
        builder = builder.site(FakeSite::new(FIRST_FREE_SITE + id));
    }
    builder.start().await.unwrap()
}

/// Fires every conflicting product at every site at once, spreading each site's requests over
/// `guards` (replicas, or one guard), each relaying what it forwards to the fake's provision
/// endpoint. Returns the statuses.
pub async fn race(
    fake: &FakeUpstream,
    guards: &[UpgradeGuardLayer],
    sites: u64,
) -> Vec<StatusCode> {
    let services: Vec<_> = guards
        .iter()
        .map(|guard| guard.layer(relay::<GuardBody<Full<Bytes>>>(fake)))
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..sites {
        for (n, plan) in CONFLICTING.iter().enumerate() {
            let service = services[(id as usize + n) % services.len()].clone();
            tasks.spawn(async move {
                let body = format!(
                    "siteurl={}&plan={plan}&local_user=admin",
                    FIRST_FREE_SITE + id
                );
                service.oneshot(form(&body)).await.unwrap().status()
            });
        }
    }
    tasks.join_all().await
}

/// Asserts a race ended cleanly: no downgrade reached the provision call, every answer was 200
/// or 409, and every site holds at least one product and no two that overlap.
pub fn assert_clean_race(fake: &FakeUpstream, statuses: &[StatusCode], sites: u64) {
    assert_eq!(
        fake.stats().leaks,
        0,
        "no downgrade reached the provision call"
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::CONFLICT),
        "{statuses:?}"
    );
    let provisioned = statuses.iter().filter(|s| **s == StatusCode::OK).count() as u64;
    assert_eq!(fake.stats().provisioned, provisioned);
    assert!(provisioned >= sites, "every site got at least one product");
    for id in 0..sites {
        let held = fake
            .held_products(&(FIRST_FREE_SITE + id).to_string())
            .unwrap();
        let products: Vec<&Product> = held
            .iter()
            .map(|slug| Product::find(slug).unwrap())
            .collect();
        let consistent = products
            .iter()
            .enumerate()
            .all(|(i, a)| products[i + 1..].iter().all(|b| !a.overlaps(b)));
        assert!(!held.is_empty() && consistent, "site {id}: {held:?}");
    }
}
