//! The middleware: [`UpgradeGuardLayer`], [`UpgradeGuard`] and its [`ResponseFuture`].
//!
//! For each request the guard reads the site and the product, takes the site's lock, asks for the
//! site's upgrade paths (cached, coalesced), and forwards the request only when the product is
//! listed, holding the lock until the inner service has answered. Everything else is answered by
//! the guard itself, as [`Rejection`](crate::Rejection) describes.
//!
//! Around that check, the partner lifecycle (per route, on [`UpgradeGuardLayer`]):
//!
//! - a request naming no product, or `free`, is a **connection request**: forwarded with its site
//!   held, marked [`Admission::Connection`](crate::Admission::Connection)
//!   ([`require_product`](UpgradeGuardLayer::require_product) answers 400 instead);
//! - a site named by URL that WordPress.com does not know yet gets its **first provision**
//!   forwarded, held like any provision ([`UnknownSites`]);
//! - a **cancel** route ([`cancels`](UpgradeGuardLayer::cancels)) is held per site and drops the
//!   site's cached paths, here and in every one of its [peers](crate::Peers).
//!
//! A client that goes away once its request was forwarded leaves the guard to finish the inner
//! service's work alone, the site held until it ends or the route's ceiling passes (see
//! [`Detached`]).
//!
//! Where things are: the pipeline in `check.rs` (read, judge, settle, report, forward, in the
//! contract's order), what it decides in `verdict.rs`, the site held in `hold.rs`, what every
//! route shares in `shared.rs`, every decision told in `report.rs`, the work finished for a
//! client gone in `detached.rs`; the layer and its builder, the service and the future each in a
//! file of their own. No file imports one that imports it back: `builder` (which also holds the
//! layer's constructors) and `service` (which also implements `Layer`) build on `layer`;
//! `layer`, `service` and `future` on `check`; `check` on `verdict`, `hold`, `report`,
//! `detached` and `shared`.

mod builder;
mod check;
mod detached;
mod future;
mod hold;
mod layer;
mod report;
mod service;
mod shared;
mod verdict;

pub use builder::UpgradeGuardBuilder;
pub use detached::Detached;
pub use future::ResponseFuture;
pub use layer::UpgradeGuardLayer;
pub use service::UpgradeGuard;
