//! The model test: random operations against the store and against a plain
//! map; they must agree after every step.
//!
//! Operations: upserts, deletes by key and by filter, queries with random
//! filters, orders and top_n, count-only, compactions, checkpoints, clean
//! restarts (checkpoint, drop, reopen from the simulated disk) and power
//! cuts (reopen from a crash image: the store must come back exactly at its
//! last checkpoint, which the model remembers).

use std::collections::BTreeMap;

use proptest::prelude::*;
use statecast_filter::{Filter, Limits};
use statecast_journal::sim::{SimRng, SimStorage};
use statecast_sow::{Durability, OrderBy, Plan, Query, Recovery, SowKey, SowStore, TopicSpec};

use crate::support::{Rec, key, open, payload, spec};

#[derive(Debug, Clone)]
enum Pred {
    PriceGt(i64),
    Region(u8),
    RegionInAndPriceLt(u8, u8, i64),
    BetweenOrRegion(i64, i64, u8),
    TagIs(i64),
    PriceBetween(i64, i64),
    PriceLeAndRegion(i64, u8),
    RegionGe(u8),
    PriceIn(i64, i64),
    All,
}

impl Pred {
    fn text(&self) -> String {
        match self {
            Pred::PriceGt(p) => format!("/price > {p}"),
            Pred::Region(r) => format!("/region = 'r{r}'"),
            Pred::RegionInAndPriceLt(a, b, p) => {
                format!("/region IN ('r{a}', 'r{b}') AND /price < {p}")
            }
            Pred::BetweenOrRegion(lo, hi, r) => {
                format!("/price BETWEEN {lo} AND {hi} OR /region = 'r{r}'")
            }
            Pred::TagIs(t) => format!("/tags = 't{t}'"),
            Pred::PriceBetween(lo, hi) => format!("/price BETWEEN {lo} AND {hi}"),
            Pred::PriceLeAndRegion(p, r) => format!("{p} >= /price AND /region = 'r{r}'"),
            Pred::RegionGe(r) => format!("/region >= 'r{r}'"),
            Pred::PriceIn(a, b) => format!("/price IN ({a}, '{b}')"),
            Pred::All => "1=1".to_string(),
        }
    }

    fn eval(&self, r: &Rec) -> bool {
        match *self {
            Pred::PriceGt(p) => r.price > p,
            Pred::Region(x) => r.region == x,
            Pred::RegionInAndPriceLt(a, b, p) => (r.region == a || r.region == b) && r.price < p,
            Pred::BetweenOrRegion(lo, hi, x) => (lo <= r.price && r.price <= hi) || r.region == x,
            Pred::TagIs(t) => r.price % 3 == t,
            Pred::PriceBetween(lo, hi) => lo <= r.price && r.price <= hi,
            Pred::PriceLeAndRegion(p, x) => r.price <= p && r.region == x,
            Pred::RegionGe(x) => r.region >= x,
            Pred::PriceIn(a, b) => r.price == a || r.price == b,
            Pred::All => true,
        }
    }

    /// Whether an index must narrow the scan (hash or range).
    fn indexed(&self) -> bool {
        !matches!(self, Pred::BetweenOrRegion(..) | Pred::TagIs(_) | Pred::All)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Upsert {
        id: u64,
        price: i64,
        region: u8,
        pad: usize,
    },
    Delete {
        id: u64,
    },
    DeleteWhere(Pred),
    Query {
        pred: Option<Pred>,
        order: Option<bool>,
        top_n: Option<usize>,
    },
    Count(Pred),
    Compact,
    Checkpoint,
    Restart,
    PowerCut(u64),
}

fn pred() -> impl Strategy<Value = Pred> {
    prop_oneof![
        (0i64..100).prop_map(Pred::PriceGt),
        (0u8..4).prop_map(Pred::Region),
        (0u8..4, 0u8..4, 0i64..100).prop_map(|(a, b, p)| Pred::RegionInAndPriceLt(a, b, p)),
        (0i64..100, 0i64..100, 0u8..4).prop_map(|(a, b, r)| Pred::BetweenOrRegion(a, b, r)),
        (0i64..3).prop_map(Pred::TagIs),
        (0i64..100, 0i64..100).prop_map(|(a, b)| Pred::PriceBetween(a, b)),
        (0i64..100, 0u8..4).prop_map(|(p, r)| Pred::PriceLeAndRegion(p, r)),
        (0u8..4).prop_map(Pred::RegionGe),
        (0i64..100, 0i64..100).prop_map(|(a, b)| Pred::PriceIn(a, b)),
        Just(Pred::All),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        30 => (0u64..40, 0i64..100, 0u8..4, prop_oneof![0usize..50, 200usize..2000])
            .prop_map(|(id, price, region, pad)| Op::Upsert { id, price, region, pad }),
        6 => (0u64..40).prop_map(|id| Op::Delete { id }),
        1 => pred().prop_map(Op::DeleteWhere),
        6 => (proptest::option::of(pred()), proptest::option::of(any::<bool>()), proptest::option::of(1usize..10))
            .prop_map(|(pred, order, top_n)| Op::Query { pred, order, top_n }),
        2 => pred().prop_map(Op::Count),
        2 => Just(Op::Compact),
        3 => Just(Op::Checkpoint),
        1 => Just(Op::Restart),
        1 => any::<u64>().prop_map(Op::PowerCut),
    ]
}

struct Harness {
    spec: TopicSpec,
    disk: SimStorage,
    store: Option<SowStore>,
    durable: bool,
    model: BTreeMap<u64, Rec>,
    checkpointed: BTreeMap<u64, Rec>,
    checkpoint_bookmark: u64,
    bookmark: u64,
}

impl Harness {
    fn store(&mut self) -> &mut SowStore {
        self.store.as_mut().expect("open store")
    }

    fn reopen(&mut self, disk: SimStorage) -> Recovery {
        self.disk = disk;
        let (store, recovery) = open(&self.spec, &self.disk);
        self.store = Some(store);
        recovery
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Upsert {
                id,
                price,
                region,
                pad,
            } => {
                self.bookmark += 1;
                let rec = Rec {
                    price: *price,
                    region: *region,
                    pad: *pad,
                    bookmark: self.bookmark,
                };
                let bookmark = self.bookmark;
                let up = self
                    .store()
                    .upsert(&payload(*id, &rec), bookmark, 7)
                    .map_err(fail)?;
                prop_assert_eq!(up.key, key(*id));
                prop_assert_eq!(up.replaced, self.model.contains_key(id));
                self.model.insert(*id, rec);
            }
            Op::Delete { id } => {
                self.bookmark += 1;
                let bookmark = self.bookmark;
                let gone = self
                    .store()
                    .delete_key(key(*id), bookmark, 7)
                    .map_err(fail)?;
                prop_assert_eq!(gone, self.model.remove(id).is_some());
            }
            Op::DeleteWhere(pred) => {
                self.bookmark += 1;
                let bookmark = self.bookmark;
                let filter = parse(&pred.text());
                let n = self
                    .store()
                    .delete_where(&filter, bookmark, 7)
                    .map_err(fail)?;
                let before = self.model.len();
                self.model.retain(|_, r| !pred.eval(r));
                prop_assert_eq!(n, before - self.model.len());
            }
            Op::Query { pred, order, top_n } => self.check_query(pred.as_ref(), *order, *top_n)?,
            Op::Count(pred) => {
                let n = self
                    .store()
                    .count(&Query::filter(parse(&pred.text())))
                    .map_err(fail)?;
                prop_assert_eq!(n, self.model.values().filter(|r| pred.eval(r)).count());
            }
            Op::Compact => {
                self.store().compact().map_err(fail)?;
                if self.durable {
                    self.mark_checkpoint();
                }
            }
            Op::Checkpoint => {
                let covered = self.store().checkpoint().map_err(fail)?;
                prop_assert_eq!(covered, self.bookmark);
                self.mark_checkpoint();
            }
            Op::Restart => {
                if !self.durable {
                    return Ok(());
                }
                let store = self.store.take().expect("store");
                let covered = store.close().map_err(fail)?;
                prop_assert_eq!(covered, self.bookmark);
                self.mark_checkpoint();
                let disk = self.disk.clone();
                let recovery = self.reopen(disk);
                prop_assert_eq!(recovery.replay_after(), self.bookmark);
            }
            Op::PowerCut(seed) => {
                if !self.durable {
                    return Ok(());
                }
                let image = self.disk.crash_image(&mut SimRng::new(*seed));
                self.store = None;
                let recovery = self.reopen(image);
                let Recovery::Resumed(report) = &recovery else {
                    return Err(TestCaseError::fail(format!("power cut gave {recovery:?}")));
                };
                prop_assert_eq!(report.checkpoint, self.checkpoint_bookmark);
                // Back exactly at the checkpoint; the broker would replay the
                // journal after it. The model does the same by forgetting.
                self.model = self.checkpointed.clone();
                self.bookmark = self.checkpoint_bookmark;
            }
        }
        self.check_contents()
    }

    fn mark_checkpoint(&mut self) {
        self.checkpointed = self.model.clone();
        self.checkpoint_bookmark = self.bookmark;
    }

    fn check_contents(&mut self) -> Result<(), TestCaseError> {
        let model = self.model.clone();
        let store = self.store();
        prop_assert_eq!(store.len(), model.len());
        let records = store
            .query(&Query::all())
            .map_err(fail)?
            .collect_all()
            .map_err(fail)?;
        let mut got: BTreeMap<SowKey, (Vec<u8>, u64)> = BTreeMap::new();
        for r in records {
            got.insert(r.key, (r.payload, r.bookmark));
        }
        let want: BTreeMap<SowKey, (Vec<u8>, u64)> = model
            .iter()
            .map(|(id, r)| (key(*id), (payload(*id, r), r.bookmark)))
            .collect();
        prop_assert!(got == want, "store and model differ");
        Ok(())
    }

    fn check_query(
        &mut self,
        pred: Option<&Pred>,
        order: Option<bool>,
        top_n: Option<usize>,
    ) -> Result<(), TestCaseError> {
        let mut query = Query::all();
        if let Some(p) = pred {
            query.filter = Some(parse(&p.text()));
        }
        if let Some(desc) = order {
            query.order_by =
                OrderBy::parse_list(if desc { "/price DESC" } else { "/price" }).map_err(fail)?;
        }
        query.top_n = top_n;
        query.batch_size = 3;
        let mut matching: Vec<(i64, SowKey, u64)> = self
            .model
            .iter()
            .filter(|(_, r)| pred.is_none_or(|p| p.eval(r)))
            .map(|(id, r)| (r.price, key(*id), *id))
            .collect();
        let all_matching: std::collections::BTreeSet<SowKey> =
            matching.iter().map(|m| m.1).collect();
        let store = self.store.as_ref().expect("store");
        let result = store.query(&query).map_err(fail)?;
        if let Some(p) = pred
            && p.indexed()
        {
            prop_assert!(
                matches!(result.plan, Plan::HashIndex(_) | Plan::RangeIndex(_)),
                "plan {:?}",
                result.plan
            );
        }
        let batches: Vec<_> = result.collect::<Result<Vec<_>, _>>().map_err(fail)?;
        prop_assert!(batches.iter().all(|b| !b.is_empty() && b.len() <= 3));
        let got: Vec<SowKey> = batches.iter().flatten().map(|r| r.key).collect();
        match order {
            Some(desc) => {
                matching.sort_by(|a, b| {
                    let c = if desc { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) };
                    c.then(a.1.cmp(&b.1))
                });
                let want: Vec<SowKey> = matching
                    .iter()
                    .take(top_n.unwrap_or(usize::MAX))
                    .map(|m| m.1)
                    .collect();
                prop_assert_eq!(got, want);
            }
            None => {
                prop_assert_eq!(
                    got.len(),
                    top_n.unwrap_or(usize::MAX).min(all_matching.len())
                );
                prop_assert!(got.iter().all(|k| all_matching.contains(k)));
                let distinct: std::collections::BTreeSet<_> = got.iter().collect();
                prop_assert_eq!(distinct.len(), got.len());
            }
        }
        Ok(())
    }
}

fn parse(text: &str) -> Filter {
    Filter::parse(text, &Limits::default()).expect("filter")
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

fn run(durability: Durability, ops: &[Op]) -> Result<(), TestCaseError> {
    let spec = spec(durability, &["/region", "/price"]);
    let disk = SimStorage::new();
    let (store, _) = open(&spec, &disk);
    let mut h = Harness {
        spec,
        disk,
        store: Some(store),
        durable: durability == Durability::Durable,
        model: BTreeMap::new(),
        checkpointed: BTreeMap::new(),
        checkpoint_bookmark: 0,
        bookmark: 0,
    };
    for (step, op) in ops.iter().enumerate() {
        h.apply(op)
            .map_err(|e| TestCaseError::fail(format!("step {step} {op:?}: {e}")))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn durable_store_agrees_with_a_map(ops in proptest::collection::vec(op(), 1..160)) {
        run(Durability::Durable, &ops)?;
    }

    #[test]
    fn transient_store_agrees_with_a_map(ops in proptest::collection::vec(op(), 1..160)) {
        run(Durability::Transient, &ops)?;
    }
}
