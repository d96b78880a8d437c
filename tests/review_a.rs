//! Review A (attacker): the guard's `force=secure` refusal reads the raw query string, while
//! WordPress.com reads the query of `esc_url_raw('http://' . HTTP_HOST . REQUEST_URI)`
//! (`WPCOM_JSON_API::setup_inputs()`), and `esc_url()` removes `%0a`/`%0A`/`%0d`/`%0D` (and
//! characters such as `` ` ``, `{`, `}`, `^`, `\`) from it. So `?force%0A=secure` is no `force`
//! to the guard and `force=secure` to WordPress.com, whose `input()` then reads
//! `get_secure_body($return['secure_key'])` instead of the body the guard checked.
//! PHP oracle: `tests/php/review_a_route.php` (prints the query WordPress.com parses).

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use upgrade_guard::Source;
use upgrade_guard::fake::read_request;

async fn read(uri: &str, body: &'static str) -> Result<(String, Option<String>), String> {
    let request = Request::post(uri)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let (_, named) = read_request(
        Source::field("siteurl"),
        Source::field("plan"),
        64 * 1024,
        request,
    )
    .await;
    named
        .map(|(site, product)| (site.to_string(), product))
        .map_err(|rejection| rejection.to_string())
}

#[tokio::test]
async fn force_secure_spelled_as_wordpress_com_unspells_it_is_refused_too() {
    let body = "siteurl=1001&plan=professional&local_user=admin&secure_key=k";
    // As designed: refused.
    assert!(read("/rest/v1.3/jpphp/provision?force=secure", body).await.is_err());
    // Each of these is `force=secure` in WordPress.com's `$this->api->query`.
    let mut read_anyway = Vec::new();
    for query in [
        "force%0A=secure",
        "force=sec%0aure",
        "for%0Dce=secure",
        "forc%0%0aae=secure",
        "forc{e=secure",
        "force=secur^e",
        "force=sec`ure",
    ] {
        let uri = format!("/rest/v1.3/jpphp/provision?{query}");
        if let Ok(named) = read(&uri, body).await {
            read_anyway.push(format!("{query}: {named:?}"));
        }
    }
    assert!(
        read_anyway.is_empty(),
        "read as a plain provision, though WordPress.com reads `force=secure` and another body: {read_anyway:#?}"
    );
}

/// Conditional (depends on WordPress.com's front passing header names with `_`): CGI-style
/// servers register a header `Content_Type` as `HTTP_CONTENT_TYPE`, the very variable
/// `setup_inputs()` prefers to `CONTENT_TYPE`. `php -S` does (see the report); nginx drops such
/// names unless `underscores_in_headers on`. The guard reads `Content-Type` only.
#[tokio::test]
async fn a_content_type_spelled_with_an_underscore_is_refused() {
    let body = r#"{"siteurl":"1003","plan":"jetpack-backup-realtime","x":"&siteurl=1001&plan=professional&y="}"#;
    let request = Request::post("/rest/v1.3/jpphp/provision")
        .header("content-type", "text/plain")
        .header("content_type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let (_, named) = read_request(
        Source::field("siteurl"),
        Source::field("plan"),
        64 * 1024,
        request,
    )
    .await;
    let named = named.map(|(site, product)| (site.to_string(), product));
    assert!(
        named.is_err(),
        "read as {named:?}; PHP (HTTP_CONTENT_TYPE = application/json) reads 1003 / jetpack-backup-realtime"
    );
}
