//! What an operations team relies on: `/metrics` as Prometheus reads it, JSON logs with a
//! request ID and no secret, readiness, and certificates reloaded without a restart.

mod common;

use common::{full, http_client, multipart, send};
use http::{Request, StatusCode};
use prometheus_parse::{Scrape, Value};
use std::process::Command;
use upgrade_guard::fake::FakeUpstream;

/// What the partner tooling sends for a provision: the multipart form, with its token.
fn provision(proxy: &str, token: &str, siteurl: &str, plan: &str) -> Request<common::TestBody> {
    let (content_type, body) = multipart(&[
        ("siteurl", siteurl),
        ("local_user", "admin"),
        ("plan", plan),
    ]);
    Request::post(format!("{proxy}/rest/v1.3/jpphp/provision"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", content_type)
        .body(full(body))
        .unwrap()
}

/// `curl -sS <url>`, as an operator (or a scraper) would fetch it.
fn curl(url: &str) -> String {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "10", url])
        .output()
        .expect("curl runs (Debian's curl package)");
    assert!(output.status.success(), "curl {url}: {output:?}");
    String::from_utf8(output.stdout).expect("UTF-8 metrics")
}

/// The samples named `name` whose labels include all of `labels`.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
    scrape
        .samples
        .iter()
        .find(|sample| {
            sample.metric == name
                && labels
                    .iter()
                    .all(|(key, value)| sample.labels.get(key) == Some(*value))
        })
        .map(|sample| sample.value.clone())
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let token = fake.token();
    let proxy = upgrade_guard_proxy::start(common::config(fake.url(), &["--token", &token]))
        .await
        .unwrap();
    let (client, url) = (http_client(), format!("http://{}", proxy.addr()));
    let refused = send(
        &client,
        provision(
            &url,
            &token,
            "https://professional.example.com/",
            "personal",
        ),
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    let allowed = send(
        &client,
        provision(&url, &token, "https://free.example.com/", "personal"),
    )
    .await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());

    let admin = format!("http://{}", proxy.admin_addr());
    let text = tokio::task::spawn_blocking(move || curl(&format!("{admin}/metrics")))
        .await
        .unwrap();
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).expect("parses");

    let counter = |name: &str, labels: &[(&str, &str)]| match value(&scrape, name, labels) {
        Some(Value::Counter(n)) => n,
        other => panic!("{name}{labels:?}: {other:?} in\n{text}"),
    };
    let gauge = |name: &str| match value(&scrape, name, &[]) {
        Some(Value::Gauge(n)) => n,
        other => panic!("{name}: {other:?} in\n{text}"),
    };
    assert_eq!(
        counter(
            "upgrade_guard_decisions_total",
            &[
                ("outcome", "rejected"),
                ("code", "upgrade_not_allowed"),
                ("admission", "none")
            ]
        ),
        1.0
    );
    assert_eq!(
        counter(
            "upgrade_guard_decisions_total",
            &[
                ("outcome", "allowed"),
                ("code", "none"),
                ("admission", "upgrade")
            ]
        ),
        1.0
    );
    assert_eq!(
        counter(
            "upgrade_guard_proxy_requests_total",
            &[("route", "provision"), ("status", "409")]
        ),
        1.0
    );
    assert_eq!(counter("upgrade_guard_lookups_total", &[]), 2.0);
    assert_eq!(counter("upgrade_guard_site_busy_total", &[]), 0.0);
    // The counters an alert watches are there before their first event, at 0.
    for finished in ["failed", "ceiling_passed"] {
        assert_eq!(
            counter(
                "upgrade_guard_finished_alone_total",
                &[("finished", finished), ("status", "none")]
            ),
            0.0
        );
    }
    for result in ["loaded", "failed"] {
        assert_eq!(
            counter(
                "upgrade_guard_proxy_tls_reloads_total",
                &[("result", result)]
            ),
            0.0
        );
    }
    // The process metrics: both answers are in, none is being finished alone, and the
    // client's keep-alive connection is still open.
    assert_eq!(gauge("upgrade_guard_proxy_guarded_in_flight"), 0.0);
    assert_eq!(gauge("upgrade_guard_detached_in_progress"), 0.0);
    assert!(
        gauge("upgrade_guard_proxy_open_connections") >= 1.0,
        "{text}"
    );
    match value(&scrape, "upgrade_guard_decision_seconds", &[]) {
        Some(Value::Histogram(buckets)) => {
            assert_eq!(buckets.last().unwrap().less_than, f64::INFINITY);
            assert_eq!(buckets.last().unwrap().count, 2.0);
        }
        other => panic!("decision_seconds: {other:?}"),
    }
    match value(
        &scrape,
        "upgrade_guard_proxy_upstream_seconds",
        &[("route", "cancel")],
    ) {
        Some(Value::Histogram(buckets)) => assert_eq!(buckets.last().unwrap().count, 0.0),
        other => panic!("upstream_seconds: {other:?}"),
    }
    // Every metric says what it is.
    for sample in &scrape.samples {
        let family = sample
            .metric
            .trim_end_matches("_count")
            .trim_end_matches("_sum");
        assert!(
            scrape.docs.contains_key(family) || scrape.docs.contains_key(&sample.metric),
            "no HELP for {}",
            sample.metric
        );
    }
    proxy.shutdown().await;
}

/// The binary, started as an operator would, its stdout read line by line.
struct Binary {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    /// The start-up line, given back by `stop` with the rest.
    first: String,
}

impl Binary {
    /// Starts the binary with `args` (JSON logs among them) on free loopback ports, and waits
    /// for its start-up line. Returns it with the proxy's and the admin listener's addresses.
    fn start(args: &[&str]) -> (Self, String, String) {
        let binary = Self::spawn(args);
        let first = &binary.first;
        let json: serde_json::Value =
            serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
        assert_eq!(json["message"], "upgrade-guard-proxy listening", "{first}");
        let addr = json["addr"].as_str().expect("addr").to_owned();
        let admin = json["admin_addr"].as_str().expect("admin_addr").to_owned();
        (binary, addr, admin)
    }

    /// Starts the binary with `args` on free loopback ports, and waits for its first line.
    fn spawn(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_upgrade-guard-proxy"))
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(args)
            .env_clear()
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("the binary runs");
        let stdout = child.stdout.take().unwrap();
        let (send_line, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if send_line.send(line).is_err() {
                    return;
                }
            }
        });
        let mut binary = Self {
            child,
            lines,
            first: String::new(),
        };
        binary.first = binary.next_line().expect("a start-up line");
        binary
    }

    /// The next line on stdout, waiting at most 30 s; `None` once stdout is closed.
    fn next_line(&mut self) -> Option<String> {
        match self.lines.recv_timeout(std::time::Duration::from_secs(30)) {
            Ok(line) => Some(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("no log line in 30 s"),
        }
    }

    /// Sends `signal` to this child (its own pid, not yet waited for).
    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) has no memory effects; the pid is our own child, not yet waited for,
        // so it can't have been reused.
        #[allow(unsafe_code)]
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "signal {signal} not sent");
    }

    /// SIGTERM, then every line it wrote (the start-up line first) until it exits, which it
    /// must do successfully.
    fn stop(mut self) -> Vec<String> {
        self.signal(libc::SIGTERM);
        let mut rest = vec![std::mem::take(&mut self.first)];
        while let Some(line) = self.next_line() {
            rest.push(line);
        }
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
        rest
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first 8 hex digits of the SHA-256 of `token`, computed here by other means than the
/// proxy's (`sha256sum`'s output is what an operator would compare with).
fn fingerprint(token: &str) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(token.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    String::from_utf8(output.stdout).unwrap()[..8].to_owned()
}

#[tokio::test]
async fn json_logs_carry_each_decision_and_never_a_secret() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let (client_id, client_secret, token) = (fake.client_id(), fake.client_secret(), fake.token());
    let (binary, addr, _admin) = Binary::start(&[
        "--log-format",
        "json",
        "--upstream",
        fake.url(),
        "--client-id",
        client_id,
        "--client-secret",
        client_secret,
    ]);
    let (client, url) = (http_client(), format!("http://{addr}"));
    let mut request = provision(
        &url,
        &token,
        "https://professional.example.com/",
        "personal",
    );
    request
        .headers_mut()
        .insert("x-request-id", "partner-42".parse().unwrap());
    let refused = send(&client, request).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.headers["x-request-id"], "partner-42");
    let allowed = send(
        &client,
        provision(&url, &token, "https://free.example.com/", "personal"),
    )
    .await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    let made = allowed.headers["x-request-id"].to_str().unwrap().to_owned();
    let lines = tokio::task::spawn_blocking(move || binary.stop())
        .await
        .unwrap();

    let secrets = [token.to_string(), client_secret.to_string()];
    let mut parsed = Vec::new();
    for line in &lines {
        for secret in &secrets {
            assert!(!line.contains(secret.as_str()), "a secret in {line}");
        }
        let json: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for field in ["timestamp", "level", "message", "target"] {
            assert!(json.get(field).is_some(), "no {field} in {line}");
        }
        parsed.push(json);
    }
    let answered: Vec<&serde_json::Value> = parsed
        .iter()
        .filter(|line| line["message"] == "request answered")
        .collect();
    assert_eq!(answered.len(), 2, "{lines:#?}");
    let caller = fingerprint(&token);
    for line in &answered {
        assert_eq!(line["span"]["route"], "provision", "{line}");
        assert_eq!(line["span"]["token"], caller.as_str(), "{line}");
        assert_eq!(line["product"], "personal", "{line}");
        assert!(line["decision_ms"].as_f64().unwrap() >= 0.0, "{line}");
        assert!(
            line["total_ms"].as_f64().unwrap() >= line["decision_ms"].as_f64().unwrap(),
            "{line}"
        );
    }
    let (no, yes) = (answered[0], answered[1]);
    assert_eq!(no["span"]["request_id"], "partner-42", "{no}");
    assert_eq!(yes["span"]["request_id"], made.as_str(), "{yes}");
    assert_eq!(no["status"], 409, "{no}");
    assert_eq!(no["site"], "professional.example.com", "{no}");
    assert_eq!(no["outcome"], "rejected", "{no}");
    assert_eq!(no["code"], "upgrade_not_allowed", "{no}");
    assert!(no.get("upstream_status").is_none(), "{no}");
    assert!(no.get("admission").is_none(), "{no}");
    assert_eq!(yes["status"], 200, "{yes}");
    assert_eq!(yes["upstream_status"], 200, "{yes}");
    assert_eq!(yes["site"], "free.example.com", "{yes}");
    assert_eq!(yes["outcome"], "allowed", "{yes}");
    assert_eq!(yes["admission"], "upgrade", "{yes}");
    assert!(yes.get("code").is_none(), "{yes}");
    // The library's own decision lines are written in the request's span too.
    let decided = parsed
        .iter()
        .filter(|line| line["message"] == "upgrade allowed")
        .collect::<Vec<_>>();
    assert_eq!(decided.len(), 1, "{lines:#?}");
    assert_eq!(decided[0]["span"]["route"], "provision");
    assert_eq!(decided[0]["span"]["request_id"], made.as_str());
}

#[tokio::test]
async fn text_logs_write_only_the_span_fields_that_have_a_value() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let token = fake.token();
    let binary = Binary::spawn(&["--upstream", fake.url(), "--token", &token]);
    let first = binary.first.clone();
    assert!(first.contains("upgrade-guard-proxy listening"), "{first}");
    let addr = first
        .split_whitespace()
        .find_map(|word| word.strip_prefix("addr="))
        .unwrap_or_else(|| panic!("no addr= in {first}"));
    // No bearer token of its own: the proxy looks the site up with its `--token`.
    let mut request = provision(
        &format!("http://{addr}"),
        &token,
        "https://professional.example.com/",
        "personal",
    );
    request.headers_mut().remove("authorization");
    let refused = send(&http_client(), request).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text());
    let lines = tokio::task::spawn_blocking(move || binary.stop())
        .await
        .unwrap();
    let answered = lines
        .iter()
        .find(|line| line.contains("request answered"))
        .unwrap_or_else(|| panic!("no `request answered` line in {lines:#?}"));
    // The span's `token` field has no value: nothing of it, not even its separator, is written.
    assert!(answered.contains(r#"route="provision"}"#), "{answered}");
    assert!(!answered.contains("token="), "{answered}");
}

/// An upstream that says which `X-Request-Id` it received (in `x-upstream-saw`), and answers
/// with an ID of its own, which the proxy must not pass on in place of its own.
async fn request_id_upstream() -> std::net::SocketAddr {
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: Request<hyper::body::Incoming>| async move {
                        let saw: Vec<&str> = request
                            .headers()
                            .get_all("x-request-id")
                            .iter()
                            .map(|value| value.to_str().unwrap())
                            .collect();
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("x-upstream-saw", saw.join(" | "))
                                .header("x-request-id", "the-upstreams-own")
                                .body(full(""))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_request_id_is_kept_or_made_and_sent_both_ways() {
    let upstream = format!("http://{}", request_id_upstream().await);
    let proxy = upgrade_guard_proxy::start(common::config(&upstream, &["--token", "t"]))
        .await
        .unwrap();
    let client = http_client();
    let get = |ids: &[&[u8]]| {
        let mut request = Request::get(format!("http://{}/rest/v1.1/me", proxy.addr()));
        for id in ids {
            request = request.header("x-request-id", http::HeaderValue::from_bytes(id).unwrap());
        }
        send(&client, request.body(full("")).unwrap())
    };
    let valid_id = |answer: &common::Answer| {
        let id = answer.headers["x-request-id"].to_str().unwrap().to_owned();
        assert_eq!(answer.headers.get_all("x-request-id").iter().count(), 1);
        assert_eq!(
            answer.headers["x-upstream-saw"],
            id.as_str(),
            "upstream saw another ID"
        );
        assert!(
            !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()),
            "{id:?}"
        );
        id
    };

    // Kept, as sent.
    let longest = "x".repeat(128);
    for kept in ["partner-42", "a:b/c=d;e", longest.as_str()] {
        let answer = get(&[kept.as_bytes()]).await;
        assert_eq!(valid_id(&answer), kept);
    }
    // Made: a UUID, a new one each time.
    let first = valid_id(&get(&[]).await);
    let second = valid_id(&get(&[]).await);
    assert_eq!(first.len(), 36, "{first}");
    assert_ne!(first, second);
    // Replaced.
    let too_long = "x".repeat(129);
    for replaced in [
        &[too_long.as_bytes()][..],
        &[b"two words"],
        &[b"tab\there"],
        &["caf\u{e9}".as_bytes()],
        &[b"one", b"two"],
    ] {
        let answer = get(replaced).await;
        let id = valid_id(&answer);
        assert_eq!(id.len(), 36, "{replaced:?} gave {id}");
    }
    proxy.shutdown().await;

    // On a guarded route, the guard's own answer carries it too.
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let token = fake.token();
    let proxy = upgrade_guard_proxy::start(common::config(fake.url(), &["--token", &token]))
        .await
        .unwrap();
    let mut request = provision(
        &format!("http://{}", proxy.addr()),
        &token,
        "https://professional.example.com/",
        "personal",
    );
    request
        .headers_mut()
        .insert("x-request-id", "refused-7".parse().unwrap());
    let refused = send(&client, request).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(refused.headers["x-request-id"], "refused-7");
    proxy.shutdown().await;
}

/// `GET` on the admin listener: the status and the body as JSON.
async fn admin_get(admin: std::net::SocketAddr, path: &str) -> (StatusCode, serde_json::Value) {
    let answer = send(
        &http_client(),
        Request::get(format!("http://{admin}{path}"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    (answer.status, answer.json())
}

#[tokio::test]
async fn readiness_follows_the_token_endpoints_word_on_the_credentials() {
    use upgrade_guard::fake::{Endpoint, Fault};
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let proxy = upgrade_guard_proxy::start(common::config(
        fake.url(),
        &[
            "--client-id",
            fake.client_id(),
            "--client-secret",
            fake.client_secret(),
        ],
    ))
    .await
    .unwrap();
    let admin = proxy.admin_addr();
    // The client is revoked for one token request, then accepted again.
    fake.inject(
        Endpoint::Token,
        Fault::status_with_body(400, r#"{"error":"invalid_client"}"#),
    )
    .once();
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["credentials"], "refused");
    let metrics = send(
        &http_client(),
        Request::get(format!("http://{admin}/metrics"))
            .body(full(""))
            .unwrap(),
    )
    .await
    .text();
    assert!(
        metrics.lines().any(|l| l == "upgrade_guard_proxy_ready 0"),
        "{metrics}"
    );
    // Liveness is not readiness: the process is fine.
    assert_eq!(admin_get(admin, "/healthz").await.0, StatusCode::OK);
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["credentials"], "ok");
    // A token in hand is reused: the check costs no token request while it is valid.
    let asked = fake.stats().token_requests;
    assert_eq!(admin_get(admin, "/readyz").await.0, StatusCode::OK);
    assert_eq!(fake.stats().token_requests, asked);
    proxy.shutdown().await;

    // Credentials the token endpoint never accepts.
    let proxy = upgrade_guard_proxy::start(common::config(
        fake.url(),
        &["--client-id", "nobody", "--client-secret", "wrong"],
    ))
    .await
    .unwrap();
    for _ in 0..2 {
        let (status, body) = admin_get(proxy.admin_addr(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["checks"]["credentials"], "refused");
    }
    proxy.shutdown().await;

    // A fixed token: nothing to check.
    let proxy = upgrade_guard_proxy::start(common::config(fake.url(), &["--token", "t"]))
        .await
        .unwrap();
    let (status, body) = admin_get(proxy.admin_addr(), "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"status": "ready", "checks": {}}));
    proxy.shutdown().await;
}

/// With `--redis`, `/readyz` is 503 while Redis is gone and 200 once it is back. Needs
/// `redis-server` (`--features system-tests`).
#[cfg(feature = "system-tests")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis() {
    use common::redis_server::RedisServer;
    use std::time::{Duration, Instant};
    let mut redis = RedisServer::start();
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let proxy = upgrade_guard_proxy::start(common::config(
        fake.url(),
        &["--token", &fake.token(), "--redis", &redis.url()],
    ))
    .await
    .unwrap();
    let admin = proxy.admin_addr();
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["redis"], "ok");

    tokio::task::block_in_place(|| redis.stop());
    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["checks"]["redis"], "unreachable");
    assert_eq!(admin_get(admin, "/healthz").await.0, StatusCode::OK);

    tokio::task::block_in_place(|| redis.restart());
    // The connection comes back by itself; poll until it has, within a deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = admin_get(admin, "/readyz").await;
        if status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "still not ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    proxy.shutdown().await;
}

impl Binary {
    /// Reads log lines until one whose `message` starts with `prefix`, and returns it.
    fn wait_for(&mut self, prefix: &str) -> serde_json::Value {
        loop {
            let line = self
                .next_line()
                .unwrap_or_else(|| panic!("stdout closed before {prefix:?}"));
            let json: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if json["message"]
                .as_str()
                .is_some_and(|message| message.starts_with(prefix))
            {
                return json;
            }
        }
    }
}

/// Puts `from`'s key and certificate at `key` and `cert`, each by a rename, as certbot and
/// cert-manager replace files.
fn install(from: &common::TestCert, cert: &std::path::Path, key: &std::path::Path) {
    for (source, target) in [(&from.key, key), (&from.cert, cert)] {
        let partial = target.with_extension("partial");
        std::fs::copy(source, &partial).unwrap();
        std::fs::rename(&partial, target).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_new_certificate_without_failing_a_request() {
    use common::{TestCert, client_trusting};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let token = fake.token();
    let (old, new) = (TestCert::new(), TestCert::new());
    // The proxy's own files, replaced in place.
    let dir =
        std::env::temp_dir().join(format!("upgrade-guard-proxy-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    install(&old, &cert, &key);
    let (mut binary, addr, admin) = Binary::start(&[
        "--log-format",
        "json",
        "--upstream",
        fake.url(),
        "--token",
        &token,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let url = format!("https://{addr}");

    // Traffic all along, trusting both certificates: over one kept connection, and over a new
    // connection (a new handshake) for each request. Not one may fail.
    let stop = Arc::new(AtomicBool::new(false));
    let mut traffic = Vec::new();
    let mut counts = Vec::new();
    for keep_alive in [true, false] {
        let client = client_trusting(&[&old, &new], keep_alive);
        let (stop, count) = (stop.clone(), Arc::new(AtomicU64::new(0)));
        counts.push(count.clone());
        let (url, token) = (url.clone(), token.clone());
        traffic.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let request = provision(
                    &url,
                    &token,
                    "https://professional.example.com/",
                    "personal",
                );
                match client.request(request).await {
                    Ok(answer) if answer.status() == StatusCode::CONFLICT => {}
                    Ok(answer) => failures.push(format!("status {}", answer.status())),
                    Err(error) => failures.push(format!("{error:?}")),
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    // Waits until each traffic loop has made `more` requests from now on.
    let more_traffic = |more: u64| {
        let from: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let counts = counts.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while counts
                .iter()
                .zip(&from)
                .any(|(count, from)| count.load(Ordering::Relaxed) < from + more)
            {
                assert!(Instant::now() < deadline, "the traffic stalled");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    more_traffic(3).await;
    // A connection opened before any reload, trusting the old certificate only.
    let held = client_trusting(&[&old], true);
    let refused = |client: &common::HttpsClient| {
        client.request(provision(
            &url,
            &token,
            "https://professional.example.com/",
            "personal",
        ))
    };
    assert_eq!(refused(&held).await.unwrap().status(), StatusCode::CONFLICT);

    // A bad pair: logged, and the old certificate still served.
    std::fs::write(&cert, "not a certificate").unwrap();
    binary.signal(libc::SIGHUP);
    let failed = tokio::task::block_in_place(|| binary.wait_for("certificate reload"));
    assert_eq!(
        failed["message"],
        "certificate reload failed; still serving the previous one"
    );
    assert_eq!(failed["level"], "WARN");
    let old_only = client_trusting(&[&old], false);
    assert_eq!(
        refused(&old_only).await.unwrap().status(),
        StatusCode::CONFLICT
    );
    more_traffic(3).await;

    // The new pair.
    install(&new, &cert, &key);
    binary.signal(libc::SIGHUP);
    let loaded = tokio::task::block_in_place(|| binary.wait_for("certificate reload"));
    assert_eq!(loaded["level"], "INFO", "{loaded}");
    more_traffic(3).await;
    let new_only = client_trusting(&[&new], false);
    assert_eq!(
        refused(&new_only).await.unwrap().status(),
        StatusCode::CONFLICT
    );
    assert!(
        refused(&old_only).await.is_err(),
        "a new connection still got the old certificate"
    );
    // The connection opened before the rotation is still served, with the certificate it
    // began with.
    assert_eq!(refused(&held).await.unwrap().status(), StatusCode::CONFLICT);

    stop.store(true, Ordering::Relaxed);
    for loop_ in traffic {
        let failures = loop_.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
    }
    let metrics = send(
        &http_client(),
        Request::get(format!("http://{admin}/metrics"))
            .body(full(""))
            .unwrap(),
    )
    .await
    .text();
    for line in [
        r#"upgrade_guard_proxy_tls_reloads_total{result="loaded"} 1"#,
        r#"upgrade_guard_proxy_tls_reloads_total{result="failed"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }
    tokio::task::block_in_place(|| binary.stop());
    let _ = std::fs::remove_dir_all(&dir);
}
