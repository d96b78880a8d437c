//! The fake's product catalogue and the rule that decides what a site is offered.
//!
//! The products and features are illustrative (DESIGN.md's table), but the rule is WordPress.com's:
//! a product may be provisioned only when it adds something. Where it overlaps a product the site
//! already holds, it must be a strict superset of it.
//!
//! ```
//! use upgrade_guard::fake::catalogue;
//!
//! let paths = catalogue::offered(["jetpack-backup-realtime"]);
//! assert_eq!(paths["jetpack-plans"], ["professional"]);
//! assert!(!paths.contains_key("jetpack-backup"));
//! assert!(catalogue::offered(["professional"]).is_empty());
//! ```

use std::collections::BTreeMap;

/// One product of the catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Product {
    /// The slug the provision endpoint takes as `plan`, e.g. `jetpack-backup-realtime`.
    pub slug: &'static str,
    /// The family the upgrade-paths answer lists it under, e.g. `jetpack-backup`.
    pub family: &'static str,
    /// What the product gives a site; overlaps between products are decided on these.
    pub features: &'static [&'static str],
}

/// Every product the fake knows, in the order upgrade-paths lists them within a family.
pub const PRODUCTS: &[Product] = &[
    product("jetpack-backup-daily", "jetpack-backup", &["backup-daily"]),
    product(
        "jetpack-backup-realtime",
        "jetpack-backup",
        &["backup-daily", "backup-realtime"],
    ),
    product("jetpack-scan", "jetpack-scan", &["scan"]),
    product("jetpack-anti-spam", "jetpack-anti-spam", &["anti-spam"]),
    product("personal", "jetpack-plans", &["backup-daily", "anti-spam"]),
    product(
        "premium",
        "jetpack-plans",
        &["backup-daily", "anti-spam", "scan", "video"],
    ),
    product(
        "professional",
        "jetpack-plans",
        &[
            "backup-daily",
            "backup-realtime",
            "anti-spam",
            "scan",
            "video",
            "seo",
        ],
    ),
];

const fn product(
    slug: &'static str,
    family: &'static str,
    features: &'static [&'static str],
) -> Product {
    Product {
        slug,
        family,
        features,
    }
}

impl Product {
    /// The catalogue's product with this slug.
    ///
    /// ```
    /// use upgrade_guard::fake::catalogue::Product;
    ///
    /// assert_eq!(Product::find("premium").unwrap().family, "jetpack-plans");
    /// assert!(Product::find("free").is_none());
    /// ```
    pub fn find(slug: &str) -> Option<&'static Product> {
        PRODUCTS.iter().find(|p| p.slug == slug)
    }

    /// Whether this product gives everything `other` gives, and more.
    pub fn supersedes(&self, other: &Product) -> bool {
        self.features.len() > other.features.len()
            && other.features.iter().all(|f| self.features.contains(f))
    }

    /// Whether the two products share a feature.
    pub fn overlaps(&self, other: &Product) -> bool {
        self.features.iter().any(|f| other.features.contains(f))
    }

    /// Whether a site holding `held` may be provisioned this product now: it does not hold it, and
    /// for every held product the two are disjoint or this one supersedes it. Slugs that are not
    /// in the catalogue are ignored.
    pub fn is_offered<I, S>(&self, held: I) -> bool
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        held.into_iter()
            .filter_map(|slug| Product::find(slug.as_ref()))
            .all(|e| e.slug != self.slug && (!self.overlaps(e) || self.supersedes(e)))
    }
}

/// The upgrade-paths answer for a site holding `held`: family -> offered product slugs.
///
/// Only families with at least one offered product appear; products keep catalogue order. A site
/// that can gain nothing gets an empty map (`{}` on the wire).
///
/// ```
/// use upgrade_guard::fake::catalogue;
///
/// let free = catalogue::offered(std::iter::empty::<&str>());
/// assert_eq!(free.len(), 4);
/// assert_eq!(free["jetpack-backup"], ["jetpack-backup-daily", "jetpack-backup-realtime"]);
/// ```
pub fn offered<I, S>(held: I) -> BTreeMap<String, Vec<String>>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let held: Vec<S> = held.into_iter().collect();
    let mut paths: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for product in PRODUCTS.iter().filter(|p| p.is_offered(&held)) {
        paths
            .entry(product.family.to_owned())
            .or_default()
            .push(product.slug.to_owned());
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_site_is_offered_everything() {
        let paths = offered(Vec::<String>::new());
        let json = serde_json::to_string(&paths).unwrap();
        assert_eq!(
            json,
            r#"{"jetpack-anti-spam":["jetpack-anti-spam"],"#.to_owned()
                + r#""jetpack-backup":["jetpack-backup-daily","jetpack-backup-realtime"],"#
                + r#""jetpack-plans":["personal","premium","professional"],"#
                + r#""jetpack-scan":["jetpack-scan"]}"#
        );
        assert_eq!(paths.values().map(Vec::len).sum::<usize>(), 7);
    }

    #[test]
    fn realtime_backups_can_only_grow_into_professional() {
        let paths = offered(["jetpack-backup-realtime"]);
        assert_eq!(paths["jetpack-plans"], ["professional"]);
        assert!(!paths.contains_key("jetpack-backup"));
        assert_eq!(paths["jetpack-scan"], ["jetpack-scan"]);
        assert_eq!(paths["jetpack-anti-spam"], ["jetpack-anti-spam"]);
    }

    #[test]
    fn professional_is_offered_nothing() {
        assert!(offered(["professional"]).is_empty());
        assert_eq!(
            serde_json::to_string(&offered(["professional"])).unwrap(),
            "{}"
        );
    }

    #[test]
    fn daily_backups_upgrade_to_realtime_and_unknown_slugs_are_ignored() {
        let paths = offered(["jetpack-backup-daily", "no-such-product"]);
        assert_eq!(paths["jetpack-backup"], ["jetpack-backup-realtime"]);
        assert_eq!(
            paths["jetpack-plans"],
            ["personal", "premium", "professional"]
        );
    }

    #[test]
    fn supersedes_is_strict() {
        let premium = Product::find("premium").unwrap();
        let personal = Product::find("personal").unwrap();
        assert!(premium.supersedes(personal));
        assert!(!personal.supersedes(premium));
        assert!(!premium.supersedes(premium));
    }
}
