//! WordPress.com's side: the upgrade-paths client, the partner's credentials, and what a lookup
//! answers or why it gave no answer.
//!
//! [`UpgradePathsClient`] (in `client.rs`) makes lookups, with their retries (`retry.rs`),
//! deadlines and token refreshes; `status.rs` asks the second endpoint that confirms a site is new,
//! and `names.rs` the public site lookup that tells a blog ID and a URL of one site apart from two
//! sites. [`UpgradePathsClientBuilder`] and its defaults are in `builder.rs`, the credentials
//! ([`TokenSource`]) in `auth.rs`, the reading of answers in `answer.rs`, the answer itself
//! ([`UpgradePaths`]) in `paths.rs`, and the errors in `error.rs`.

mod answer;
mod auth;
mod builder;
mod client;
mod error;
mod names;
mod paths;
mod retry;
mod settings;
mod status;
mod token;

pub use auth::{ClientCredentialsBuilder, TokenError, TokenSource};
pub use builder::UpgradePathsClientBuilder;
pub use client::UpgradePathsClient;
pub use error::{CallerRefusal, LookupError};
pub(crate) use names::SiteLookup;
pub use paths::UpgradePaths;
pub use settings::BuildError;
pub use token::Token;
