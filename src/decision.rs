//! The decision: is the product an upgrade for the site?
//!
//! WordPress.com owns the rule; the guard only reads its answer. A product is an upgrade exactly
//! when the site's upgrade paths list it, in any family.

use crate::Site;
use crate::upstream::UpgradePaths;

/// What the guard decided for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision<'a> {
    /// The product is listed: forward the provision.
    Upgrade {
        /// The family that lists it.
        family: &'a str,
    },
    /// The product is not listed: answer 409.
    NotAnUpgrade,
}

impl<'a> Decision<'a> {
    /// Decides for `product` given the site's `paths`.
    pub fn new(paths: &'a UpgradePaths, product: &str) -> Self {
        match paths.family_of(product) {
            Some(family) => Self::Upgrade { family },
            None => Self::NotAnUpgrade,
        }
    }
}

/// What the guard checked, in the extensions of every request it forwards.
///
/// A handler should provision exactly this site and product rather than read the request again:
/// two parsers of one request can disagree, and then the guard would have checked something else
/// than what is provisioned.
///
/// ```
/// use axum::Extension;
/// use upgrade_guard::Checked;
///
/// async fn provision(Extension(checked): Extension<Checked>) -> String {
///     format!("provisioning {} on {}", checked.product(), checked.site())
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub(crate) site: Site,
    pub(crate) product: String,
}

impl Checked {
    /// The site, normalised as it was looked up.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The product, found in the site's upgrade paths.
    pub fn product(&self) -> &str {
        &self.product
    }
}
