//! The guard under axum: per-route configuration, and routes without it unaffected.

mod common;

use axum::{
    Router,
    body::{Body, Bytes},
    extract::Path,
    routing::{get, post},
};
use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};
use tower::ServiceExt;
use upgrade_guard::{Source, UpgradeGuardLayer};

struct App {
    router: Router,
    provisions: Arc<AtomicUsize>,
}

fn app(guard: UpgradeGuardLayer) -> App {
    let provisions = Arc::new(AtomicUsize::new(0));
    let (form_calls, path_calls, open_calls) =
        (provisions.clone(), provisions.clone(), provisions.clone());
    let router = Router::new()
        // The provision API's form: the guard's defaults. `route_layer` runs it only for the
        // methods the route has, so other methods still get axum's 405.
        .route(
            "/rest/v1.3/jpphp/provision",
            post(move |body: Bytes| async move {
                form_calls.fetch_add(1, Ordering::SeqCst);
                body
            })
            .route_layer(guard.clone()),
        )
        // The site from the path, the product from a JSON field; `layer` works as well.
        .route(
            "/sites/{site}/plans",
            post(move |Path(site): Path<String>, body: Bytes| async move {
                path_calls.fetch_add(1, Ordering::SeqCst);
                format!("{site}:{}", String::from_utf8_lossy(&body))
            })
            .layer(guard.site(Source::path("/sites/{site}/plans", "site"))),
        )
        // No guard here.
        .route(
            "/unguarded",
            post(move |body: Bytes| async move {
                open_calls.fetch_add(1, Ordering::SeqCst);
                body
            }),
        )
        .route("/health", get(|| async { "ok" }));
    App { router, provisions }
}

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

fn post_form(uri: &str, body: &'static str) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap()
}

fn post_json(uri: &str, body: &'static str) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn two_routes_configured_differently() {
    let fake = fake().await;
    let App { router, provisions } = app(recording_guard(client(&fake)));

    let upgrade = "siteurl=realtime.example.com&plan=professional&local_user=admin";
    let (status, body) = call(&router, post_form("/rest/v1.3/jpphp/provision", upgrade)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, upgrade));

    let (status, body) = call(
        &router,
        post_form(
            "/rest/v1.3/jpphp/provision",
            "siteurl=1003&plan=jetpack-backup-realtime",
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        body.starts_with(r#"{"error":"upgrade_not_allowed""#),
        "{body}"
    );

    let (status, body) = call(
        &router,
        post_json("/sites/1002/plans", r#"{"plan":"professional"}"#),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"1002:{"plan":"professional"}"#)
    );

    let (status, body) = call(
        &router,
        post_json(
            "/sites/professional.example.com/plans",
            r#"{"plan":"personal"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // The path route reads its site from the path, so a form without `siteurl` is fine there…
    let (status, _) = call(&router, post_form("/sites/1001/plans", "plan=jetpack-scan")).await;
    assert_eq!(status, StatusCode::OK);
    // …while the provision route insists on it.
    let (status, body) = call(
        &router,
        post_form("/rest/v1.3/jpphp/provision", "plan=jetpack-scan"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains(r#""error":"missing_site""#));

    assert_eq!(provisions.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn routes_without_the_layer_are_unaffected() {
    let fake = fake().await;
    let App { router, provisions } = app(recording_guard(client(&fake)));

    let (status, body) = call(
        &router,
        post_form("/unguarded", "siteurl=1003&plan=jetpack-backup-realtime"),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "siteurl=1003&plan=jetpack-backup-realtime")
    );
    let (status, body) = call(
        &router,
        Request::get("/health").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    // Unmatched routes and methods are axum's own answers, not the guard's.
    let (status, _) = call(
        &router,
        Request::get("/rest/v1.3/jpphp/provision")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, _) = call(
        &router,
        Request::get("/nowhere").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    assert_eq!(provisions.load(Ordering::SeqCst), 1);
    assert_eq!(
        fake.stats().requests,
        0,
        "no upgrade-paths lookup for unguarded routes"
    );
}

#[tokio::test]
async fn the_guard_serves_a_real_axum_server_over_tcp() {
    let fake = fake().await;
    let App { router, provisions } = app(recording_guard(client(&fake)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let http = reqwest::Client::new();
    let refused = http
        .post(format!("http://{addr}/rest/v1.3/jpphp/provision"))
        .header("content-type", "multipart/form-data;; boundary=b")
        .body("--b\r\nContent-Disposition: form-data; name=\"siteurl\"\r\n\r\n1003\r\n--b\r\nContent-Disposition: form-data; name=\"plan\"\r\n\r\npremium\r\n--b--\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 409);
    assert_eq!(refused.headers()["content-type"], "application/json");
    let allowed = http
        .post(format!("http://{addr}/sites/1001/plans"))
        .header("content-type", "application/json")
        .body(r#"{"plan":"premium"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status().as_u16(), 200);
    assert_eq!(provisions.load(Ordering::SeqCst), 1);
    server.abort();
}

#[test]
fn layer_service_and_future_are_clone_send_and_sync() {
    fn clone_send_sync<T: Clone + Send + Sync>() {}
    fn send<T: Send>() {}
    type Inner = axum::routing::Route;
    clone_send_sync::<UpgradeGuardLayer>();
    clone_send_sync::<upgrade_guard::UpgradeGuard<Inner>>();
    send::<upgrade_guard::ResponseFuture<Inner, Body>>();
    clone_send_sync::<upgrade_guard::UpgradePathsClient>();
    clone_send_sync::<upgrade_guard::TokenSource>();
    clone_send_sync::<upgrade_guard::LocalLocks>();
}
