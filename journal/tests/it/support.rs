//! Shared helpers: small deterministic configurations, payloads derived from
//! bookmarks, seeds from the environment.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use statecast_journal::sim::SimStorage;
use statecast_journal::{Clock, Journal, JournalConfig, Opened, Record, Start};

/// A clock that advances 1 µs per reading, starting at `start_ns`.
pub fn step_clock(start_ns: u64) -> (Clock, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(start_ns));
    let reading = now.clone();
    (
        Clock::from_fn(move || reading.fetch_add(1_000, Ordering::SeqCst)),
        now,
    )
}

/// Small segments so tests cross many file boundaries.
pub fn small_config(segment_bytes: u64) -> JournalConfig {
    JournalConfig {
        segment_bytes,
        preallocate: 1,
        index_every_bytes: 512,
        clock: step_clock(1_000_000_000).0,
        new_instance_id: Some(0x5eed_0000_0000_0001),
        ..JournalConfig::default()
    }
}

pub fn open_sim(storage: &SimStorage, config: JournalConfig) -> Opened {
    match Journal::open_with_storage(Arc::new(storage.clone()), config) {
        Ok(opened) => opened,
        Err(error) => panic!("open failed: {error}"),
    }
}

/// The payload of record `bookmark` in a test: its length and bytes follow
/// from the bookmark, so any reader can check what it got.
pub fn payload_for(bookmark: u64, salt: u64) -> Vec<u8> {
    let len = ((bookmark.wrapping_mul(7919) ^ salt) % 700) as usize;
    (0..len)
        .map(|i| (bookmark as usize + i * 31 + salt as usize) as u8)
        .collect()
}

pub fn topic_for(bookmark: u64) -> Vec<u8> {
    format!("topic/{}", bookmark % 5).into_bytes()
}

/// All records from the oldest on, panicking on a read error.
pub fn read_all(journal: &Journal) -> Vec<Record> {
    let mut reader = journal.reader(Start::Epoch).expect("reader from epoch");
    let mut out = Vec::new();
    while let Some(record) = reader.next_record().expect("read") {
        out.push(record);
    }
    out
}

/// Seed from `STATECAST_SEED`, else `default`.
pub fn seed(default: u64) -> u64 {
    std::env::var("STATECAST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A count from an env var, else `default`.
pub fn count(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// True when `STATECAST_SEED` pins one case.
pub fn seed_pinned() -> bool {
    std::env::var("STATECAST_SEED").is_ok()
}

/// Where each record sits: (file, offset, bookmark, stored bytes).
pub fn locations(storage: &SimStorage) -> Vec<(String, u64, u64, u64)> {
    let mut out = Vec::new();
    statecast_journal::dump::records_in(
        storage,
        &statecast_journal::dump::DumpFilter::default(),
        |record| {
            out.push((
                record.file.to_string(),
                record.offset,
                record.bookmark,
                record.stored_bytes,
            ));
            std::ops::ControlFlow::Continue(())
        },
    )
    .expect("dump");
    out
}
