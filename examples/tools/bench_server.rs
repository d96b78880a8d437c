//! The server `bench/external/run.sh` drives with `wrk`: what the guard costs as an outside load
//! generator sees it.
//!
//! ```text
//! cargo run --release --example bench_server -- [--listen 127.0.0.1:18090] [--workers N]
//! ```
//!
//! One axum API, three routes, one handler (it reads the form, urlencoded or multipart with
//! `multer`, and answers 200; it does not call the upstream):
//!
//! - `POST /unguarded`: no check;
//! - `POST /guarded`: upgrade-guard with its cache (TTL 300 s, so cached refusals stay cached
//!   for the whole run) and no settling window (the handler provisions nothing);
//! - `POST /from_fn`: the check as a partner would write it without this crate: an axum
//!   `middleware::from_fn` that buffers the body, asks upgrade-paths with reqwest, and forwards
//!   (the load test's d), its reqwest client bounded by a 5 s timeout as the guard's lookups
//!   are (`--from-fn-timeout SECONDS`, `0` for none: then an upstream that never answers holds
//!   the request for ever, which the guard's contract does not allow).
//!
//! A timeout is a Tokio timer per request, and registering one can wake a worker parked in the
//! I/O driver (an `eventfd` write and a futex wake-up): a cost the guard pays for its own
//! bounds, and that a check without any bound does not.
//!
//! The library's fake upstream answers the lookups on a loopback port, on a runtime and thread
//! of its own so that it does not take the server's workers. Its sites: 1003 holds Professional
//! (so `siteurl=1003&plan=premium` is a refusal the cache answers), 2000 to 2999 are free (so
//! `plan=jetpack-scan` on them is allowed and costs one lookup each time). Prints `listening
//! <addr>` once serving, then serves until killed.

#[path = "partner_side.rs"]
mod partner_side;

use axum::{Router, middleware, routing::post};
use partner_side::{Check, from_fn_check, provision};
use std::net::SocketAddr;
use std::time::Duration;
use upgrade_guard::fake::{FakeSite, FakeUpstream};
use upgrade_guard::{UpgradeGuardLayer, UpgradePathsClient};

/// The free sites the allowed requests are spread over.
const FREE_SITES: std::ops::Range<u64> = 2000..3000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen: SocketAddr = "127.0.0.1:18090".parse()?;
    let mut workers = None;
    let mut from_fn_timeout = Duration::from_secs(5);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().ok_or("--listen ADDR")?.parse()?,
            "--workers" => workers = Some(args.next().ok_or("--workers N")?.parse()?),
            "--from-fn-timeout" => {
                let seconds = args.next().ok_or("--from-fn-timeout SECONDS")?.parse()?;
                from_fn_timeout = Duration::from_secs(seconds);
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }

    // The fake upstream, on a thread and a single-threaded runtime of its own.
    let (fake_tx, fake_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the fake's runtime");
        runtime.block_on(async move {
            let mut builder =
                FakeUpstream::builder().site(FakeSite::new(1003).holding(["professional"]));
            for id in FREE_SITES {
                builder = builder.site(FakeSite::new(id));
            }
            let fake = builder.start().await.expect("the fake upstream starts");
            fake_tx
                .send((fake.url().to_owned(), fake.token().to_owned()))
                .expect("main waits for the fake");
            std::future::pending::<()>().await;
        });
    });
    let (upstream, token) = fake_rx.recv()?;

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        runtime.worker_threads(workers);
    }
    runtime
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream, token, from_fn_timeout))
}

async fn serve(
    listen: SocketAddr,
    upstream: String,
    token: String,
    from_fn_timeout: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let client = UpgradePathsClient::builder()
        .base_url(&upstream)
        .bearer_token(&token)
        .build()?;
    // The handler provisions nothing, so the fake keeps offering what was "provisioned": a
    // guard remembering its provisions (the settling window) would read every later answer as
    // stale and refuse the same provision again. A real handler's provision changes the answer.
    let guard = UpgradeGuardLayer::builder(client)
        .cache_ttl(Duration::from_secs(300))
        .settling_window(Duration::ZERO)
        .build();
    let check = Check::new(&upstream, &token, from_fn_timeout)?;
    let app = Router::new()
        .route("/unguarded", post(provision))
        .route("/guarded", post(provision).route_layer(guard))
        .route(
            "/from_fn",
            post(provision).route_layer(middleware::from_fn_with_state(check, from_fn_check)),
        );
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("listening {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
