//! The upgrade-paths answer: product family -> products that may be provisioned now.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What WordPress.com says may still be provisioned on a site, by product family.
///
/// The set of families is whatever the upstream sends: none is hard-coded. Parsing is strict: the
/// answer must be a JSON object whose values are arrays of strings, or it is an error (never an
/// empty, "nothing allowed" or "everything allowed" list).
///
/// ```
/// use upgrade_guard::UpgradePaths;
///
/// let paths = UpgradePaths::from_json(br#"{"jetpack-plans": ["professional"], "jetpack-scan": []}"#)?;
/// assert!(paths.allows("professional"));
/// assert_eq!(paths.family_of("professional"), Some("jetpack-plans"));
/// assert!(!paths.allows("jetpack-backup-realtime"));
/// assert!(UpgradePaths::from_json(br#"{"jetpack-plans": "professional"}"#).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UpgradePaths {
    families: BTreeMap<String, Vec<String>>,
}

impl UpgradePaths {
    /// Parses an upgrade-paths answer.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// Whether `product` is listed in any family: it may be provisioned now.
    pub fn allows(&self, product: &str) -> bool {
        self.family_of(product).is_some()
    }

    /// The family that lists `product`, if any.
    pub fn family_of(&self, product: &str) -> Option<&str> {
        self.families
            .iter()
            .find(|(_, products)| products.iter().any(|p| p == product))
            .map(|(family, _)| family.as_str())
    }

    /// Each family with the products it offers, ordered by family name.
    pub fn families(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.families
            .iter()
            .map(|(family, products)| (family.as_str(), products.as_slice()))
    }

    /// Whether nothing at all may be provisioned.
    pub fn is_empty(&self) -> bool {
        self.families.values().all(Vec::is_empty)
    }
}

impl<F, P> FromIterator<(F, P)> for UpgradePaths
where
    F: Into<String>,
    P: IntoIterator,
    P::Item: Into<String>,
{
    fn from_iter<I: IntoIterator<Item = (F, P)>>(iter: I) -> Self {
        Self {
            families: iter
                .into_iter()
                .map(|(family, products)| {
                    (
                        family.into(),
                        products.into_iter().map(Into::into).collect(),
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_answer_parses() {
        let paths = UpgradePaths::from_json(
            br#"{"jetpack-backup": ["jetpack-backup-daily", "jetpack-backup-realtime"],
                 "jetpack-plans": ["personal", "premium", "professional"],
                 "jetpack-scan": ["jetpack-scan"],
                 "jetpack-anti-spam": ["jetpack-anti-spam"],
                 "jetpack-something-new": ["jetpack-new"]}"#,
        )
        .unwrap();
        assert!(paths.allows("jetpack-new"));
        assert_eq!(paths.family_of("premium"), Some("jetpack-plans"));
        assert_eq!(paths.families().count(), 5);
        assert!(!paths.is_empty());
    }

    #[test]
    fn anything_but_an_object_of_string_arrays_is_an_error() {
        for bad in [
            &b""[..],
            b"null",
            b"[]",
            b"\"professional\"",
            br#"{"jetpack-plans": null}"#,
            br#"{"jetpack-plans": [1]}"#,
            br#"{"jetpack-plans": ["personal", null]}"#,
            br#"{"jetpack-plans": {"a": "b"}}"#,
            br#"{"jetpack-plans": []} trailing"#,
        ] {
            assert!(
                UpgradePaths::from_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(UpgradePaths::from_json(b"{}").unwrap().is_empty());
    }
}
