//! Simulated power loss: seeded runs of writes, deletes, checkpoints and
//! compactions on the simulated disk, cut at a random point (sometimes with
//! a failed sync first). After recovery the store must hold exactly the
//! state its last successful checkpoint covered: every record reported
//! durable, at its latest covered version, and nothing else; every record
//! served passes its CRC; torn tails are reported. A failure names its seed.

use std::collections::BTreeMap;

use statecast_journal::sim::{SimRng, SimStorage};
use statecast_sow::{Durability, Query, Recovery, SowKey};

use crate::support::{Rec, key, open, payload, spec};

struct Outcome {
    torn_reported: bool,
    discarded: usize,
}

/// Cycles of (random writes, power cut, recovery) per seed: later cycles
/// start from a recovered store, so the tail clearing of one recovery is
/// itself cut by the next power loss.
const CYCLES: usize = 3;

fn run_seed(seed: u64) -> Result<Outcome, String> {
    let mut rng = SimRng::new(seed);
    let spec = spec(Durability::Durable, &["/region"]);
    let mut disk = SimStorage::new();
    let (mut store, _) = open(&spec, &disk);
    let mut model: BTreeMap<u64, Rec> = BTreeMap::new();
    let mut durable: BTreeMap<u64, Rec> = BTreeMap::new();
    let mut durable_bookmark = 0;
    let mut bookmark = 0;
    let mut outcome = Outcome {
        torn_reported: false,
        discarded: 0,
    };
    for cycle in 0..CYCLES {
        let steps = 30 + rng.below(250);
        let fail_at = if rng.chance(1, 4) {
            Some(rng.below(steps))
        } else {
            None
        };
        for step in 0..steps {
            if Some(step) == fail_at {
                disk.fail_sync_number(1 + rng.below(3));
            }
            let result = match rng.below(20) {
                0..=13 => {
                    bookmark += 1;
                    let id = rng.below(60);
                    let rec = Rec {
                        price: rng.below(100) as i64,
                        region: rng.below(4) as u8,
                        pad: if rng.chance(1, 5) {
                            1500 + rng.below(2000) as usize
                        } else {
                            rng.below(100) as usize
                        },
                        bookmark,
                    };
                    store.upsert(&payload(id, &rec), bookmark, 0).map(|_| {
                        model.insert(id, rec);
                    })
                }
                14..=16 => {
                    bookmark += 1;
                    let id = rng.below(60);
                    store.delete_key(key(id), bookmark, 0).map(|_| {
                        model.remove(&id);
                    })
                }
                17..=18 => store.checkpoint().map(|covered| {
                    assert_eq!(covered, bookmark, "seed {seed}: checkpoint coverage");
                    durable = model.clone();
                    durable_bookmark = covered;
                }),
                _ => store.compact().map(|_| {
                    durable = model.clone();
                    durable_bookmark = bookmark;
                }),
            };
            if result.is_err() {
                // A failed sync latches the store: every later write is
                // refused. Stop; the cut must still find the last checkpoint.
                break;
            }
        }
        let image = disk.crash_image(&mut rng);
        drop(store);
        let (recovered, recovery) = open(&spec, &image);
        let Recovery::Resumed(report) = &recovery else {
            return Err(format!(
                "seed {seed} cycle {cycle}: expected a resume, got {recovery:?}"
            ));
        };
        outcome.torn_reported |= report.torn_tail.is_some();
        outcome.discarded += report.discarded_after_checkpoint;
        check(seed, cycle, &recovered, report, &durable, durable_bookmark)?;
        // A second open of the same image (the recovery's own writes were
        // synced) finds the same state.
        drop(recovered);
        let (recovered, _) = open(&spec, &image);
        if recovered.len() != durable.len() {
            return Err(format!(
                "seed {seed} cycle {cycle}: second open has {} records",
                recovered.len()
            ));
        }
        // The broker would replay the journal here; the test goes on from
        // the checkpoint state.
        store = recovered;
        disk = image;
        model = durable.clone();
        bookmark = durable_bookmark;
    }
    Ok(outcome)
}

fn check(
    seed: u64,
    cycle: usize,
    store: &statecast_sow::SowStore,
    report: &statecast_sow::RecoveryReport,
    durable: &BTreeMap<u64, Rec>,
    durable_bookmark: u64,
) -> Result<(), String> {
    if report.checkpoint != durable_bookmark {
        return Err(format!(
            "seed {seed} cycle {cycle}: recovered checkpoint {} but the last successful one covered {durable_bookmark}",
            report.checkpoint
        ));
    }
    let records = store
        .query(&Query::all())
        .and_then(|m| m.collect_all())
        .map_err(|e| format!("seed {seed} cycle {cycle}: reading back: {e}"))?;
    let got: BTreeMap<SowKey, (Vec<u8>, u64)> = records
        .into_iter()
        .map(|r| (r.key, (r.payload, r.bookmark)))
        .collect();
    let want: BTreeMap<SowKey, (Vec<u8>, u64)> = durable
        .iter()
        .map(|(id, r)| (key(*id), (payload(*id, r), r.bookmark)))
        .collect();
    if got != want {
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(k)).collect();
        let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(k)).collect();
        return Err(format!(
            "seed {seed} cycle {cycle}: recovered state differs from the last checkpoint: {} missing {missing:?}, {} extra {extra:?}, report {report:?}",
            missing.len(),
            extra.len()
        ));
    }
    // The indexes were rebuilt too.
    for region in 0..4u8 {
        let filter = statecast_filter::Filter::parse(
            &format!("/region = 'r{region}'"),
            &statecast_filter::Limits::default(),
        )
        .map_err(|e| e.to_string())?;
        let n = store
            .count(&Query::filter(filter))
            .map_err(|e| e.to_string())?;
        let expected = durable.values().filter(|r| r.region == region).count();
        if n != expected {
            return Err(format!(
                "seed {seed} cycle {cycle}: index on /region finds {n}, expected {expected}"
            ));
        }
    }
    Ok(())
}

#[test]
fn power_loss_at_seeded_points_recovers_the_last_checkpoint_exactly() {
    let seeds = std::env::var("SOW_CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300u64);
    let mut torn = 0;
    let mut discarded = 0;
    let mut failures = Vec::new();
    for seed in 0..seeds {
        match run_seed(seed) {
            Ok(outcome) => {
                torn += usize::from(outcome.torn_reported);
                discarded += outcome.discarded;
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        torn > 0,
        "no run produced a torn tail: the fault model was not exercised"
    );
    assert!(discarded > 0, "no run had writes after its last checkpoint");
}
