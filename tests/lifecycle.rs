//! The partner lifecycle through the guard and the fake: new sites, connection requests and
//! repairs, cancellations, a partner's own view of a site, and PHP's `[]`. Each row of issue 10's
//! table has a test here; the Redis replicas' side is in `redis.rs`.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tower::{Layer, ServiceExt, service_fn};
use upgrade_guard::fake::{FakeSite, FakeUpstream, catalogue};
use upgrade_guard::{
    Admission, Checked, GuardBody, LocalLocks, Outcome, Site, Source, UnknownSites,
    UpgradeGuardLayer,
};

const PROVISION: &str = "/rest/v1.3/jpphp/provision";
const CANCEL: &str = "/rest/v1.3/jpphp/{site}/partner-cancel";

/// What the relay saw of one forwarded request.
#[derive(Clone, Debug)]
struct Relayed {
    admission: Option<Admission>,
    checked: Option<Checked>,
}

/// An inner service that sends each request to the same path on the fake, as a partner's
/// handlers relay provisions and cancellations, and records what the guard marked it with.
#[derive(Clone)]
struct Relay {
    http: reqwest::Client,
    base: String,
    token: String,
    seen: Arc<Mutex<Vec<Relayed>>>,
}

impl Relay {
    fn new(fake: &FakeUpstream) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: fake.url().to_owned(),
            token: fake.token(),
            seen: Arc::default(),
        }
    }

    fn seen(&self) -> Vec<Relayed> {
        self.seen.lock().unwrap().clone()
    }

    fn service(
        &self,
    ) -> impl tower::Service<
        Request<GuardBody<Full<Bytes>>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Send + use<>,
    > + Clone
    + Send
    + 'static {
        let relay = self.clone();
        service_fn(move |request: Request<GuardBody<Full<Bytes>>>| {
            let relay = relay.clone();
            async move {
                let (parts, body) = request.into_parts();
                relay.seen.lock().unwrap().push(Relayed {
                    admission: parts.extensions.get().copied(),
                    checked: parts.extensions.get().cloned(),
                });
                let body = body.collect().await.unwrap().to_bytes();
                let url = format!("{}{}", relay.base, parts.uri.path());
                let answer = relay
                    .http
                    .post(url)
                    .bearer_auth(&relay.token)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body)
                    .send()
                    .await
                    .expect("the fake answers");
                let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
                let body = answer.bytes().await.unwrap();
                let mut response = Response::new(Full::from(body));
                *response.status_mut() = status;
                Ok::<_, Infallible>(response)
            }
        })
    }
}

/// A partner API: the provision form's defaults, and a cancel route, on one guard.
struct Partner {
    fake: FakeUpstream,
    guard: UpgradeGuardLayer,
    relay: Relay,
}

impl Partner {
    async fn new() -> Self {
        Self::with(fake().await)
    }

    fn with(fake: FakeUpstream) -> Self {
        let guard = UpgradeGuardLayer::new(client(&fake));
        let relay = Relay::new(&fake);
        Self { fake, guard, relay }
    }

    fn cancel_route(&self) -> UpgradeGuardLayer {
        self.guard
            .clone()
            .site(Source::path(CANCEL, "site"))
            .cancels()
    }

    /// Sends `form` through `route` to `path`: the status and body.
    async fn send(&self, route: &UpgradeGuardLayer, path: &str, form: &str) -> (u16, String) {
        post(route.layer(self.relay.service()), path, form).await
    }

    async fn provision(&self, form: &str) -> (u16, String) {
        self.send(&self.guard, PROVISION, form).await
    }

    async fn cancel(&self, site: &str, form: &str) -> (u16, String) {
        let path = format!("/rest/v1.3/jpphp/{site}/partner-cancel");
        self.send(&self.cancel_route(), &path, form).await
    }
}

fn error_of(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).unwrap();
    value["error"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_new_site_by_url_gets_its_first_provision_then_is_checked_like_any_other() {
    let partner = Partner::new().await;
    let (status, body) = partner
        .provision("siteurl=https://brand-new.example/&plan=professional&local_user=admin")
        .await;
    assert_eq!(status, 200, "{body}");
    let seen = partner.relay.seen();
    assert_eq!(seen[0].admission, Some(Admission::FirstProvision));
    let checked = seen[0].checked.clone().expect("the product is marked");
    assert_eq!(
        (checked.site().as_str(), checked.product()),
        ("brand-new.example", "professional")
    );
    assert_eq!(checked.admission(), Admission::FirstProvision);
    let stats = partner.fake.stats();
    assert_eq!((stats.registered, stats.provisioned), (1, 1));

    // Registered now: a downgrade on it is refused, by the guard.
    let (status, body) = partner
        .provision("siteurl=brand-new.example&plan=jetpack-backup-realtime&local_user=admin")
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (409, "upgrade_not_allowed")
    );
    assert_eq!(partner.fake.stats().leaks, 0);
    assert_eq!(partner.relay.seen().len(), 1);
}

#[tokio::test]
async fn an_unknown_blog_id_is_404_naming_the_site() {
    let partner = Partner::new().await;
    let (status, body) = partner
        .provision("siteurl=4242&plan=personal&local_user=admin")
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        r#"{"error":"unknown_site","message":"WordPress.com does not know site 4242","site":"4242"}"#
    );
    assert!(partner.relay.seen().is_empty());
}

#[tokio::test]
async fn a_route_can_refuse_unknown_sites() {
    let partner = Partner::new().await;
    let existing_only = partner.guard.clone().unknown_sites(UnknownSites::Refuse);
    let (status, body) = partner
        .send(
            &existing_only,
            PROVISION,
            "siteurl=https://brand-new.example/shop/&plan=personal&local_user=admin",
        )
        .await;
    assert_eq!(status, 404);
    assert!(
        body.contains(r#""site":"brand-new.example::shop""#),
        "{body}"
    );
    assert_eq!(partner.fake.stats().provisions, 0);
}

#[tokio::test]
async fn two_first_provisions_of_one_new_site_are_serialized() {
    let partner = Partner::new().await;
    let form = |plan: &str| format!("siteurl=https://twice.example/&plan={plan}&local_user=admin");
    let (daily, realtime) = (
        form("jetpack-backup-daily"),
        form("jetpack-backup-realtime"),
    );
    let (daily, realtime) = tokio::join!(partner.provision(&daily), partner.provision(&realtime));
    // Whichever came first registered the site; the second was checked against what it left:
    // Realtime after Daily is an upgrade, Daily after Realtime is not.
    let statuses = (daily.0, realtime.0);
    assert!(
        statuses == (200, 200) || statuses == (409, 200),
        "{statuses:?}"
    );
    let stats = partner.fake.stats();
    assert_eq!((stats.registered, stats.leaks), (1, 0));
    assert_eq!(
        partner.fake.held_products("twice.example").unwrap(),
        ["jetpack-backup-realtime"]
    );
}

#[tokio::test]
async fn no_product_or_free_is_a_connection_request() {
    let partner = Partner::new().await;
    let reports = Arc::new(Mutex::new(Vec::new()));
    let recorded = reports.clone();
    let guard = partner.guard.clone().on_decision(move |report| {
        recorded.lock().unwrap().push((
            report.outcome,
            report.admission,
            report.product.map(str::to_owned),
        ));
    });
    for form in [
        // A repair of a site that holds a plan: sent without `plan`, it changes no product.
        "siteurl=1003&local_user=admin&force_connect=1",
        "siteurl=https://professional.example.com/&plan=&local_user=admin&force_register=1",
        "siteurl=1003&plan=free&local_user=admin",
        // A new site connected without a product: registered, holding nothing.
        "siteurl=https://connect-only.example/&local_user=admin",
    ] {
        let (status, body) = partner.send(&guard, PROVISION, form).await;
        assert_eq!(status, 200, "{form}: {body}");
    }
    for seen in partner.relay.seen() {
        assert_eq!(seen.admission, Some(Admission::Connection));
        assert!(seen.checked.is_none(), "no product was checked");
    }
    assert_eq!(
        reports.lock().unwrap()[2],
        (
            Outcome::Allowed,
            Some(Admission::Connection),
            Some("free".to_owned())
        )
    );
    assert_eq!(reports.lock().unwrap()[0].2, None);
    assert_eq!(
        partner.fake.held_products("1003").unwrap(),
        ["professional"]
    );
    assert!(
        partner
            .fake
            .held_products("connect-only.example")
            .unwrap()
            .is_empty()
    );
    let stats = partner.fake.stats();
    assert_eq!((stats.connected, stats.provisioned, stats.leaks), (4, 0, 0));
    // No lookup is needed to forward a request that provisions nothing.
    assert_eq!(guard.stats().snapshot().lookups, 0);
}

#[tokio::test]
async fn a_route_that_requires_a_product_refuses_connection_requests() {
    let partner = Partner::new().await;
    let plans = partner
        .guard
        .clone()
        .site(Source::path("/sites/{site}/plans", "site"))
        .require_product();
    for form in ["local_user=admin", "plan=&local_user=admin"] {
        let (status, body) = partner.send(&plans, "/sites/1001/plans", form).await;
        assert_eq!((status, error_of(&body).as_str()), (400, "missing_product"));
    }
    // `free` is checked like any product there, and is never an upgrade.
    let (status, body) = partner
        .send(&plans, "/sites/1001/plans", "plan=free&local_user=admin")
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (409, "upgrade_not_allowed")
    );
    assert!(partner.relay.seen().is_empty());
}

#[tokio::test]
async fn a_cancel_gives_products_back_at_once() {
    let partner = Partner::new().await;
    let downgrade = "siteurl=1003&plan=jetpack-backup-realtime&local_user=admin";
    // Refused, and the refusal is cached.
    assert_eq!(partner.provision(downgrade).await.0, 409);
    assert_eq!(partner.provision(downgrade).await.0, 409);
    assert_eq!(partner.guard.stats().snapshot().cache_hits, 1);

    let (status, body) = partner
        .cancel("professional.example.com", "plan=professional")
        .await;
    assert_eq!((status, body.as_str()), (200, r#"{"success":true}"#));
    assert_eq!(
        partner.relay.seen().last().unwrap().admission,
        Some(Admission::Cancellation)
    );
    // The refusal was cached under 1003 and the cancel named the URL: one site, whose every
    // name the cancel forgot.
    let (status, body) = partner.provision(downgrade).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(partner.fake.stats().leaks, 0);
}

#[tokio::test]
async fn a_cancel_and_a_provision_naming_the_site_alike_need_no_forget() {
    let partner = Partner::new().await;
    let downgrade =
        "siteurl=professional.example.com&plan=jetpack-backup-realtime&local_user=admin";
    assert_eq!(partner.provision(downgrade).await.0, 409);
    assert_eq!(
        partner
            .cancel("professional.example.com", "cancel-all=true")
            .await
            .0,
        200
    );
    assert_eq!(partner.provision(downgrade).await.0, 200);
    assert_eq!(partner.fake.stats().leaks, 0);
}

#[tokio::test]
async fn a_cancel_holds_the_site_and_forgets_it_whatever_it_answers() {
    let fake = fake().await;
    let locks = LocalLocks::new();
    let guard = UpgradeGuardLayer::builder(client(&fake))
        .site_locks(locks.clone())
        .build();
    let site = Site::parse("1003").unwrap();
    // Cache a refusal of the site.
    let provision = guard.clone().layer(Recorder::default().service());
    let refused = provision
        .clone()
        .oneshot(form("siteurl=1003&plan=personal"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);

    // A cancel whose handler waits for a signal, then fails.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let released = Arc::new(Mutex::new(Some(released)));
    let cancel = guard
        .clone()
        .site(Source::path(CANCEL, "site"))
        .cancels()
        .layer(service_fn(move |_: Request<GuardBody<Full<Bytes>>>| {
            let released = released.lock().unwrap().take();
            async move {
                if let Some(released) = released {
                    let _ = released.await;
                }
                let mut response =
                    Response::new(Full::<Bytes>::from(r#"{"error":"x","message":"y"}"#));
                *response.status_mut() = StatusCode::BAD_GATEWAY;
                Ok::<_, Infallible>(response)
            }
        }));
    let request = Request::post("/rest/v1.3/jpphp/1003/partner-cancel")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from("plan=professional"))
        .unwrap();
    let cancelling = tokio::spawn(cancel.oneshot(request));
    eventually("the cancel holds the site", || locks.users(&site) == 1).await;

    // A provision of the site waits for the cancel (its cached refusal was dropped when the
    // cancel was forwarded).
    let waiting = tokio::spawn(provision.oneshot(form("siteurl=1003&plan=personal")));
    eventually("the provision waits for the site", || {
        locks.users(&site) == 2
    })
    .await;
    // A dashboard caches the site's paths from before the cancel takes effect...
    assert!(guard.upgrade_paths(&site).await.unwrap().is_empty());
    // ... then the cancel takes effect upstream, and its handler fails all the same.
    fake.add_site(FakeSite::new(1003).url("https://professional.example.com/"));
    release.send(()).unwrap();
    assert_eq!(cancelling.await.unwrap().unwrap().status(), 502);
    // The site was forgotten before it was freed: the waiting provision looked it up afresh.
    assert_eq!(waiting.await.unwrap().unwrap().status(), 200);
    assert_eq!(locks.sites_in_use(), 0);
}

#[tokio::test]
async fn forget_drops_a_refusal_for_a_change_the_guard_cannot_see() {
    let partner = Partner::new().await;
    let downgrade = "siteurl=1003&plan=premium&local_user=admin";
    assert_eq!(partner.provision(downgrade).await.0, 409);
    // Cancelled on WordPress.com itself, not through the guard.
    let cancelled = reqwest::Client::new()
        .post(format!(
            "{}/rest/v1.3/jpphp/1003/partner-cancel",
            partner.fake.url()
        ))
        .bearer_auth(partner.fake.token())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("cancel-all=true")
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    assert_eq!(partner.provision(downgrade).await.0, 409, "still cached");
    partner.guard.forget(&Site::parse("1003").unwrap());
    assert_eq!(partner.provision(downgrade).await.0, 200);
}

#[tokio::test]
async fn phps_empty_array_is_409() {
    let partner = Partner::with(
        FakeUpstream::builder()
            .site(FakeSite::new(1003).holding(["professional"]))
            .empty_paths_as_php_array()
            .start()
            .await
            .unwrap(),
    );
    let (status, body) = partner
        .provision("siteurl=1003&plan=jetpack-backup-realtime&local_user=admin")
        .await;
    assert_eq!(status, 409);
    assert!(body.contains(r#""upgrade_paths":{}"#), "{body}");
}

#[tokio::test]
async fn a_dashboard_sees_the_paths_through_the_guards_lookups() {
    let partner = Partner::new().await;
    let site = Site::parse("realtime.example.com").unwrap();
    let (a, b) = tokio::join!(
        partner.guard.upgrade_paths(&site),
        partner.guard.upgrade_paths(&site)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert!(a.allows("professional") && !a.allows("premium"));
    assert_eq!(partner.fake.stats().lookups, 1, "coalesced");
    // Cached: no second lookup.
    partner.guard.upgrade_paths(&site).await.unwrap();
    assert_eq!(partner.fake.stats().lookups, 1);
    // A provision through the guard changes what the dashboard shows.
    let (status, _) = partner
        .provision("siteurl=realtime.example.com&plan=professional&local_user=admin")
        .await;
    assert_eq!(status, 200);
    assert!(partner.guard.upgrade_paths(&site).await.unwrap().is_empty());
    // An unknown site is the lookup's error, for the dashboard to show.
    let unknown = partner
        .guard
        .upgrade_paths(&Site::parse("4242").unwrap())
        .await;
    assert!(matches!(
        unknown,
        Err(upgrade_guard::LookupError::UnknownSite)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_new_sites_times_five_products_at_once_leak_nothing() {
    let partner = Arc::new(Partner::new().await);
    let mut tasks = tokio::task::JoinSet::new();
    for site in 0..10 {
        for plan in CONFLICTING {
            let partner = partner.clone();
            tasks.spawn(async move {
                let form =
                    format!("siteurl=https://new-{site}.example/&plan={plan}&local_user=admin");
                partner.provision(&form).await
            });
        }
    }
    let answers = tasks.join_all().await;
    let stats = partner.fake.stats();
    assert_eq!(stats.leaks, 0, "no downgrade reached the provision call");
    assert_eq!(stats.registered, 10, "each new site registered once");
    for (status, body) in &answers {
        assert!(*status == 200 || *status == 409, "{status} {body}");
    }
    let first = partner
        .relay
        .seen()
        .iter()
        .filter(|seen| seen.admission == Some(Admission::FirstProvision))
        .count();
    assert_eq!(first, 10, "one first provision per site, the rest checked");
    for site in 0..10 {
        let held = partner
            .fake
            .held_products(&format!("new-{site}.example"))
            .unwrap();
        assert!(!held.is_empty(), "{site}: {held:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_racing_provisions_of_one_site_leak_nothing_and_leave_no_stale_refusal() {
    let partner = Arc::new(Partner::new().await);
    let site = "professional.example.com";
    for round in 0..5 {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..12 {
            let partner = partner.clone();
            tasks.spawn(async move {
                if n % 4 == 0 {
                    let form = ["cancel-all=true", "plan=professional", "plan=jetpack-scan"][n % 3];
                    partner.cancel(site, form).await
                } else {
                    let plan = CONFLICTING[(n + round) % CONFLICTING.len()];
                    partner
                        .provision(&format!("siteurl={site}&plan={plan}&local_user=admin"))
                        .await
                }
            });
        }
        for (status, body) in tasks.join_all().await {
            assert!(status == 200 || status == 409, "{status} {body}");
        }
        assert_eq!(partner.fake.stats().leaks, 0, "round {round}");
        // What the guard would decide on now is what WordPress.com offers now.
        let now = partner
            .guard
            .upgrade_paths(&Site::parse(site).unwrap())
            .await
            .unwrap();
        let truth = catalogue::offered(partner.fake.held_products(site).unwrap());
        assert_eq!(
            serde_json::to_value(&*now).unwrap(),
            serde_json::to_value(&truth).unwrap(),
            "round {round}: a stale answer is cached"
        );
    }
}

/// The commands `cargo run --example partner_api` prints, run as printed, in order, with `curl`.
#[tokio::test]
async fn the_examples_printed_commands_answer_as_printed() {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
    // `cargo test` builds the examples next to the test binaries' `deps` folder.
    let example = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("examples")
        .join(format!("partner_api{}", std::env::consts::EXE_SUFFIX));
    assert!(
        example.exists(),
        "{} is missing: `cargo test` builds it (or `cargo build --example partner_api`)",
        example.display()
    );
    let mut child = tokio::process::Command::new(&example)
        .env("PARTNER_API_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .env_remove("WPCOM_API_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // What each printed command answers, in the order printed: status, then a part of the body.
    let expected: [(u16, &str); 10] = [
        (200, r#"{"success":true"#),
        (409, r#"{"error":"upgrade_not_allowed""#),
        (409, r#"{"error":"upgrade_not_allowed""#),
        (200, r#"{"success":true"#),
        (200, r#"{"success":true"#),
        (200, r#"{"success":true"#),
        (200, r#""jetpack-backup":["jetpack-backup-realtime"]"#),
        (200, r#"{"success":true"#),
        (200, r#"{"success":true}"#),
        (200, r#"{"success":true"#),
    ];
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut commands: Vec<String> = Vec::new();
    let mut open = false;
    let reading = async {
        while commands.len() < expected.len() || open {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("the example printed all");
            let line = line.trim();
            if open {
                commands
                    .last_mut()
                    .unwrap()
                    .push_str(line.trim_end_matches('\\'));
            } else if line.starts_with("curl ") {
                commands.push(line.trim_end_matches('\\').to_owned());
            } else {
                continue;
            }
            open = line.ends_with('\\');
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), reading)
        .await
        .expect("the example started and printed its commands");
    for (command, (status, body)) in commands.iter().zip(expected) {
        let output = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!("{command} --max-time 20 -w '\\n%{{http_code}}'"))
            .output()
            .await
            .expect("sh and curl are installed (.ci/run installs curl)");
        let output = String::from_utf8(output.stdout).unwrap();
        let (answer, code) = output.rsplit_once('\n').unwrap_or(("", &output));
        assert_eq!(code, status.to_string(), "{command}\n{answer}");
        assert!(answer.contains(body), "{command}\n{answer}");
    }
    child.start_kill().unwrap();
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    child.wait().await.unwrap();
    for decision in [
        "upgrade allowed",
        "request stopped",
        "first provision of a new site forwarded",
        "connection request forwarded",
        "cancellation forwarded",
        "product not judged by the site's upgrade paths forwarded",
    ] {
        assert!(logs.contains(decision), "{decision} not logged:\n{logs}");
    }
}

#[tokio::test]
async fn a_site_is_new_only_when_status_agrees() {
    use upgrade_guard::fake::{Endpoint, Fault};
    let partner = Partner::new().await;
    let invalid_blog = || Fault::status_with_body(403, r#"{"error":"invalid_blog","message":"x"}"#);
    // Upgrade-paths says "unknown" for a site WordPress.com knows (it holds Professional): a
    // downgrade must not pass as a first provision.
    partner
        .fake
        .inject(Endpoint::UpgradePaths, invalid_blog())
        .once();
    let (status, body) = partner
        .provision("siteurl=https://professional.example.com/&plan=jetpack-scan&local_user=a")
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (503, "upgrade_paths_unavailable"),
        "{body}"
    );
    // Status cannot answer: nothing is forwarded either.
    partner
        .fake
        .inject(Endpoint::Status, Fault::status(500))
        .once();
    let (status, body) = partner
        .provision("siteurl=https://new.example/&plan=jetpack-scan&local_user=a")
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (503, "upgrade_paths_unavailable")
    );
    // A 404 without `invalid_blog` (a wrong base URL, say) makes no site unknown: 503 before
    // status is even asked.
    partner
        .fake
        .inject(Endpoint::Any, Fault::status(404))
        .times(2);
    let (status, _) = partner
        .provision("siteurl=https://new.example/&plan=jetpack-scan&local_user=a")
        .await;
    assert_eq!(status, 503);
    assert!(partner.relay.seen().is_empty());
    assert_eq!(partner.fake.stats().status_requests, 2);
    partner.fake.clear_faults();
    // Both agree: forwarded.
    let (status, _) = partner
        .provision("siteurl=https://new.example/&plan=jetpack-scan&local_user=a")
        .await;
    assert_eq!(status, 200);
}

/// A cancel route reads no product: whatever its `plan` field holds (spaces, a value given twice),
/// it is held and forwarded, never refused for it; WordPress.com judges the cancel itself.
#[tokio::test]
async fn a_cancel_is_never_refused_for_its_plan_field() {
    let partner = Partner::new().await;
    for form in [
        "plan=professional%20",
        "plan=a&plan=b",
        "cancel-all=true&plan[]=x",
    ] {
        // Forwarded: whatever comes back is the fake's (WordPress.com's) own answer.
        let (_, body) = partner.cancel("1002", form).await;
        assert_ne!(error_of(&body), "invalid_body", "{form}: {body}");
    }
    assert_eq!(partner.relay.seen().len(), 3);
}

/// Whatever order a route is built in, a cancel route reads no product: `product` and
/// `require_product` do nothing on it, before `cancels` or after.
#[tokio::test]
async fn a_cancel_route_reads_no_product_whatever_the_builder_order() {
    let partner = Partner::new().await;
    let base = partner.guard.clone().site(Source::path(CANCEL, "site"));
    let plan = || Source::field("plan");
    let routes = [
        base.clone().cancels().product(plan()),
        base.clone().product(plan()).cancels(),
        base.clone().cancels().require_product().product(plan()),
        base.clone().require_product().product(plan()).cancels(),
    ];
    let path = "/rest/v1.3/jpphp/1002/partner-cancel";
    for (i, route) in routes.iter().enumerate() {
        let (_, body) = partner.send(route, path, "plan=%20premium").await;
        assert_ne!(error_of(&body), "invalid_body", "route {i}: {body}");
        assert_ne!(error_of(&body), "missing_product", "route {i}: {body}");
        assert_eq!(partner.relay.seen().len(), i + 1, "route {i}");
    }
}

// Issue 22: every product a partner sells, and the provision just made.

/// A fake whose upgrade-paths speak about plans and backups only, as WordPress.com's partner
/// docs say, while its provision endpoint takes every product.
async fn plans_and_backups_only() -> Partner {
    Partner::with(
        FakeUpstream::builder()
            .site(FakeSite::new(1001).url("https://free.example.com/"))
            .site(
                FakeSite::new(1003)
                    .url("https://professional.example.com/")
                    .holding(["professional"]),
            )
            .answer_families(["jetpack-plans", "jetpack-backup"])
            .start()
            .await
            .unwrap(),
    )
}

#[tokio::test]
async fn scan_and_anti_spam_are_provisioned_where_upgrade_paths_speak_of_plans_and_backups_only() {
    let partner = plans_and_backups_only().await;
    for form in [
        "siteurl=1001&plan=jetpack-scan&local_user=admin",
        "siteurl=https://free.example.com/&plan=jetpack-anti-spam&local_user=admin",
        "siteurl=https://new-scan.example/&plan=jetpack-scan&local_user=admin",
    ] {
        let (status, body) = partner.provision(form).await;
        assert_eq!(status, 200, "{form}: {body}");
    }
    let admissions: Vec<_> = partner.relay.seen().iter().map(|r| r.admission).collect();
    assert_eq!(
        admissions,
        [
            Some(Admission::Unjudged),
            Some(Admission::Unjudged),
            Some(Admission::FirstProvision)
        ]
    );
    // What the answer judges is judged as before.
    let (status, body) = partner
        .provision("siteurl=1003&plan=jetpack-backup-realtime&local_user=admin")
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (409, "upgrade_not_allowed")
    );
    // A route that takes only judged products refuses the others.
    let strict = partner
        .guard
        .clone()
        .unjudged_products(upgrade_guard::UnjudgedProducts::Refuse);
    let (status, body) = partner
        .send(
            &strict,
            PROVISION,
            "siteurl=1003&plan=jetpack-scan&local_user=admin",
        )
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (409, "product_not_judged")
    );
    assert!(body.contains(r#""product":"jetpack-scan""#), "{body}");
    let stats = partner.fake.stats();
    assert_eq!((stats.provisioned, stats.leaks), (3, 0));
}

#[tokio::test]
async fn a_family_an_answer_lists_is_judged_from_then_on() {
    // The fake speaks about every family; the guard learns Scan is covered from an answer that
    // lists it, and refuses Scan where a later answer leaves it out.
    let partner = Partner::new().await;
    let (status, _) = partner
        .provision("siteurl=1001&plan=jetpack-anti-spam&local_user=admin")
        .await;
    assert_eq!(status, 200);
    let (status, body) = partner
        .provision("siteurl=1003&plan=jetpack-scan&local_user=admin")
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (409, "upgrade_not_allowed")
    );
    assert_eq!(partner.fake.stats().leaks, 0);
}

/// A partner whose upstream shows each provision `delay` late.
async fn granted_late(delay: std::time::Duration) -> Partner {
    Partner::with(
        FakeUpstream::builder()
            .site(FakeSite::new(1001).url("https://free.example.com/"))
            .grant_delay(delay)
            .start()
            .await
            .unwrap(),
    )
}

const GRANT_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

#[tokio::test]
async fn a_downgrade_or_a_repeat_right_after_a_provision_never_reaches_it() {
    let partner = granted_late(GRANT_DELAY).await;
    let (status, body) = partner
        .provision("siteurl=1001&plan=professional&local_user=a")
        .await;
    assert_eq!(status, 200, "{body}");
    // Right after: the answer still lists Realtime Backups, which Professional contains. The
    // guard waits for an answer that shows Professional, and refuses.
    let (status, body) = partner
        .provision("siteurl=https://free.example.com/&plan=jetpack-backup-realtime&local_user=b")
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (409, "upgrade_not_allowed")
    );
    // The same provision again: done already.
    let (status, body) = partner
        .provision("siteurl=1001&plan=professional&local_user=a")
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (409, "already_provisioned")
    );
    assert!(
        body.contains(r#""site":"1001","product":"professional""#),
        "{body}"
    );
    let stats = partner.fake.stats();
    assert_eq!(
        (stats.provisions, stats.provisioned, stats.leaks),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn an_upgrade_right_after_a_provision_passes_once_the_answer_shows_it() {
    let partner = granted_late(GRANT_DELAY).await;
    for plan in ["jetpack-backup-daily", "professional"] {
        let (status, body) = partner
            .provision(&format!("siteurl=1001&plan={plan}&local_user=a"))
            .await;
        assert_eq!(status, 200, "{plan}: {body}");
    }
    let stats = partner.fake.stats();
    assert_eq!((stats.provisioned, stats.leaks), (2, 0));
}

#[tokio::test]
async fn a_cancel_gives_the_product_back_at_once_while_it_settles() {
    let partner = granted_late(GRANT_DELAY).await;
    let realtime = "siteurl=1001&plan=jetpack-backup-realtime&local_user=a";
    assert_eq!(partner.provision(realtime).await.0, 200);
    let (status, body) = partner
        .cancel("free.example.com", "plan=jetpack-backup-realtime")
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = partner.provision(realtime).await;
    assert_eq!(status, 200, "an upgrade again: {body}");
    assert_eq!(partner.fake.stats().leaks, 0);
}

#[tokio::test]
async fn a_first_provision_shown_late_is_waited_for() {
    let partner = granted_late(GRANT_DELAY).await;
    let (status, body) = partner
        .provision("siteurl=https://late.example/&plan=professional&local_user=a")
        .await;
    assert_eq!(status, 200, "{body}");
    // WordPress.com does not know the site yet: not another first provision, but a wait for the
    // answer that knows it, and a refusal.
    let (status, body) = partner
        .provision("siteurl=late.example&plan=jetpack-backup-daily&local_user=b")
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (409, "upgrade_not_allowed")
    );
    let stats = partner.fake.stats();
    assert_eq!(
        (stats.provisioned, stats.registered, stats.leaks),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn answers_that_never_show_a_provision_end_in_503_and_forward_nothing() {
    // The recorder answers 200 and provisions nothing: no answer will ever show it.
    let fake = fake().await;
    let guard =
        UpgradeGuardLayer::new(client(&fake)).lock_wait(std::time::Duration::from_millis(300));
    let inner = Recorder::default();
    let answer = send(
        &guard,
        &inner,
        form("siteurl=1001&plan=jetpack-backup-daily"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = send(&guard, &inner, form("siteurl=1001&plan=professional")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.error(), "provision_settling");
    assert_eq!(answer.headers["retry-after"], "2");
    assert_eq!(inner.calls(), 1);
    // A repeat needs no settled answer.
    let answer = send(
        &guard,
        &inner,
        form("siteurl=1001&plan=jetpack-backup-daily"),
    )
    .await;
    assert_eq!(answer.error(), "already_provisioned");
    assert_eq!(inner.calls(), 1);
}

/// Sends `form` to `path` through `service`: the status and body.
async fn post<S>(service: S, path: &str, form: &str) -> (u16, String)
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<GuardBody<Full<Bytes>>>>,
    S::Error: std::fmt::Debug,
{
    let request = Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::from(form.to_owned()))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn a_cancel_that_failed_leaves_a_provision_settling_remembered() {
    let partner = granted_late(GRANT_DELAY).await;
    let (status, body) = partner
        .provision("siteurl=1001&plan=professional&local_user=a")
        .await;
    assert_eq!(status, 200, "{body}");
    // A cancel whose handler fails before reaching WordPress.com: nothing was given back.
    let failing = service_fn(|_: Request<GuardBody<Full<Bytes>>>| async {
        let mut response = Response::new(Full::from(r#"{"error":"relay_failed"}"#));
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        Ok::<_, Infallible>(response)
    });
    let cancel = partner.cancel_route().layer(failing);
    let (status, _) = post(
        cancel,
        "/rest/v1.3/jpphp/1001/partner-cancel",
        "plan=jetpack-anti-spam",
    )
    .await;
    assert_eq!(status, 502);
    // Realtime Backups right after Professional: still a downgrade, whatever the answer shows.
    let (status, body) = partner
        .provision("siteurl=1001&plan=jetpack-backup-realtime&local_user=b")
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (409, "upgrade_not_allowed")
    );
    assert_eq!(partner.fake.stats().leaks, 0);
}

#[tokio::test]
async fn a_cancel_wordpress_com_refused_leaves_a_provision_settling_remembered() {
    let partner = granted_late(GRANT_DELAY).await;
    let professional = "siteurl=1001&plan=professional&local_user=a";
    assert_eq!(partner.provision(professional).await.0, 200);
    // `cancel-all` beside a `plan`: WordPress.com refuses it (400 invalid_input).
    let (status, body) = partner
        .cancel("1001", "cancel-all=true&plan=professional")
        .await;
    assert_eq!((status, error_of(&body).as_str()), (400, "invalid_input"));
    let (status, body) = partner.provision(professional).await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (409, "already_provisioned")
    );
    assert_eq!(partner.fake.stats().provisions, 1);
}

#[tokio::test]
async fn a_cancel_answered_in_an_envelope_leaves_a_provision_settling_remembered() {
    let partner = granted_late(GRANT_DELAY).await;
    let professional = "siteurl=1001&plan=professional&local_user=a";
    assert_eq!(partner.provision(professional).await.0, 200);
    // With `?http_envelope=1`, WordPress.com answers 200 whatever happened, the real status in
    // the body: here a refusal, nothing given back.
    let enveloped = service_fn(|_: Request<GuardBody<Full<Bytes>>>| async {
        Ok::<_, Infallible>(Response::new(Full::from(
            r#"{"code":400,"headers":[],"body":{"error":"invalid_input","message":"x"}}"#,
        )))
    });
    let cancel = partner.cancel_route().layer(enveloped);
    let (status, _) = post(
        cancel,
        "/rest/v1.3/jpphp/1001/partner-cancel?http_envelope=1",
        "cancel-all=true&plan=professional",
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = partner.provision(professional).await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (409, "already_provisioned")
    );
    assert_eq!(partner.fake.stats().provisions, 1);
}

/// Private sites: WordPress.com's public site lookup answers 403 `unauthorized` for every site.
async fn private_sites(fake: FakeUpstream, lock_wait: std::time::Duration) -> Partner {
    make_sites_private(&fake);
    Partner {
        guard: UpgradeGuardLayer::new(client(&fake)).lock_wait(lock_wait),
        relay: Relay::new(&fake),
        fake,
    }
}

#[tokio::test]
async fn one_private_sites_provision_is_not_another_private_sites() {
    let fake = FakeUpstream::builder()
        .site(FakeSite::new(1001).url("https://one.example.com/"))
        .site(FakeSite::new(1002).url("https://two.example.com/"))
        .start()
        .await
        .unwrap();
    let partner = private_sites(fake, std::time::Duration::from_millis(500)).await;
    for form in [
        "siteurl=1001&plan=jetpack-scan&local_user=a",
        // Another private site, which holds nothing: neither "already provisioned" nor held
        // back until its answers show the other site's Scan.
        "siteurl=1002&plan=jetpack-scan&local_user=b",
        "siteurl=1002&plan=jetpack-anti-spam&local_user=b",
    ] {
        let (status, body) = partner.provision(form).await;
        assert_eq!(status, 200, "{form}: {body}");
    }
}

#[tokio::test]
async fn another_private_sites_answer_does_not_settle_a_provision() {
    let fake = FakeUpstream::builder()
        .site(FakeSite::new(1001).url("https://one.example.com/"))
        .site(
            FakeSite::new(1002)
                .url("https://two.example.com/")
                .holding(["jetpack-backup-realtime"]),
        )
        .grant_delay(GRANT_DELAY)
        .start()
        .await
        .unwrap();
    let partner = private_sites(fake, std::time::Duration::from_secs(20)).await;
    let (status, body) = partner
        .provision("siteurl=one.example.com&plan=jetpack-backup-realtime&local_user=a")
        .await;
    assert_eq!(status, 200, "{body}");
    // Another private site, whose answer does not list Realtime Backups (it holds it);
    // WordPress.com refuses the call itself (no `local_user`).
    let (status, body) = partner.provision("siteurl=1002&plan=professional").await;
    assert_eq!(status, 400, "{body}");
    // Daily Backups under Realtime Backups, on the first site: its own answers must show the
    // provision first, whatever another site's showed.
    let (status, body) = partner
        .provision("siteurl=one.example.com&plan=jetpack-backup-daily&local_user=a")
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (409, "upgrade_not_allowed")
    );
    assert_eq!(partner.fake.stats().leaks, 0);
}

#[tokio::test]
async fn a_provision_forwarded_fail_open_is_remembered_while_it_settles() {
    use upgrade_guard::Mode;
    use upgrade_guard::fake::{Endpoint, Fault};
    let mut partner = granted_late(GRANT_DELAY).await;
    partner.guard = partner.guard.clone().mode(Mode::FailOpen);
    // upgrade-paths fails once: the route forwards unchecked.
    partner
        .fake
        .inject(Endpoint::UpgradePaths, Fault::status(503))
        .once();
    let (status, body) = partner
        .provision("siteurl=1001&plan=professional&local_user=a")
        .await;
    assert_eq!(status, 200, "forwarded fail-open: {body}");
    let seen = partner.relay.seen();
    assert!(
        seen[0].admission.is_none() && seen[0].checked.is_none(),
        "forwarded unchecked: {seen:?}"
    );
    // WordPress.com answers again, not showing Professional yet: Realtime Backups is still a
    // downgrade of it.
    let (status, body) = partner
        .provision("siteurl=1001&plan=jetpack-backup-realtime&local_user=b")
        .await;
    assert_eq!(
        (status, error_of(&body).as_str()),
        (409, "upgrade_not_allowed")
    );
    assert_eq!(partner.fake.stats().leaks, 0);
}
