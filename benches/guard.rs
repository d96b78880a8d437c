//! The guard's own work per request, with the upstream answer cached, against the same inner
//! service without the layer.
//!
//! `cargo bench --bench guard`. With an answer in the cache the guard still reads the request,
//! takes the site's lock, decides and writes its 409: everything but the network. (The cache only
//! ever refuses, so cached answers are refusals; an allowed request always costs one lookup.)

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;
use tower::{Layer, Service, ServiceExt, service_fn};
use upgrade_guard::fake::{FakeSite, FakeUpstream};
use upgrade_guard::{GuardBody, Source, UpgradeGuardLayer, UpgradePathsClient};

/// Builds one benchmark request.
type MakeRequest = fn() -> Request<Full<Bytes>>;

/// A 1 KiB urlencoded provision form naming a product the site cannot take.
fn form_1k() -> Request<Full<Bytes>> {
    let mut body = String::from(
        "siteurl=https%3A%2F%2Fpro.example.com%2F&plan=premium&local_user=admin&onboarding=1&note=",
    );
    body.push_str(&"n".repeat(1024 - body.len()));
    Request::post("/provision")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from(body))
        .unwrap()
}

/// A 4 KiB multipart form as partner tooling sends it (curl with a hand-set content type).
fn multipart_4k() -> Request<Full<Bytes>> {
    let boundary = "------------------------d74496d66958873e";
    let mut body = String::new();
    for (name, value) in [
        ("siteurl", "https://pro.example.com/"),
        ("plan", "premium"),
        ("local_user", "admin"),
        ("force_register", "1"),
        ("onboarding", "1"),
    ] {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"ssh_private_key\"\r\n\r\n"
    ));
    let closing = format!("\r\n--{boundary}--\r\n");
    body.push_str(&"k".repeat(4096 - body.len() - closing.len()));
    body.push_str(&closing);
    Request::post("/provision")
        .header(
            "content-type",
            format!("multipart/form-data;; boundary={boundary}"),
        )
        .body(Full::from(body))
        .unwrap()
}

fn json() -> Request<Full<Bytes>> {
    Request::post("/provision")
        .header("content-type", "application/json")
        .body(Full::from(
            r#"{"siteurl":"https://pro.example.com/","plan":"premium","local_user":"admin"}"#,
        ))
        .unwrap()
}

fn path() -> Request<Full<Bytes>> {
    Request::post("/sites/pro.example.com/plans/premium")
        .body(Full::default())
        .unwrap()
}

/// The partner's handler: answers at once, so what is measured is the guard.
fn inner<B: Send + 'static>()
-> impl Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible, Future = impl Send>
+ Clone {
    service_fn(|_request: Request<B>| async {
        Ok::<_, Infallible>(Response::new(Full::from("provisioned")))
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fake = rt.block_on(async {
        FakeUpstream::builder()
            .site(
                FakeSite::new(1003)
                    .url("https://pro.example.com/")
                    .holding(["professional"]),
            )
            .start()
            .await
            .unwrap()
    });
    let client = UpgradePathsClient::builder()
        .base_url(fake.url())
        .bearer_token(fake.token())
        .build()
        .unwrap();
    // The answer stays cached for the whole run: with the default 30 s, an entry cached by one
    // case's first request expires during a later case, whose guarded requests then pay a
    // lookup (and the check below fails).
    let guard = UpgradeGuardLayer::builder(client)
        .cache_ttl(Duration::from_secs(3600))
        .build();
    let by_path = guard
        .clone()
        .site(Source::path("/sites/{site}/plans/{plan}", "site"))
        .product(Source::path("/sites/{site}/plans/{plan}", "plan"));

    let cases: [(&str, MakeRequest, &UpgradeGuardLayer); 4] = [
        ("form_1k", form_1k, &guard),
        ("multipart_4k", multipart_4k, &guard),
        ("json", json, &guard),
        ("path_no_body", path, &by_path),
    ];
    let mut group = c.benchmark_group("guard");
    for (name, request, layer) in cases {
        let guarded = layer.layer(inner::<GuardBody<Full<Bytes>>>());
        // Warm the cache: the first request looks the site up.
        let status = rt
            .block_on(guarded.clone().oneshot(request()))
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::CONFLICT, "{name}");
        let lookups = fake.stats().lookups;

        group.bench_function(format!("{name}/guarded"), |b| {
            b.to_async(&rt).iter(|| {
                let service = guarded.clone();
                async move { black_box(service.oneshot(request()).await.unwrap()) }
            })
        });
        let baseline = inner::<Full<Bytes>>();
        group.bench_function(format!("{name}/baseline"), |b| {
            b.to_async(&rt).iter(|| {
                let service = baseline.clone();
                async move { black_box(service.oneshot(request()).await.unwrap()) }
            })
        });
        assert_eq!(
            fake.stats().lookups,
            lookups,
            "{name}: every guarded request was answered from the cache"
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
