//! A bounded soak of the guard: mixed allowed, refused, malformed and abandoned provision requests
//! over many sites, with upstream faults injected all along, through the real layer in front of
//! a handler that relays to the fake WordPress.com's provision endpoint.
//!
//! ```sh
//! cargo run --release --example soak                 # 0.5 minutes
//! cargo run --release --example soak -- --minutes 10
//! cargo run --example soak -- --quick                # 5 seconds, as CI runs it
//! ```
//!
//! Options: `--minutes N` (default 0.5), `--quick` (5 s), `--workers N` (default 32),
//! `--sites N` (default 400), `--seed N` (default: from the clock).
//!
//! Abandoned requests are dropped after 0-40 ms, wherever they are: reading, waiting for the
//! site's lock, looking the site up, or while the handler relays the provision. The handler
//! gives an abandoned request's provision 0-60 ms of transit once it has started sending it, so
//! many are dropped mid-relay: such a provision lands whatever becomes of the future, and the
//! guard must keep the site held until it has (it finishes the handler alone), or a request
//! checked meanwhile could be a downgrade by the time it lands (TESTING.md, "Findings").
//!
//! At the end it waits for the requests the guard is finishing alone, then checks that the fake's
//! leak counter is 0 (no downgrade reached the provision call), that every answer the guard made
//! was one of the contract's `(status, error)` pairs, that no request finished alone ran into its
//! ceiling, that no site lock is held, and that memory is flat (RSS from `/proc/self/status`, sampled every
//! second: the last quarter's median may exceed the median after warm-up by at most 25% + 16 MiB).
//! It prints its figures and exits with status 1 on any violation.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};
use upgrade_guard::fake::catalogue::{self, PRODUCTS};
use upgrade_guard::fake::{Endpoint, FakeSite, FakeUpstream, Fault};
use upgrade_guard::{
    DetachedEnd, GuardBody, LocalLocks, Outcome, Site, SiteLocks, UpgradeGuardLayer,
    UpgradePathsClient,
};

/// Every `(status, error)` the guard itself answers, from the contract.
const CONTRACT: [(u16, &str); 13] = [
    (409, "upgrade_not_allowed"),
    (409, "already_provisioned"),
    (503, "provision_settling"),
    (400, "missing_site"),
    (400, "missing_product"),
    (400, "invalid_site"),
    (400, "invalid_body"),
    (415, "unsupported_media_type"),
    (413, "body_too_large"),
    (404, "unknown_site"),
    (502, "upstream_unauthorized"),
    (503, "upgrade_paths_unavailable"),
    (503, "site_busy"),
];
/// What the sites hold at the start (and again when a site has nothing left to be offered).
const HOLDINGS: [&[&str]; 6] = [
    &[],
    &["jetpack-backup-realtime"],
    &["jetpack-backup-daily"],
    &["premium"],
    &["jetpack-scan", "jetpack-anti-spam"],
    &["personal"],
];
const BODY_LIMIT: usize = 16 * 1024;
const RELAYED: &str = "x-soak-relayed";
/// How long the guard finishes a request alone at most.
const DETACHED_CEILING: Duration = Duration::from_secs(10);

struct Options {
    duration: Duration,
    workers: usize,
    sites: usize,
    seed: u64,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        duration: Duration::from_secs(30),
        workers: 32,
        sites: 400,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--minutes" => {
                let minutes: f64 = value("--minutes")?
                    .parse()
                    .map_err(|e| format!("--minutes: {e}"))?;
                if !(minutes > 0.0 && minutes <= 24.0 * 60.0) {
                    return Err("--minutes must be in (0, 1440]".into());
                }
                options.duration = Duration::from_secs_f64(minutes * 60.0);
            }
            "--quick" => options.duration = Duration::from_secs(5),
            "--workers" => {
                options.workers = value("--workers")?
                    .parse()
                    .map_err(|e| format!("--workers: {e}"))?
            }
            "--sites" => {
                options.sites = value("--sites")?
                    .parse()
                    .map_err(|e| format!("--sites: {e}"))?
            }
            "--seed" => {
                options.seed = value("--seed")?
                    .parse::<u64>()
                    .map_err(|e| format!("--seed: {e}"))?
                    | 1
            }
            "-h" | "--help" => {
                return Err(
                    "usage: soak [--minutes N | --quick] [--workers N] [--sites N] [--seed N]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if options.workers == 0 || options.sites < 2 {
        return Err("--workers must be at least 1 and --sites at least 2".into());
    }
    Ok(options)
}

/// xorshift64*: enough randomness for a load mix, and no dependency.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Site `i` of the soak: the even ones are named by blog ID, the odd ones by URL. (One spelling
/// per site: the lock is keyed by the identifier as requests give it.)
struct SoakSite {
    spelling: String,
    fake: FakeSite,
}

fn soak_site(i: usize) -> SoakSite {
    let held = HOLDINGS[i % HOLDINGS.len()].iter().copied();
    if i.is_multiple_of(2) {
        let id = 100_000 + i as u64;
        SoakSite {
            spelling: id.to_string(),
            fake: FakeSite::new(id).holding(held),
        }
    } else {
        let url = format!("https://site{i}.example.com/wp/");
        SoakSite {
            spelling: url.clone(),
            fake: FakeSite::from_url(&url).holding(held),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Allowed,
    Refused,
    Malformed,
    Abandoned,
}

/// A provision form in one of the three encodings partners use.
fn provision_request(rng: &mut Rng, fields: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let (content_type, body) = match rng.below(3) {
        0 => (
            "application/x-www-form-urlencoded".to_owned(),
            serde_urlencoded::to_string(fields).unwrap().into_bytes(),
        ),
        1 => {
            let boundary = format!("------------------------{:016x}", rng.next());
            let mut body = Vec::new();
            for (name, value) in fields {
                body.extend_from_slice(
                    format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                        .as_bytes(),
                );
            }
            body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            // The spelling curl sends when tooling sets `multipart/form-data;` by hand.
            (format!("multipart/form-data;; boundary={boundary}"), body)
        }
        _ => {
            let map: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .map(|(n, v)| (n.to_string(), serde_json::Value::from(*v)))
                .collect();
            (
                "application/json".to_owned(),
                serde_json::to_vec(&map).unwrap(),
            )
        }
    };
    Request::post("/rest/v1.3/jpphp/provision")
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::from(body))
        .unwrap()
}

/// Requests the guard must answer itself: unreadable, incomplete, or naming no real site.
fn malformed(rng: &mut Rng, site: &str, product: &str) -> Request<Full<Bytes>> {
    let raw = |content_type: &str, body: Vec<u8>| {
        Request::post("/rest/v1.3/jpphp/provision")
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::from(body))
            .unwrap()
    };
    match rng.below(9) {
        0 => provision_request(rng, &[("plan", product), ("local_user", "admin")]),
        1 => provision_request(rng, &[("siteurl", site), ("local_user", "admin")]),
        2 => provision_request(
            rng,
            &[("siteurl", "example.com/../admin"), ("plan", product)],
        ),
        3 => provision_request(rng, &[("siteurl", "99999999"), ("plan", product)]),
        4 => raw("application/json", br#"{"siteurl": "1", "plan": "#.to_vec()),
        5 => raw(
            "text/plain",
            format!("siteurl={site}&plan={product}").into_bytes(),
        ),
        6 => raw(
            "application/x-www-form-urlencoded",
            format!(
                "siteurl={site}&plan={product}&pad={}",
                "x".repeat(BODY_LIMIT)
            )
            .into_bytes(),
        ),
        7 => raw(
            "application/x-www-form-urlencoded",
            format!("siteurl={site}&plan=personal&plan%5B%5D={product}").into_bytes(),
        ),
        _ => raw(
            "multipart/form-data; boundary=abc",
            b"--abc\r\nnot a part".to_vec(),
        ),
    }
}

/// Set by the handler when it starts sending the provision: from then on the provision may land
/// whatever becomes of the request's future.
#[derive(Clone, Default)]
struct Sent(Arc<AtomicBool>);

/// How long an abandoned request's provision is in transit once its handler has started sending.
#[derive(Clone, Copy)]
struct Transit(Duration);

#[derive(Default)]
struct Tally {
    by_kind: BTreeMap<(Kind, String), u64>,
    violations: Vec<String>,
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn median(values: &[u64]) -> u64 {
    let mut values = values.to_vec();
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let sites: Arc<Vec<SoakSite>> = Arc::new((0..options.sites).map(soak_site).collect());
    let mut builder = FakeUpstream::builder();
    for site in sites.iter() {
        builder = builder.site(site.fake.clone());
    }
    let fake = Arc::new(builder.start().await.expect("the fake starts on loopback"));

    let client = UpgradePathsClient::builder()
        .base_url(fake.url())
        .bearer_token(fake.token())
        .lookup_timeout(Duration::from_secs(1))
        .build()
        .expect("the client builds");
    let locks = LocalLocks::new();
    let finished_alone: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    // The soak puts saturated sites back to their starting holdings behind the guard's back: their
    // upgrade paths grow, which a cached refusal does not see until it expires (the cache's
    // documented trade-off). A short TTL keeps most upgrades forwarded; the cache still serves
    // the hot refusals.
    let guard = UpgradeGuardLayer::builder(client)
        .site_locks(locks.clone())
        .cache_ttl(Duration::from_secs(1))
        .build()
        .body_limit(BODY_LIMIT)
        .lock_wait(Duration::from_secs(2))
        // Well above the relay's own 2 s deadline: no request finished alone should reach it.
        .detached_ceiling(DETACHED_CEILING)
        .on_decision({
            let finished_alone = finished_alone.clone();
            move |report| {
                if let Outcome::Detached(how) = report.outcome {
                    *finished_alone
                        .lock()
                        .unwrap()
                        .entry(format!("{how:?}"))
                        .or_default() += 1;
                }
            }
        });

    // The partner's handler: relays the form to the provision endpoint, marks its answers.
    // With a deadline, as any real handler's: a stalled provision answer (an injected fault)
    // would otherwise hold the site's lock for ever.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("the relay's HTTP client builds");
    let provision_url = format!("{}/rest/v1.3/jpphp/provision", fake.url());
    let token = fake.token();
    let service = guard.layer(service_fn(
        move |request: Request<GuardBody<Full<Bytes>>>| {
            let (http, url, token) = (http.clone(), provision_url.clone(), token.clone());
            async move {
                let (parts, body) = request.into_parts();
                if let Some(sent) = parts.extensions.get::<Sent>() {
                    sent.0.store(true, Ordering::SeqCst);
                }
                let transit = parts.extensions.get::<Transit>().copied();
                let body = body.collect().await.expect("a buffered body").to_bytes();
                let mut relayed = http.post(url).bearer_auth(token).body(body);
                if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
                    relayed = relayed.header(header::CONTENT_TYPE, content_type.clone());
                }
                let relay = async move {
                    match relayed.send().await {
                        Ok(answer) => (answer.status(), answer.bytes().await.unwrap_or_default()),
                        Err(_) => (
                            StatusCode::BAD_GATEWAY,
                            Bytes::from_static(b"{\"error\":\"relay_failed\"}"),
                        ),
                    }
                };
                let (status, body) = match transit {
                    // The bytes are on the wire: the provision lands after its transit, whatever
                    // becomes of this future.
                    Some(Transit(transit)) => {
                        let landing = tokio::spawn(async move {
                            tokio::time::sleep(transit).await;
                            relay.await
                        });
                        landing.await.expect("the relay does not panic")
                    }
                    None => relay.await,
                };
                let mut response = Response::new(Full::from(body));
                *response.status_mut() = status;
                response
                    .headers_mut()
                    .insert(RELAYED, HeaderValue::from_static("1"));
                Ok::<_, Infallible>(response)
            }
        },
    ));

    println!(
        "soak: {:.1} min, {} workers, {} sites, seed {}",
        options.duration.as_secs_f64() / 60.0,
        options.workers,
        options.sites,
        options.seed
    );
    let started = Instant::now();
    let end = started + options.duration;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let requests = Arc::new(AtomicU64::new(0));
    let resets = Arc::new(AtomicU64::new(0));

    // Upstream faults, all along: on the lookups mostly, on the provision relay sometimes.
    let faults = {
        let (fake, stop) = (fake.clone(), stop.clone());
        let mut rng = Rng(options.seed.rotate_left(17) | 1);
        tokio::spawn(async move {
            // Bodies that never complete: their content cannot matter. (A complete body of
            // made-up paths would be the upstream lying, which no guard can catch.)
            let paths = r#"{"jetpack-plans":["personal","premium","professional"]}"#;
            while !stop.load(Ordering::Relaxed) {
                let fault = match rng.below(12) {
                    0 => Fault::status(503),
                    1 => Fault::status(429).header(header::RETRY_AFTER, "1"),
                    2 => Fault::status(500),
                    3 => Fault::DropConnection,
                    4 => Fault::Delay(Duration::from_millis(300)),
                    5 => Fault::stall_body(paths, 10),
                    6 => Fault::reset_body(paths, 10),
                    7 => Fault::truncate_body(paths, 10),
                    8 => Fault::slow_answer(8, Duration::from_millis(40)),
                    9 => Fault::status_with_body(200, "[]"),
                    10 => Fault::status(401),
                    _ => Fault::status(502),
                };
                let endpoint = if rng.below(8) == 0 {
                    Endpoint::Provision
                } else {
                    Endpoint::UpgradePaths
                };
                let times = 1 + rng.below(4) as u64;
                fake.inject(endpoint, fault).times(times);
                tokio::time::sleep(Duration::from_millis(50 + rng.below(250) as u64)).await;
            }
        })
    };

    // Memory, every second.
    let samples = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut samples = vec![(Duration::ZERO, rss_kib())];
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                samples.push((started.elapsed(), rss_kib()));
            }
            samples
        })
    };

    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..options.workers {
        let (service, fake, sites, locks, guard) = (
            service.clone(),
            fake.clone(),
            sites.clone(),
            locks.clone(),
            guard.clone(),
        );
        let (tally, requests, resets) = (tally.clone(), requests.clone(), resets.clone());
        let mut rng = Rng(options
            .seed
            .wrapping_add((worker as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            | 1);
        workers.spawn(async move {
            while Instant::now() < end {
                let site = rng.pick(&sites[..]);
                let held = fake.held_products(&site.spelling).unwrap_or_default();
                let offered: Vec<String> = catalogue::offered(held.iter().map(String::as_str))
                    .into_values()
                    .flatten()
                    .collect();
                if offered.is_empty() {
                    // Nothing left to provision: put the site back as it started, holding its
                    // lock so no provision of it is between check and relay meanwhile.
                    let id = Site::parse(&site.spelling).expect("a valid site");
                    if let Ok(_permit) = locks.acquire(&id, Duration::from_secs(2)).await {
                        fake.add_site(site.fake.clone());
                        // A change the guard cannot see, told to it: the provisions it
                        // remembers of the site are gone.
                        guard.forget(&id);
                        resets.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                let refusable: Vec<&str> = PRODUCTS
                    .iter()
                    .map(|p| p.slug)
                    .filter(|slug| !offered.iter().any(|o| o == slug))
                    .collect();
                let kind = match rng.below(20) {
                    0..=7 => Kind::Allowed,
                    8..=12 if !refusable.is_empty() => Kind::Refused,
                    8..=12 => Kind::Allowed,
                    13..=16 => Kind::Malformed,
                    _ => Kind::Abandoned,
                };
                let product = match kind {
                    Kind::Refused => rng.pick(&refusable).to_string(),
                    _ => rng.pick(&offered).clone(),
                };
                let request = match kind {
                    Kind::Malformed => malformed(&mut rng, &site.spelling, &product),
                    Kind::Abandoned if rng.below(2) == 0 => {
                        malformed(&mut rng, &site.spelling, &product)
                    }
                    _ => {
                        let fields = [
                            ("siteurl", site.spelling.as_str()),
                            ("plan", &product),
                            ("local_user", "admin"),
                        ];
                        provision_request(&mut rng, &fields)
                    }
                };
                requests.fetch_add(1, Ordering::Relaxed);
                let mut request = request;
                let sent = Sent::default();
                request.extensions_mut().insert(sent.clone());
                if kind == Kind::Abandoned {
                    request
                        .extensions_mut()
                        .insert(Transit(Duration::from_millis(rng.below(60) as u64)));
                }
                let mut call = std::pin::pin!(service.clone().oneshot(request));
                let response = if kind == Kind::Abandoned {
                    // The client goes away while the guard reads, waits for the site, looks it
                    // up, or while the provision is being relayed.
                    let patience = Duration::from_millis(rng.below(40) as u64);
                    tokio::select! {
                        response = &mut call => response,
                        () = tokio::time::sleep(patience) => {
                            // Read while the guard's future is not being polled: the handler
                            // cannot start sending in between.
                            let phase = if sent.0.load(Ordering::SeqCst) {
                                "dropped mid-relay"
                            } else {
                                "dropped before forwarding"
                            };
                            let mut tally = tally.lock().unwrap();
                            *tally.by_kind.entry((kind, phase.into())).or_default() += 1;
                            continue;
                        }
                    }
                } else {
                    call.await
                };
                let response = response.unwrap_or_else(|never| match never {});
                let (parts, body) = response.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let code = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|json| json["error"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let outcome = if parts.headers.contains_key(RELAYED) {
                    format!(
                        "forwarded: provision answered {} {code}",
                        parts.status.as_u16()
                    )
                } else {
                    let pair = (parts.status.as_u16(), code.as_str());
                    let json = parts
                        .headers
                        .get(header::CONTENT_TYPE)
                        .is_some_and(|v| v == "application/json");
                    if !CONTRACT.contains(&pair) || !json {
                        let mut tally = tally.lock().unwrap();
                        tally.violations.push(format!(
                            "not in the contract: {} {:?} ({kind:?})",
                            parts.status,
                            String::from_utf8_lossy(&body)
                        ));
                    }
                    format!("answered {} {code}", parts.status.as_u16())
                };
                *tally
                    .lock()
                    .unwrap()
                    .by_kind
                    .entry((kind, outcome))
                    .or_default() += 1;
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        if let Err(error) = joined {
            tally
                .lock()
                .unwrap()
                .violations
                .push(format!("a worker panicked: {error}"));
        }
    }
    let elapsed = started.elapsed();
    // Provisions whose clients left are still landing: the checks below are about after them.
    let detached = guard.detached();
    let still_finishing = detached.in_progress();
    if tokio::time::timeout(DETACHED_CEILING * 2, detached.wait())
        .await
        .is_err()
    {
        tally
            .lock()
            .unwrap()
            .violations
            .push("requests finished alone outlived their ceiling".into());
    }
    stop.store(true, Ordering::Relaxed);
    let _ = faults.await;
    fake.clear_faults();
    let samples = samples.await.unwrap_or_default();

    // The figures.
    let fake_stats = fake.stats();
    let guard_stats = guard.stats().snapshot();
    let mut tally = Arc::try_unwrap(tally)
        .ok()
        .expect("workers are done")
        .into_inner()
        .unwrap();
    let total = requests.load(Ordering::Relaxed);
    println!(
        "\n{total} requests in {:.1} s: {:.0} requests/s",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    let mut per_kind: BTreeMap<Kind, u64> = BTreeMap::new();
    for ((kind, _), n) in &tally.by_kind {
        *per_kind.entry(*kind).or_default() += n;
    }
    for (kind, n) in &per_kind {
        println!("  {kind:?}: {n}");
        for ((k, outcome), count) in &tally.by_kind {
            if k == kind {
                println!("    {outcome}: {count}");
            }
        }
    }
    println!(
        "fake upstream: {} lookups, {} provisions ({} provisioned), {} faults injected, {} token requests, {} connections",
        fake_stats.lookups,
        fake_stats.provisions,
        fake_stats.provisioned,
        fake_stats.faults,
        fake_stats.token_requests,
        fake_stats.connections
    );
    println!("guard: {guard_stats:?}");
    println!(
        "sites put back to their starting holdings: {}",
        resets.load(Ordering::Relaxed)
    );

    let rss: Vec<u64> = samples.iter().map(|(_, kib)| *kib).collect();
    let peak = rss.iter().copied().max().unwrap_or(0);
    // Warm-up: the first fifth of the run (pools, caches and the allocator settle).
    let warm_from = rss.len() / 5;
    let quarter = (rss.len() / 4).max(1);
    let warm = median(&rss[warm_from..(warm_from + quarter).min(rss.len())]);
    let last = median(&rss[rss.len().saturating_sub(quarter)..]);
    println!(
        "memory (VmRSS): start {} KiB, after warm-up {warm} KiB, last quarter {last} KiB, end {} KiB, peak {peak} KiB ({} samples)",
        rss.first().copied().unwrap_or(0),
        rss.last().copied().unwrap_or(0),
        rss.len()
    );
    if rss.len() >= 4 && last > warm + warm / 4 + 16 * 1024 {
        tally.violations.push(format!(
            "memory grew: {warm} KiB after warm-up, {last} KiB at the end"
        ));
    }
    let finished_alone = finished_alone.lock().unwrap().clone();
    println!(
        "finished alone after their clients left: {finished_alone:?} ({still_finishing} still running when the workers stopped)"
    );
    if finished_alone.contains_key(&format!("{:?}", DetachedEnd::CeilingPassed)) {
        tally
            .violations
            .push("a request finished alone ran into its ceiling".into());
    }
    let in_use = locks.sites_in_use();
    println!("site locks held at the end: {in_use}");
    println!(
        "leaks (downgrades that reached the provision call): {}",
        fake_stats.leaks
    );
    if fake_stats.leaks != 0 {
        tally.violations.push(format!(
            "{} downgrades reached the provision call",
            fake_stats.leaks
        ));
    }
    if in_use != 0 {
        tally
            .violations
            .push(format!("{in_use} site locks still held"));
    }
    if fake_stats.provisioned == 0 {
        tally
            .violations
            .push("nothing was provisioned: the mix is broken".into());
    }
    if tally.violations.is_empty() {
        println!("\nOK: no violation");
        ExitCode::SUCCESS
    } else {
        println!("\nFAILED: {} violations", tally.violations.len());
        for violation in tally.violations.iter().take(20) {
            println!("  {violation}");
        }
        ExitCode::FAILURE
    }
}
