//! Issue 21's ways past the guard, through the proxy in front of the fake WordPress.com (plain
//! HTTP, raw requests where a client library would not send them): a `Connection` header naming
//! the Content-Type, one site named by URL and by blog ID at once, a cancel without credentials
//! whose body never ends, a malformed chunk; and review A's path spellings WordPress.com serves
//! as a guarded endpoint once `esc_url_raw()` has read them. The spellings a normalising front
//! reads as one are in `proxy.rs`.

mod common;

use common::{multipart, send_raw};
use http::Method;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use upgrade_guard::fake::{Endpoint, FakeUpstream, Fault};
use upgrade_guard_proxy::routes::{Route, route};

async fn plain_proxy(upstream: &str, extra: &[&str]) -> upgrade_guard_proxy::Running {
    upgrade_guard_proxy::start(common::config(upstream, extra))
        .await
        .expect("the proxy starts")
}

#[tokio::test]
async fn a_connection_header_cannot_make_the_proxy_drop_the_content_type_the_guard_read() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let proxy = plain_proxy(fake.url(), &["--token", &fake.token()]).await;
    let bearer = format!("Bearer {}", fake.token());
    // Professional on the site holding Realtime Backups is an upgrade; hidden in a field's
    // value, Realtime Backups on the Professional site, which WordPress.com would read from
    // these bytes once the Content-Type is gone.
    let (content_type, body) = multipart(&[
        ("siteurl", "https://realtime.example.com/"),
        ("plan", "professional"),
        (
            "local_user",
            "x&siteurl=https://professional.example.com/&plan=jetpack-backup-realtime&z=",
        ),
    ]);
    let (status, answer) = send_raw(
        proxy.addr(),
        "POST",
        "/rest/v1.3/jpphp/provision",
        &[
            ("authorization", &bearer),
            ("content-type", &content_type),
            ("connection", "Content-Type"),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.starts_with(r#"{"error":"invalid_connection_header","#),
        "{answer}"
    );
    let stats = fake.stats();
    assert_eq!((stats.provisions, stats.leaks), (0, 0));

    // Without it, the same form is the upgrade it says it is.
    let (status, answer) = send_raw(
        proxy.addr(),
        "POST",
        "/rest/v1.3/jpphp/provision",
        &[("authorization", &bearer), ("content-type", &content_type)],
        &body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let stats = fake.stats();
    assert_eq!((stats.provisioned, stats.leaks), (1, 0));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_site_named_by_url_and_by_blog_id_is_one_lock_through_the_proxy() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let proxy = plain_proxy(fake.url(), &["--token", &fake.token()]).await;
    let bearer = format!("Bearer {}", fake.token());
    // The first provision takes a while to land at WordPress.com.
    fake.inject(
        Endpoint::Provision,
        Fault::Delay(Duration::from_millis(800)),
    )
    .times(1);
    let (content_type, professional) = multipart(&[
        ("siteurl", "https://free.example.com/"),
        ("local_user", "admin"),
        ("plan", "professional"),
    ]);
    let first = tokio::spawn({
        let (bearer, content_type, addr) = (bearer.clone(), content_type.clone(), proxy.addr());
        async move {
            send_raw(
                addr,
                "POST",
                "/rest/v1.3/jpphp/provision",
                &[("authorization", &bearer), ("content-type", &content_type)],
                &professional,
            )
            .await
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.stats().provisions == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the first is sent");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // While it is in flight, Realtime Backups on the same site by its blog ID: it waits for
    // the first, and is then a downgrade.
    let (content_type, realtime) = multipart(&[
        ("siteurl", "1001"),
        ("local_user", "admin"),
        ("plan", "jetpack-backup-realtime"),
    ]);
    let (status, answer) = send_raw(
        proxy.addr(),
        "POST",
        "/rest/v1.3/jpphp/provision",
        &[("authorization", &bearer), ("content-type", &content_type)],
        &realtime,
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    let (status, answer) = first.await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let stats = fake.stats();
    assert_eq!((stats.provisioned, stats.leaks), (1, 0));
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_cancel_whose_body_never_ends_holds_no_site() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    // No --token: the callers' own tokens; a 1 s lock wait, so a held site would be 503 soon.
    let proxy = plain_proxy(fake.url(), &["--lock-wait", "1", "--body-timeout", "1"]).await;
    let bearer = format!("Bearer {}", fake.token());

    // A partner-cancel without Authorization, promising a body it never finishes.
    let mut slow = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    slow.write_all(
        b"POST /rest/v1.3/jpphp/1001/partner-cancel HTTP/1.1\r\nhost: x\r\n\
          content-type: application/x-www-form-urlencoded\r\ncontent-length: 100\r\n\r\ncancel-all=",
    )
    .await
    .unwrap();

    // Meanwhile a provision of the same site is checked at once.
    let (content_type, scan) = multipart(&[
        ("siteurl", "1001"),
        ("local_user", "admin"),
        ("plan", "jetpack-scan"),
    ]);
    let (status, answer) = send_raw(
        proxy.addr(),
        "POST",
        "/rest/v1.3/jpphp/provision",
        &[("authorization", &bearer), ("content-type", &content_type)],
        &scan,
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // The slow one is answered 408 once its time is up; nothing was held or asked for it.
    let mut answer = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut slow, &mut answer),
    )
    .await
    .expect("answered")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#"{"error":"body_timeout","#), "{answer}");
    assert_eq!(fake.stats().cancels, 0);

    // A whole cancel without a token is refused before anything is held or looked up.
    let lookups = fake.stats();
    let (status, answer) = send_raw(
        proxy.addr(),
        "POST",
        "/rest/v1.3/jpphp/1001/partner-cancel",
        &[("content-type", "application/x-www-form-urlencoded")],
        b"cancel-all=true",
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer.starts_with(r#"{"error":"missing_token","#),
        "{answer}"
    );
    let after = fake.stats();
    assert_eq!(
        (after.site_lookups, after.cancels),
        (lookups.site_lookups, 0)
    );
    proxy.shutdown().await;
}

/// A chunked request whose chunk size overflows: the caller's error.
async fn overflowing_chunk(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
                 content-type: application/x-www-form-urlencoded\r\n\
                 transfer-encoding: chunked\r\n\r\n4\r\nplan\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
    )
    .await
    .expect("answered")
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_malformed_chunk_is_the_callers_error() {
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let proxy = plain_proxy(fake.url(), &["--token", &fake.token()]).await;
    // Guarded: the guard reads the body, and cannot.
    let answer = overflowing_chunk(proxy.addr(), "/rest/v1.3/jpphp/provision").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains(r#"{"error":"invalid_body","#), "{answer}");
    // Passed through: the proxy streams it upstream until it breaks.
    let answer = overflowing_chunk(proxy.addr(), "/rest/v1.3/jpphp/partner-keys/verify").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains(r#"{"error":"invalid_request_body","#),
        "{answer}"
    );
    assert_eq!(fake.stats().provisions, 0);
    proxy.shutdown().await;
}

/// Paths WordPress.com serves as a guarded endpoint, with its reading of each.
/// `WPCOM_JSON_API::setup_inputs()` routes on `esc_url_raw('http://' . HTTP_HOST . REQUEST_URI)`,
/// not on the target as sent, and hyper takes `"`, `{`, `}` and `^` in a path.
const ESC_URL_SPELLINGS: [(&str, &str); 11] = [
    (
        "/rest/v1.3/jpphp/pro\\0vision",
        "/rest/v1.3/jpphp/provision",
    ),
    (
        "/rest/v1.3/jpphp/1002/partner-\\0cancel",
        "/rest/v1.3/jpphp/1002/partner-cancel",
    ),
    ("/rest/v1.3/jpphp/provi\"sion", "/rest/v1.3/jpphp/provision"),
    ("/rest/v1.3/jpphp/provi{sion", "/rest/v1.3/jpphp/provision"),
    ("/rest/v1.3/jpphp/provi}sion", "/rest/v1.3/jpphp/provision"),
    ("/rest/v1.3/jpphp/provi^sion", "/rest/v1.3/jpphp/provision"),
    (
        "/re\"st/v1.3/jp^php/provision",
        "/rest/v1.3/jpphp/provision",
    ),
    (
        "/rest/v1.3/jpphp/provi%0%0aasion",
        "/rest/v1.3/jpphp/provision",
    ),
    (
        "/rest/v1.3/jpphp/provi%0%0D%0Aasion",
        "/rest/v1.3/jpphp/provision",
    ),
    (
        "/rest/v1.3/jpphp/1003/partner-provi{}sion",
        "/rest/v1.3/jpphp/1003/partner-provision",
    ),
    (
        "/rest/v1.3/jpphp/1003/partner-can\"cel",
        "/rest/v1.3/jpphp/1003/partner-cancel",
    ),
];

/// WordPress.com's reading of a request target, as far as it changes one: unslashed first
/// (`wp_unslash()`, PHP's `stripslashes()`: `\0` is a NUL, `\x` is `x`), then WordPress
/// core's `esc_url_raw()`: every ASCII character outside its set removed, then `%0a`, `%0A`,
/// `%0d` and `%0D` removed until none is left (`_deep_replace()`). `tests/php/route.php` is the
/// PHP itself, to run by hand: `php -n -S 127.0.0.1:PORT tests/php/route.php`.
fn esc_url_raw(target: &str) -> String {
    let mut unslashed = String::new();
    let mut chars = target.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            unslashed.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => unslashed.push('\0'),
            Some(next) => unslashed.push(next),
            None => {}
        }
    }
    let mut read: String = unslashed
        .chars()
        .filter(|&c| {
            !c.is_ascii() || c.is_ascii_alphanumeric() || "-~+_.?#=!&;,/:%@$|*'()[]".contains(c)
        })
        .collect();
    loop {
        let shorter = ["%0a", "%0A", "%0d", "%0D"]
            .iter()
            .fold(read.clone(), |text, strip| text.replace(strip, ""));
        if shorter == read {
            return read;
        }
        read = shorter;
    }
}

#[test]
fn a_spelling_wordpress_com_reads_as_a_guarded_route_is_refused() {
    for (sent, read) in ESC_URL_SPELLINGS {
        // The spelling is worth its place: WordPress.com reads it as a guarded route.
        assert_eq!(esc_url_raw(sent), read, "{sent}");
        assert!(route(&Method::POST, read).is_guarded(), "{read}");
        assert_eq!(route(&Method::POST, sent), Route::AmbiguousPath, "{sent}");
    }
}

#[tokio::test]
async fn no_spelling_wordpress_com_reads_as_a_guarded_route_passes_unchecked() {
    // proxy -> WordPress.com's reading of the target -> the fake WordPress.com.
    let fake = FakeUpstream::builder().demo_sites().start().await.unwrap();
    let front = common::rewriting_front(fake.url(), esc_url_raw).await;
    let proxy = plain_proxy(&format!("http://{front}"), &["--token", &fake.token()]).await;
    let bearer = format!("Bearer {}", fake.token());
    // Realtime Backups on the site holding Professional: a downgrade.
    let (content_type, form) = multipart(&[
        ("siteurl", "https://professional.example.com/"),
        ("local_user", "admin"),
        ("plan", "jetpack-backup-realtime"),
    ]);
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", &content_type),
    ];
    let send = |addr, path| send_raw(addr, "POST", path, &headers, &form);
    // Spelled plainly, the guard refuses it.
    let (status, answer) = send(proxy.addr(), "/rest/v1.3/jpphp/provision").await;
    assert_eq!(status, 409, "{answer}");
    let before = fake.stats();
    for (path, _) in ESC_URL_SPELLINGS {
        let (status, answer) = send(proxy.addr(), path).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(
            answer.starts_with(r#"{"error":"ambiguous_path","#),
            "{path}: {answer}"
        );
    }
    // The proxy answered all of them itself: WordPress.com saw none.
    assert_eq!(fake.stats().requests, before.requests);
    // Sent to WordPress.com directly, the first spelling is the downgrade provisioned.
    let (status, answer) = send(front, ESC_URL_SPELLINGS[0].0).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("plan_downgrade_disallowed"), "{answer}");
    assert_eq!(fake.stats().leaks, 1);
    proxy.shutdown().await;
}
