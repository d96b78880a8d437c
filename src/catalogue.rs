//! What an upgrade-paths answer can judge: which family a product belongs to, and which families
//! WordPress.com's answers speak about.
//!
//! An answer lists, by family, what may still be provisioned; a family with nothing left is left
//! out (a site with nothing left at all is answered `{}`). So an answer that does not list a
//! product refuses it only when the answer speaks about the product's family: WordPress.com's
//! partner docs name `jetpack-plans` and `jetpack-backup` as the families upgrade-paths answers
//! about "at the time of this writing", while the provision endpoint also takes `jetpack-scan` and
//! `jetpack-anti-spam`, and new products appear over time. A Scan provision checked against an
//! answer that never speaks of Scan is not judged by it, and refusing it would block a product
//! line.
//!
//! The guard knows a product's family from the documented slugs, from every answer it reads (a
//! slug listed under a family belongs to it) and from the partner
//! ([`UpgradeGuardBuilder::product_family`](crate::UpgradeGuardBuilder::product_family)). A family
//! is *covered* when WordPress.com answers about it: the two documented families always, any
//! other once an answer has listed it, or when the partner says so
//! ([`UpgradeGuardBuilder::covered_family`](crate::UpgradeGuardBuilder::covered_family)). A
//! product is judged by an answer when the answer lists it, or when its family is covered; what a
//! route does with the others is its [`UnjudgedProducts`] choice.

use crate::upstream::UpgradePaths;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

/// The families upgrade-paths always answers about (WordPress.com's partner docs).
const ALWAYS_COVERED: [&str; 2] = ["jetpack-plans", "jetpack-backup"];

/// The products WordPress.com's partner docs name, with their families.
const DOCUMENTED: [(&str, &str); 8] = [
    ("free", "jetpack-plans"),
    ("personal", "jetpack-plans"),
    ("premium", "jetpack-plans"),
    ("professional", "jetpack-plans"),
    ("jetpack-backup-daily", "jetpack-backup"),
    ("jetpack-backup-realtime", "jetpack-backup"),
    ("jetpack-scan", "jetpack-scan"),
    ("jetpack-anti-spam", "jetpack-anti-spam"),
];

/// How many products and families are learned from answers at most: an upstream inventing names
/// cannot grow the catalogue without end.
const MAX_LEARNED: usize = 4096;

/// What a route does with a product the site's upgrade-paths answer does not judge: one it does
/// not list, of a family the answers do not cover (see [`UpgradeGuardBuilder::covered_family`]),
/// or of no known family at all. Set per route with
/// [`UpgradeGuardLayer::unjudged_products`](crate::UpgradeGuardLayer::unjudged_products).
///
/// [`UpgradeGuardBuilder::covered_family`]: crate::UpgradeGuardBuilder::covered_family
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnjudgedProducts {
    /// Forward it, its site held as for any provision, marked
    /// [`Admission::Unjudged`](crate::Admission::Unjudged): WordPress.com's own provision
    /// endpoint stays the authority for what upgrade-paths does not answer about (it refuses a
    /// product the site would not gain from). The default: a guard that refused every Scan
    /// provision could not be deployed.
    #[default]
    Forward,
    /// Answer 409 `product_not_judged`: only provisions the answer judges reach the provision
    /// call. The safe setting for a partner who wants every provision checked; declare the
    /// families WordPress.com covers
    /// ([`covered_family`](crate::UpgradeGuardBuilder::covered_family)) so that their products
    /// are judged from the first answer on.
    Refuse,
}

/// How many answers the catalogue remembers having learned everything from.
const LEARNED_ANSWERS: usize = 8;

/// Which family each product belongs to and which families WordPress.com answers about, learned
/// as answers are read. Shared by every route of a guard.
#[derive(Debug)]
pub(crate) struct Catalogue {
    known: RwLock<Known>,
    /// The last answers (by their `AnswerId`) everything was learned from: an allowed provision
    /// learns from its answer, and most sites share one of a handful of answers, so this spares
    /// a lock and a hash per product and family on almost every decision.
    learned: [AtomicU64; LEARNED_ANSWERS],
    next_learned: AtomicUsize,
}

#[derive(Debug, Default)]
struct Known {
    families: HashMap<Box<str>, Box<str>>,
    covered: HashSet<Box<str>>,
}

/// How an answer judges a product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Judgement {
    /// The answer lists the product: an upgrade.
    Listed,
    /// The answer speaks about the product's family and does not list it: not an upgrade.
    Refused,
    /// The answer says nothing about the product.
    NotJudged,
}

impl Catalogue {
    /// The documented products and families, and the partner's own.
    pub(crate) fn new(
        products: impl IntoIterator<Item = (String, String)>,
        covered: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut known = Known::default();
        for (product, family) in DOCUMENTED {
            known.families.insert(product.into(), family.into());
        }
        for (product, family) in products {
            known.families.insert(product.into(), family.into());
        }
        known
            .covered
            .extend(ALWAYS_COVERED.iter().map(|&family| family.into()));
        known
            .covered
            .extend(covered.into_iter().map(String::into_boxed_str));
        Self {
            known: RwLock::new(known),
            learned: Default::default(),
            next_learned: AtomicUsize::new(0),
        }
    }

    /// How `paths` judges `product`.
    pub(crate) fn judge(&self, paths: &UpgradePaths, product: &str) -> Judgement {
        if paths.allows(product) {
            return Judgement::Listed;
        }
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        let covered = known.families.get(product).is_some_and(|family| {
            known.covered.contains(family) || paths.families().any(|(f, _)| f == &**family)
        });
        if covered {
            Judgement::Refused
        } else {
            Judgement::NotJudged
        }
    }

    /// Learns what `paths` tells: each family it lists is covered, each product it lists belongs
    /// to its family. Takes the write lock only when there is something new.
    pub(crate) fn learn(&self, paths: &UpgradePaths) {
        let id = paths.id().get();
        // Acquire: pairs with the release below, so what was learned is seen with its id.
        if let Some(id) = id
            && self
                .learned
                .iter()
                .any(|learned| learned.load(Ordering::Acquire) == id.get())
        {
            return;
        }
        let new = {
            let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
            paths.families().any(|(family, mut products)| {
                !known.covered.contains(family)
                    || products.any(|p| known.families.get(p).is_none_or(|f| **f != *family))
            })
        };
        let complete = !new || self.learn_new(paths);
        if let (true, Some(id)) = (complete, id) {
            let slot = self.next_learned.fetch_add(1, Ordering::Relaxed) % LEARNED_ANSWERS;
            self.learned[slot].store(id.get(), Ordering::Release);
        }
    }

    /// Learns everything `paths` tells, under the write lock; `false` when the catalogue is
    /// full and some of it was left out (then it is tried again with the next decision).
    fn learn_new(&self, paths: &UpgradePaths) -> bool {
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        let mut complete = true;
        for (family, products) in paths.families() {
            if known.covered.len() < MAX_LEARNED || known.covered.contains(family) {
                known.covered.insert(family.into());
            } else {
                complete = false;
            }
            for product in products {
                if known.families.len() < MAX_LEARNED || known.families.contains_key(product) {
                    known.families.insert(product.into(), family.into());
                } else {
                    complete = false;
                }
            }
        }
        complete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(json: &str) -> UpgradePaths {
        UpgradePaths::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn only_what_the_answer_speaks_about_is_refused() {
        let catalogue = Catalogue::new([], []);
        let plans_only = paths(r#"{"jetpack-plans":["professional"]}"#);
        assert_eq!(
            catalogue.judge(&plans_only, "professional"),
            Judgement::Listed
        );
        // The documented families are always covered, listed or not.
        assert_eq!(catalogue.judge(&plans_only, "personal"), Judgement::Refused);
        assert_eq!(
            catalogue.judge(&plans_only, "jetpack-backup-daily"),
            Judgement::Refused
        );
        assert_eq!(catalogue.judge(&paths("[]"), "premium"), Judgement::Refused);
        // Scan and Anti-spam: their families are not covered until an answer speaks of them.
        assert_eq!(
            catalogue.judge(&plans_only, "jetpack-scan"),
            Judgement::NotJudged
        );
        assert_eq!(
            catalogue.judge(&plans_only, "jetpack-anti-spam"),
            Judgement::NotJudged
        );
        // An answer that lists the family judges it, and teaches that it is covered.
        let with_scan =
            paths(r#"{"jetpack-scan":["jetpack-scan"],"jetpack-security":["security-t1"]}"#);
        assert_eq!(
            catalogue.judge(&with_scan, "jetpack-scan"),
            Judgement::Listed
        );
        catalogue.learn(&with_scan);
        assert_eq!(
            catalogue.judge(&plans_only, "jetpack-scan"),
            Judgement::Refused
        );
        // A slug learned from an answer belongs to its family from then on.
        assert_eq!(
            catalogue.judge(&plans_only, "security-t1"),
            Judgement::Refused
        );
        // A slug of no known family is never judged.
        assert_eq!(
            catalogue.judge(&plans_only, "jetpack-boost"),
            Judgement::NotJudged
        );
    }

    #[test]
    fn an_answer_is_learned_from_once_by_each_catalogue() {
        let with_scan = paths(r#"{"jetpack-scan":["jetpack-scan"]}"#);
        let plans_only = paths(r#"{"jetpack-plans":["professional"]}"#);
        let first = Catalogue::new([], []);
        first.learn(&with_scan);
        assert_eq!(first.judge(&plans_only, "jetpack-scan"), Judgement::Refused);
        // A second catalogue (another guard) learns from the same answer all the same.
        let second = Catalogue::new([], []);
        second.learn(&with_scan);
        assert_eq!(
            second.judge(&plans_only, "jetpack-scan"),
            Judgement::Refused
        );
        // A clone is the same answer; a new parse of it, another.
        second.learn(&with_scan.clone());
        assert_eq!(with_scan, paths(r#"{"jetpack-scan":["jetpack-scan"]}"#));

        // A full catalogue leaves the answer unmarked, so it is tried again (and stays bounded).
        let full = Catalogue::new((0..MAX_LEARNED).map(|i| (format!("p{i}"), "f".into())), []);
        let new = paths(r#"{"jetpack-security":["security-t1"]}"#);
        for _ in 0..2 {
            full.learn(&new);
            assert_eq!(full.judge(&plans_only, "security-t1"), Judgement::NotJudged);
        }
        assert!(
            full.learned
                .iter()
                .all(|id| id.load(Ordering::Relaxed) == 0)
        );
        // What it did learn is remembered by id.
        full.learn(&with_scan);
        assert!(
            full.learned
                .iter()
                .any(|id| id.load(Ordering::Relaxed) == with_scan.id().get().unwrap().get())
        );
    }

    #[test]
    fn the_partner_extends_the_catalogue() {
        let catalogue = Catalogue::new(
            [("jetpack-boost".to_owned(), "jetpack-boost".to_owned())],
            ["jetpack-scan".to_owned(), "jetpack-boost".to_owned()],
        );
        let plans_only = paths(r#"{"jetpack-plans":["professional"]}"#);
        assert_eq!(
            catalogue.judge(&plans_only, "jetpack-scan"),
            Judgement::Refused
        );
        assert_eq!(
            catalogue.judge(&plans_only, "jetpack-boost"),
            Judgement::Refused
        );
        assert_eq!(
            catalogue.judge(&plans_only, "jetpack-anti-spam"),
            Judgement::NotJudged
        );
    }
}
