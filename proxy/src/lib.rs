//! `upgrade-guard-proxy`: a reverse proxy for WordPress.com's partner API that refuses Jetpack
//! downgrades, for partners whose provisioning code is not Rust.
//!
//! Point the partner tooling at it (`JETPACK_START_API_HOST`) and it:
//!
//! - sends `POST /rest/v1.3/jpphp/provision` through the same [`UpgradeGuardLayer`] a Rust partner
//!   would stack in front of its own handler (site from `siteurl`, product from `plan`), then to
//!   the upstream;
//! - sends Jetpack's own `POST /rest/v1.3/jpphp/{site}/partner-provision` through
//!   [`routes::partner_provision_layer`] (site from the path, product from `plan`);
//! - sends `POST /rest/v1.3/jpphp/{site}/partner-cancel` through [`routes::cancel_layer`];
//! - matches those routes in every spelling WordPress.com serves ([`routes::route`]), and
//!   answers `400 ambiguous_path` itself to a path that is not plain and could be read as one of
//!   them by a front that normalises paths ([`path_reading`]);
//! - passes everything else through ([`forward`]): method, path, query, headers and bodies streamed
//!   both ways, hop-by-hop headers dropped, `Host` set for the upstream.
//!
//! Metrics ([`metrics`]), liveness and readiness are served on a separate admin listener
//! ([`admin`]); HTTPS is served with rustls, its certificate reloadable ([`tls`]). Each request
//! gets an ID ([`request_id`]) and a span on every log line, and each guarded one a line with
//! its decision ([`telemetry`], [`logs`]). The binary's `main` only parses the flags into a
//! [`Config`], installs the logs, calls [`start`], reloads the certificate on SIGHUP
//! ([`Running::reloader`]) and waits for SIGTERM or SIGINT to [`Running::shutdown`].
//!
//! [`UpgradeGuardLayer`]: upgrade_guard::UpgradeGuardLayer
#![warn(missing_docs, rust_2018_idioms)]
#![deny(unreachable_pub, unsafe_code)]

pub mod admin;
pub mod config;
pub mod forward;
pub mod logs;
pub mod metrics;
pub mod path_reading;
pub mod request_id;
pub mod routes;
pub mod server;
pub mod telemetry;
pub mod tls;

pub use config::{Config, Credentials};
pub use server::{Reloader, Running, StartError, start};
