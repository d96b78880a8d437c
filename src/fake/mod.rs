//! A fake WordPress.com partner API for integration tests (feature `test-util`).
//!
//! Use it where a test would otherwise need `https://public-api.wordpress.com`: point the guard's
//! upstream client (or your own provision relay) at [`FakeUpstream::url`] with
//! [`FakeUpstream::token`], seed the sites the test is about, and assert on what the sites hold
//! and on the [counters](FakeStats) afterwards. It listens on `127.0.0.1` only, on a free port, and
//! stops when its handle is dropped.
//!
//! It serves, with WordPress.com's compact JSON and `{"error":"<code>","message":"<text>"}` errors:
//!
//! | endpoint | answers |
//! |---|---|
//! | `GET /rest/v1.3/jpphp/{site}/upgrade-paths` | family -> offered product slugs, by the [`catalogue`] rule (`{}`, or `[]` with [`empty_paths_as_php_array`](FakeUpstreamBuilder::empty_paths_as_php_array), when nothing is offered); 403 `invalid_blog` for an unknown site |
//! | `POST /rest/v1.3/jpphp/provision` | `siteurl`, `plan`, `local_user` as a urlencoded, multipart or JSON form. A site named by URL that the fake does not know is registered (a new blog ID, holding nothing); an unknown blog ID is 403 `invalid_blog`. No `plan`, or `free`, connects the site and changes no product. A product not offered is 400 `plan_downgrade_disallowed`, counted as a [leak](FakeStats::leaks). Bodies are read with the guard's own reading of WordPress.com's `input()`, so a leak is a downgrade the guard let through as it read it; whether the guard reads as WordPress.com does is the differential test against PHP's job (`tests/php_differential.rs`) |
//! | `POST /rest/v1.3/jpphp/{site}/partner-provision` | Jetpack's own `wp jetpack partner_provision`: as `provision`, the site from the path, `plan` in the body, no `local_user` |
//! | `POST /rest/v1.3/jpphp/{site}/partner-cancel` | `plan` (the site's plan when absent) or `cancel-all=true` takes products off the site, so its upgrade paths grow again: `{"success":true}`, or `false` when it held nothing to cancel; 400 `not_jps_plan` for an unknown product, 400 `invalid_input` for a `cancel-all` other than `true` or beside a `plan`, 403 `invalid_blog` for an unknown site |
//! | `GET /rest/v1.4/jpphp/{site}/status` | `{"blog":{"is_connected":..,"has_backups_credentials":false},"products":[{"slug":..,..}]}`; 403 `invalid_blog` for an unknown site |
//! | `POST /oauth2/token` | the token for `grant_type=client_credentials` with the right client credentials and `scope=jetpack-partner` |
//!
//! The partner endpoints answer 401 `invalid_token` without the right bearer token (the partner's,
//! or another caller's added with [`FakeUpstreamBuilder::accept_token`]), bodies over 1 MiB are
//! answered 413, and other paths 404 `not_found`. A site is named by its blog ID or by its URL in
//! any form [`Site::parse`](crate::Site::parse) accepts. A successful provision adds the product to
//! the site and drops the products it supersedes, so the site's upgrade paths change as they do on
//! WordPress.com.
//!
//! To test failure handling, [inject](FakeUpstream::inject) a [`Fault`]: a status (with any body
//! and headers), a delay, a dropped connection, or an answer whose body goes wrong on the wire
//! (stalled, cut short, reset, trickled). [`FakeUpstream::rotate_token`] revokes the token
//! and issues a new one, to test how a client refreshes its credentials.
//!
//! # Example
//!
//! ```
//! use upgrade_guard::fake::{Endpoint, FakeSite, FakeUpstream, Fault};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fake = FakeUpstream::builder()
//!     .site(FakeSite::new(1002).url("https://example.com/blog/").holding(["jetpack-backup-realtime"]))
//!     .start()
//!     .await?;
//!
//! let client = reqwest::Client::new();
//! let paths = client
//!     .get(format!("{}/rest/v1.3/jpphp/example.com::blog/upgrade-paths", fake.url()))
//!     .bearer_auth(fake.token())
//!     .send()
//!     .await?
//!     .text()
//!     .await?;
//! assert_eq!(
//!     paths,
//!     r#"{"jetpack-anti-spam":["jetpack-anti-spam"],"jetpack-plans":["professional"],"jetpack-scan":["jetpack-scan"]}"#
//! );
//!
//! let provisioned = client
//!     .post(format!("{}/rest/v1.3/jpphp/provision", fake.url()))
//!     .bearer_auth(fake.token())
//!     .header("content-type", "application/x-www-form-urlencoded")
//!     .body("siteurl=1002&plan=professional&local_user=admin")
//!     .send()
//!     .await?;
//! assert_eq!(provisioned.status(), 200);
//! assert_eq!(fake.held_products("example.com/blog").unwrap(), ["professional"]);
//!
//! fake.inject(Endpoint::UpgradePaths, Fault::status(503)).once();
//! let unavailable = client
//!     .get(format!("{}/rest/v1.3/jpphp/1002/upgrade-paths", fake.url()))
//!     .bearer_auth(fake.token())
//!     .send()
//!     .await?;
//! assert_eq!(unavailable.status(), 503);
//! assert_eq!(fake.stats().lookups, 2);
//! # Ok(())
//! # }
//! ```

pub mod catalogue;
mod endpoints;
mod faults;
mod faulty_body;
mod reading;
mod server;
mod stats;
mod store;

pub use faults::{Endpoint, Fault, Injection};
pub use reading::read_request;
pub use server::{FakeUpstream, FakeUpstreamBuilder};
pub use stats::FakeStats;
pub use store::{FakeSite, SiteSnapshot};
