//! Simulated power loss: seeded runs of writes, deletes, checkpoints and
//! compactions on the simulated disk, cut at a random point (sometimes with
//! a failed sync first). After recovery the store must hold exactly the
//! state its last successful checkpoint covered: every record reported
//! durable, at its latest covered version, and nothing else; every record
//! served passes its CRC; torn tails are reported. A failure names its seed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use statecast_journal::sim::{SimRng, SimStorage};
use statecast_journal::storage::Storage;
use statecast_sow::{Durability, JobSink, Query, Recovery, SowJob, SowKey, SowStore};

use crate::support::{Rec, key, open, payload, spec};

struct Outcome {
    torn_reported: bool,
    discarded: usize,
    /// Background checkpoints that completed.
    completed_in_background: usize,
    /// Recoveries that found a background checkpoint the store had not yet
    /// seen complete.
    recovered_unconfirmed: usize,
}

/// Cycles of (random writes, power cut, recovery) per seed: later cycles
/// start from a recovered store, so the tail clearing of one recovery is
/// itself cut by the next power loss.
const CYCLES: usize = 3;

/// The background thread of a store's file work, played by the test: jobs
/// wait in a queue and run (in order) when the seed says so, so a power cut
/// can fall before, between or after them.
#[derive(Clone, Default)]
struct Jobs(Arc<Mutex<VecDeque<SowJob>>>);

impl Jobs {
    fn sink(&self) -> JobSink {
        let queue = Arc::clone(&self.0);
        JobSink::new(move |job| queue.lock().expect("queue").push_back(job))
    }

    /// Runs up to `n` queued jobs.
    fn run(&self, n: u64) {
        for _ in 0..n {
            let job = self.0.lock().expect("queue").pop_front();
            match job {
                Some(job) => job.run(),
                None => break,
            }
        }
    }

    fn run_all(&self) {
        self.run(u64::MAX);
    }

    /// A power cut: the thread never ran what was still queued.
    fn clear(&self) {
        self.0.lock().expect("queue").clear();
    }
}

fn attach(store: &mut SowStore, jobs: Option<&Jobs>) {
    if let Some(jobs) = jobs {
        store.set_job_sink(jobs.sink());
    }
}

fn run_seed(seed: u64) -> Result<Outcome, String> {
    run_seed_with(seed, None)
}

/// One seed; with `jobs`, the store hands its file work to the queue and
/// also checkpoints in the background (begun, polled, its jobs run at
/// seeded moments).
fn run_seed_with(seed: u64, jobs: Option<&Jobs>) -> Result<Outcome, String> {
    let mut rng = SimRng::new(seed);
    let spec = spec(Durability::Durable, &["/region"]);
    let mut disk = SimStorage::new();
    let (mut store, _) = open(&spec, &disk);
    attach(&mut store, jobs);
    // Background checkpoints begun since the last one that completed, with
    // the state each covers: once its record is appended, a power cut may
    // keep it before the store learns it was synced, so recovery may find
    // any of them (the newest whose record survived).
    let mut candidates: Vec<(BTreeMap<u64, Rec>, u64)> = Vec::new();
    let mut model: BTreeMap<u64, Rec> = BTreeMap::new();
    let mut durable: BTreeMap<u64, Rec> = BTreeMap::new();
    let mut durable_bookmark = 0;
    let mut bookmark = 0;
    let mut outcome = Outcome {
        torn_reported: false,
        discarded: 0,
        completed_in_background: 0,
        recovered_unconfirmed: 0,
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
            if let Some(jobs) = jobs {
                if rng.chance(1, 3) {
                    jobs.run(1 + rng.below(3));
                }
                if rng.chance(1, 4) {
                    let result = if rng.chance(1, 2) || !store.checkpoint_in_progress() {
                        let was = store.checkpoint_in_progress();
                        store.begin_checkpoint().map(|()| {
                            if store.checkpoint_in_progress() && !was {
                                candidates.push((model.clone(), bookmark));
                            }
                        })
                    } else {
                        store.poll_checkpoint(|_| true).map(|completed| {
                            if let Some(covered) = completed {
                                let (state, at) = candidates.pop().unwrap_or_default();
                                assert_eq!(covered, at, "seed {seed}: background coverage");
                                durable = state;
                                durable_bookmark = covered;
                                candidates.clear();
                                outcome.completed_in_background += 1;
                            }
                        })
                    };
                    if result.is_err() {
                        break;
                    }
                }
            }
            let op = rng.below(20);
            if op >= 17
                && let Some(jobs) = jobs
            {
                // A checkpoint in line waits for the sealed slabs' syncs,
                // which the thread would have run meanwhile; it replaces a
                // background checkpoint in progress.
                jobs.run_all();
            }
            let result = match op {
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
                    candidates.clear();
                }),
                _ => store.compact().map(|_| {
                    durable = model.clone();
                    durable_bookmark = bookmark;
                    candidates.clear();
                }),
            };
            if result.is_err() {
                // A failed sync latches the store: every later write is
                // refused. Stop; the cut must still find the last checkpoint.
                break;
            }
        }
        let image = disk.crash_image(&mut rng);
        if let Some(jobs) = jobs {
            jobs.clear();
        }
        drop(store);
        let (recovered, recovery) = open(&spec, &image);
        let Recovery::Resumed(report) = &recovery else {
            return Err(format!(
                "seed {seed} cycle {cycle}: expected a resume, got {recovery:?}"
            ));
        };
        outcome.torn_reported |= report.torn_tail.is_some();
        outcome.discarded += report.discarded_after_checkpoint;
        if let Some((state, at)) = candidates
            .drain(..)
            .find(|(_, at)| *at == report.checkpoint && *at != durable_bookmark)
        {
            durable = state;
            durable_bookmark = at;
            outcome.recovered_unconfirmed += 1;
        }
        check(seed, cycle, &recovered, report, &durable, durable_bookmark)?;
        // A second open of the same image (the recovery's own writes were
        // synced) finds the same state.
        drop(recovered);
        let (mut recovered, _) = open(&spec, &image);
        if recovered.len() != durable.len() {
            return Err(format!(
                "seed {seed} cycle {cycle}: second open has {} records",
                recovered.len()
            ));
        }
        // The broker would replay the journal here; the test goes on from
        // the checkpoint state.
        attach(&mut recovered, jobs);
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

/// Seeds per power-loss test: `SOW_CRASH_SEEDS`, or 300.
fn crash_seeds() -> u64 {
    std::env::var("SOW_CRASH_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

/// The outcome of `run` for each of [`crash_seeds`] seeds; fails listing
/// every failing seed.
fn every_seed(run: impl Fn(u64) -> Result<Outcome, String>) -> Vec<Outcome> {
    let (outcomes, failures): (Vec<_>, Vec<_>) =
        (0..crash_seeds()).map(run).partition(Result::is_ok);
    let failures: Vec<String> = failures.into_iter().filter_map(Result::err).collect();
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
    outcomes.into_iter().filter_map(Result::ok).collect()
}

#[test]
fn power_loss_at_seeded_points_recovers_the_last_checkpoint_exactly() {
    let outcomes = every_seed(run_seed);
    let torn: usize = outcomes.iter().map(|o| usize::from(o.torn_reported)).sum();
    let discarded: usize = outcomes.iter().map(|o| o.discarded).sum();
    assert!(
        torn > 0,
        "no run produced a torn tail: the fault model was not exercised"
    );
    assert!(discarded > 0, "no run had writes after its last checkpoint");
}

#[test]
fn power_loss_with_file_work_and_checkpoints_in_the_background_recovers_the_last_checkpoint() {
    let outcomes = every_seed(|seed| run_seed_with(seed, Some(&Jobs::default())));
    let discarded: usize = outcomes.iter().map(|o| o.discarded).sum();
    let completed: usize = outcomes.iter().map(|o| o.completed_in_background).sum();
    let unconfirmed: usize = outcomes.iter().map(|o| o.recovered_unconfirmed).sum();
    assert!(discarded > 0, "no run had writes after its last checkpoint");
    assert!(completed > 0, "no background checkpoint completed");
    assert!(
        unconfirmed > 0,
        "no power cut fell between a background checkpoint's record and its confirmation"
    );
}

/// With a job sink, the writer's thread makes no file system call that
/// waits for the disk when its slab fills: the next slab was made ahead by
/// a job, and the sealed one is synced by a job.
#[test]
fn with_a_job_sink_a_full_slab_is_replaced_by_the_spare_without_a_sync_on_the_writer() {
    let spec = spec(Durability::Durable, &[]);
    let disk = SimStorage::new();
    let (mut store, _) = open(&spec, &disk);
    let jobs = Jobs::default();
    store.set_job_sink(jobs.sink());
    assert!(!store.spare_ready(), "asked for, not made yet");
    jobs.run_all();
    assert!(store.spare_ready(), "the job made the next slab");

    let rec = |bookmark| Rec {
        price: 1,
        region: 0,
        pad: 900,
        bookmark,
    };
    let slabs_before = store.stats().slabs;
    let syncs_before = disk.sync_count();
    let mut bookmark = 0;
    while store.stats().slabs == slabs_before {
        bookmark += 1;
        store
            .upsert(&payload(bookmark, &rec(bookmark)), bookmark, 0)
            .expect("upsert");
    }
    assert_eq!(
        disk.sync_count(),
        syncs_before,
        "rolling to the next slab synced nothing on the writer's thread"
    );
    assert!(!store.spare_ready(), "the spare was used");
    assert_eq!(store.sealed_slabs_synced_in_background(), 0);
    jobs.run_all();
    assert!(store.spare_ready(), "and the next one asked for");
    assert_eq!(
        store.sealed_slabs_synced_in_background(),
        1,
        "the sealed slab was synced by a job"
    );

    // A background checkpoint: nothing is synced on the writer's thread,
    // and it counts only once its jobs ran and the journal persisted it.
    let syncs = disk.sync_count();
    store.begin_checkpoint().expect("begin");
    assert!(store.checkpoint_in_progress());
    assert_eq!(store.poll_checkpoint(|_| true).expect("poll"), None);
    jobs.run_all();
    assert_eq!(
        store.poll_checkpoint(|_| false).expect("poll"),
        None,
        "the journal has not persisted its bookmark"
    );
    assert_eq!(store.poll_checkpoint(|_| true).expect("poll"), None);
    assert_eq!(disk.sync_count(), syncs + 1, "only the job's data sync ran");
    jobs.run_all();
    assert_eq!(
        store.poll_checkpoint(|_| true).expect("poll"),
        Some(bookmark)
    );
    assert_eq!(store.checkpoint_bookmark(), bookmark);
    assert!(!store.checkpoint_in_progress());

    // And a power cut now recovers it.
    let image = disk.crash_image(&mut SimRng::new(7));
    drop(store);
    let (recovered, recovery) = open(&spec, &image);
    let Recovery::Resumed(report) = recovery else {
        panic!("expected a resume, got {recovery:?}");
    };
    assert_eq!(report.checkpoint, bookmark);
    assert_eq!(recovered.len() as u64, bookmark);
}

/// A slab that compaction emptied and no checkpoint lists is made a later
/// spare (its header zeroed, then renamed with a new one) instead of a new
/// file: emptied slabs do not pile up between checkpoints, and a power cut
/// at any point of that file work recovers the last checkpoint.
#[test]
fn an_emptied_slab_no_checkpoint_lists_becomes_a_later_spare() {
    let spec = spec(Durability::Durable, &[]);
    let disk = SimStorage::new();
    let (mut store, _) = open(&spec, &disk);
    let jobs = Jobs::default();
    store.set_job_sink(jobs.sink());
    jobs.run_all();

    // Four keys rewritten over and over: every slab but the active one is
    // soon mostly dead, and compacted at the next roll (some 15 records a
    // slab).
    let mut bookmark = 0;
    let mut upsert = |store: &mut SowStore, n: u64, run_jobs: bool| {
        for _ in 0..n {
            bookmark += 1;
            let rec = Rec {
                price: 1,
                region: 0,
                pad: 900,
                bookmark,
            };
            store
                .upsert(&payload(bookmark % 4, &rec), bookmark, 0)
                .expect("upsert");
            if run_jobs {
                jobs.run_all();
            }
        }
        bookmark
    };
    let files = |disk: &SimStorage| {
        let mut names = disk.list("").expect("list");
        names.retain(|n| n.ends_with(".slab"));
        names.len()
    };
    // No checkpoint: without reuse every emptied slab would stay on disk
    // until one (some 40 files).
    let mut written = 0;
    for _ in 0..3 {
        written = upsert(&mut store, 200, true);
        let (on_disk, in_use) = (files(&disk), store.stats().slabs);
        assert!(
            on_disk <= in_use + 1 + 4,
            "{on_disk} files for {in_use} slabs, a spare and at most 4 kept"
        );
    }
    let covered = store.checkpoint().expect("checkpoint");
    assert_eq!(covered, written);

    // Writes whose file work (sealed slabs' syncs, spares, reuses) runs one
    // job at a time, a power cut after each: recovery resumes from the
    // checkpoint every time.
    let last = upsert(&mut store, 150, false);
    let mut cuts = 0;
    loop {
        let image = disk.crash_image(&mut SimRng::new(cuts));
        let (recovered, recovery) = open(&spec, &image);
        let Recovery::Resumed(report) = recovery else {
            panic!("cut {cuts}: expected a resume, got {recovery:?}");
        };
        assert_eq!(report.checkpoint, covered, "cut {cuts}");
        assert_eq!(recovered.len(), 4, "cut {cuts}");
        for id in 0..4 {
            let got = recovered.get(key(id)).expect("get").expect("there");
            assert!(got.bookmark + 4 > covered, "cut {cuts}: key {id}");
        }
        cuts += 1;
        if jobs.0.lock().expect("queue").is_empty() {
            break;
        }
        jobs.run(1);
        // Spares asked for by the rolls meanwhile come later.
        upsert(&mut store, 0, false);
    }
    assert!(cuts > 5, "the writes left file work to cut between: {cuts}");
    let covered = store.checkpoint().expect("checkpoint");
    assert_eq!(covered, last);
    let image = disk.crash_image(&mut SimRng::new(99));
    drop(store);
    let (recovered, recovery) = open(&spec, &image);
    let Recovery::Resumed(report) = recovery else {
        panic!("expected a resume, got {recovery:?}");
    };
    assert_eq!(report.checkpoint, last);
    for id in 0..4 {
        let got = recovered.get(key(id)).expect("get").expect("there");
        assert!(got.bookmark + 4 > last, "key {id} at its last version");
    }
}
