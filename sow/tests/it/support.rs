//! Shared helpers: stores on the simulated disk, payloads.

use std::sync::Arc;

use statecast_journal::sim::SimStorage;
use statecast_journal::storage::Storage;
use statecast_sow::{Durability, Recovery, SowKey, SowStore, SowTopicConfig, TopicSpec};

pub const TOPIC: &str = "orders";
/// Small slabs so a few hundred records span many of them.
pub const TEST_SLAB: u64 = 16 * 1024;

pub fn spec(durability: Durability, hash_indexes: &[&str]) -> TopicSpec {
    let mut config = SowTopicConfig::new(TOPIC, &["/id"]);
    config.durability = durability;
    config.slab_size = TEST_SLAB;
    config.hash_indexes = hash_indexes.iter().map(|s| (*s).to_string()).collect();
    config.validate_for_tests().expect("valid test config")
}

pub fn open(spec: &TopicSpec, storage: &SimStorage) -> (SowStore, Recovery) {
    let storage: Arc<dyn Storage> = Arc::new(storage.clone());
    SowStore::open(spec, TOPIC, Some(storage)).expect("open")
}

pub fn key(id: u64) -> SowKey {
    SowKey::from_values(TOPIC, &[id.to_string().as_bytes()])
}

/// A record's fields, as the model keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub price: i64,
    pub region: u8,
    pub pad: usize,
    pub bookmark: u64,
}

pub fn payload(id: u64, rec: &Rec) -> Vec<u8> {
    format!(
        r#"{{"id":{id},"region":"r{}","price":{},"tags":["t{}","x"],"pad":"{}"}}"#,
        rec.region,
        rec.price,
        rec.price % 3,
        "p".repeat(rec.pad)
    )
    .into_bytes()
}
