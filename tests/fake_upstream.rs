//! The fake upstream over real HTTP, as partners' integration tests use it.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use upgrade_guard::fake::{Endpoint, FakeSite, FakeUpstream, Fault};

const FREE_SITE: &str = concat!(
    r#"{"jetpack-anti-spam":["jetpack-anti-spam"],"#,
    r#""jetpack-backup":["jetpack-backup-daily","jetpack-backup-realtime"],"#,
    r#""jetpack-plans":["personal","premium","professional"],"#,
    r#""jetpack-scan":["jetpack-scan"]}"#
);
const PROVISIONED: &str =
    r#"{"success":true,"auth_required":false,"next_url":"https://wordpress.com/home/1002"}"#;

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Answer {
    async fn from(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.text().await.unwrap();
        Self {
            status,
            content_type,
            body,
        }
    }

    /// The `error` code, checking the error shape on the way.
    fn error(&self) -> String {
        assert_eq!(self.content_type, "application/json", "{}", self.body);
        let value: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        assert!(value["message"].is_string(), "{}", self.body);
        assert!(self.body.contains(r#""error":""#), "{}", self.body);
        value["error"].as_str().unwrap().to_owned()
    }
}

struct Partner {
    fake: FakeUpstream,
    client: reqwest::Client,
}

impl Partner {
    async fn new() -> Self {
        Self::with(FakeUpstream::builder().demo_sites().start().await.unwrap())
    }

    fn with(fake: FakeUpstream) -> Self {
        // Bounded, so that a fake that never answers fails the test instead of hanging it.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self { fake, client }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.fake.url())
    }

    async fn lookup(&self, site: &str) -> Answer {
        let url = self.url(&format!("/rest/v1.3/jpphp/{site}/upgrade-paths"));
        self.send(self.client.get(url).bearer_auth(self.fake.token()))
            .await
    }

    async fn provision(&self, content_type: &str, body: impl Into<reqwest::Body>) -> Answer {
        let request = self
            .client
            .post(self.url("/rest/v1.3/jpphp/provision"))
            .bearer_auth(self.fake.token())
            .header("content-type", content_type)
            .body(body);
        self.send(request).await
    }

    async fn provision_form(&self, form: &str) -> Answer {
        self.provision("application/x-www-form-urlencoded", form.to_owned())
            .await
    }

    async fn token(&self, form: &str) -> Answer {
        let request = self
            .client
            .post(self.url("/oauth2/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
        self.send(request).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        Answer::from(request.send().await.unwrap()).await
    }
}

/// Sends `request` on a fresh connection and returns everything the fake wrote before closing.
async fn raw(fake: &FakeUpstream, request: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(fake.addr()).await.unwrap();
    // The fake may close before reading everything; what it answered is what matters.
    stream.write_all(request.as_bytes()).await.ok();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the fake kept the connection open")
        .ok();
    answer
}

#[tokio::test]
async fn upgrade_paths_follow_the_catalogue() {
    let partner = Partner::new().await;
    let free = partner.lookup("1001").await;
    assert_eq!((free.status, free.body.as_str()), (200, FREE_SITE));
    assert_eq!(free.content_type, "application/json");

    let realtime = partner.lookup("realtime.example.com").await;
    assert_eq!(
        realtime.body,
        r#"{"jetpack-anti-spam":["jetpack-anti-spam"],"jetpack-plans":["professional"],"jetpack-scan":["jetpack-scan"]}"#
    );
    assert_eq!(partner.lookup("1002").await.body, realtime.body);

    let professional = partner.lookup("professional.example.com").await;
    assert_eq!(
        (professional.status, professional.body.as_str()),
        (200, "{}")
    );

    let daily = partner.lookup("example.com::blog").await;
    assert!(
        daily
            .body
            .contains(r#""jetpack-backup":["jetpack-backup-realtime"]"#)
    );
    assert_eq!(partner.fake.stats().lookups, 5);
}

#[tokio::test]
async fn unknown_or_malformed_sites_are_invalid_blog() {
    let partner = Partner::new().await;
    for site in [
        "9999",
        "example.com",
        "0123",
        "example.com%2F..%2Fx",
        "",
        "a..b",
    ] {
        let answer = partner.lookup(site).await;
        assert_eq!(
            (answer.status, answer.error()),
            (403, "invalid_blog".into()),
            "{site}"
        );
    }
    let nested = partner.lookup("example.com/blog").await;
    assert_eq!((nested.status, nested.error()), (404, "not_found".into()));
}

#[tokio::test]
async fn the_partner_endpoints_need_the_bearer_token() {
    let partner = Partner::new().await;
    let paths = partner.url("/rest/v1.3/jpphp/1001/upgrade-paths");
    let provision = partner.url("/rest/v1.3/jpphp/provision");
    let requests = [
        partner.client.get(&paths),
        partner.client.get(&paths).bearer_auth("wrong"),
        partner
            .client
            .get(&paths)
            .basic_auth(partner.fake.token(), None::<&str>),
        partner
            .client
            .post(&provision)
            .body("siteurl=1001&plan=personal&local_user=a"),
        partner.client.post(&provision).bearer_auth("wrong"),
    ];
    for request in requests {
        let answer = partner.send(request).await;
        assert_eq!(
            (answer.status, answer.error()),
            (401, "invalid_token".into())
        );
    }
    assert_eq!(
        partner.fake.held_products("1001").unwrap(),
        Vec::<String>::new()
    );
    let stats = partner.fake.stats();
    assert_eq!(
        (stats.lookups, stats.provisions, stats.provisioned),
        (3, 2, 0)
    );
}

#[tokio::test]
async fn wrong_methods_and_paths() {
    let partner = Partner::new().await;
    let cases = [
        (
            partner
                .client
                .post(partner.url("/rest/v1.3/jpphp/1001/upgrade-paths")),
            405,
            "method_not_allowed",
        ),
        (
            partner
                .client
                .get(partner.url("/rest/v1.3/jpphp/provision")),
            405,
            "method_not_allowed",
        ),
        (
            partner.client.get(partner.url("/oauth2/token")),
            405,
            "method_not_allowed",
        ),
        (partner.client.get(partner.url("/")), 404, "not_found"),
        (
            partner.client.get(partner.url("/rest/v1.3/jpphp/")),
            404,
            "not_found",
        ),
    ];
    for (request, status, code) in cases {
        let answer = partner
            .send(request.bearer_auth(partner.fake.token()))
            .await;
        assert_eq!((answer.status, answer.error()), (status, code.into()));
    }
    assert_eq!(partner.fake.stats().requests, 5);
}

#[tokio::test]
async fn a_provision_supersedes_what_it_contains() {
    let partner = Partner::new().await;
    let answer = partner
        .provision_form("siteurl=1002&plan=professional&local_user=admin&force_register=1")
        .await;
    assert_eq!((answer.status, answer.body.as_str()), (200, PROVISIONED));
    assert_eq!(answer.content_type, "application/json");
    assert_eq!(
        partner
            .fake
            .held_products("https://realtime.example.com")
            .unwrap(),
        ["professional"]
    );
    assert_eq!(partner.lookup("1002").await.body, "{}");

    let scan = partner
        .provision_form("siteurl=free.example.com&plan=jetpack-scan&local_user=admin")
        .await;
    assert_eq!(scan.status, 200);
    let premium = partner
        .provision_form("siteurl=https://free.example.com/&plan=premium&local_user=admin")
        .await;
    assert_eq!(premium.status, 200);
    assert_eq!(partner.fake.held_products("1001").unwrap(), ["premium"]);

    let stats = partner.fake.stats();
    assert_eq!(
        (stats.provisions, stats.provisioned, stats.leaks),
        (3, 3, 0)
    );
}

#[tokio::test]
async fn provision_errors() {
    let partner = Partner::new().await;
    let cases = [
        ("plan=personal&local_user=a", "invalid_siteurl"),
        ("siteurl=&plan=personal&local_user=a", "invalid_siteurl"),
        (
            "siteurl=ftp://x.example&plan=personal&local_user=a",
            "invalid_siteurl",
        ),
        (
            "siteurl=1001&plan=personal-ish&local_user=a",
            "invalid_plan",
        ),
        ("siteurl=1001&plan=personal", "missing_local_user"),
        (
            "siteurl=1001&plan=personal&local_user=",
            "missing_local_user",
        ),
        (
            "siteurl=1003&plan=jetpack-backup-realtime&local_user=a",
            "plan_downgrade_disallowed",
        ),
        (
            "siteurl=1002&plan=premium&local_user=a",
            "plan_downgrade_disallowed",
        ),
        (
            "siteurl=1002&plan=jetpack-backup-realtime&local_user=a",
            "plan_downgrade_disallowed",
        ),
    ];
    for (form, code) in cases {
        let answer = partner.provision_form(form).await;
        assert_eq!(
            (answer.status, answer.error()),
            (400, code.into()),
            "{form}"
        );
    }
    // A blog ID exists only once WordPress.com knows the site.
    let answer = partner
        .provision_form("siteurl=4242&plan=personal&local_user=a")
        .await;
    assert_eq!(
        (answer.status, answer.error()),
        (403, "invalid_blog".into())
    );
    let stats = partner.fake.stats();
    assert_eq!(
        (stats.provisions, stats.provisioned, stats.leaks),
        (10, 0, 3)
    );
    assert_eq!(
        partner.fake.held_products("1002").unwrap(),
        ["jetpack-backup-realtime"]
    );
}

#[tokio::test]
async fn multipart_and_json_provisions() {
    let partner = Partner::new().await;
    let part = |name: &str, value: &str| {
        format!("--XyZ\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
    };
    let body = part("siteurl", "https://realtime.example.com/")
        + &part("plan", "professional")
        + &part("local_user", "admin")
        + "--XyZ--\r\n";
    // What curl sends when partner tooling sets `Content-Type: multipart/form-data;` by hand.
    let answer = partner
        .provision("multipart/form-data;; boundary=XyZ", body)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body.starts_with(r#"{"success":true,"#));
    assert_eq!(
        partner.fake.held_products("1002").unwrap(),
        ["professional"]
    );

    let json = r#"{"siteurl": 1001, "plan": "personal", "local_user": "admin"}"#;
    let answer = partner.provision("application/json", json).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        partner.fake.held_products("free.example.com").unwrap(),
        ["personal"]
    );

    let truncated = partner
        .provision(
            "multipart/form-data; boundary=XyZ",
            part("plan", "personal"),
        )
        .await;
    assert_eq!(
        (truncated.status, truncated.error()),
        (400, "invalid_body".into())
    );
    let not_an_object = partner.provision("application/json", "[1]").await;
    assert_eq!(not_an_object.error(), "invalid_body");
    // Read as WordPress.com's input() reads it: `text/plain` is a form (no plan: a connection),
    // a JSON type spelled in capitals is one WordPress.com would misread, so it is refused.
    let text = partner
        .provision("text/plain", "siteurl=1001&local_user=admin")
        .await;
    assert_eq!(text.status, 200, "{}", text.body);
    let shouted = partner
        .provision("Application/JSON", r#"{"siteurl":"1001"}"#)
        .await;
    assert_eq!(
        (shouted.status, shouted.error()),
        (415, "unsupported_media_type".into())
    );
}

#[tokio::test]
async fn the_last_of_repeated_fields_is_provisioned_as_php_does() {
    let partner = Partner::new().await;
    let answer = partner
        .provision_form("siteurl=1003&plan=jetpack-scan&plan=professional&local_user=a")
        .await;
    assert_eq!(answer.error(), "plan_downgrade_disallowed");
    let answer = partner
        .provision_form("siteurl=1001&plan=professional&plan=jetpack-scan&local_user=a")
        .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        partner.fake.held_products("1001").unwrap(),
        ["jetpack-scan"]
    );
}

#[tokio::test]
async fn bodies_over_a_mebibyte_are_refused() {
    let partner = Partner::new().await;
    let big = "local_user=".to_owned() + &"a".repeat(1024 * 1024);
    let answer = partner.provision_form(&big).await;
    assert_eq!(
        (answer.status, answer.error()),
        (413, "body_too_large".into())
    );

    // Chunked, so only counting the bytes as they stream can catch it.
    let mut request = format!(
        "POST /rest/v1.3/jpphp/provision HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        partner.fake.token()
    );
    let chunk = format!("10000\r\n{}\r\n", "a".repeat(0x10000));
    request.push_str(&chunk.repeat(17));
    request.push_str("0\r\n\r\n");
    let answer = raw(&partner.fake, &request).await;
    assert!(answer.starts_with(b"HTTP/1.1 413 Payload Too Large\r\n"));
    assert!(answer.ends_with(br#""error":"body_too_large","message":"the body is over 1 MiB"}"#));
}

#[tokio::test]
async fn token_endpoint() {
    let fake = FakeUpstream::builder()
        .token("t0k3n")
        .client_credentials("partner-7", "s3cret")
        .start()
        .await
        .unwrap();
    assert_eq!(
        (fake.client_id(), fake.client_secret()),
        ("partner-7", "s3cret")
    );
    let partner = Partner::with(fake);
    let good = "grant_type=client_credentials&client_id=partner-7&client_secret=s3cret&scope=jetpack-partner";
    let answer = partner.token(good).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (
            200,
            r#"{"access_token":"t0k3n","token_type":"bearer","scope":"jetpack-partner"}"#
        )
    );
    let cases = [
        (good.replace("s3cret", "guess"), "invalid_client"),
        (good.replace("partner-7", "partner-8"), "invalid_client"),
        (
            good.replace("client_credentials", "password"),
            "unsupported_grant_type",
        ),
        (good.replace("jetpack-partner", "global"), "invalid_scope"),
        (String::new(), "unsupported_grant_type"),
    ];
    for (form, code) in cases {
        let answer = partner.token(&form).await;
        assert_eq!(
            (answer.status, answer.error()),
            (400, code.into()),
            "{form}"
        );
    }
    assert_eq!(partner.fake.stats().token_requests, 6);
    assert_eq!(partner.fake.stats().lookups, 0);
}

#[tokio::test]
async fn status_faults_apply_to_their_endpoint_for_a_count() {
    let partner = Partner::new().await;
    let fake = &partner.fake;
    fake.inject(Endpoint::UpgradePaths, Fault::status(503))
        .times(2);
    fake.inject(Endpoint::Token, Fault::status(500)).once();

    let provisioned = partner
        .provision_form("siteurl=1001&plan=jetpack-scan&local_user=a")
        .await;
    assert_eq!(provisioned.status, 200);
    for _ in 0..2 {
        let answer = partner.lookup("1001").await;
        assert_eq!(
            (answer.status, answer.error()),
            (503, "service_unavailable".into())
        );
    }
    assert_eq!(partner.lookup("1001").await.status, 200);
    assert_eq!(partner.token("").await.error(), "internal_server_error");
    assert_eq!(partner.token("").await.error(), "unsupported_grant_type");
    assert_eq!(fake.stats().faults, 3);
}

#[tokio::test]
async fn a_status_fault_can_lie_and_carry_headers() {
    let partner = Partner::new().await;
    let fake = &partner.fake;
    fake.inject(
        Endpoint::UpgradePaths,
        Fault::status_with_body(200, "not json"),
    )
    .once();
    let answer = partner.lookup("1001").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "not json"));
    assert_eq!(answer.content_type, "application/json");

    let limited = Fault::status(429)
        .header(http::header::RETRY_AFTER, 7)
        .header(http::header::CONTENT_TYPE, "text/plain");
    fake.inject(Endpoint::Any, limited).always();
    for _ in 0..3 {
        let request = partner.client.get(partner.url("/anything"));
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(response.headers()["content-type"], "text/plain");
    }
    assert_eq!(partner.lookup("1001").await.status, 429);
    fake.clear_faults();
    assert_eq!(partner.lookup("1001").await.body, FREE_SITE);
}

#[tokio::test(start_paused = true)]
async fn a_delay_runs_on_the_tokio_clock() {
    // No client timeout: on a paused clock it would fire before the hour is up.
    let partner = Partner {
        client: reqwest::Client::new(),
        ..Partner::new().await
    };
    let hour = Duration::from_secs(3600);
    partner
        .fake
        .inject(Endpoint::UpgradePaths, Fault::Delay(hour))
        .once();
    let started = tokio::time::Instant::now();
    let answer = partner.lookup("1001").await;
    assert!(started.elapsed() >= hour);
    assert_eq!(answer.body, FREE_SITE);
}

#[tokio::test]
async fn a_dropped_connection_gets_no_answer() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    fake.inject(Endpoint::UpgradePaths, Fault::DropConnection)
        .once();
    let request = format!(
        "GET /rest/v1.3/jpphp/1001/upgrade-paths HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        fake.token()
    );
    assert_eq!(raw(&fake, &request).await, b"");
    let answer = raw(
        &fake,
        &request.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(answer.ends_with(FREE_SITE.as_bytes()));

    let partner = Partner::with(fake);
    partner
        .fake
        .inject(Endpoint::Provision, Fault::DropConnection)
        .once();
    let request = partner
        .client
        .post(partner.url("/rest/v1.3/jpphp/provision"));
    assert!(request.send().await.is_err());
    let stats = partner.fake.stats();
    assert_eq!((stats.faults, stats.provisioned), (2, 0));
}

#[tokio::test]
async fn connections_are_counted_and_kept_alive() {
    let partner = Partner::new().await;
    for _ in 0..3 {
        assert_eq!(partner.lookup("1001").await.status, 200);
    }
    let stats = partner.fake.stats();
    assert_eq!((stats.connections, stats.requests), (1, 3));
    let other = reqwest::Client::new();
    let url = partner.url("/nowhere");
    other.get(&url).send().await.unwrap();
    assert_eq!(partner.fake.stats().connections, 2);
    partner.fake.reset_stats();
    assert_eq!(partner.fake.stats(), Default::default());
}

#[tokio::test]
async fn sites_can_be_added_and_listed() {
    let partner = Partner::new().await;
    let sites = partner.fake.sites();
    assert_eq!(sites.len(), 4);
    assert_eq!(sites[1].blog_id, Some(1002));
    assert_eq!(
        sites[1].url.as_deref(),
        Some("https://realtime.example.com/")
    );
    assert_eq!(sites[1].held, ["jetpack-backup-realtime"]);
    assert_eq!(
        sites[3].site_id.as_ref().map(|s| s.as_str()),
        Some("example.com::blog")
    );

    assert_eq!(partner.fake.held_products("new.example"), None);
    assert_eq!(partner.fake.held_products("not a site"), None);
    partner
        .fake
        .add_site(FakeSite::from_url("new.example/wp").holding(["premium"]));
    assert_eq!(
        partner
            .fake
            .held_products("https://new.example/wp/")
            .unwrap(),
        ["premium"]
    );
    let paths = partner.lookup("new.example::wp").await;
    assert!(paths.body.contains(r#""jetpack-plans":["professional"]"#));
    assert_eq!(partner.fake.sites().len(), 5);
}

#[tokio::test]
async fn shutdown_closes_the_port_and_open_connections() {
    let fake = FakeUpstream::start().await.unwrap();
    let addr = fake.addr();
    assert_eq!(fake.url(), format!("http://{addr}"));
    assert!(addr.ip().is_loopback());
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 404");

    fake.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest))
        .await
        .expect("the connection outlived the fake")
        .ok();
}

#[tokio::test]
async fn a_first_provision_by_url_registers_the_site() {
    let partner = Partner::new().await;
    assert_eq!(partner.lookup("brand-new.example").await.status, 403);
    let answer = partner
        .provision_form("siteurl=https://brand-new.example/&plan=professional&local_user=admin")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // The demo sites are 1001 to 1004: the new site gets the next blog ID.
    assert!(answer.body.contains("/home/1005"), "{}", answer.body);
    assert_eq!(
        partner.fake.held_products("1005").unwrap(),
        ["professional"]
    );
    assert_eq!(partner.lookup("brand-new.example").await.body, "{}");
    let stats = partner.fake.stats();
    assert_eq!(
        (stats.registered, stats.provisioned, stats.leaks),
        (1, 1, 0)
    );

    // Then a downgrade on it is refused as on any site, and counted.
    let answer = partner
        .provision_form("siteurl=brand-new.example&plan=jetpack-scan&local_user=admin")
        .await;
    assert_eq!(
        (answer.status, answer.error()),
        (400, "plan_downgrade_disallowed".into())
    );
    assert_eq!(partner.fake.stats().leaks, 1);
}

#[tokio::test]
async fn no_plan_or_free_connects_and_changes_nothing() {
    let partner = Partner::with(
        FakeUpstream::builder()
            .site(
                FakeSite::new(7)
                    .url("https://broken.example/")
                    .holding(["premium"])
                    .disconnected(),
            )
            .start()
            .await
            .unwrap(),
    );
    async fn status(partner: &Partner) -> Answer {
        let url = partner.url("/rest/v1.4/jpphp/7/status");
        let request = partner.client.get(url).bearer_auth(partner.fake.token());
        partner.send(request).await
    }
    let before = status(&partner).await;
    assert!(
        before.body.contains(r#""is_connected":false"#),
        "{}",
        before.body
    );
    for form in [
        "siteurl=7&local_user=admin&force_connect=1",
        "siteurl=https://broken.example/&plan=&local_user=admin",
        "siteurl=7&plan=free&local_user=admin",
        "siteurl=https://another-new.example/&local_user=admin",
    ] {
        let answer = partner.provision_form(form).await;
        assert_eq!(answer.status, 200, "{form}: {}", answer.body);
    }
    assert_eq!(partner.fake.held_products("7").unwrap(), ["premium"]);
    assert_eq!(
        partner.fake.held_products("another-new.example").unwrap(),
        Vec::<String>::new()
    );
    let after = status(&partner).await;
    assert_eq!(
        after.body,
        concat!(
            r#"{"blog":{"is_connected":true,"has_backups_credentials":false},"#,
            r#""products":[{"slug":"premium","is_provisioned_by_partner":true,"#,
            r#""is_provisioned_by_calling_partner":true,"is_pending":false}]}"#
        )
    );
    let stats = partner.fake.stats();
    assert_eq!(
        (
            stats.connected,
            stats.provisioned,
            stats.registered,
            stats.leaks
        ),
        (4, 0, 1, 0)
    );
    assert_eq!(status(&partner).await.status, 200);
    let unknown = partner.url("/rest/v1.4/jpphp/99/status");
    let answer = partner
        .send(
            partner
                .client
                .get(unknown)
                .bearer_auth(partner.fake.token()),
        )
        .await;
    assert_eq!(
        (answer.status, answer.error()),
        (403, "invalid_blog".into())
    );
    assert_eq!(partner.fake.stats().status_requests, 4);
}

#[tokio::test]
async fn partner_cancel_gives_products_back() {
    let partner = Partner::new().await;
    let cancel = |site: &str, form: &str| {
        let request = partner
            .client
            .post(partner.url(&format!("/rest/v1.3/jpphp/{site}/partner-cancel")))
            .bearer_auth(partner.fake.token())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form.to_owned());
        partner.send(request)
    };
    // Professional.example.com holds Professional and is offered nothing.
    assert_eq!(partner.lookup("1003").await.body, "{}");
    let answer = cancel("professional.example.com", "plan=professional").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, r#"{"success":true}"#)
    );
    assert_eq!(partner.lookup("1003").await.body, FREE_SITE);
    // Nothing left to cancel.
    let answer = cancel("1003", "").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, r#"{"success":false}"#)
    );

    let answer = cancel("1002", "cancel-all=true").await;
    assert_eq!(answer.status, 200);
    assert!(partner.fake.held_products("1002").unwrap().is_empty());

    for (site, form, status, code) in [
        ("1002", "plan=no-such-product", 400, "not_jps_plan"),
        ("1002", "cancel-all=maybe", 400, "invalid_input"),
        (
            "1002",
            "cancel-all=true&plan=personal",
            400,
            "invalid_input",
        ),
        ("4242", "cancel-all=true", 403, "invalid_blog"),
        ("unknown.example", "plan=personal", 403, "invalid_blog"),
    ] {
        let answer = cancel(site, form).await;
        assert_eq!(
            (answer.status, answer.error()),
            (status, code.into()),
            "{form}"
        );
    }
    let stats = partner.fake.stats();
    assert_eq!((stats.cancels, stats.cancelled), (8, 2));
}

#[tokio::test]
async fn nothing_offered_can_be_answered_as_phps_empty_array() {
    let partner = Partner::with(
        FakeUpstream::builder()
            .demo_sites()
            .empty_paths_as_php_array()
            .start()
            .await
            .unwrap(),
    );
    assert_eq!(partner.lookup("1003").await.body, "[]");
    assert_eq!(partner.lookup("1001").await.body, FREE_SITE);
}
