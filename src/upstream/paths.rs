//! The upgrade-paths answer: product family -> products that may be provisioned now.

use crate::rejection::push_json_str;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// What WordPress.com says may still be provisioned on a site, by product family.
///
/// The set of families is whatever the upstream sends: none is hard-coded. Parsing is strict: the
/// answer must be a JSON object whose values are arrays of strings, or it is an error (never an
/// empty, "nothing allowed" or "everything allowed" list). The one exception is PHP's empty
/// array: WordPress.com is PHP, and `json_encode(array())` is `[]`, so `[]` is read as `{}`, "no
/// upgrade paths". Any other array (`[[]]`, `["professional"]`) is still an error.
///
/// ```
/// use upgrade_guard::UpgradePaths;
///
/// let paths = UpgradePaths::from_json(br#"{"jetpack-plans": ["professional"], "jetpack-scan": []}"#)?;
/// assert!(paths.allows("professional"));
/// assert_eq!(paths.family_of("professional"), Some("jetpack-plans"));
/// assert!(!paths.allows("jetpack-backup-realtime"));
/// assert!(UpgradePaths::from_json(br#"{"jetpack-plans": "professional"}"#).is_err());
/// assert!(UpgradePaths::from_json(b"[]")?.is_empty());
/// assert!(UpgradePaths::from_json(br#"["professional"]"#).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// Held compactly, since a cache may keep one per site: family and product names are shared
/// between all answers (WordPress.com has a handful of them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpgradePaths {
    /// Sorted by family name; products in the order WordPress.com listed them.
    families: Box<[Family]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Family {
    name: Arc<str>,
    products: Box<[Arc<str>]>,
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
            .find(|family| family.products.iter().any(|p| **p == *product))
            .map(|family| &*family.name)
    }

    /// Each family with the products it offers, ordered by family name: what may be provisioned
    /// on the site now (a dashboard's list, or what to offer in place of a refused product).
    ///
    /// ```
    /// use upgrade_guard::UpgradePaths;
    ///
    /// let paths = UpgradePaths::from_json(br#"{"jetpack-plans":["professional","security"]}"#)?;
    /// let (family, products) = paths.families().next().unwrap();
    /// assert_eq!(family, "jetpack-plans");
    /// assert_eq!(products.collect::<Vec<_>>(), ["professional", "security"]);
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn families(
        &self,
    ) -> impl Iterator<Item = (&str, impl ExactSizeIterator<Item = &str> + Clone)> {
        self.families.iter().map(|family| {
            let products = family.products.iter().map(|product| &**product);
            (&*family.name, products)
        })
    }

    /// Whether nothing at all may be provisioned.
    pub fn is_empty(&self) -> bool {
        self.families
            .iter()
            .all(|family| family.products.is_empty())
    }

    fn from_map<N: AsRef<str>>(map: BTreeMap<N, Vec<N>>) -> Self {
        Self {
            families: map
                .into_iter()
                .map(|(name, products)| Family {
                    name: intern(name.as_ref()),
                    products: products.iter().map(|p| intern(p.as_ref())).collect(),
                })
                .collect(),
        }
    }
}

/// One shared copy of each family and product name. Bounded, so an upstream inventing names
/// cannot grow it without end (names past the bound are simply not shared). Takes the name
/// borrowed: a name already known costs a look-up, no allocation.
fn intern(name: &str) -> Arc<str> {
    const MAX_NAMES: usize = 4096;
    static NAMES: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(shared) = names.get(name) {
        return shared.clone();
    }
    let shared: Arc<str> = name.into();
    if names.len() < MAX_NAMES {
        names.insert(shared.clone());
    }
    shared
}

impl Serialize for UpgradePaths {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.families.len()))?;
        for family in &self.families {
            map.serialize_entry(&*family.name, &Products(&family.products))?;
        }
        map.end()
    }
}

/// A family's products, serialized as an array of strings without collecting them first.
struct Products<'a>(&'a [Arc<str>]);

impl Serialize for Products<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|product| &**product))
    }
}

impl UpgradePaths {
    /// Appends the compact JSON of the paths, byte for byte what `serde_json` writes for them
    /// (their `Serialize`), without its machinery: a refusal writes them into its 409.
    pub(crate) fn write_json(&self, json: &mut Vec<u8>) {
        json.push(b'{');
        for (i, family) in self.families.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            push_json_str(json, &family.name);
            json.extend_from_slice(b":[");
            for (j, product) in family.products.iter().enumerate() {
                if j > 0 {
                    json.push(b',');
                }
                push_json_str(json, product);
            }
            json.push(b']');
        }
        json.push(b'}');
    }
}

impl<'de> Deserialize<'de> for UpgradePaths {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Read in one pass, names borrowed from the answer where it has no escapes: an
        // `#[serde(untagged)]` enum would buffer the whole answer first and copy every name
        // twice, on every upstream lookup.
        deserializer.deserialize_any(AnswerVisitor).map_err(|_| {
            serde::de::Error::custom(
                "expected an object of product families to arrays of product slugs (or [])",
            )
        })
    }
}

/// An object of string arrays, or PHP's empty array (`[]`, "no upgrade paths").
struct AnswerVisitor;

impl<'de> serde::de::Visitor<'de> for AnswerVisitor {
    type Value = UpgradePaths;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of product families to arrays of product slugs (or [])")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // A repeated family keeps its last list, as a map does.
        let mut families = BTreeMap::new();
        while let Some((family, products)) = map.next_entry::<Name<'de>, Vec<Name<'de>>>()? {
            families.insert(family, products);
        }
        Ok(UpgradePaths::from_map(families))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        match seq.next_element::<serde::de::IgnoredAny>()? {
            None => Ok(UpgradePaths::default()),
            Some(_) => Err(serde::de::Error::invalid_length(1, &"PHP's empty array")),
        }
    }
}

/// A family or product name, borrowed from the answer when it can be.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Name<'de>(std::borrow::Cow<'de, str>);

impl AsRef<str> for Name<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> serde::de::Visitor<'de> for NameVisitor {
            type Value = Name<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(Name(name.into()))
            }

            fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
                Ok(Name(name.to_owned().into()))
            }

            fn visit_string<E>(self, name: String) -> Result<Self::Value, E> {
                Ok(Name(name.into()))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

impl<F, P> FromIterator<(F, P)> for UpgradePaths
where
    F: Into<String>,
    P: IntoIterator,
    P::Item: Into<String>,
{
    fn from_iter<I: IntoIterator<Item = (F, P)>>(iter: I) -> Self {
        Self::from_map::<String>(
            iter.into_iter()
                .map(|(family, products)| {
                    (
                        family.into(),
                        products.into_iter().map(Into::into).collect(),
                    )
                })
                .collect(),
        )
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
            b"[[]]",
            b"[{}]",
            br#"["professional"]"#,
            b"[] trailing",
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

    #[test]
    fn phps_empty_array_is_no_upgrade_paths() {
        for empty in [&b"[]"[..], b" [ ] ", b"{}"] {
            let paths = UpgradePaths::from_json(empty).unwrap();
            assert!(paths.is_empty() && !paths.allows("professional"));
            assert_eq!(serde_json::to_string(&paths).unwrap(), "{}");
        }
    }

    #[test]
    fn it_serializes_back_to_the_same_object() {
        let json = r#"{"jetpack-backup":["jetpack-backup-daily","jetpack-backup-realtime"],"jetpack-plans":["professional"]}"#;
        let paths = UpgradePaths::from_json(json.as_bytes()).unwrap();
        assert_eq!(serde_json::to_string(&paths).unwrap(), json);
        let again = UpgradePaths::from_json(json.as_bytes()).unwrap();
        let (a, b) = (
            paths.families().next().unwrap().0,
            again.families().next().unwrap().0,
        );
        assert!(std::ptr::eq(a, b), "names are shared between answers");
    }
}
