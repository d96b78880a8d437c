//! Tokens and client secrets never show in `Debug` or `Display` output, in the guard's answers, or
//! in `tracing` events, on any path that handles them.
//!
//! A test binary of its own: `tracing` caches per call site whether anyone listens, and a call
//! site first reached by another test's thread while this one's thread-local subscriber is being
//! set up can miss it. Alone in its binary, this test is the only one reaching them.

use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Empty, Full};
use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};
use tower::{Layer, ServiceExt, service_fn};
use upgrade_guard::fake::{Endpoint, FakeUpstream, Fault};
use upgrade_guard::{
    Rejection, Site, Token, TokenError, TokenSource, UpgradeGuardLayer, UpgradePathsClient,
};

const CLIENT_ID: &str = "partner-7";
const CLIENT_SECRET: &str = "client-s3cret-9f2b";
const TOKEN: &str = "t0k3n-s3cret-41c7";
/// A caller's own token, which the fake accepts.
const CALLER_TOKEN: &str = "c4ll3r-s3cret-77ab";
/// A caller's token the fake refuses.
const CALLER_REFUSED: &str = "c4ll3r-r3fused-03d9";

async fn fake() -> FakeUpstream {
    FakeUpstream::builder()
        .demo_sites()
        .token(TOKEN)
        .accept_token(CALLER_TOKEN)
        .client_credentials(CLIENT_ID, CLIENT_SECRET)
        .start()
        .await
        .expect("the fake upstream starts on loopback")
}

fn site() -> Site {
    Site::parse("1001").unwrap()
}

/// Captures every `tracing` event of this thread, formatted, while it is alive.
struct CapturedLogs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl CapturedLogs {
    fn start() -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let buffer = buffer.clone();
            move || SharedWriter(buffer.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(writer)
            .finish();
        Self {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} shows {secret:?}: {text}");
    }
}

// Current-thread runtime: the fake and the client run on this thread, so the thread-local
// subscriber sees both.
#[tokio::test]
async fn secrets_never_reach_debug_output_errors_or_logs() {
    let logs = CapturedLogs::start();
    let fake = fake().await;
    let builder = UpgradePathsClient::builder()
        .base_url(fake.url())
        .client_credentials(CLIENT_ID, CLIENT_SECRET);
    let mut shown = vec![format!("{builder:?}")];
    let client = builder.build().unwrap();
    shown.push(format!("{client:?}"));

    // A fetch, a retry, a refresh, a refused refresh and a refused static token: every path that
    // handles a secret, and every one that logs.
    client.upgrade_paths(&site()).await.unwrap();
    shown.push(format!("{client:?}"));
    let token = client.token_source().token().await.unwrap();
    shown.push(format!("{token:?} {:?}", client.token_source()));
    fake.inject(Endpoint::UpgradePaths, Fault::status(503))
        .once();
    client.upgrade_paths(&site()).await.unwrap();
    let rotated = fake.rotate_token();
    client.upgrade_paths(&site()).await.unwrap();
    let stale = fake.rotate_token();
    fake.inject(
        Endpoint::Token,
        Fault::status_with_body(400, r#"{"error":"invalid_client"}"#),
    )
    .always();
    let mut errors = vec![client.upgrade_paths(&site()).await.unwrap_err()];
    // The refused refresh left no token: asking again asks the endpoint, and is refused again.
    let refused = client.token_source().token().await.unwrap_err();
    assert!(matches!(refused, TokenError::Refused { .. }));
    shown.push(format!("{refused} {refused:?}"));
    fake.clear_faults();

    let static_client = UpgradePathsClient::builder()
        .base_url(fake.url())
        .bearer_token(TOKEN)
        .build()
        .unwrap();
    shown.push(format!("{static_client:?}"));
    errors.push(static_client.upgrade_paths(&site()).await.unwrap_err());
    let static_source = TokenSource::bearer(TOKEN).unwrap();
    let static_token = static_source.token().await.unwrap();
    shown.push(format!("{static_source:?} {static_token:?}"));
    shown.push(format!("{:?}", static_token.authorization()));
    let cannot = static_source.refresh(&static_token).await.unwrap_err();
    shown.push(format!("{cannot} {cannot:?}"));

    // The caller's own token: through a guard (accepted, refused, refused again from a lookup in
    // flight), and straight through the client.
    let builder = UpgradePathsClient::builder()
        .base_url(fake.url())
        .caller_token();
    shown.push(format!("{builder:?}"));
    let caller_client = builder.build().unwrap();
    shown.push(format!(
        "{caller_client:?} {:?}",
        caller_client.token_source()
    ));
    let guard = UpgradeGuardLayer::new(caller_client.clone());
    let service = guard.layer(service_fn(|_request| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    for token in [CALLER_TOKEN, CALLER_REFUSED, CALLER_TOKEN] {
        let request = Request::post("/rest/v1.3/jpphp/provision")
            .header("content-type", "application/x-www-form-urlencoded")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::from("siteurl=1003&plan=personal&local_user=admin"))
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        shown.push(format!("{response:?}"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        shown.push(String::from_utf8_lossy(&body).into_owned());
    }
    shown.push(format!("{guard:?}"));
    let mut headers = http::HeaderMap::new();
    let refused = format!("Bearer {CALLER_REFUSED}");
    headers.insert(header::AUTHORIZATION, refused.parse().unwrap());
    let caller = Token::from_headers(&headers).unwrap();
    shown.push(format!("{caller:?}"));
    errors.push(
        caller_client
            .upgrade_paths_with(&site(), &caller)
            .await
            .unwrap_err(),
    );
    errors.push(caller_client.upgrade_paths(&site()).await.unwrap_err());
    let own = caller_client.token_source().token().await.unwrap_err();
    shown.push(format!("{own} {own:?}"));

    for error in errors {
        shown.push(format!("{error} {error:?}"));
        let rejection = Rejection::Upstream(error);
        shown.push(format!("{rejection} {rejection:?}"));
        shown.push(String::from_utf8(rejection.to_json()).unwrap());
    }

    let secrets = [
        CLIENT_SECRET,
        TOKEN,
        &rotated,
        &stale,
        CALLER_TOKEN,
        CALLER_REFUSED,
    ];
    for text in &shown {
        assert_no_secret("Debug or Display output", text, &secrets);
    }
    let logged = logs.text();
    // The capture works: the retry, the refresh and the refused fetch were all logged.
    for event in [
        "retrying",
        "refreshing",
        "could not fetch a partner token",
        "invalid_client",
        "caller_unauthorized",
        "upgrade_not_allowed",
    ] {
        assert!(logged.contains(event), "no {event:?} in the logs: {logged}");
    }
    assert_no_secret("the logs", &logged, &secrets);
}
