//! Start-up recovery of the SOW: open every durable store found under
//! `<data>/sow/` (each reloads to its last checkpoint, or quarantines its
//! files and starts empty), replay the journal after the oldest checkpoint
//! into them (creating the stores of topics seen there, transient ones
//! included), and deal the stores to the processors that own their topics.
//!
//! Runs before any processor starts, so nothing else touches the stores.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use statecast_journal::Start;
use statecast_sow::{Durability, JobSink, SowJob, TopicSelector, TopicSpec};

use super::journaling::Journaling;
use crate::core::sow::{SowTopics, open_store, read_topic_file};
use crate::core::topic::processor_for;

/// The stores, one set per processor, ready to run.
///
/// # Errors
/// A store that cannot be opened at all (not a damaged one: those are
/// quarantined and rebuilt), or a journal that cannot be read.
pub fn recover(
    specs: &Arc<Vec<TopicSpec>>,
    data_dir: &Path,
    journaling: Option<&Journaling>,
    processors: usize,
) -> Result<Vec<SowTopics>, String> {
    let processors = processors.max(1);
    let root = data_dir.join("sow");
    let mut sets: Vec<SowTopics> = (0..processors)
        .map(|_| SowTopics::new(Arc::clone(specs), Some(root.clone())))
        .collect();
    if specs.is_empty() {
        return Ok(sets);
    }
    let started = Instant::now();
    std::fs::create_dir_all(&root).map_err(|e| format!("SOW directory {}: {e}", root.display()))?;
    // Where the replay starts: after the oldest checkpoint of the stores
    // found, or at the journal's start when a store may exist only there
    // (transient topics, a named topic without a folder, patterns).
    let mut from_start = specs.iter().any(|spec| {
        spec.durability() == Durability::Transient
            || matches!(spec.selector(), TopicSelector::Pattern(_))
    });
    let mut oldest_checkpoint = u64::MAX;
    let mut opened = Vec::new();
    let entries =
        std::fs::read_dir(&root).map_err(|e| format!("SOW directory {}: {e}", root.display()))?;
    for entry in entries.flatten() {
        let folder = entry.path();
        if !folder.is_dir() {
            continue;
        }
        let topic = match read_topic_file(&folder) {
            Ok(topic) => topic,
            Err(error) => {
                tracing::warn!(
                    "SOW folder {} is not a topic's (its TOPIC file: {error}); left alone",
                    folder.display()
                );
                continue;
            }
        };
        let Some(spec) = specs.iter().find(|spec| spec.matches(&topic)) else {
            tracing::warn!(
                topic,
                "SOW folder {} belongs to a topic no sow.topics entry covers any more; left alone",
                folder.display()
            );
            continue;
        };
        if spec.durability() != Durability::Durable {
            continue;
        }
        let store = open_store(spec, &topic, Some(&root))?;
        oldest_checkpoint = oldest_checkpoint.min(store.checkpoint_bookmark());
        opened.push(topic.clone());
        if let Some(set) = sets.get_mut(processor_for(topic.as_bytes(), processors)) {
            set.adopt(store);
        }
    }
    for spec in specs.iter() {
        if let TopicSelector::Name(name) = spec.selector()
            && spec.durability() == Durability::Durable
            && !opened.iter().any(|t| t == name)
        {
            from_start = true;
        }
    }
    let Some(journaling) = journaling else {
        return with_file_worker(sets);
    };
    let start = if from_start || oldest_checkpoint == u64::MAX {
        Start::Epoch
    } else {
        Start::After(oldest_checkpoint)
    };
    let journal = journaling.journal();
    let mut reader = match journal.reader(start) {
        Ok(reader) => reader,
        Err(error) => {
            tracing::error!(
                "SOW recovery: the journal no longer holds the records after bookmark {oldest_checkpoint} ({error}); replaying what it holds: keys changed only in the missing part keep their older value"
            );
            journal
                .reader(Start::Epoch)
                .map_err(|e| format!("SOW recovery cannot read the journal: {e}"))?
        }
    };
    let (mut applied, mut skipped) = (0u64, 0u64);
    loop {
        let record = match reader.next_record() {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(error) => {
                // The journal itself opened: what it could not read here is
                // damage a replay reports too. The stores keep what was
                // read; later updates of the keys behind the damage are lost.
                tracing::error!(
                    "SOW recovery stopped reading the journal: {error}; the SOW holds the state up to the damage"
                );
                break;
            }
        };
        let Some(set) = sets.get_mut(processor_for(record.topic(), processors)) else {
            continue;
        };
        match set.replay(
            record.topic(),
            record.flags,
            record.payload(),
            record.bookmark,
            record.timestamp_ns,
        ) {
            Ok(true) => applied += 1,
            Ok(false) => {}
            Err(error) => {
                skipped += 1;
                if skipped <= 10 {
                    tracing::warn!(
                        bookmark = record.bookmark,
                        "SOW recovery skipped a journal record: {error}"
                    );
                }
            }
        }
    }
    let tip = journal.appended();
    for set in &mut sets {
        set.advance_all(tip);
    }
    let stores: usize = sets.iter().map(|s| s.stores().count()).sum();
    let records: usize = sets
        .iter()
        .flat_map(SowTopics::stores)
        .map(statecast_sow::SowStore::len)
        .sum();
    tracing::info!(
        stores,
        records,
        journal_records_applied = applied,
        journal_records_skipped = skipped,
        duration_ms = started.elapsed().as_millis(),
        "SOW recovered"
    );
    with_file_worker(sets)
}

/// Starts the `sow-files` thread, which runs the durable stores' file work
/// (next slab files, syncs of sealed slabs and checkpoints, removals) off
/// the processors, and hands every set its sink. The thread ends once every
/// set (every sender) is dropped, after the jobs already sent.
fn with_file_worker(mut sets: Vec<SowTopics>) -> Result<Vec<SowTopics>, String> {
    if !sets.iter().any(SowTopics::is_configured) {
        return Ok(sets);
    }
    // Spare slabs go first (`SowJob::is_urgent`): behind a queue of syncs
    // one came too late for its roll in 4 of 61 cases (benches/RESULTS.md).
    let (urgent, urgent_jobs) = crossbeam_channel::unbounded::<SowJob>();
    let (sender, jobs) = crossbeam_channel::unbounded::<SowJob>();
    std::thread::Builder::new()
        .name("sow-files".into())
        .spawn(move || {
            loop {
                if let Ok(job) = urgent_jobs.try_recv() {
                    job.run();
                    continue;
                }
                let job = crossbeam_channel::select! {
                    recv(urgent_jobs) -> job => job,
                    recv(jobs) -> job => job,
                };
                match job {
                    Ok(job) => job.run(),
                    // Both senders live in the one sink: gone together.
                    Err(_) => break,
                }
            }
            for job in urgent_jobs.try_iter().chain(jobs.try_iter()) {
                job.run();
            }
        })
        .map_err(|e| format!("starting the sow-files thread: {e}"))?;
    let sink = JobSink::new(move |job| {
        let sent = if job.is_urgent() {
            urgent.send(job)
        } else {
            sender.send(job)
        };
        // Fails only if the thread is gone (it does not exit while a
        // sender lives): then the job runs here, so nothing waits forever.
        if let Err(unsent) = sent {
            unsent.into_inner().run();
        }
    });
    for set in &mut sets {
        set.set_job_sink(sink.clone());
    }
    Ok(sets)
}
