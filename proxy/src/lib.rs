//! `upgrade-guard-proxy`: a reverse proxy for WordPress.com's partner API that refuses Jetpack
//! downgrades, for partners whose provisioning code is not Rust.
//!
//! Point the partner tooling at it (`JETPACK_START_API_HOST`) and it:
//!
//! - sends `POST /rest/v1.3/jpphp/provision` through the same [`UpgradeGuardLayer`] a Rust partner
//!   would stack in front of its own handler (site from `siteurl`, product from `plan`), then to the
//!   upstream;
//! - sends Jetpack's own `POST /rest/v1.3/jpphp/{site}/partner-provision` through the guard too
//!   (site from the path, product from `plan`);
//! - holds `POST /rest/v1.3/jpphp/{site}/partner-cancel` per site and drops the site's cached
//!   upgrade paths;
//! - matches those routes in every spelling WordPress.com serves ([`routes::route`]), and
//!   answers `400 ambiguous_path` itself to a path that is not plain and could be read as one of
//!   them by a front that normalises paths;
//! - passes everything else through: method, path, query, headers and bodies streamed both
//!   ways, hop-by-hop headers dropped, `Host` set for the upstream.
//!
//! Metrics, liveness and readiness are served on a separate admin listener; HTTPS is served
//! with rustls, its certificate reloadable. Each request gets an ID and a span on every log
//! line, and each guarded one a line with its decision. The binary's `main` only parses the
//! flags into a [`Config`], installs the logs ([`init_logs`]), calls [`start`], reloads the
//! certificate on SIGHUP ([`Running::reloader`]) and waits for SIGTERM or SIGINT to
//! [`Running::shutdown`].
//!
//! Where things are, for a reader of the source: `routes.rs` (which route a request takes, and
//! the front service), `path_reading.rs` (which paths are plain), `forward.rs` (passing a request
//! to the upstream), `server.rs` (start-up, accept loops, shutdown), `admin.rs` (`/healthz`,
//! `/readyz`, `/metrics`), `metrics.rs`, `telemetry.rs` and `logs.rs` (what an operator sees),
//! `request_id.rs`, `tls.rs` and `config.rs` (the flags). Only what the binary, the tests and
//! the fuzz targets use is public.
//!
//! [`UpgradeGuardLayer`]: upgrade_guard::UpgradeGuardLayer
#![warn(missing_docs, rust_2018_idioms)]
#![deny(unreachable_pub, unsafe_code)]

// What the binary and the tests use is re-exported below; the rest stays inside the crate.
mod admin;
mod config;
mod forward;
mod logs;
mod metrics;
mod path_reading;
mod request_id;
pub mod routes;
mod server;
mod telemetry;
mod tls;

pub use config::{Config, Credentials, Unjudged};
pub use forward::InvalidUpstream;
pub use logs::{LogFormat, init as init_logs};
pub use server::{Reloader, Running, StartError, start};
pub use tls::TlsError;
