//! `UpgradePaths::from_json` on arbitrary bytes: it accepts exactly the JSON objects of string
//! arrays, and PHP's empty array `[]` as "no upgrade paths" (differential against
//! `serde_json::Value`), and what it accepts it answers about consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use upgrade_guard::UpgradePaths;

/// The shape the contract names: an object whose every value is an array of strings, or PHP's
/// empty array (what PHP's `json_encode` makes of an empty associative array).
fn as_paths(value: &Value) -> Option<Vec<(String, Vec<String>)>> {
    if value.as_array().is_some_and(Vec::is_empty) {
        return Some(Vec::new());
    }
    value
        .as_object()?
        .iter()
        .map(|(family, products)| {
            let products = products
                .as_array()?
                .iter()
                .map(|p| p.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()?;
            Some((family.clone(), products))
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let parsed = UpgradePaths::from_json(data);
    let reference = serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|value| as_paths(&value));
    let Ok(paths) = parsed else {
        // Refusing more than the reference is fine only for repeated keys (serde_json's `Value`
        // keeps the last, which may be well formed where an earlier one was not): strictness
        // fails closed.
        if reference.is_some() {
            let text = String::from_utf8_lossy(data);
            assert!(
                has_repeated_key(data),
                "refused a well-formed answer: {text:?}"
            );
        }
        return;
    };
    let reference = reference.unwrap_or_else(|| {
        panic!(
            "accepted what is not an object of string arrays: {:?}",
            String::from_utf8_lossy(data)
        )
    });

    // The same families and products as the reference reads.
    let families: Vec<(String, Vec<String>)> = paths
        .families()
        .map(|(family, products)| (family.to_owned(), products.map(str::to_owned).collect()))
        .collect();
    let mut expected = reference;
    expected.sort();
    assert_eq!(families, expected);

    // Every listed product is allowed, by a family that lists it.
    for (_, products) in paths.families() {
        for product in products {
            let owner = paths
                .family_of(product)
                .expect("a listed product is allowed");
            assert!(paths.allows(product));
            assert!(
                paths
                    .families()
                    .any(|(f, mut ps)| f == owner && ps.any(|p| p == product))
            );
        }
    }
    assert_eq!(
        paths.is_empty(),
        families.iter().all(|(_, ps)| ps.is_empty())
    );

    // What the guard puts in its 409 body parses back to the same paths.
    let json = serde_json::to_vec(&paths).unwrap();
    assert_eq!(UpgradePaths::from_json(&json).unwrap(), paths);
});

/// Whether some object in `data` names one key twice (then `Value` and a map can disagree).
fn has_repeated_key(data: &[u8]) -> bool {
    use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
    use std::collections::HashSet;

    struct Repeats<'a>(&'a std::cell::Cell<bool>);
    impl<'de> serde::de::DeserializeSeed<'de> for Repeats<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Repeats<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut keys = HashSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !keys.insert(key) {
                    self.0.set(true);
                }
                map.next_value_seed(Repeats(self.0))?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while seq.next_element_seed(Repeats(self.0))?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    }
    let found = std::cell::Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(data);
    let _ = serde::de::DeserializeSeed::deserialize(Repeats(&found), &mut de);
    found.get()
}
