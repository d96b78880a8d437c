//! The decision: is the product an upgrade for the site?
//!
//! WordPress.com owns the rule; the guard only reads its answer. A product is an upgrade exactly
//! when the site's upgrade paths list it, in any family.

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
