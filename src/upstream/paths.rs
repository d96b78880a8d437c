//! The upgrade-paths answer: product family -> products that may be provisioned now.

use crate::rejection::push_json_str;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
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
#[derive(Clone, Default)]
pub struct UpgradePaths {
    /// Sorted by family name; products in the order WordPress.com listed them.
    families: Box<[Family]>,
    /// Which parse this is: see [`AnswerId`]. Not part of what the answer says.
    id: AnswerId,
}

/// Tells one parsed answer from every other, so that what is learned from an answer is learned
/// once, not at every decision made on it (see `Catalogue::learn`): most sites share one of a
/// handful of answers (`parse_shared`). Each parse takes a new one, never reused; `0` is "no
/// id" (an answer not parsed, or its clone's default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AnswerId(u64);

impl AnswerId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The id as a number, `None` for "no id".
    pub(crate) fn get(self) -> Option<NonZeroU64> {
        NonZeroU64::new(self.0)
    }
}

// What the answer says, without its id: two parses of one answer are equal.
impl PartialEq for UpgradePaths {
    fn eq(&self, other: &Self) -> bool {
        self.families == other.families
    }
}

impl Eq for UpgradePaths {}

impl std::fmt::Debug for UpgradePaths {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpgradePaths")
            .field("families", &self.families)
            .finish()
    }
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

    /// Which parse this answer is.
    pub(crate) fn id(&self) -> AnswerId {
        self.id
    }

    /// Whether nothing at all may be provisioned.
    pub fn is_empty(&self) -> bool {
        self.families
            .iter()
            .all(|family| family.products.is_empty())
    }

    /// From families sorted by name, each name once, interning every name under one lock.
    fn from_sorted<N: AsRef<str>>(families: impl IntoIterator<Item = (N, Vec<N>)>) -> Self {
        let mut names = Names::lock();
        Self {
            families: families
                .into_iter()
                .map(|(name, products)| Family {
                    name: names.intern(name.as_ref()),
                    products: products.iter().map(|p| names.intern(p.as_ref())).collect(),
                })
                .collect(),
            id: AnswerId::next(),
        }
    }
}

/// The last few answers parsed, by their exact bytes: WordPress.com gives most sites one of a
/// handful of answers (the same plan, the same paths), so an answer already seen is not parsed
/// and interned again, and the sites that got it share one `UpgradePaths`. Identical bytes parse
/// to identical paths: reusing them changes nothing but the cost. Bounded in count and in the
/// size of what it keeps.
pub(crate) fn parse_shared(json: &[u8]) -> Result<Arc<UpgradePaths>, serde_json::Error> {
    const KEPT: usize = 8;
    const MAX_KEPT_BYTES: usize = 1024;
    type Kept = (Box<[u8]>, Arc<UpgradePaths>);
    static ANSWERS: Mutex<(Vec<Kept>, usize)> = Mutex::new((Vec::new(), 0));
    let answers = || ANSWERS.lock().unwrap_or_else(PoisonError::into_inner);
    if json.len() > MAX_KEPT_BYTES {
        return UpgradePaths::from_json(json).map(Arc::new);
    }
    if let Some((_, paths)) = answers().0.iter().find(|(kept, _)| **kept == *json) {
        return Ok(paths.clone());
    }
    let paths = Arc::new(UpgradePaths::from_json(json)?);
    let (kept, next) = &mut *answers();
    let answer = (Box::from(json), paths.clone());
    if kept.len() < KEPT {
        kept.push(answer);
    } else {
        // The oldest goes: a round robin over the slots.
        kept[*next] = answer;
        *next = (*next + 1) % KEPT;
    }
    Ok(paths)
}

/// One shared copy of each family and product name. Bounded, so an upstream inventing names
/// cannot grow it without end (names past the bound are simply not shared). Takes the name
/// borrowed: a name already known costs a look-up, no allocation. Locked once per answer, not
/// once per name.
struct Names(std::sync::MutexGuard<'static, HashSet<Arc<str>>>);

impl Names {
    const MAX_NAMES: usize = 4096;

    fn lock() -> Self {
        static NAMES: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
        Self(
            NAMES
                .get_or_init(Mutex::default)
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return shared.clone();
        }
        let shared: Arc<str> = name.into();
        if self.0.len() < Self::MAX_NAMES {
            self.0.insert(shared.clone());
        }
        shared
    }
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
        // A vector sorted once rather than a `BTreeMap` built node by node: an answer has a
        // handful of families.
        let mut families = Vec::with_capacity(map.size_hint().unwrap_or(0).min(16));
        while let Some(entry) = map.next_entry::<Name<'de>, Vec<Name<'de>>>()? {
            families.push(entry);
        }
        // A repeated family keeps its last list, as a map does: reversed, the last comes first
        // among equals (the sort is stable), and `dedup` keeps the first.
        families.reverse();
        families.sort_by(|a, b| a.0.cmp(&b.0));
        families.dedup_by(|later, first| later.0 == first.0);
        Ok(UpgradePaths::from_sorted(families))
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
        Self::from_sorted::<String>(
            iter.into_iter()
                .map(|(family, products)| {
                    (
                        family.into(),
                        products.into_iter().map(Into::into).collect(),
                    )
                })
                .collect::<BTreeMap<_, _>>(),
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
    fn a_repeated_family_keeps_its_last_list_and_families_are_sorted() {
        let paths = UpgradePaths::from_json(
            br#"{"b": ["b1"], "a": ["a1"], "b": ["b2"], "c": [], "a": ["a2", "a3"], "b": ["b3"]}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&paths).unwrap(),
            r#"{"a":["a2","a3"],"b":["b3"],"c":[]}"#
        );
        assert!(!paths.allows("b1") && !paths.allows("a1") && paths.allows("b3"));
    }

    #[test]
    fn an_answer_seen_again_is_shared_and_a_different_one_is_not() {
        let json = br#"{"jetpack-plans":["paths-memo-test"],"jetpack-scan":["jetpack-scan"]}"#;
        let first = parse_shared(json).unwrap();
        let again = parse_shared(json).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(*first, UpgradePaths::from_json(json).unwrap());
        // One byte apart: parsed on its own.
        let other = br#"{"jetpack-plans":["paths-memo-tesT"],"jetpack-scan":["jetpack-scan"]}"#;
        let other = parse_shared(other).unwrap();
        assert!(other.allows("paths-memo-tesT") && !other.allows("paths-memo-test"));
        assert!(first.allows("paths-memo-test") && !first.allows("paths-memo-tesT"));
        // Errors are errors every time, and never kept.
        for _ in 0..2 {
            assert!(parse_shared(br#"{"jetpack-plans":"paths-memo-test"}"#).is_err());
        }
        // Past its bound, older answers make room; each answer still parses to itself.
        for i in 0..20 {
            let json = format!(r#"{{"jetpack-plans":["memo-{i}"]}}"#);
            assert!(
                parse_shared(json.as_bytes())
                    .unwrap()
                    .allows(&format!("memo-{i}"))
            );
        }
        assert_eq!(*parse_shared(json).unwrap(), *first);
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
