//! The guard without a framework: plain hyper and `tower::ServiceBuilder`.
//!
//! ```text
//! cargo run --example hyper_service            # listens on 127.0.0.1:3001, embedded fake upstream
//! ```
//!
//! Every request is a provision: the site and the product come from the query string, so the
//! body is passed on unread. The inner service is a plain `service_fn`.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tower::ServiceBuilder;
use upgrade_guard::fake::FakeUpstream;
use upgrade_guard::{GuardBody, Source, UpgradeGuardLayer, UpgradePathsClient};

/// The partner's own provision handler; it only runs for upgrades.
async fn provision(
    request: Request<GuardBody<Incoming>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let query = request.uri().query().unwrap_or_default().to_owned();
    let body = request.into_body().collect().await?.to_bytes();
    let answer = format!(
        "{{\"provisioned\":\"{query}\",\"body_bytes\":{}}}\n",
        body.len()
    );
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Full::from(answer))
        .expect("a valid response"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fake = FakeUpstream::builder().demo_sites().start().await?;
    let client = UpgradePathsClient::builder()
        .base_url(fake.url())
        .bearer_token(fake.token())
        .build()?;

    let service = ServiceBuilder::new()
        .layer(
            UpgradeGuardLayer::new(client)
                .site(Source::query("site"))
                .product(Source::query("plan")),
        )
        .service_fn(provision);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    let addr = listener.local_addr()?;
    println!(
        "hyper + tower::ServiceBuilder on http://{addr}, upstream {}",
        fake.url()
    );
    println!(
        "  curl -s -X POST 'http://{addr}/provision?site=1002&plan=professional'           # forwarded"
    );
    println!(
        "  curl -s -X POST 'http://{addr}/provision?site=1003&plan=jetpack-backup-realtime' # 409"
    );

    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                eprintln!("connection error: {error}");
            }
        });
    }
}
