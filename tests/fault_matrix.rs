//! The fault matrix: every way the upgrade-paths lookup can fail, crossed with every rollout mode
//! and two retry settings. Each cell asserts the status and `error` code, what reached the inner
//! service (byte for byte, with `Checked` or the `Bypass` marker and header), that the answer came
//! within the lookup deadline plus a small margin, how many lookups the fake saw, and that the
//! site's lock was released.
//!
//! Run with `-- --nocapture` to print the matrix as a table (TESTING.md holds a copy).
//!
//! About "timeout at connect" on loopback: a refused connection is instant, and a listener that
//! never calls `accept` still completes TCP handshakes in the kernel (so the request is sent and
//! the wait is for the headers, not the connection). A SYN that is never answered needs a
//! firewall rule or a non-loopback address, which tests may not use. So three rows stand in:
//! a closed port (connection refused), a listener that never accepts (a timeout before the
//! headers on an established connection), and a connector that never completes (reqwest's
//! `connector_layer`), which is exactly what the client sees of an unanswered SYN: its
//! `connect_timeout` (or else the lookup deadline) ends the wait.

mod common;

use common::*;
use http::header::RETRY_AFTER;
use std::fmt::Write as _;
use std::future::Pending;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use upgrade_guard::fake::{Endpoint, FakeSite, FakeUpstream, Fault};
use upgrade_guard::{
    BYPASS_HEADER, GuardBody, LocalLocks, Mode, UpgradeGuardLayer, UpgradePathsClient,
};

/// Short, so the matrix runs in seconds.
const LOOKUP_TIMEOUT: Duration = Duration::from_millis(400);
/// What the guard may take beyond the lookup deadline: scheduling on a busy 2-core machine.
const MARGIN: Duration = Duration::from_millis(300);
const FREE_SITE: u64 = 1001;
const FORM: &str = "siteurl=1001&plan=professional&local_user=admin";
const PATHS: &str = r#"{"jetpack-backup":["jetpack-backup-daily","jetpack-backup-realtime"],"jetpack-plans":["personal","premium","professional"]}"#;

/// Where the client's lookups go.
enum Upstream {
    /// The fake, with this fault on every upgrade-paths request (`None`: healthy).
    Fake(Option<Fault>),
    /// A loopback port with a socket bound but not listening: connection refused.
    ClosedPort,
    /// A loopback listener that never accepts: the kernel completes the handshake, nobody answers.
    NeverAccepts,
    /// A connector that never completes, as an unanswered SYN, with this connect timeout.
    BlackHole(Duration),
}

/// What the guard would answer in fail-closed mode.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Allowed,
    NotAnUpgrade,
    UnknownSite,
    Unauthorized,
    /// 503 `upgrade_paths_unavailable` with this `Retry-After`.
    Unavailable(u64),
}

impl Expect {
    fn code(self) -> Option<&'static str> {
        match self {
            Expect::Allowed => None,
            Expect::NotAnUpgrade => Some("upgrade_not_allowed"),
            Expect::UnknownSite => Some("unknown_site"),
            Expect::Unauthorized => Some("upstream_unauthorized"),
            Expect::Unavailable(_) => Some("upgrade_paths_unavailable"),
        }
    }

    fn status(self) -> u16 {
        match self {
            Expect::Allowed => 200,
            Expect::NotAnUpgrade => 409,
            Expect::UnknownSite => 404,
            Expect::Unauthorized => 502,
            Expect::Unavailable(_) => 503,
        }
    }

    /// Whether a route in `mode` forwards the request.
    fn forwarded(self, mode: Mode) -> bool {
        matches!(
            (self, mode),
            (Expect::Allowed, _)
                | (_, Mode::Shadow)
                | (
                    Expect::Unavailable(_) | Expect::Unauthorized,
                    Mode::FailOpen
                )
        )
    }
}

/// How many upgrade-paths requests the fake sees with the default retries (always one without).
#[derive(Clone, Copy, Debug)]
enum Lookups {
    /// Not retried: a 4xx, a malformed or oversized answer, or an attempt that used the whole
    /// deadline.
    One,
    /// A passing failure that fails fast: retried at least once within the deadline.
    Retried,
}

struct Row {
    name: &'static str,
    upstream: Upstream,
    expect: Expect,
    lookups: Lookups,
}

fn row(name: &'static str, fault: Option<Fault>, expect: Expect, lookups: Lookups) -> Row {
    Row {
        name,
        upstream: Upstream::Fake(fault),
        expect,
        lookups,
    }
}

fn rows() -> Vec<Row> {
    use Expect::*;
    use Lookups::*;
    let status = |s| Some(Fault::status(s));
    let body = |s, b: &'static str| Some(Fault::status_with_body(s, b));
    let big_json = format!(r#"{{"jetpack-plans":["{}"]}}"#, "p".repeat(100 * 1024));
    vec![
        row("healthy upstream", None, Allowed, One),
        row("200 {} (lists nothing)", body(200, "{}"), NotAnUpgrade, One),
        row("201 with valid paths", body(201, PATHS), Allowed, One),
        // PHP's empty array is "no upgrade paths"; any other array is not an answer.
        row("200 []", body(200, "[]"), NotAnUpgrade, One),
        row(
            "200 array of products",
            body(200, r#"["professional"]"#),
            Unavailable(5),
            One,
        ),
        row("200 null", body(200, "null"), Unavailable(5), One),
        row(
            "200 family not a list",
            body(200, r#"{"jetpack-plans":"professional"}"#),
            Unavailable(5),
            One,
        ),
        row(
            "200 number in a list",
            body(200, r#"{"jetpack-plans":[1]}"#),
            Unavailable(5),
            One,
        ),
        row(
            "200 trailing bytes",
            body(200, r#"{"jetpack-plans":["professional"]} x"#),
            Unavailable(5),
            One,
        ),
        row(
            "200 HTML",
            body(200, "<html>Bad Gateway</html>"),
            Unavailable(5),
            One,
        ),
        row("200 empty body", body(200, ""), Unavailable(5), One),
        row("204 no content", status(204), Unavailable(5), One),
        row("301 without Location", status(301), Unavailable(5), One),
        row("304 not modified", status(304), Unavailable(5), One),
        row("400 bad request", status(400), Unavailable(5), One),
        row("401 token refused", status(401), Unauthorized, One),
        row(
            "403 invalid_token",
            body(403, r#"{"error":"invalid_token","message":"x"}"#),
            Unauthorized,
            One,
        ),
        row(
            "403 invalid_blog",
            body(403, r#"{"error":"invalid_blog","message":"x"}"#),
            UnknownSite,
            One,
        ),
        // Only `invalid_blog` makes a site unknown: a bare 404 is a wrong base URL, say.
        row("404 not found", status(404), Unavailable(5), One),
        row("409 conflict", status(409), Unavailable(5), One),
        row(
            "429 without Retry-After",
            status(429),
            Unavailable(5),
            Retried,
        ),
        row(
            "429 Retry-After: 2 (past the deadline)",
            Some(Fault::status(429).header(RETRY_AFTER, "2")),
            Unavailable(2),
            One,
        ),
        row("500 internal error", status(500), Unavailable(5), Retried),
        row("502 bad gateway", status(502), Unavailable(5), Retried),
        row(
            "503 Retry-After: 1",
            Some(Fault::status(503).header(RETRY_AFTER, "1")),
            Unavailable(1),
            One,
        ),
        row(
            "503 without Retry-After",
            status(503),
            Unavailable(5),
            Retried,
        ),
        row("504 gateway timeout", status(504), Unavailable(5), Retried),
        row("599 non-standard", status(599), Unavailable(5), One),
        row(
            "connection dropped before headers",
            Some(Fault::DropConnection),
            Unavailable(5),
            Retried,
        ),
        row(
            "timeout before headers (1 h delay)",
            Some(Fault::Delay(Duration::from_secs(3600))),
            Unavailable(5),
            One,
        ),
        row(
            "timeout during the body (stall)",
            Some(Fault::stall_body(PATHS, 20)),
            Unavailable(5),
            One,
        ),
        row(
            "reset mid-body (RST)",
            Some(Fault::reset_body(PATHS, 20)),
            Unavailable(5),
            Retried,
        ),
        row(
            "truncated body (Content-Length > body)",
            Some(Fault::truncate_body(PATHS, 20)),
            Unavailable(5),
            Retried,
        ),
        row(
            "oversized body (Content-Length 100 KiB)",
            Some(Fault::status_with_body(200, big_json.clone())),
            Unavailable(5),
            One,
        ),
        row(
            "oversized body (chunked 100 KiB)",
            Some(Fault::trickle(big_json, 8 * 1024, Duration::ZERO)),
            Unavailable(5),
            One,
        ),
        row(
            "slow trickle past the deadline (1 B / 50 ms)",
            Some(Fault::trickle(PATHS, 1, Duration::from_millis(50))),
            Unavailable(5),
            One,
        ),
        row(
            "slow trickle within the deadline (4 chunks / 30 ms)",
            Some(Fault::trickle(
                PATHS,
                PATHS.len() / 4 + 1,
                Duration::from_millis(30),
            )),
            Allowed,
            One,
        ),
        row(
            "the real answer, slowly (64 B / 30 ms)",
            Some(Fault::slow_answer(64, Duration::from_millis(30))),
            Allowed,
            One,
        ),
        Row {
            name: "connect refused (closed port)",
            upstream: Upstream::ClosedPort,
            expect: Unavailable(5),
            lookups: Retried,
        },
        Row {
            name: "connected, never accepted (kernel backlog)",
            upstream: Upstream::NeverAccepts,
            expect: Unavailable(5),
            lookups: One,
        },
        Row {
            name: "connect never completes, connect_timeout 150 ms",
            upstream: Upstream::BlackHole(Duration::from_millis(150)),
            expect: Unavailable(5),
            lookups: Retried,
        },
        Row {
            name: "connect never completes, connect_timeout 2 s",
            upstream: Upstream::BlackHole(Duration::from_secs(2)),
            expect: Unavailable(5),
            lookups: One,
        },
    ]
}

/// A connector layer whose connections never complete.
#[derive(Clone)]
struct BlackHole;

impl<S> tower::Layer<S> for BlackHole {
    type Service = NeverConnects<S>;

    fn layer(&self, inner: S) -> Self::Service {
        NeverConnects(inner)
    }
}

#[derive(Clone)]
struct NeverConnects<S>(S);

impl<S: tower::Service<R>, R> tower::Service<R> for NeverConnects<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pending<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, _: R) -> Self::Future {
        std::future::pending()
    }
}

/// What one cell of the matrix did, for the table.
struct Cell {
    status: u16,
    retry_after: Option<String>,
    code: String,
    forwarded: bool,
    elapsed: Duration,
    lookups: Option<u64>,
}

/// One row in one mode, ready to run: its upstream, guard and inner service.
struct Prepared {
    row: Row,
    mode: Mode,
    max_retries: Option<u32>,
    fake: Option<FakeUpstream>,
    /// Sockets the row's upstream needs kept open.
    _sockets: (Option<tokio::net::TcpSocket>, Option<std::net::TcpListener>),
    locks: LocalLocks,
    guard: UpgradeGuardLayer,
}

/// Sets one row up. Kept apart from the timed part: building an HTTP client loads the system's
/// root certificates, work that would otherwise eat into other rows' deadlines.
async fn prepare(row: Row, mode: Mode, max_retries: Option<u32>) -> Prepared {
    let mut builder = UpgradePathsClient::builder()
        .bearer_token("fake-partner-token")
        .lookup_timeout(LOOKUP_TIMEOUT);
    if let Some(retries) = max_retries {
        builder = builder.max_retries(retries);
    }
    // Whatever the row needs kept alive while it runs.
    let mut fake = None;
    let mut _socket = None;
    let mut _listener = None;
    let builder = match &row.upstream {
        Upstream::Fake(fault) => {
            let started = FakeUpstream::builder()
                .site(FakeSite::new(FREE_SITE).url("https://free.example.com/"))
                .start()
                .await
                .unwrap();
            if let Some(fault) = fault {
                started
                    .inject(Endpoint::UpgradePaths, fault.clone())
                    .always();
            }
            let builder = builder.base_url(started.url());
            fake = Some(started);
            builder
        }
        Upstream::ClosedPort => {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = socket.local_addr().unwrap();
            _socket = Some(socket);
            builder.base_url(format!("http://{addr}"))
        }
        Upstream::NeverAccepts => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            _listener = Some(listener);
            builder.base_url(format!("http://{addr}"))
        }
        Upstream::BlackHole(connect_timeout) => {
            let http = reqwest::Client::builder()
                .connect_timeout(*connect_timeout)
                .connector_layer(BlackHole)
                .build()
                .unwrap();
            builder.base_url("http://127.0.0.1:9").http_client(http)
        }
    };
    let locks = LocalLocks::new();
    let guard = UpgradeGuardLayer::builder(builder.build().unwrap())
        .site_locks(locks.clone())
        .build()
        .mode(mode);
    Prepared {
        row,
        mode,
        max_retries,
        fake,
        _sockets: (_socket, _listener),
        locks,
        guard,
    }
}

/// Runs one prepared cell; panics (with the row's name) on any broken expectation.
async fn run(prepared: Prepared) -> Cell {
    let Prepared {
        row,
        mode,
        max_retries,
        fake,
        locks,
        guard,
        ..
    } = prepared;
    let name = row.name;
    let inner = Recorder::default();

    let started = Instant::now();
    let answer = send(&guard, &inner, form(FORM)).await;
    let elapsed = started.elapsed();

    assert!(
        elapsed <= LOOKUP_TIMEOUT + MARGIN,
        "{name} ({mode}): answered after {elapsed:?}"
    );
    assert_eq!(
        locks.sites_in_use(),
        0,
        "{name} ({mode}): a lock is still held"
    );
    let expect = row.expect;
    let forwarded = expect.forwarded(mode);
    let code = expect.code();
    let bypass_header = answer.headers.get(BYPASS_HEADER);
    if forwarded {
        assert_eq!(answer.status, 200, "{name} ({mode}): {:?}", answer.body);
        assert_eq!(inner.calls(), 1, "{name} ({mode}): not forwarded");
        let seen = inner.seen().remove(0);
        assert_eq!(seen.body, FORM.as_bytes(), "{name} ({mode}): body changed");
        match code {
            None => {
                let checked = seen.checked.expect("an allowed request carries Checked");
                assert_eq!(checked.site().as_str(), "1001");
                assert_eq!(checked.product(), "professional");
                assert!(
                    seen.bypass.is_none() && bypass_header.is_none(),
                    "{name} ({mode})"
                );
            }
            Some(code) => {
                assert!(seen.checked.is_none(), "{name} ({mode}): marked as checked");
                let bypass = seen.bypass.expect("a bypassed request carries Bypass");
                assert_eq!((bypass.mode(), bypass.code()), (mode, code), "{name}");
                assert_eq!(bypass.status(), expect.status(), "{name} ({mode})");
                assert_eq!(
                    bypass_header.map(|v| v.to_str().unwrap().to_owned()),
                    Some(format!("{mode}; error={code}")),
                    "{name}"
                );
            }
        }
    } else {
        assert_eq!(inner.calls(), 0, "{name} ({mode}): forwarded");
        assert_eq!(answer.status, expect.status(), "{name} ({mode})");
        assert_eq!(Some(answer.error().as_str()), code, "{name} ({mode})");
        assert!(bypass_header.is_none(), "{name} ({mode})");
        let retry_after = answer
            .headers
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        match expect {
            Expect::Unavailable(seconds) => {
                assert_eq!(retry_after, Some(seconds.to_string()), "{name} ({mode})")
            }
            _ => assert_eq!(retry_after, None, "{name} ({mode})"),
        }
    }
    let lookups = fake.as_ref().map(|fake| fake.stats().lookups);
    if let Some(lookups) = lookups {
        let most = 1 + u64::from(max_retries.unwrap_or(2));
        match (max_retries, row.lookups) {
            (Some(0), _) | (_, Lookups::One) => assert_eq!(lookups, 1, "{name} ({mode})"),
            (_, Lookups::Retried) => {
                assert!(
                    (2..=most).contains(&lookups),
                    "{name} ({mode}): {lookups} lookups"
                )
            }
        }
        assert_eq!(fake.as_ref().unwrap().stats().leaks, 0);
    }
    Cell {
        status: answer.status.as_u16(),
        retry_after: answer
            .headers
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned()),
        code: match code {
            Some(code) => code.to_owned(),
            None => "-".to_owned(),
        },
        forwarded: inner.calls() == 1,
        elapsed,
        lookups,
    }
}

/// Every row in every mode, the rows of one mode at once; prints the table, then fails with
/// every broken cell.
async fn matrix(max_retries: Option<u32>) {
    let modes = [Mode::FailClosed, Mode::FailOpen, Mode::Shadow];
    let names: Vec<&str> = rows().iter().map(|r| r.name).collect();
    let mut table: Vec<Vec<Option<Cell>>> = names.iter().map(|_| Vec::new()).collect();
    let mut failures = Vec::new();
    for mode in modes {
        let mut prepared = Vec::new();
        for row in rows() {
            prepared.push(prepare(row, mode, max_retries).await);
        }
        let tasks: Vec<_> = prepared
            .into_iter()
            .map(|cell| tokio::spawn(run(cell)))
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await {
                Ok(cell) => table[i].push(Some(cell)),
                Err(error) => {
                    let panic = error.into_panic();
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.push(format!("{} ({mode}): {message}", names[i]));
                    table[i].push(None);
                }
            }
        }
    }
    let mut out = String::new();
    let retries = max_retries.map_or("default (2)".to_owned(), |n| n.to_string());
    writeln!(
        out,
        "\nfault matrix, lookup deadline {LOOKUP_TIMEOUT:?}, retries {retries}"
    )
    .unwrap();
    writeln!(
        out,
        "| upstream fault | fail-closed | fail-open | shadow | lookups |"
    )
    .unwrap();
    writeln!(out, "|---|---|---|---|---|").unwrap();
    for (name, cells) in names.iter().zip(&table) {
        let mut line = format!("| {name} |");
        for cell in cells {
            match cell {
                Some(c) if c.forwarded && c.code == "-" => {
                    write!(line, " forwarded ({} ms) |", c.elapsed.as_millis()).unwrap()
                }
                Some(c) if c.forwarded => write!(
                    line,
                    " forwarded, bypass `{}` ({} ms) |",
                    c.code,
                    c.elapsed.as_millis()
                )
                .unwrap(),
                Some(c) => write!(
                    line,
                    " {} `{}`{} ({} ms) |",
                    c.status,
                    c.code,
                    c.retry_after
                        .as_ref()
                        .map_or(String::new(), |s| format!(", Retry-After {s}")),
                    c.elapsed.as_millis()
                )
                .unwrap(),
                None => line.push_str(" FAILED |"),
            }
        }
        let lookups: Vec<String> = cells
            .iter()
            .flatten()
            .map(|c| c.lookups.map_or("-".to_owned(), |n| n.to_string()))
            .collect();
        writeln!(line, " {} |", lookups.join("/")).unwrap();
        out.push_str(&line);
    }
    println!("{out}");
    assert!(
        failures.is_empty(),
        "{} broken cells:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_in_every_mode_without_retries() {
    matrix(Some(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_in_every_mode_with_the_default_retries() {
    matrix(None).await;
}

/// A handler that relays provisions to the fake, where a provision takes `x-transit-ms` to land
/// once sent (the bytes are on the wire: it lands whatever becomes of the handler's future), and a
/// guard around it that records its finished-alone reports.
struct MidRelay<S> {
    fake: FakeUpstream,
    guard: UpgradeGuardLayer,
    locks: LocalLocks,
    service: S,
    sent: std::sync::Arc<std::sync::atomic::AtomicBool>,
    finished: std::sync::Arc<std::sync::Mutex<Vec<upgrade_guard::DetachedEnd>>>,
}

async fn mid_relay() -> MidRelay<
    impl tower::Service<
        http::Request<http_body_util::Full<bytes::Bytes>>,
        Response = http::Response<upgrade_guard::GuardBody<http_body_util::Full<bytes::Bytes>>>,
        Error = std::convert::Infallible,
        Future = impl Send,
    > + Clone,
> {
    use bytes::Bytes;
    use http_body_util::Full;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use tower::ServiceExt;
    use upgrade_guard::Outcome;

    let fake = FakeUpstream::builder()
        .site(FakeSite::new(FREE_SITE).url("https://free.example.com/"))
        .start()
        .await
        .unwrap();
    let client = UpgradePathsClient::builder()
        .base_url(fake.url())
        .bearer_token(fake.token())
        .build()
        .unwrap();
    let locks = LocalLocks::new();
    let finished = Arc::new(Mutex::new(Vec::new()));
    let guard = {
        let finished = finished.clone();
        UpgradeGuardLayer::builder(client)
            .site_locks(locks.clone())
            .build()
            .on_decision(move |report| {
                if let Outcome::Detached(how) = report.outcome {
                    finished.lock().unwrap().push(how);
                }
            })
    };
    let relay = relay::<GuardBody<Full<Bytes>>>(&fake);
    let sent = Arc::new(AtomicBool::new(false));
    let handler = {
        let sent = sent.clone();
        tower::service_fn(
            move |request: http::Request<upgrade_guard::GuardBody<Full<Bytes>>>| {
                let (relay, sent) = (relay.clone(), sent.clone());
                async move {
                    let transit = request
                        .headers()
                        .get("x-transit-ms")
                        .and_then(|v| v.to_str().ok()?.parse().ok())
                        .map_or(Duration::ZERO, Duration::from_millis);
                    sent.store(true, Ordering::SeqCst);
                    let landing = tokio::spawn(async move {
                        tokio::time::sleep(transit).await;
                        relay.oneshot(request).await
                    });
                    landing.await.unwrap()
                }
            },
        )
    };
    let service = tower::Layer::layer(&guard, handler);
    MidRelay {
        fake,
        guard,
        locks,
        service,
        sent,
        finished,
    }
}

impl<S> MidRelay<S>
where
    S: tower::Service<
            http::Request<http_body_util::Full<bytes::Bytes>>,
            Error = std::convert::Infallible,
        > + Clone,
{
    /// Sends `body` with 300 ms of transit and goes away once the handler has sent it.
    async fn send_and_leave(&self, body: &str) {
        use std::sync::atomic::Ordering;
        use tower::ServiceExt;

        let mut slow = form(body);
        slow.headers_mut()
            .insert("x-transit-ms", "300".parse().unwrap());
        let first = self.service.clone().oneshot(slow);
        let handed_over = async {
            while !self.sent.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
            }
        };
        tokio::select! {
            _ = first => panic!("the first provision should still be in transit"),
            () = handed_over => {}
        }
    }
}

/// A client that goes away while its provision is being relayed: the provision is already on its
/// way to WordPress.com, and dropping the handler's future cannot take back bytes on the wire. The
/// guard finishes the handler's future alone and holds the site until it ends, so a request
/// checked meanwhile waits and sees the paths as they are once the first provision has landed.
/// Here Realtime Backups is sent with 300 ms of transit and its client gives up; Daily Backups,
/// a downgrade of it, is then answered 409. (Found by the soak, `--abandon-anywhere`; see
/// TESTING.md, "Findings".)
#[tokio::test]
async fn a_client_gone_mid_relay_holds_the_site_until_its_provision_lands() {
    use tower::ServiceExt;
    use upgrade_guard::DetachedEnd;

    let t = mid_relay().await;
    t.send_and_leave("siteurl=1001&plan=jetpack-backup-realtime&local_user=admin")
        .await;
    assert_eq!(
        t.locks.users(&upgrade_guard::Site::parse("1001").unwrap()),
        1,
        "the client left, the site is held"
    );
    assert_eq!(t.guard.detached().in_progress(), 1);

    let second = t
        .service
        .clone()
        .oneshot(form(
            "siteurl=1001&plan=jetpack-backup-daily&local_user=admin",
        ))
        .await
        .unwrap();
    assert_eq!(
        second.status(),
        409,
        "checked once the first provision landed"
    );
    assert_eq!(t.fake.stats().provisioned, 1);
    t.guard.detached().wait().await;
    assert_eq!(t.guard.detached().in_progress(), 0);
    assert_eq!(t.locks.sites_in_use(), 0);
    assert_eq!(
        *t.finished.lock().unwrap(),
        [DetachedEnd::Answered(http::StatusCode::OK)],
        "the provision that landed for a client that left is reported"
    );
    let stats = t.fake.stats();
    assert_eq!((stats.provisioned, stats.leaks), (1, 0));
}

/// The order that leaked before the guard finished requests alone: Daily Backups in transit, its
/// client gone, then Realtime Backups. Checked against the still-free site, Realtime landed
/// first and the late Daily Backups was a downgrade at the provision call. Now Realtime waits for
/// Daily to land and is an upgrade of it.
#[tokio::test]
async fn a_late_provision_of_a_client_gone_mid_relay_is_never_a_downgrade() {
    use tower::ServiceExt;

    let t = mid_relay().await;
    t.send_and_leave("siteurl=1001&plan=jetpack-backup-daily&local_user=admin")
        .await;
    assert_eq!(
        t.locks.users(&upgrade_guard::Site::parse("1001").unwrap()),
        1
    );

    let second = t
        .service
        .clone()
        .oneshot(form(
            "siteurl=1001&plan=jetpack-backup-realtime&local_user=admin",
        ))
        .await
        .unwrap();
    assert_eq!(second.status(), 200, "an upgrade of what landed first");
    t.guard.detached().wait().await;
    let stats = t.fake.stats();
    assert_eq!(
        (stats.provisioned, stats.leaks),
        (2, 0),
        "no downgrade reached the provision call"
    );
    // Realtime Backups, provisioned last, replaces the Daily Backups it contains.
    assert_eq!(
        t.fake.held_products("1001").unwrap(),
        ["jetpack-backup-realtime"]
    );
}

/// The issue's black-box run, over a real server: hyper drops the handler's future when the
/// client's connection closes. A client gives up 0.4 s into a 1.5 s provision; a downgrade of it,
/// sent once the server has dropped that request, waits for the site and is answered 409 when the
/// provision has landed (before the guard finished provisions alone, it was forwarded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_real_server_a_client_that_times_out_mid_provision_keeps_the_site_held() {
    use axum::body::Body;
    use std::sync::{Arc, Mutex};
    use upgrade_guard::DetachedEnd;
    use upgrade_guard::Outcome;

    let fake = FakeUpstream::builder()
        .site(FakeSite::new(FREE_SITE).url("https://free.example.com/"))
        .start()
        .await
        .unwrap();
    let client = UpgradePathsClient::builder()
        .base_url(fake.url())
        .bearer_token(fake.token())
        .build()
        .unwrap();
    let finished = Arc::new(Mutex::new(Vec::new()));
    let guard = {
        let finished = finished.clone();
        UpgradeGuardLayer::new(client).on_decision(move |report| {
            if let Outcome::Detached(how) = report.outcome {
                finished.lock().unwrap().push(how);
            }
        })
    };
    let app = axum::Router::new().route_service(
        "/rest/v1.3/jpphp/provision",
        tower::Layer::layer(&guard, relay::<GuardBody<Body>>(&fake)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/rest/v1.3/jpphp/provision",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    // The provision takes 1.5 s at the upstream, then lands.
    fake.inject(
        Endpoint::Provision,
        Fault::Delay(Duration::from_millis(1500)),
    )
    .once();

    let http = reqwest::Client::new();
    let provision = |plan: &str, timeout: Duration| {
        http.post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("siteurl=1001&plan={plan}&local_user=admin"))
            .timeout(timeout)
            .send()
    };
    let gave_up = provision("jetpack-backup-realtime", Duration::from_millis(400)).await;
    assert!(gave_up.unwrap_err().is_timeout());
    eventually("the server to drop the client's request", || {
        guard.detached().in_progress() == 1
    })
    .await;
    assert_eq!(fake.stats().provisioned, 0, "still at the upstream");

    let downgrade = provision("jetpack-backup-daily", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(downgrade.status(), 409);
    assert_eq!(
        fake.stats().provisioned,
        1,
        "answered once the first landed"
    );
    guard.detached().wait().await;
    assert_eq!(
        *finished.lock().unwrap(),
        [DetachedEnd::Answered(http::StatusCode::OK)]
    );
    assert_eq!(fake.stats().leaks, 0);
}
