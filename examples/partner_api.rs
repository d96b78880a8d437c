//! A small partner API on axum with the upgrade guard on its provision routes.
//!
//! ```text
//! cargo run --example partner_api                       # embedded fake WordPress.com
//! cargo run --example partner_api -- --upstream https://public-api.wordpress.com --token TOKEN
//! cargo run --example partner_api --features redis -- --redis redis://127.0.0.1:6379/  # replicas
//! ```
//!
//! Flags (environment variables stand in for any of them):
//!
//! | flag | variable | default |
//! |---|---|---|
//! | `--listen ADDR` | `PARTNER_API_LISTEN` | `127.0.0.1:3000` |
//! | `--upstream URL` | `WPCOM_API_URL` | start the embedded fake, seeded with demo sites |
//! | `--token TOKEN` | `WPCOM_TOKEN` | |
//! | `--client-id ID` | `WPCOM_CLIENT_ID` | the fake's client credentials |
//! | `--client-secret SECRET` | `WPCOM_CLIENT_SECRET` | |
//! | `--redis URL` | `REDIS_URL` | in-process site locks; with a URL, locks shared by every replica through Redis (needs `--features redis`) |
//!
//! With client credentials, one token source serves the guard's lookups and the relay: the token
//! is fetched once, on first use, and refreshed once when WordPress.com refuses it.
//!
//! Routes:
//! - `POST /rest/v1.3/jpphp/provision`: WordPress.com's own provision form (`siteurl`, `plan`,
//!   `local_user`, …; urlencoded or multipart), so existing partner tooling can point at it. A
//!   new site's first provision and a connection request (no `plan`, or `free`) go through.
//! - `POST /sites/{site}/plans`: `{"plan": "…"}` (JSON or a form); the site, a blog ID or a
//!   domain, from the path. A plan is required here.
//! - `POST /rest/v1.3/jpphp/{site}/partner-cancel`: WordPress.com's cancel form (`plan` or
//!   `cancel-all`), held per site; the guard forgets the site's cached paths, so what the cancel
//!   gave back can be provisioned at once.
//! - `GET /sites/{site}/upgrade-paths`: what the site may get now, for a dashboard, through the
//!   guard's own cached, coalesced lookups.
//!
//! Each handler relays to the upstream with the partner's token and answers with the upstream's
//! status and JSON. The guard stops downgrades before they get there. Every decision is logged to
//! stderr: `RUST_LOG=upgrade_guard=debug` for more, `RUST_LOG=warn` for less.

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use std::{collections::HashMap, env, net::SocketAddr, process::ExitCode};
use upgrade_guard::{
    Checked, LookupError, Rejection, Site, SiteKind, Source, TokenSource, UpgradeGuardLayer,
    UpgradePathsClient,
    fake::{FakeUpstream, SiteSnapshot},
};

/// The example's settings, from flags and environment variables.
struct Settings {
    listen: SocketAddr,
    upstream: Option<String>,
    token: Option<String>,
    client_credentials: Option<(String, String)>,
    redis: Option<String>,
}

/// What the handlers need to relay a provision or a cancellation.
#[derive(Clone)]
struct Relay {
    http: reqwest::Client,
    /// The upstream's base URL.
    upstream: String,
    /// The guard's own token source: one token for lookups and provisions.
    tokens: TokenSource,
    /// The guard, for the dashboard's upgrade paths.
    guard: UpgradeGuardLayer,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("partner_api: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::from_args()?;
    // Each decision of the guard is an `info` event: shown by default, on stderr.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal, plain text for a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // No upstream named: run against the embedded fake, seeded with demo sites.
    let fake = match settings.upstream {
        Some(_) => None,
        // Upgrade-paths answering about plans and backups only, as WordPress.com's partner docs
        // describe it today: Scan and Anti-spam are then products it does not judge.
        None => Some(
            FakeUpstream::builder()
                .demo_sites()
                .answer_families(["jetpack-plans", "jetpack-backup"])
                .start()
                .await?,
        ),
    };
    let upstream = match (&settings.upstream, &fake) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(fake)) => fake.url().to_owned(),
        (None, None) => unreachable!("the fake runs when no upstream is named"),
    };
    let http = reqwest::Client::new();
    let client = UpgradePathsClient::builder()
        .base_url(&upstream)
        .http_client(http.clone());
    let client = match (settings.token, settings.client_credentials, &fake) {
        // The embedded fake has credentials of its own: a real token left in the environment
        // would only be refused there.
        (token, credentials, Some(fake)) => {
            if token.is_some() || credentials.is_some() {
                eprintln!(
                    "partner_api: no --upstream, so the embedded fake's own credentials are used; \
                     the token or client credentials given are for --upstream"
                );
            }
            client.client_credentials(fake.client_id(), fake.client_secret())
        }
        (Some(token), _, None) => client.bearer_token(token),
        (None, Some((id, secret)), None) => client.client_credentials(id, secret),
        (None, None, None) => {
            return Err("--upstream needs --token or --client-id and --client-secret".into());
        }
    }
    .build()?;
    let tokens = client.token_source().clone();
    let guard = guard(client, settings.redis.as_deref())?;
    let relay = Relay {
        http,
        upstream: upstream.clone(),
        tokens,
        guard: guard.clone(),
    };
    let detached = guard.detached();

    let app = Router::new()
        // WordPress.com's form: the guard's defaults (site from `siteurl`, product from `plan`;
        // no plan, or `free`, is a connection request; a new site's first provision goes through).
        .route(
            "/rest/v1.3/jpphp/provision",
            post(provision).route_layer(guard.clone()),
        )
        // The site from the path, the product from the body's `plan`, which is required.
        .route(
            "/sites/{site}/plans",
            post(add_plan).route_layer(
                guard
                    .clone()
                    .site(Source::path("/sites/{site}/plans", "site"))
                    .require_product(),
            ),
        )
        // A cancel gives products back: held per site, and the site's cached paths forgotten.
        .route(
            "/rest/v1.3/jpphp/{site}/partner-cancel",
            post(cancel).route_layer(
                guard
                    .site(Source::path(
                        "/rest/v1.3/jpphp/{site}/partner-cancel",
                        "site",
                    ))
                    .cancels(),
            ),
        )
        .route("/sites/{site}/upgrade-paths", get(upgrade_paths))
        .with_state(relay);

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {}: {e} (choose another address with --listen)",
                settings.listen
            )
        })?;
    let listen = listener.local_addr()?;
    println!("partner API listening on http://{listen}, upstream {upstream}");
    if let Some(fake) = &fake {
        print_demo(listen, &fake.sites());
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await?;
    // No new requests now. Provisions whose clients left still hold their sites until they have
    // landed: wait for them (each ends within its route's `detached_ceiling`) before exiting.
    if detached.in_progress() > 0 {
        println!(
            "waiting for {} provision(s) whose clients left",
            detached.in_progress()
        );
    }
    detached.wait().await;
    Ok(())
}

/// SIGTERM (a deploy, `docker stop`, systemd) or Ctrl-C.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `POST /rest/v1.3/jpphp/provision`: relays the form as it arrived, byte for byte.
async fn provision(State(relay): State<Relay>, headers: HeaderMap, body: Bytes) -> Response {
    let url = format!("{}/rest/v1.3/jpphp/provision", relay.upstream);
    relay.send(url, content_type(&headers), body).await
}

/// `POST /rest/v1.3/jpphp/{site}/partner-cancel`: relays the cancel form for the site the guard
/// held (in the request's extensions), as it arrived.
async fn cancel(
    State(relay): State<Relay>,
    Extension(site): Extension<Site>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let url = format!("{}/rest/v1.3/jpphp/{site}/partner-cancel", relay.upstream);
    relay.send(url, content_type(&headers), body).await
}

/// `GET /sites/{site}/upgrade-paths`: the products the site may get now, as WordPress.com's
/// family -> products JSON, through the guard's cached, coalesced lookups.
async fn upgrade_paths(State(relay): State<Relay>, Path(site): Path<String>) -> Response {
    let site = match Site::parse(&site) {
        Ok(site) => site,
        Err(invalid) => return guard_answer(Rejection::InvalidSite(invalid)),
    };
    match relay.guard.upgrade_paths(&site).await {
        Ok(paths) => axum::Json(&*paths).into_response(),
        Err(LookupError::UnknownSite) => guard_answer(Rejection::UnknownSite { site }),
        Err(error) => guard_answer(Rejection::Upstream(error)),
    }
}

/// The guard's own answer for `why`, as an axum response.
fn guard_answer(why: Rejection) -> Response {
    let mut response = (
        why.status(),
        [(header::CONTENT_TYPE, "application/json")],
        why.to_json(),
    )
        .into_response();
    if let Some(wait) = why.retry_after() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, wait.as_secs().into());
    }
    response
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded")
        .to_owned()
}

/// The site as WordPress.com's provision takes it in `siteurl`: a blog ID as it is, a domain
/// site as its URL (`example.com::blog` -> `https://example.com/blog/`).
fn siteurl(site: &Site) -> String {
    match site.kind() {
        SiteKind::Url => format!("https://{}/", site.as_str().replace("::", "/")),
        _ => site.as_str().to_owned(),
    }
}

/// `POST /sites/{site}/plans`: turns `{"plan": …}` into the provision form for that site.
///
/// The site and the plan are the ones the guard checked: reading the body again with another
/// parser could find another plan than the one checked.
async fn add_plan(
    State(relay): State<Relay>,
    Extension(checked): Extension<Checked>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    // `local_user` decides nothing about upgrades: a best-effort read is enough.
    let local_user = if is_json {
        serde_json::from_slice::<HashMap<String, serde_json::Value>>(&body)
            .ok()
            .and_then(|fields| fields.get("local_user")?.as_str().map(str::to_owned))
    } else {
        serde_urlencoded::from_bytes::<HashMap<String, String>>(&body)
            .ok()
            .and_then(|mut fields| fields.remove("local_user"))
    };
    let site = siteurl(checked.site());
    let form = [
        ("siteurl", site.as_str()),
        ("plan", checked.product()),
        ("local_user", local_user.as_deref().unwrap_or("admin")),
    ];
    let form = serde_urlencoded::to_string(form).expect("strings always encode");
    let url = format!("{}/rest/v1.3/jpphp/provision", relay.upstream);
    relay
        .send(url, "application/x-www-form-urlencoded".into(), form.into())
        .await
}

impl Relay {
    /// Sends the form to `url` with the current token; a token WordPress.com refuses is
    /// refreshed once and the form sent again.
    async fn send(&self, url: String, content_type: String, body: Bytes) -> Response {
        let mut token = match self.tokens.token().await {
            Ok(token) => token,
            Err(error) => return bad_gateway(&error.to_string()),
        };
        for attempt in 0..2 {
            let sent = self
                .http
                .post(&url)
                .header(header::AUTHORIZATION, token.authorization())
                .header(header::CONTENT_TYPE, &content_type)
                .body(body.clone())
                .send()
                .await;
            let upstream = match sent {
                Ok(upstream) => upstream,
                Err(error) => return bad_gateway(&error.without_url().to_string()),
            };
            if upstream.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                match self.tokens.refresh(&token).await {
                    Ok(fresh) => {
                        token = fresh;
                        continue;
                    }
                    Err(error) => return bad_gateway(&error.to_string()),
                }
            }
            let status =
                StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            return match upstream.bytes().await {
                Ok(body) => {
                    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
                }
                Err(error) => bad_gateway(&error.without_url().to_string()),
            };
        }
        bad_gateway("WordPress.com refused the refreshed token")
    }
}

fn bad_gateway(reason: &str) -> Response {
    let body = serde_json::json!({"error": "provision_failed", "message": reason});
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

fn print_demo(listen: SocketAddr, sites: &[SiteSnapshot]) {
    println!("\nEmbedded fake WordPress.com, seeded with these sites:");
    for site in sites {
        let held = if site.held.is_empty() {
            "nothing (free)".to_owned()
        } else {
            site.held.join(", ")
        };
        let blog_id = site.blog_id.map(|id| id.to_string()).unwrap_or_default();
        let url = site.url.as_deref().unwrap_or_default();
        println!("  blog {blog_id:<6} {url:<34} holds {held}");
    }
    let base = format!("http://{listen}");
    let provision = format!("curl -s -X POST {base}/rest/v1.3/jpphp/provision");
    println!(
        "\nAn upgrade, forwarded (the site has Realtime Backups, Professional adds to it; sent again\n\
         at once, it is 409 already_provisioned, done a moment ago; after the settling window, 409\n\
         upgrade_not_allowed, because the site has Professional now):\n  \
         {provision} \\\n    \
         -d siteurl=https://realtime.example.com/ -d plan=professional -d local_user=admin\n\
         \nA downgrade, refused with 409 (the site has Professional, Realtime Backups adds nothing):\n  \
         {provision} \\\n    \
         -d siteurl=https://professional.example.com/ -d plan=jetpack-backup-realtime -d local_user=admin\n\
         \nThe same with partner tooling's multipart form:\n  \
         {provision} -H 'Content-Type: multipart/form-data;' \\\n    \
         -F siteurl=https://professional.example.com/ -F plan=jetpack-backup-realtime -F local_user=admin\n\
         \nThe site from the path, the plan as JSON (blog 1001 is free: any plan is an upgrade):\n  \
         curl -s -X POST {base}/sites/1001/plans -H 'Content-Type: application/json' -d '{{\"plan\":\"personal\"}}'\n\
         \nA brand-new customer site: WordPress.com does not know it yet, so this is its first\n\
         provision, which registers it (a downgrade on it is refused from then on):\n  \
         {provision} \\\n    \
         -d siteurl=https://brand-new.example/ -d plan=jetpack-backup-daily -d local_user=admin\n\
         \nA connection or repair without a plan: forwarded, no product changes:\n  \
         {provision} \\\n    \
         -d siteurl=https://professional.example.com/ -d local_user=admin -d force_connect=1\n\
         \nWhat a site may get now, for a dashboard (blog 1004 has Daily Backups):\n  \
         curl -s {base}/sites/1004/upgrade-paths\n\
         \nScan, as the partner tooling's --plan=jetpack-scan sends it (upgrade-paths here speaks\n\
         about plans and backups only, as WordPress.com's docs say of today: the guard forwards Scan\n\
         marked unjudged, and WordPress.com's provision decides):\n  \
         {provision} -H 'Content-Type: multipart/form-data;' \\\n    \
         -F siteurl=https://example.com/blog/ -F plan=jetpack-scan -F local_user=admin\n\
         \nCancel, then provision what the cancel gave back (the downgrade refused above is an\n\
         upgrade at once: the guard forgot the site's cached paths):\n  \
         curl -s -X POST {base}/rest/v1.3/jpphp/professional.example.com/partner-cancel -d plan=professional\n  \
         {provision} \\\n    \
         -d siteurl=https://professional.example.com/ -d plan=jetpack-backup-realtime -d local_user=admin\n"
    );
}

impl Settings {
    fn from_args() -> Result<Self, String> {
        let mut settings = Settings {
            listen: env_var("PARTNER_API_LISTEN")
                .unwrap_or_else(|| "127.0.0.1:3000".into())
                .parse()
                .map_err(|e| format!("PARTNER_API_LISTEN: {e}"))?,
            upstream: env_var("WPCOM_API_URL"),
            token: env_var("WPCOM_TOKEN"),
            client_credentials: None,
            // Without the feature a REDIS_URL set for other programs is not this example's business.
            redis: env_var("REDIS_URL").filter(|_| cfg!(feature = "redis")),
        };
        let mut client_id = env_var("WPCOM_CLIENT_ID");
        let mut client_secret = env_var("WPCOM_CLIENT_SECRET");
        let mut args = env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "-h" || flag == "--help" {
                println!(
                    "usage: partner_api [--listen ADDR] [--upstream URL] \
                     [--token TOKEN | --client-id ID --client-secret SECRET] [--redis URL]\n\n\
                     --listen ADDR      where to serve (PARTNER_API_LISTEN; default 127.0.0.1:3000)\n\
                     --upstream URL     the partner API (WPCOM_API_URL; default: an embedded fake\n\
                     \x20                  WordPress.com with demo sites and its own credentials)\n\
                     --token TOKEN      a partner bearer token for --upstream (WPCOM_TOKEN)\n\
                     --client-id ID     OAuth2 client credentials for --upstream (WPCOM_CLIENT_ID,\n\
                     --client-secret S  WPCOM_CLIENT_SECRET), fetched once and refreshed when refused\n\
                     --redis URL        share site locks between replicas (REDIS_URL; needs\n\
                     \x20                  `--features redis`)"
                );
                std::process::exit(0);
            }
            let value = args
                .next()
                .ok_or_else(|| format!("{flag} needs a value (see --help)"))?;
            match flag.as_str() {
                "--listen" => {
                    settings.listen = value.parse().map_err(|e| format!("--listen: {e}"))?;
                }
                "--upstream" => settings.upstream = Some(value),
                "--token" => settings.token = Some(value),
                "--client-id" => client_id = Some(value),
                "--client-secret" => client_secret = Some(value),
                "--redis" => settings.redis = Some(value),
                other => return Err(format!("unknown flag {other} (see --help)")),
            }
        }
        settings.client_credentials = match (client_id, client_secret) {
            (Some(id), Some(secret)) => Some((id, secret)),
            (None, None) => None,
            _ => return Err("--client-id and --client-secret go together".into()),
        };
        Ok(settings)
    }
}

/// The guard, with its site locks in Redis when a URL is given, so that several replicas of this
/// API behind a load balancer take turns on a site.
fn guard(
    client: UpgradePathsClient,
    redis: Option<&str>,
) -> Result<UpgradeGuardLayer, Box<dyn std::error::Error>> {
    let Some(url) = redis else {
        return Ok(UpgradeGuardLayer::new(client));
    };
    #[cfg(feature = "redis")]
    {
        let locks = upgrade_guard::RedisLocks::builder(url).build()?;
        println!("site locks shared through {locks:?}");
        Ok(UpgradeGuardLayer::builder(client)
            .site_locks(locks.clone())
            .peers(locks)
            .build())
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (client, url);
        Err("--redis needs the example built with `--features redis`".into())
    }
}

fn env_var(name: &str) -> Option<String> {
    env::var(name).ok().filter(|v| !v.is_empty())
}
