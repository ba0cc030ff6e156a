//! The State of the World through a real broker, over raw frames (the wire
//! contract of protocol/SPEC.md §4.9–4.14): queries, refusals, deletes,
//! sow_and_subscribe under a concurrent publisher, answers in `sow_batch`
//! frames, and recovery after a clean stop and after SIGKILL.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use statecast_protocol::{
    Ack, AckSet, AckType, Command, Deliver, Flush, GroupEnd, Publish, ReasonCode, SowBatch,
    SowDelete, SowQuery, Status, SubIds, Subscribe, Utf8,
};

use crate::support::{Broker, Raw};
use statecast::core::topic::processor_for;

/// SOW topics of these tests: `orders` (durable, keyed by /id, a hash
/// index on /symbol), `prices.*` (transient, keyed by /sym), `blobs`
/// (durable, explicit keys, the smallest slab), with checkpoints often
/// enough that the tests cross several.
const CONFIG: &str = r#"
[sow]
checkpoint_interval_ms = 50
[[sow.topics]]
topic = "orders"
key = ["/id"]
hash_indexes = ["/symbol"]
[[sow.topics]]
pattern = 'prices\..*'
key = ["/sym"]
durability = "transient"
[[sow.topics]]
topic = "blobs"
slab_size = "1 MiB"
"#;

fn publish_frame(topic: &str, payload: &[u8], command_id: Option<u64>, ack: AckSet) -> Command {
    Command::Publish(Publish {
        command_id,
        topic: Utf8::from(topic),
        ack,
        sequence: None,
        sow_key: None,
        payload: Bytes::copy_from_slice(payload),
    })
}

/// Publishes and returns the processed ack (the connection has no
/// subscriptions, so the next frame is it).
fn publish(raw: &mut Raw, topic: &str, payload: &[u8], sow_key: Option<&[u8]>) -> Ack {
    publish_acked(raw, topic, payload, sow_key, AckType::Processed)
}

/// Publishes and waits for the `persisted` ack: what must survive SIGKILL
/// (a `processed` message may still be in the journal's staging buffer).
fn publish_persisted(raw: &mut Raw, topic: &str, payload: &[u8]) -> Ack {
    publish_acked(raw, topic, payload, None, AckType::Persisted)
}

fn publish_acked(
    raw: &mut Raw,
    topic: &str,
    payload: &[u8],
    sow_key: Option<&[u8]>,
    ack: AckType,
) -> Ack {
    let mut command = publish_frame(topic, payload, Some(1), AckSet::only(ack));
    if let Command::Publish(publish) = &mut command {
        publish.sow_key = sow_key.map(Bytes::copy_from_slice);
    }
    raw.send(&command);
    match raw.recv() {
        Some(Command::Ack(ack)) => ack,
        other => panic!("expected the publish's ack, got {other:?}"),
    }
}

fn query(topic: &str, sub_id: u64) -> SowQuery {
    SowQuery {
        command_id: Some(sub_id * 10),
        sub_id,
        topic: Utf8::from(topic),
        filter: None,
        options: None,
        order_by: None,
        top_n: None,
        skip_n: None,
        sow_keys: None,
        batch_size: None,
    }
}

/// What a `sow` returned.
#[derive(Debug)]
struct Answer {
    ack: Ack,
    /// Every record, in order (those of `sow_batch` frames as the
    /// `deliver` each would have been without batches).
    records: Vec<Deliver>,
    /// Records per frame, in order: `None` for a `deliver`, the count of
    /// a `sow_batch`.
    frames: Vec<Option<u64>>,
    end: Option<GroupEnd>,
}

/// One record as a query's answer carries it, whatever the query's id:
/// topic, SowKey, bookmark, timestamp and message.
type RecordValues = (Utf8, Option<u64>, Option<u64>, u64, Bytes);

impl Answer {
    /// The records' values, in order (the sub id, which differs between
    /// queries, left out).
    fn values(&self) -> Vec<RecordValues> {
        self.records
            .iter()
            .map(|d| {
                (
                    d.topic.clone(),
                    d.sow_key,
                    d.bookmark,
                    d.timestamp,
                    d.payload.clone(),
                )
            })
            .collect()
    }

    /// [`Answer::values`] grouped by topic, each topic's in the order
    /// they came (a pattern's topics on different processors interleave
    /// in no set order).
    fn values_by_topic(&self) -> Vec<RecordValues> {
        let mut values = self.values();
        values.sort_by(|a, b| a.0.cmp(&b.0));
        values
    }

    fn payloads(&self) -> Vec<String> {
        self.records
            .iter()
            .map(|d| String::from_utf8(d.payload.to_vec()).unwrap())
            .collect()
    }
}

/// Sends a `sow` and reads its answer: the ack, then (on success) the
/// group with its records.
fn sow(raw: &mut Raw, query: SowQuery) -> Answer {
    let sub_id = query.sub_id;
    raw.send(&Command::Sow(query));
    let ack = match raw.recv() {
        Some(Command::Ack(ack)) => ack,
        other => panic!("expected the sow's ack, got {other:?}"),
    };
    assert_eq!(ack.sub_id, Some(sub_id));
    if ack.status != Status::Success {
        return Answer {
            ack,
            records: Vec::new(),
            frames: Vec::new(),
            end: None,
        };
    }
    match raw.recv() {
        Some(Command::GroupBegin(begin)) => assert_eq!(begin.sub_id, sub_id),
        other => panic!("expected group_begin, got {other:?}"),
    }
    let mut records = Vec::new();
    let mut frames = Vec::new();
    loop {
        match raw.recv() {
            Some(Command::Deliver(record)) => {
                assert!(record.sow_key.is_some(), "a SOW record carries its key");
                assert_eq!(record.sub_ids.first(), Some(sub_id));
                records.push(record);
                frames.push(None);
            }
            Some(Command::SowBatch(batch)) => {
                assert_eq!(batch.sub_id, sub_id);
                frames.push(Some(batch.records));
                records.extend(batch_records(batch));
            }
            Some(Command::GroupEnd(end)) => {
                assert_eq!(end.sub_id, sub_id);
                return Answer {
                    ack,
                    records,
                    frames,
                    end: Some(end),
                };
            }
            other => panic!("expected records or group_end, got {other:?}"),
        }
    }
}

/// A `sow_batch`'s records as the `deliver`s they stand for.
fn batch_records(batch: SowBatch) -> Vec<Deliver> {
    let (topic, sub_id) = (batch.topic.clone(), batch.sub_id);
    batch
        .into_iter()
        .map(|record| {
            let record = record.expect("a decoded batch's records are well-formed");
            Deliver {
                topic: topic.clone(),
                sub_ids: SubIds::from_ids(&[sub_id]),
                bookmark: record.bookmark,
                timestamp: record.timestamp,
                sow_key: Some(record.key),
                payload: record.payload,
            }
        })
        .collect()
}

fn order(id: u64, symbol: &str, qty: u64) -> String {
    format!(r#"{{"id":{id},"symbol":"{symbol}","qty":{qty}}}"#)
}

#[test]
fn queries_filter_order_page_count_and_select_keys() {
    let broker = Broker::start_with(CONFIG);
    let mut raw = Raw::logged_on(&broker.client, "q", None);
    for id in 0..20 {
        let symbol = ["IBM", "MSFT", "AAPL", "ORCL"][id as usize % 4];
        let ack = publish(
            &mut raw,
            "orders",
            order(id, symbol, id * 10).as_bytes(),
            None,
        );
        assert_eq!(ack.status, Status::Success, "{ack:?}");
    }
    // Replace a record: the SOW keeps the latest per key.
    publish(&mut raw, "orders", order(3, "IBM", 1000).as_bytes(), None);

    let all = sow(&mut raw, query("orders", 1));
    assert_eq!(all.records.len(), 20);
    assert_eq!(all.end.as_ref().unwrap().records, 20);
    assert!(all.payloads().contains(&order(3, "IBM", 1000)));
    assert!(!all.payloads().contains(&order(3, "ORCL", 30)));

    let mut ibm = query("orders", 2);
    ibm.filter = Some(Utf8::from("/symbol IN ('IBM', 'AAPL') AND /qty >= 100"));
    ibm.order_by = Some(Utf8::from("/qty DESC"));
    ibm.top_n = Some(3);
    ibm.skip_n = Some(1);
    let page = sow(&mut raw, ibm);
    assert_eq!(
        page.payloads(),
        vec![
            order(18, "AAPL", 180),
            order(16, "IBM", 160),
            order(14, "AAPL", 140)
        ],
        "matching by qty desc: 3 (1000), 18, 16, 14, 12, 10; skip 1, take 3"
    );

    let mut count = query("orders", 3);
    count.filter = Some(Utf8::from("/symbol = 'MSFT'"));
    count.options = Some(Utf8::from("count_only"));
    let counted = sow(&mut raw, count);
    assert!(counted.records.is_empty());
    assert_eq!(counted.end.unwrap().records, 5);

    let keys: Vec<u64> = all
        .records
        .iter()
        .take(2)
        .map(|r| r.sow_key.unwrap())
        .collect();
    let mut by_key = query("orders", 4);
    by_key.sow_keys = Some(SubIds::from_ids(&keys));
    let selected = sow(&mut raw, by_key);
    let mut got: Vec<u64> = selected
        .records
        .iter()
        .map(|r| r.sow_key.unwrap())
        .collect();
    got.sort_unstable();
    let mut want = keys.clone();
    want.sort_unstable();
    assert_eq!(got, want);

    // sow_and_subscribe on a topic without SOW: an empty group, then the
    // subscription.
    let mut follower = Raw::logged_on(&broker.client, "f", None);
    follower.send(&Command::SowAndSubscribe(query("quotes", 8)));
    assert!(matches!(follower.recv(), Some(Command::Ack(a)) if a.status == Status::Success));
    assert!(matches!(follower.recv(), Some(Command::GroupBegin(b)) if b.sub_id == 8));
    assert!(matches!(follower.recv(), Some(Command::GroupEnd(e)) if e.records == 0));
    publish(&mut raw, "quotes", b"q1", None);
    match follower.recv() {
        Some(Command::Deliver(d)) => {
            assert_eq!(&d.payload[..], b"q1");
            assert_eq!(d.sow_key, None, "a live message carries no SowKey");
        }
        other => panic!("expected the live message, got {other:?}"),
    }

    // Errors: a topic without SOW, a bad filter, skip_n without order_by.
    let none = sow(&mut raw, query("quotes", 5));
    assert_eq!(none.ack.reason_code, ReasonCode::NotASowTopic);
    assert!(none.ack.reason.unwrap().as_str().contains("quotes"));
    let mut bad = query("orders", 6);
    bad.filter = Some(Utf8::from("/qty >"));
    assert_eq!(
        sow(&mut raw, bad).ack.reason_code,
        ReasonCode::InvalidFilter
    );
    let mut skip = query("orders", 7);
    skip.skip_n = Some(2);
    assert_eq!(
        sow(&mut raw, skip).ack.reason_code,
        ReasonCode::InvalidField
    );
}

#[test]
fn refused_messages_are_neither_stored_journaled_nor_delivered() {
    let broker = Broker::start_with(CONFIG);
    let mut subscriber = Raw::logged_on(&broker.client, "sub", None);
    subscriber.send(&Command::Subscribe(Subscribe {
        command_id: Some(1),
        sub_id: 1,
        topic: Utf8::from("orders|blobs"),
        filter: None,
        options: None,
        bookmark: None,
    }));
    assert!(matches!(subscriber.recv(), Some(Command::Ack(a)) if a.status == Status::Success));
    let mut raw = Raw::logged_on(&broker.client, "pub", None);
    let oversize = vec![b'x'; (1 << 20) - 100];
    /// Topic, payload, explicit key, the reason code, what its text names.
    type Case<'a> = (&'a str, &'a [u8], Option<&'a [u8]>, ReasonCode, &'a str);
    let cases: [Case<'_>; 4] = [
        (
            "orders",
            br#"{"symbol":"IBM"}"#,
            None,
            ReasonCode::InvalidSowKey,
            "/id",
        ),
        (
            "orders",
            b"IBM,100",
            None,
            ReasonCode::InvalidSowKey,
            "not valid JSON",
        ),
        (
            "blobs",
            b"payload",
            None,
            ReasonCode::InvalidSowKey,
            "explicit SowKey",
        ),
        (
            "blobs",
            &oversize,
            Some(b"k"),
            ReasonCode::SowMessageTooLarge,
            "slab_size",
        ),
    ];
    for (topic, payload, key, code, says) in cases {
        let ack = publish(&mut raw, topic, payload, key);
        assert_eq!(ack.status, Status::Failure);
        assert_eq!(ack.reason_code, code, "{ack:?}");
        let reason = ack.reason.unwrap().to_string();
        assert!(reason.contains(says), "`{reason}` should mention `{says}`");
    }
    // What is accepted afterwards is the first thing the subscriber and
    // the journal see.
    assert_eq!(
        publish(&mut raw, "blobs", b"kept", Some(b"k")).status,
        Status::Success
    );
    match subscriber.recv() {
        Some(Command::Deliver(d)) => assert_eq!(&d.payload[..], b"kept"),
        other => panic!("expected the accepted message, got {other:?}"),
    }
    for topic in ["orders", "blobs"] {
        let answer = sow(&mut raw, query(topic, 9));
        let expected: Vec<String> = if topic == "blobs" {
            vec!["kept".into()]
        } else {
            vec![]
        };
        assert_eq!(answer.payloads(), expected, "{topic}");
    }
    // A replay from the journal's start: the explicit key is not part of
    // the message, and nothing refused was journaled.
    let mut replay = Raw::logged_on(&broker.client, "replay", None);
    replay.send(&Command::Subscribe(Subscribe {
        command_id: Some(1),
        sub_id: 2,
        topic: Utf8::from("orders|blobs"),
        filter: None,
        options: None,
        bookmark: Some(Utf8::from("epoch")),
    }));
    assert!(matches!(replay.recv(), Some(Command::Ack(a)) if a.status == Status::Success));
    match replay.recv() {
        Some(Command::Deliver(d)) => assert_eq!(&d.payload[..], b"kept"),
        other => panic!("expected the one journaled message, got {other:?}"),
    }
}

#[test]
fn deletes_count_what_went_and_survive_restarts() {
    let mut broker = Broker::start_with(CONFIG);
    let mut raw = Raw::logged_on(&broker.client, "d", None);
    for id in 0..10 {
        publish(&mut raw, "orders", order(id, "IBM", id).as_bytes(), None);
    }
    let delete = |raw: &mut Raw,
                  command_id: u64,
                  filter: Option<&str>,
                  keys: Option<&[u64]>,
                  example: &[u8]| {
        raw.send(&Command::SowDelete(SowDelete {
            command_id,
            topic: Utf8::from("orders"),
            filter: filter.map(Utf8::from),
            sow_keys: keys.map(SubIds::from_ids),
            ack: AckSet::only(AckType::Processed).with(AckType::Persisted),
            payload: Bytes::copy_from_slice(example),
        }));
        let acks: Vec<Ack> = (0..2)
            .map(|_| match raw.recv() {
                Some(Command::Ack(ack)) => ack,
                other => panic!("expected delete acks, got {other:?}"),
            })
            .collect();
        acks
    };
    let acks = delete(&mut raw, 5, Some("/qty >= 7"), None, b"");
    assert!(
        acks.iter()
            .all(|a| a.status == Status::Success && a.records == Some(3)),
        "{acks:?}"
    );
    assert_eq!(acks[1].ack_type, AckType::Persisted);
    let acks = delete(&mut raw, 6, None, None, br#"{"id":0,"whatever":1}"#);
    assert_eq!(acks[0].records, Some(1));
    let key_of_1 = sow(&mut raw, {
        let mut q = query("orders", 1);
        q.filter = Some(Utf8::from("/id = 1"));
        q
    })
    .records[0]
        .sow_key
        .unwrap();
    let acks = delete(&mut raw, 7, None, Some(&[key_of_1, 12_345]), b"");
    assert_eq!(acks[0].records, Some(1));
    let acks = delete(&mut raw, 8, Some("/id = 2"), None, br#"{"id":2}"#);
    assert_eq!(
        acks[0].reason_code,
        ReasonCode::InvalidField,
        "two selectors"
    );
    let acks = delete(&mut raw, 9, Some("/id = 2"), None, b"");
    assert_eq!(acks[0].records, Some(1));

    let expect: Vec<u64> = vec![3, 4, 5, 6];
    let ids = |raw: &mut Raw| -> Vec<u64> {
        let mut q = query("orders", 2);
        q.order_by = Some(Utf8::from("/id"));
        sow(raw, q)
            .records
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
                v["id"].as_u64().unwrap()
            })
            .collect()
    };
    assert_eq!(ids(&mut raw), expect);
    drop(raw);
    broker.terminate();
    broker.restart();
    let mut raw = Raw::logged_on(&broker.client, "d2", None);
    assert_eq!(ids(&mut raw), expect, "after a clean restart");
    let ack = publish_persisted(&mut raw, "orders", order(42, "X", 1).as_bytes());
    assert_eq!(ack.status, Status::Success, "{ack:?}");
    drop(raw);
    broker.kill();
    broker.restart();
    let mut raw = Raw::logged_on(&broker.client, "d3", None);
    assert_eq!(ids(&mut raw), vec![3, 4, 5, 6, 42], "after SIGKILL");
}

#[test]
fn a_transient_pattern_topic_is_rebuilt_from_the_journal() {
    let mut broker = Broker::start_with(CONFIG);
    let mut raw = Raw::logged_on(&broker.client, "p", None);
    for (topic, sym, px) in [
        ("prices.eu", "SAP", 1),
        ("prices.us", "IBM", 2),
        ("prices.eu", "SAP", 3),
        ("prices.us", "MSFT", 4),
    ] {
        let body = format!(r#"{{"sym":"{sym}","px":{px}}}"#);
        let ack = publish_persisted(&mut raw, topic, body.as_bytes());
        assert_eq!(ack.status, Status::Success, "{ack:?}");
    }
    let mut all = query(r"prices\..*", 1);
    all.order_by = Some(Utf8::from("/px"));
    let before = sow(&mut raw, all.clone());
    assert_eq!(before.end.as_ref().unwrap().records, 3);
    let mut topics: Vec<String> = before.records.iter().map(|r| r.topic.to_string()).collect();
    topics.sort();
    assert_eq!(topics, ["prices.eu", "prices.us", "prices.us"]);
    drop(raw);
    broker.kill();
    broker.restart();
    let mut raw = Raw::logged_on(&broker.client, "p2", None);
    let after = sow(&mut raw, all);
    let mut a = after.payloads();
    let mut b = before.payloads();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

/// One publisher pours versioned updates over a set of keys (and topics)
/// while a client runs `sow_and_subscribe` in the middle of it. The
/// snapshot plus the stream must hold, for every key, one version from the
/// snapshot (if the key existed) and then every later version exactly once,
/// in order, up to the last.
fn snapshot_then_stream_is_exact(config: &str, topics: &[&str], query_topic: &str) {
    snapshot_then_stream_is_exact_with(config, topics, query_topic, 50, 0, None);
}

/// [`snapshot_then_stream_is_exact`] over `keys` keys whose messages carry
/// `pad` bytes of padding, the query asking for `batch_size`.
fn snapshot_then_stream_is_exact_with(
    config: &str,
    topics: &[&str],
    query_topic: &str,
    keys: u64,
    pad: usize,
    batch_size: Option<u32>,
) {
    #[allow(non_snake_case)]
    let KEYS: u64 = keys;
    // Every key exists by the time the query goes out (half way).
    #[allow(non_snake_case)]
    let UPDATES: u64 = (2 * keys).max(6_000);
    let pad = "p".repeat(pad);
    let broker = Broker::start_with(config);
    let client = broker.client.clone();
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    let (half_tx, half_rx) = std::sync::mpsc::channel();
    let (asked_tx, asked_rx) = std::sync::mpsc::channel::<()>();
    let publisher = {
        let topics = topics.clone();
        let pad = pad.clone();
        std::thread::spawn(move || {
            let mut raw = Raw::logged_on(&client, "pub", None);
            for n in 0..UPDATES {
                let key = n % KEYS;
                let topic = &topics[(key as usize) % topics.len()];
                let body = format!(r#"{{"id":{key},"sym":"k{key}","v":{n},"pad":"{pad}"}}"#);
                raw.send(&publish_frame(topic, body.as_bytes(), None, AckSet::NONE));
                if n == UPDATES / 2 {
                    // Half published: the query goes out now, and the rest
                    // is published while it is in flight.
                    let _ = half_tx.send(());
                    let _ = asked_rx.recv();
                }
            }
            raw.send(&Command::Flush(Flush { command_id: 9 }));
            match raw.recv() {
                Some(Command::Ack(ack)) => assert_eq!(ack.command_id, Some(9)),
                other => panic!("flush: {other:?}"),
            }
        })
    };
    half_rx.recv().unwrap();
    let mut raw = Raw::logged_on(&broker.client, "sas", None);
    let mut sas = query(query_topic, 1);
    sas.batch_size = batch_size;
    raw.send(&Command::SowAndSubscribe(sas));
    asked_tx.send(()).unwrap();
    match raw.recv() {
        Some(Command::Ack(ack)) => assert_eq!(ack.status, Status::Success, "{ack:?}"),
        other => panic!("expected the ack, got {other:?}"),
    }
    assert!(matches!(raw.recv(), Some(Command::GroupBegin(_))));
    let last_of = |key: u64| UPDATES - KEYS + key;
    let mut seen: BTreeMap<u64, Vec<(bool, u64)>> = BTreeMap::new();
    let mut snapshot_ended = false;
    let mut finished: HashMap<u64, bool> = HashMap::new();
    let mut batches = 0;
    let mut pending: std::collections::VecDeque<Deliver> = std::collections::VecDeque::new();
    while finished.len() < KEYS as usize || !snapshot_ended {
        let next = match pending.pop_front() {
            Some(record) => Some(Command::Deliver(record)),
            None => raw.recv(),
        };
        match next {
            Some(Command::SowBatch(batch)) => {
                assert!(!snapshot_ended, "a sow_batch after group_end");
                assert!(
                    batch.records <= u64::from(batch_size.unwrap_or(1)),
                    "a batch of {} records, more than batch_size {batch_size:?}",
                    batch.records
                );
                batches += 1;
                pending.extend(batch_records(batch));
            }
            Some(Command::Deliver(d)) => {
                let v: serde_json::Value = serde_json::from_slice(&d.payload).unwrap();
                let (key, version) = (v["id"].as_u64().unwrap(), v["v"].as_u64().unwrap());
                let record = d.sow_key.is_some();
                assert!(!(record && snapshot_ended), "a record after group_end");
                seen.entry(key).or_default().push((record, version));
                if version == last_of(key) {
                    finished.insert(key, true);
                }
            }
            Some(Command::GroupEnd(end)) => {
                assert_eq!(end.status, Status::Success);
                snapshot_ended = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    publisher.join().unwrap();
    assert_eq!(
        batches > 0,
        batch_size.is_some_and(|n| n > 1),
        "sow_batch frames exactly when batch_size is above 1"
    );
    let mut from_snapshot = 0;
    for key in 0..KEYS {
        let versions = &seen[&key];
        let (first_is_record, first) = versions[0];
        assert_eq!(
            versions.iter().filter(|(record, _)| *record).count(),
            usize::from(first_is_record),
            "key {key}: at most one record, and it comes first: {versions:?}"
        );
        from_snapshot += usize::from(first_is_record);
        // Versions of a key are key, key + KEYS, key + 2·KEYS, …
        let start = if first_is_record { first } else { key };
        let expected: Vec<u64> = (0..)
            .map(|i| start + i * KEYS)
            .take_while(|v| *v <= last_of(key))
            .collect();
        let got: Vec<u64> = versions.iter().map(|(_, v)| *v).collect();
        if first_is_record {
            assert_eq!(
                got, expected,
                "key {key}: snapshot then every later version once"
            );
        } else {
            // Not in the snapshot: the key did not exist yet, so the stream
            // starts at its first version.
            assert_eq!(got, expected, "key {key}: every version once");
        }
    }
    assert!(
        from_snapshot > 0,
        "the query ran after half the updates: the snapshot holds records"
    );
}

#[test]
fn sow_and_subscribe_sees_every_update_once_under_a_concurrent_publisher() {
    snapshot_then_stream_is_exact(CONFIG, &["orders"], "orders");
}

/// The same with the processor inline, where an answer larger than a piece
/// (128 KiB) is sent over several loop iterations: 1,000 keys of ~1 KiB
/// (about 8 pieces), with updates pouring in while they go out.
#[test]
fn a_sow_and_subscribe_answered_in_pieces_sees_every_update_once() {
    let config =
        format!("[threads]\npin = false\nio = 1\nprocessors = 1\ninline = \"always\"\n{CONFIG}");
    snapshot_then_stream_is_exact_with(&config, &["orders"], "orders", 1_000, 1_000, None);
}

#[test]
fn a_batched_sow_and_subscribe_sees_every_update_once_under_a_concurrent_publisher() {
    snapshot_then_stream_is_exact_with(CONFIG, &["orders"], "orders", 500, 0, Some(10));
}

/// Batches in an answer sent in pieces (inline processor): each piece ends
/// with a whole frame, and the hand-over to live messages stays exact.
#[test]
fn a_batched_sow_and_subscribe_answered_in_pieces_sees_every_update_once() {
    let config =
        format!("[threads]\npin = false\nio = 1\nprocessors = 1\ninline = \"always\"\n{CONFIG}");
    snapshot_then_stream_is_exact_with(&config, &["orders"], "orders", 1_000, 1_000, Some(100));
}

/// A clean shutdown does not wait for a client that stopped reading an
/// answer (the stall timer, 30 s by default, would): the processor ends
/// the answer as the inline one does, and the broker exits.
#[test]
fn a_clean_shutdown_ends_an_answer_its_client_stopped_reading() {
    let (mut broker, _publisher, _stalled) = broker_with_a_stalled_answer(
        "[limits]\nclient_outbound_bytes_max = \"16 MiB\"\n[shutdown]\ndrain_timeout_ms = 500\n",
        8_000,
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(broker.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = broker.wait_exit(std::time::Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "the broker exits cleanly within 10 s: {status:?}\n{}",
        broker.logs()
    );
}

/// With processor threads, an answer larger than the client's outbound
/// limit (3 MiB here, ~4 MB of records) goes in pieces, each queued once
/// the client has room for it, while updates pour in: the hand-over to
/// live messages stays exact, with `deliver` records and with `sow_batch`
/// frames. (The publishes held back behind the answer are bounded by
/// `io_inflight_bytes_max`, so that their burst of deliveries after it
/// stays under the limit.)
#[test]
fn a_sow_and_subscribe_streamed_by_a_processor_thread_sees_every_update_once() {
    let config = format!(
        "[threads]\npin = false\nprocessors = 2\ninline = \"never\"\n[limits]\nframe_bytes_max = \"1 MiB\"\nclient_outbound_bytes_max = \"3 MiB\"\nio_inflight_bytes_max = \"1 MiB\"\n{CONFIG}"
    );
    for batch_size in [None, Some(100)] {
        snapshot_then_stream_is_exact_with(
            &config,
            &["orders"],
            "orders",
            4_000,
            1_000,
            batch_size,
        );
    }
}

#[test]
fn a_pattern_sow_and_subscribe_across_processors_sees_every_update_once() {
    let config = format!("[threads]\npin = false\nprocessors = 3\ninline = \"never\"\n{CONFIG}");
    snapshot_then_stream_is_exact(
        &config,
        &["prices.a", "prices.b", "prices.c", "prices.d"],
        r"prices\..*",
    );
}

/// The first topic `<prefix><i>` that a broker of `processors` processors
/// gives to another processor than `orders` (any, with one processor).
fn topic_beside_orders(prefix: &str, processors: usize) -> String {
    let orders = processor_for(b"orders", processors);
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|t| processors == 1 || processor_for(t.as_bytes(), processors) != orders)
        .unwrap()
}

/// Reads query `sub_id`'s answer after its `group_begin`: only its records
/// (`deliver` frames naming it alone), then a successful `group_end`
/// counting `records`, as many as came.
fn only_its_records_until_group_end(raw: &mut Raw, sub_id: u64, records: u64) {
    let mut got = 0;
    loop {
        match raw.recv() {
            Some(Command::Deliver(d)) => {
                let subs: Vec<u64> = d.sub_ids.iter().collect();
                assert_eq!(
                    subs,
                    [sub_id],
                    "after {got} records of query {sub_id}, before its group_end: a delivery that is not the query's"
                );
                got += 1;
            }
            Some(Command::GroupEnd(end)) => {
                assert_eq!(
                    (end.sub_id, end.status),
                    (sub_id, Status::Success),
                    "{end:?}"
                );
                assert_eq!(end.records, records);
                break;
            }
            other => {
                panic!("after {got} records of query {sub_id}, before its group_end: {other:?}")
            }
        }
    }
    assert_eq!(got, records);
}

/// AMPS: "other messages for the client wait until the query finishes".
/// With processor threads, while one processor streams a client an answer
/// (4 MB, in pieces queued as the client reads), another processor
/// delivers to the same client (its subscription to a topic that processor
/// owns): nothing but the query's records comes between `group_begin` and
/// `group_end`, and every one of those deliveries follows `group_end`, in
/// order.
#[test]
fn deliveries_from_another_processor_wait_for_a_streamed_answer_to_end() {
    const RECORDS: u64 = 4_000;
    const TICKS: u64 = 50;
    let ticks = topic_beside_orders("ticks", 2);
    let broker = Broker::start_with(&format!(
        "[threads]\npin = false\nio = 1\nprocessors = 2\ninline = \"never\"\n{CONFIG}"
    ));
    let mut publisher = Raw::logged_on(&broker.client, "pub", None);
    publish_orders(&mut publisher, RECORDS, 1000);
    let mut client = Raw::logged_on(&broker.client, "reader", None);
    client.send(&Command::Subscribe(Subscribe {
        command_id: Some(2),
        sub_id: 9,
        topic: Utf8::from(ticks.as_str()),
        filter: None,
        options: None,
        bookmark: None,
    }));
    assert!(matches!(client.recv(), Some(Command::Ack(a)) if a.status == Status::Success));
    client.send(&Command::Sow(query("orders", 1)));
    assert!(matches!(client.recv(), Some(Command::Ack(a)) if a.status == Status::Success));
    assert!(matches!(client.recv(), Some(Command::GroupBegin(_))));
    // The client reads nothing more until every tick was processed (and
    // delivered) by the other processor: the answer is still streaming.
    for n in 0..TICKS {
        let ack = publish(
            &mut publisher,
            &ticks,
            format!(r#"{{"n":{n}}}"#).as_bytes(),
            None,
        );
        assert_eq!(ack.status, Status::Success, "{ack:?}");
    }
    only_its_records_until_group_end(&mut client, 1, RECORDS);
    for n in 0..TICKS {
        match client.recv() {
            Some(Command::Deliver(d)) => {
                let subs: Vec<u64> = d.sub_ids.iter().collect();
                assert_eq!(subs, [9]);
                assert_eq!(&d.payload[..], format!(r#"{{"n":{n}}}"#).as_bytes());
            }
            other => panic!("tick {n} after group_end: got {other:?}"),
        }
    }
}

/// Two large answers asked for back to back, from topics on two
/// processors: the second waits whole behind the first (its ack and
/// `group_begin` included), and neither processor waits forever for the
/// other.
#[test]
fn two_streamed_answers_from_two_processors_follow_each_other_whole() {
    const RECORDS: u64 = 2_000;
    let prices = topic_beside_orders("prices.p", 2);
    let broker = Broker::start_with(&format!(
        "[threads]\npin = false\nio = 1\nprocessors = 2\ninline = \"never\"\n{CONFIG}"
    ));
    let mut publisher = Raw::logged_on(&broker.client, "pub", None);
    publish_orders(&mut publisher, RECORDS, 1000);
    let pad = "y".repeat(1000);
    for sym in 0..RECORDS {
        publisher.send(&publish_frame(
            &prices,
            format!(r#"{{"sym":{sym},"pad":"{pad}"}}"#).as_bytes(),
            None,
            AckSet::NONE,
        ));
    }
    let ack = publish(&mut publisher, &prices, br#"{"sym":"last"}"#, None);
    assert_eq!(ack.status, Status::Success, "{ack:?}");
    let mut client = Raw::logged_on(&broker.client, "reader", None);
    client.send(&Command::Sow(query("orders", 1)));
    client.send(&Command::Sow(query(&prices, 2)));
    for (sub_id, records) in [(1, RECORDS), (2, RECORDS + 1)] {
        match client.recv() {
            Some(Command::Ack(a)) => {
                assert_eq!(
                    (a.status, a.sub_id),
                    (Status::Success, Some(sub_id)),
                    "{a:?}"
                );
            }
            other => panic!("the ack of query {sub_id}: got {other:?}"),
        }
        assert!(
            matches!(client.recv(), Some(Command::GroupBegin(b)) if b.sub_id == sub_id),
            "query {sub_id}'s group_begin"
        );
        only_its_records_until_group_end(&mut client, sub_id, records);
    }
}

/// SIGKILL while a publisher waits for `persisted` acks: after the restart
/// the SOW holds, for every key, the last value acknowledged persisted or a
/// later one.
#[test]
fn after_sigkill_the_sow_holds_every_persisted_value() {
    const KEYS: u64 = 200;
    let mut broker = Broker::start_with(CONFIG);
    let mut persisted: HashMap<u64, u64> = HashMap::new();
    let mut raw = Raw::logged_on(&broker.client, "kill", None);
    let window = 64u64;
    let mut sent = 0u64;
    let mut acked = 0u64;
    // Send in windows; the broker is killed after enough acks, with a
    // window still in flight.
    while acked < 3_000 {
        while sent < acked + window {
            let key = sent % KEYS;
            let body = format!(r#"{{"id":{key},"v":{sent}}}"#);
            raw.send(&publish_frame(
                "orders",
                body.as_bytes(),
                Some(sent),
                AckSet::only(AckType::Persisted),
            ));
            sent += 1;
        }
        match raw.recv() {
            Some(Command::Ack(ack)) => {
                assert_eq!(ack.status, Status::Success, "{ack:?}");
                let n = ack.command_id.unwrap();
                let slot = persisted.entry(n % KEYS).or_insert(n);
                *slot = (*slot).max(n);
                acked += 1;
            }
            other => panic!("expected a persisted ack, got {other:?}"),
        }
    }
    broker.kill();
    broker.restart();
    let mut raw = Raw::logged_on(&broker.client, "after", None);
    let state: HashMap<u64, u64> = sow(&mut raw, query("orders", 1))
        .records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            (v["id"].as_u64().unwrap(), v["v"].as_u64().unwrap())
        })
        .collect();
    for (key, version) in &persisted {
        let now = state.get(key).copied();
        assert!(
            now.is_some_and(|v| v >= *version),
            "key {key}: persisted version {version}, SOW after restart has {now:?}; the broker's log:\n{}",
            broker.logs()
        );
    }
    let logs = broker.logs();
    assert!(
        logs.contains("SOW store reloaded"),
        "the durable store reloaded from its checkpoint; the broker's log:\n{logs}"
    );
}

/// A broker with one processor (`inline` as given) and a 16 MiB client
/// outbound limit, holding `records` orders of ~1 KiB, and a connection
/// to it that has seen them all processed.
fn broker_with_big_orders(inline: &str, records: u64) -> (Broker, Raw) {
    let broker = Broker::start_with(&format!(
        "[threads]\npin = false\nio = 1\nprocessors = 1\ninline = \"{inline}\"\n[limits]\nclient_outbound_bytes_max = \"16 MiB\"\n{CONFIG}"
    ));
    let mut raw = Raw::logged_on(&broker.client, "big", None);
    publish_orders(&mut raw, records, 1000);
    (broker, raw)
}

/// Publishes orders `0..records` padded with `pad` bytes, and waits until
/// the broker has processed them all.
fn publish_orders(raw: &mut Raw, records: u64, pad: usize) {
    let pad = "x".repeat(pad);
    for id in 0..records {
        let body = format!(r#"{{"id":{id},"pad":"{pad}"}}"#);
        raw.send(&publish_frame(
            "orders",
            body.as_bytes(),
            None,
            AckSet::NONE,
        ));
    }
    raw.send(&Command::Flush(Flush { command_id: 3 }));
    assert!(matches!(raw.recv(), Some(Command::Ack(a)) if a.command_id == Some(3)));
}

/// With processor threads (`threads.inline = "never"`) an answer is sent
/// in pieces too, each queued once the client has room for it: one larger
/// than the client's outbound limit arrives whole, in order, equal record
/// for record (key and message) to the inline broker's answer, in
/// `deliver` frames and in `sow_batch` frames alike; the connection then
/// carries on.
#[test]
fn a_result_larger_than_the_client_limit_is_streamed_whole_with_processor_threads() {
    const RECORDS: u64 = 18_000;
    let ordered = |sub_id: u64, batch_size: Option<u32>| {
        let mut q = query("orders", sub_id);
        q.order_by = Some(Utf8::from("/id"));
        q.batch_size = batch_size;
        q
    };
    // Bookmarks and timestamps differ between two brokers: keys and
    // messages must not.
    let keyed = |answer: &Answer| -> Vec<(Option<u64>, Bytes)> {
        answer
            .records
            .iter()
            .map(|d| (d.sow_key, d.payload.clone()))
            .collect()
    };
    let inline = {
        let (_broker, mut raw) = broker_with_big_orders("always", RECORDS);
        let answer = sow(&mut raw, ordered(1, None));
        assert_eq!(answer.end.as_ref().unwrap().status, Status::Success);
        keyed(&answer)
    };
    assert_eq!(inline.len() as u64, RECORDS);
    let (_broker, mut raw) = broker_with_big_orders("never", RECORDS);
    let all = sow(&mut raw, ordered(1, None));
    let end = all.end.as_ref().unwrap();
    assert_eq!(end.status, Status::Success, "{end:?}");
    assert_eq!(end.records, RECORDS);
    let bytes: usize = all.records.iter().map(|r| r.payload.len()).sum();
    assert!(
        bytes > 16 << 20,
        "the answer ({bytes} bytes) is over the limit"
    );
    assert!(keyed(&all) == inline, "the same answer as inline");
    let batched = sow(&mut raw, ordered(2, Some(100)));
    let end = batched.end.as_ref().unwrap();
    assert_eq!(end.status, Status::Success, "{end:?}");
    assert_eq!(end.records, RECORDS);
    assert!(
        batched
            .frames
            .iter()
            .all(|f| f.is_some_and(|n| (1..=100).contains(&n))),
        "sow_batch frames of 1 to 100 records only"
    );
    assert!(
        batched.values() == all.values(),
        "batches carry the records one deliver each would"
    );
    let mut page = ordered(3, None);
    page.top_n = Some(200);
    let first = sow(&mut raw, page);
    assert_eq!(first.records.len(), 200, "the connection carries on");
    assert_eq!(first.end.unwrap().status, Status::Success);
}

/// A client that asks for a large answer and stops reading it stalls only
/// the processor that owns the topic, and only until the slow-client rules
/// close its connection: that ends the answer, and the same processor then
/// serves the commands another client sent meanwhile (a subscribe and a
/// publish on the very topic).
/// A broker with processor threads (`extra` added to its configuration)
/// holding ~64 MiB of orders of 8 KiB: far more than the client's limit
/// (16 MiB) and what the kernel's socket buffers can hold. Returns it, a
/// publisher connection, and a connection that has asked for them all and
/// read the start of the answer (from there it reads nothing).
fn broker_with_a_stalled_answer(extra: &str, records: u64) -> (Broker, Raw, Raw) {
    let broker = Broker::start_with(&format!(
        "[threads]\npin = false\nio = 1\nprocessors = 1\ninline = \"never\"\n{extra}{CONFIG}"
    ));
    let mut publisher = Raw::logged_on(&broker.client, "pub", None);
    publish_orders(&mut publisher, records, 8 * 1024);
    let mut stalled = Raw::logged_on(&broker.client, "stalled", None);
    stalled.send(&Command::Sow(query("orders", 1)));
    assert!(matches!(stalled.recv(), Some(Command::Ack(a)) if a.status == Status::Success));
    assert!(matches!(stalled.recv(), Some(Command::GroupBegin(_))));
    assert!(
        matches!(stalled.recv(), Some(Command::Deliver(_))),
        "the answer is streaming"
    );
    (broker, publisher, stalled)
}

/// A client that asks for a large answer and stops reading it stalls only
/// the processor that owns the topic, and only until the slow-client rules
/// close its connection: that ends the answer, and the same processor then
/// serves the commands another client sent meanwhile (a subscribe and a
/// publish on the very topic).
#[test]
fn a_client_that_stops_reading_an_answer_is_disconnected_and_the_processor_carries_on() {
    const RECORDS: u64 = 8_000;
    let (broker, mut publisher, mut stalled) = broker_with_a_stalled_answer(
        "[limits]\nclient_outbound_bytes_max = \"16 MiB\"\nclient_outbound_stall_ms = 500\n",
        RECORDS,
    );
    // From here on `stalled` reads nothing until the broker has closed it.
    // Another client subscribes to the topic and publishes to it: the
    // processor that owns it runs these once the stalled answer is over.
    let mut other = Raw::logged_on(&broker.client, "other", None);
    other.send(&Command::Subscribe(Subscribe {
        command_id: Some(2),
        sub_id: 7,
        topic: Utf8::from("orders"),
        filter: None,
        options: None,
        bookmark: None,
    }));
    match other.recv() {
        Some(Command::Ack(ack)) => assert_eq!(ack.status, Status::Success, "{ack:?}"),
        other => panic!("expected the subscribe's ack, got {other:?}"),
    }
    let ack = publish(&mut publisher, "orders", br#"{"id":1,"after":true}"#, None);
    assert_eq!(ack.status, Status::Success, "{ack:?}");
    match other.recv() {
        Some(Command::Deliver(d)) => assert_eq!(&d.payload[..], br#"{"id":1,"after":true}"#),
        other => panic!("expected the delivery, got {other:?}"),
    }
    assert!(
        broker.wait_for_log("slow client", std::time::Duration::from_secs(10)),
        "the broker logs why it disconnected the stalled client:\n{}",
        broker.logs()
    );
    // The stalled socket holds what the kernel buffered, then the close:
    // part of the answer, never its end.
    let frames = stalled.drain_to_eof();
    let delivered = frames
        .iter()
        .filter(|f| matches!(f, Command::Deliver(_)))
        .count() as u64;
    assert!(delivered < RECORDS, "{delivered} records reached it");
    assert!(
        !frames.iter().any(|f| matches!(f, Command::GroupEnd(_))),
        "no group_end for an answer cut short"
    );
    // The processor serves new answers too.
    let mut page = query("orders", 2);
    page.order_by = Some(Utf8::from("/id"));
    page.top_n = Some(3);
    let answer = sow(&mut other, page);
    assert_eq!(answer.records.len(), 3);
    assert_eq!(answer.end.unwrap().status, Status::Success);
}

/// A client that stops reading a SOW answer holds up what sends it: on
/// processor threads the processor, and every command queued for it, which
/// once they fill `io_inflight_bytes_max` stop the I/O thread reading any
/// socket; inline the I/O thread itself. `limits.sow_answer_stall_ms` (here
/// 300 ms, against a `client_outbound_stall_ms` of 60 s) disconnects that
/// client, and a publish to a topic of another processor is acked again.
#[test]
fn a_client_holding_up_an_answer_is_disconnected_after_sow_answer_stall_ms() {
    for inline in ["never", "always"] {
        let processors = if inline == "never" { 2 } else { 1 };
        let ticks = topic_beside_orders("ticks", processors);
        let broker = Broker::start_with(&format!(
            "[threads]\npin = false\nio = 1\nprocessors = {processors}\ninline = \"{inline}\"\n[limits]\nframe_bytes_max = \"1 MiB\"\nclient_outbound_bytes_max = \"16 MiB\"\nclient_outbound_stall_ms = 60000\nsow_answer_stall_ms = 300\nio_inflight_bytes_max = \"1 MiB\"\n{CONFIG}"
        ));
        let mut publisher = Raw::logged_on(&broker.client, "pub", None);
        publish_orders(&mut publisher, 8_000, 8 * 1024);
        let mut other = Raw::logged_on(&broker.client, "other", None);
        let mut stalled = Raw::logged_on(&broker.client, "stalled", None);
        stalled.send(&Command::Sow(query("orders", 1)));
        assert!(matches!(stalled.recv(), Some(Command::Ack(a)) if a.status == Status::Success));
        assert!(matches!(stalled.recv(), Some(Command::GroupBegin(_))));
        assert!(
            matches!(stalled.recv(), Some(Command::Deliver(_))),
            "the answer is streaming"
        );
        // From here on `stalled` reads nothing until the broker closed it.
        if inline == "never" {
            // Commands for the held-up processor, past what the I/O thread
            // may have in flight.
            let pad = "z".repeat(1000);
            for id in 0..3_000u64 {
                publisher.send(&publish_frame(
                    "orders",
                    format!(r#"{{"id":{id},"pad":"{pad}"}}"#).as_bytes(),
                    None,
                    AckSet::NONE,
                ));
            }
        }
        let ack = publish(&mut other, &ticks, br#"{"n":1}"#, None);
        assert_eq!(ack.status, Status::Success, "{inline}: {ack:?}");
        assert!(
            broker.wait_for_log(
                "limits.sow_answer_stall_ms",
                std::time::Duration::from_secs(10)
            ),
            "{inline}: the broker logs why it disconnected the client:\n{}",
            broker.logs()
        );
        let frames = stalled.drain_to_eof();
        assert!(
            !frames.iter().any(|f| matches!(f, Command::GroupEnd(_))),
            "{inline}: no group_end for an answer cut short"
        );
    }
}

/// With the processor inline, an answer is sent in pieces as the client
/// reads them: one larger than the client's outbound limit arrives whole
/// (every record once, `group_end` counting them), and the connection then
/// carries on.
#[test]
fn a_result_larger_than_the_client_limit_is_streamed_whole_when_inline() {
    const RECORDS: u64 = 18_000;
    let (_broker, mut raw) = broker_with_big_orders("always", RECORDS);
    let all = sow(&mut raw, query("orders", 1));
    let end = all.end.unwrap();
    assert_eq!(end.status, Status::Success, "{end:?}");
    assert_eq!(end.records, RECORDS);
    let bytes: usize = all.records.iter().map(|r| r.payload.len()).sum();
    assert!(
        bytes > 16 << 20,
        "the answer ({bytes} bytes) is over the limit"
    );
    let mut ids: Vec<u64> = all
        .records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            v["id"].as_u64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..RECORDS).collect::<Vec<_>>(), "every record once");
    let mut page = query("orders", 2);
    page.order_by = Some(Utf8::from("/id"));
    page.top_n = Some(200);
    let first = sow(&mut raw, page);
    assert_eq!(first.records.len(), 200, "the connection carries on");
    assert_eq!(first.end.unwrap().status, Status::Success);
}

/// The same inline broker as above, the answer asked for in batches of 100:
/// every piece of 512 KiB still ends on a whole frame, the answer (over the
/// client's outbound limit) arrives whole, and the batches carry exactly
/// the records one `deliver` each would have.
#[test]
fn a_batched_result_larger_than_the_client_limit_is_streamed_whole_when_inline() {
    const RECORDS: u64 = 18_000;
    let (_broker, mut raw) = broker_with_big_orders("always", RECORDS);
    let mut batched = query("orders", 1);
    batched.order_by = Some(Utf8::from("/id"));
    batched.batch_size = Some(100);
    let all = sow(&mut raw, batched);
    let end = all.end.as_ref().unwrap();
    assert_eq!(end.status, Status::Success, "{end:?}");
    assert_eq!(end.records, RECORDS);
    assert!(
        all.frames
            .iter()
            .all(|f| f.is_some_and(|n| (1..=100).contains(&n))),
        "sow_batch frames of 1 to 100 records only"
    );
    assert!(
        all.frames.len() < RECORDS as usize / 50,
        "most batches are full: {} frames",
        all.frames.len()
    );
    let mut plain = query("orders", 2);
    plain.order_by = Some(Utf8::from("/id"));
    let unbatched = sow(&mut raw, plain);
    assert_eq!(unbatched.records.len() as u64, RECORDS);
    assert!(
        all.values() == unbatched.values(),
        "record for record: topic, key, bookmark, timestamp, payload"
    );
}

/// Batched answers equal unbatched ones record for record, with processor
/// threads and inline, over one topic and a pattern over several (a batch
/// never spans topics), whatever the batch size; `batch_size` 1 is one
/// `deliver` per record, as without it.
#[test]
fn batched_answers_equal_unbatched_ones_record_for_record() {
    for threads in [
        "[threads]\npin = false\nprocessors = 3\ninline = \"never\"\n",
        "[threads]\npin = false\nio = 1\nprocessors = 1\ninline = \"always\"\n",
    ] {
        let broker = Broker::start_with(&format!("{threads}{CONFIG}"));
        let mut raw = Raw::logged_on(&broker.client, "batches", None);
        for id in 0..257u64 {
            // Sizes from a few bytes to ~3 KiB, so that records straddle
            // whatever boundaries the broker's buffers have.
            let pad = "z".repeat((id as usize * 37) % 3000);
            let body = format!(r#"{{"id":{id},"sym":"s{id}","pad":"{pad}"}}"#);
            publish(&mut raw, "orders", body.as_bytes(), None);
            let topic = ["prices.a", "prices.b", "prices.c"][id as usize % 3];
            publish(&mut raw, topic, body.as_bytes(), None);
        }
        // One replaced record: its latest bookmark and timestamp count.
        publish(&mut raw, "orders", br#"{"id":5,"sym":"again"}"#, None);
        let mut sub_id = 0;
        let mut ask = |topic: &str, batch_size: Option<u32>| {
            sub_id += 1;
            let mut q = query(topic, sub_id);
            q.order_by = Some(Utf8::from("/id"));
            q.batch_size = batch_size;
            sow(&mut raw, q)
        };
        for topic in ["orders", r"prices\..*"] {
            let plain = ask(topic, None);
            assert_eq!(plain.end.as_ref().unwrap().status, Status::Success);
            assert!(plain.frames.iter().all(Option::is_none));
            let count = plain.records.len();
            assert_eq!(count, 257);
            let one = ask(topic, Some(1));
            assert!(
                one.frames.iter().all(Option::is_none),
                "batch_size 1 is deliver frames"
            );
            assert!(one.values_by_topic() == plain.values_by_topic());
            for size in [2, 10, 100, 10_000] {
                let batched = ask(topic, Some(size));
                let end = batched.end.as_ref().unwrap();
                assert_eq!(end.status, Status::Success, "{end:?}");
                assert_eq!(end.records, count as u64);
                assert!(
                    batched
                        .frames
                        .iter()
                        .all(|f| f.is_some_and(|n| (1..=u64::from(size)).contains(&n))),
                    "batch_size {size}: {:?}",
                    batched.frames
                );
                assert_eq!(batched.frames.iter().flatten().sum::<u64>(), count as u64);
                assert!(
                    batched.values_by_topic() == plain.values_by_topic(),
                    "batch_size {size} on {topic}: record for record"
                );
            }
        }
    }
}

/// A `batch_size` of 0, or above the documented maximum (10,000), fails
/// the query with `invalid_field`, the reason naming the limit; nothing
/// follows, no subscription is registered, and the connection carries on.
#[test]
fn a_batch_size_of_zero_or_above_the_maximum_is_refused_naming_the_limit() {
    let broker = Broker::start_with(CONFIG);
    let mut raw = Raw::logged_on(&broker.client, "limits", None);
    publish(&mut raw, "orders", &order(1, "IBM", 5).into_bytes(), None);
    for (sub_id, size) in [(1, 0), (2, 10_001), (3, u32::MAX)] {
        let mut q = query("orders", sub_id);
        q.batch_size = Some(size);
        let refused = sow(&mut raw, q.clone());
        assert_eq!(refused.ack.status, Status::Failure);
        assert_eq!(refused.ack.reason_code, ReasonCode::InvalidField);
        let reason = refused.ack.reason.unwrap().to_string();
        assert!(
            reason.contains("batch_size") && reason.contains("10000"),
            "the reason names the field and the limit: {reason}"
        );
        raw.send(&Command::SowAndSubscribe(q));
        match raw.recv() {
            Some(Command::Ack(ack)) => {
                assert_eq!(ack.status, Status::Failure);
                assert_eq!(ack.reason_code, ReasonCode::InvalidField);
                assert!(ack.reason.unwrap().as_str().contains("10000"));
            }
            other => panic!("expected the refusal, got {other:?}"),
        }
    }
    // The same sub ids are free (no subscription was registered) and the
    // largest batch_size allowed works.
    let mut q = query("orders", 1);
    q.batch_size = Some(10_000);
    let answer = sow(&mut raw, q);
    assert_eq!(answer.ack.status, Status::Success);
    assert_eq!(answer.frames, [Some(1)]);
    assert_eq!(answer.payloads(), [order(1, "IBM", 5)]);
}
