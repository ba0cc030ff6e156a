//! Table tests: refusals, configuration errors, damaged files, queries.

use std::collections::BTreeMap;
use std::sync::Arc;

use statecast_filter::{Filter, Limits};
use statecast_journal::sim::SimStorage;
use statecast_journal::storage::Storage;
use statecast_sow::format::slab_name;
use statecast_sow::{
    ConfigError, Durability, KeyError, OrderBy, Plan, Query, RebuildReason, Recovery, SowError,
    SowKey, SowStore, SowTopicConfig, TopicSelector,
};

use crate::support::{Rec, TEST_SLAB, TOPIC, key, open, payload, spec};

fn filter(text: &str) -> Filter {
    Filter::parse(text, &Limits::default()).expect("filter")
}

fn rec(price: i64, region: u8, bookmark: u64) -> Rec {
    Rec {
        price,
        region,
        pad: 10,
        bookmark,
    }
}

#[test]
fn config_errors_name_the_setting_and_the_allowed_values() {
    let base = SowTopicConfig::new("orders", &["/id"]);
    let cases: Vec<(SowTopicConfig, &str)> = vec![
        (
            SowTopicConfig {
                slab_size: 4096,
                ..base.clone()
            },
            "`slab_size` = 4096 bytes is not allowed; allowed: 1048576 (1 MiB) to 1073741824 (1 GiB) bytes",
        ),
        (
            SowTopicConfig {
                slab_size: (1 << 20) + 1,
                ..base.clone()
            },
            "a multiple of 4096",
        ),
        (
            SowTopicConfig {
                key: vec!["id".into()],
                ..base.clone()
            },
            "`key` entry `id` is not a field path",
        ),
        (
            SowTopicConfig {
                key: vec!["/a + 1".into()],
                ..base.clone()
            },
            "it is an expression, not a single path",
        ),
        (
            SowTopicConfig {
                key: vec!["/id".into(), "/id".into()],
                ..base.clone()
            },
            "`key` lists `/id` twice",
        ),
        (
            SowTopicConfig {
                hash_indexes: vec!["region".into()],
                ..base.clone()
            },
            "`hash_indexes` entry `region`",
        ),
        (
            SowTopicConfig {
                topic: TopicSelector::Pattern("orders(".into()),
                ..base.clone()
            },
            "not a valid regular expression",
        ),
        (
            SowTopicConfig {
                compact_below: 1.5,
                ..base.clone()
            },
            "allowed: 0.05 to 0.95",
        ),
    ];
    for (config, expected) in cases {
        let error = config.validate().expect_err("must be refused");
        assert!(
            error.to_string().contains(expected),
            "{error} does not contain {expected}"
        );
    }
    assert_eq!(
        SowTopicConfig {
            topic: TopicSelector::Name(String::new()),
            ..base.clone()
        }
        .validate()
        .expect_err("empty"),
        ConfigError::EmptyTopic
    );
    let pattern = SowTopicConfig {
        topic: TopicSelector::Pattern("orders\\..*".into()),
        ..base
    }
    .validate()
    .expect("valid");
    assert!(pattern.matches("orders.eu"));
    assert!(!pattern.matches("xorders.eu"));
}

#[test]
fn oversize_missing_key_and_non_json_are_refused_and_nothing_is_stored() {
    for durability in [Durability::Durable, Durability::Transient] {
        let disk = SimStorage::new();
        let spec = spec(durability, &["/region"]);
        let (mut store, _) = open(&spec, &disk);
        let limit = store.max_payload();
        assert_eq!(limit, TEST_SLAB as usize - 104);
        let big = Rec {
            pad: limit,
            ..rec(1, 1, 1)
        };
        let error = store.upsert(&payload(1, &big), 1, 0).expect_err("oversize");
        let text = error.to_string();
        assert!(matches!(error, SowError::Oversize { .. }), "{text}");
        assert!(
            text.contains(&format!("larger than this SOW topic holds ({limit} bytes")),
            "{text}"
        );
        assert!(text.contains("raise `slab_size`"), "{text}");
        // Exactly the limit fits.
        let fits = vec![b' '; limit - 8];
        let mut exact = br#"{"id":7}"#.to_vec();
        exact.extend_from_slice(&fits);
        assert_eq!(exact.len(), limit);
        store
            .upsert(&exact, 2, 0)
            .expect("a message of exactly the limit fits");

        let cases: [(&[u8], &str); 5] = [
            (br#"{"other":1}"#, "no value at key field `/id`"),
            (br#"{"id":null}"#, "no value at key field `/id`"),
            (br#"{"id":""}"#, "no value at key field `/id`"),
            (b"not json", "not valid JSON"),
            (br#"{"id":"#, "not valid JSON"),
        ];
        for (bad, expected) in cases {
            let error = store.upsert(bad, 3, 0).expect_err("refused");
            assert!(
                matches!(
                    error,
                    SowError::Key(KeyError::MissingField { .. } | KeyError::NotJson { .. })
                ),
                "{error}"
            );
            assert!(error.to_string().contains(expected), "{error} / {expected}");
        }
        assert_eq!(store.len(), 1, "nothing but the fitting record is stored");
    }
}

#[test]
fn explicit_keys_and_composite_keys() {
    let mut config = SowTopicConfig::new("positions", &["/region", "/id"]);
    config.durability = Durability::Transient;
    let spec = config.validate().expect("valid");
    let (mut store, recovery) = SowStore::open(&spec, "positions", None).expect("open");
    assert_eq!(recovery, Recovery::Transient);
    let a = store
        .upsert(br#"{"region":"eu","id":1,"v":1}"#, 1, 0)
        .expect("a");
    let b = store
        .upsert(br#"{"region":"us","id":1,"v":2}"#, 2, 0)
        .expect("b");
    let a2 = store
        .upsert(br#"{"id":1,"v":3,"region":"eu"}"#, 3, 0)
        .expect("a2");
    assert_ne!(a.key, b.key);
    assert_eq!(a.key, a2.key);
    assert!(a2.replaced);
    assert_eq!(
        a.key,
        SowKey::from_values("positions", &[b"eu", b"1"]),
        "the key is the documented hash of topic and values"
    );
    let explicit = SowKey::explicit("positions", b"opaque-1");
    store
        .upsert_with_key(explicit, b"\x00binary", 4, 0)
        .expect("explicit");
    assert_eq!(store.len(), 3);
    let got = store.get(explicit).expect("get").expect("present");
    assert_eq!(got.payload, b"\x00binary");
    assert_eq!(
        store
            .delete_example(br#"{"region":"us","id":1}"#, 5, 0)
            .expect("del"),
        1
    );
    assert_eq!(store.len(), 2);
    assert_eq!("12345".parse::<SowKey>().expect("digits"), SowKey(12345));
}

fn filled(durability: Durability, n: u64) -> (SimStorage, SowStore) {
    let disk = SimStorage::new();
    let spec = spec(durability, &["/region"]);
    let (mut store, _) = open(&spec, &disk);
    for id in 0..n {
        let r = rec((id * 7 % 100) as i64, (id % 4) as u8, id + 1);
        store
            .upsert(&payload(id, &r), id + 1, 1000 + id)
            .expect("upsert");
    }
    (disk, store)
}

/// Whether record `id` of [`filled`] matches.
type Wanted = fn(u64) -> bool;

/// From 4,096 records on, an index is used only when it leaves at most a
/// quarter of them; otherwise the records are scanned (front to back, which
/// costs less than reading most of them one by one). The results are the
/// same either way.
#[test]
fn an_index_that_leaves_more_than_a_quarter_of_a_large_store_gives_way_to_a_scan() {
    const N: u64 = 8_000;
    for durability in [Durability::Durable, Durability::Transient] {
        let (_disk, store) = filled(durability, N);
        let cases: [(&str, Plan, Wanted); 5] = [
            ("/region = 'r1'", Plan::HashIndex("/region".into()), |id| {
                id % 4 == 1
            }),
            ("/region IN ('r1', 'r2')", Plan::FullScan, |id| {
                matches!(id % 4, 1 | 2)
            }),
            ("/price > 90", Plan::RangeIndex("/price".into()), |id| {
                id * 7 % 100 > 90
            }),
            ("/price > 10", Plan::FullScan, |id| id * 7 % 100 > 10),
            (
                "/price > 10 AND /region = 'r3'",
                Plan::HashIndex("/region".into()),
                |id| id * 7 % 100 > 10 && id % 4 == 3,
            ),
        ];
        for (text, plan, wanted) in cases {
            let m = store.query(&Query::filter(filter(text))).expect("query");
            assert_eq!(m.plan, plan, "{text}");
            let expected: Vec<SowKey> = (0..N).filter(|id| wanted(*id)).map(key).collect();
            if plan == Plan::FullScan {
                assert_eq!(m.scanned, N as usize, "{text}: every record evaluated");
            } else {
                assert!(
                    m.scanned <= N as usize / 4,
                    "{text}: {} evaluated",
                    m.scanned
                );
            }
            let mut got = m.keys();
            got.sort();
            let mut expected = expected;
            expected.sort();
            assert_eq!(got, expected, "{text}");
        }
    }
}

#[test]
fn queries_filter_order_top_skip_batches_keys_and_index() {
    for durability in [Durability::Durable, Durability::Transient] {
        let (_disk, store) = filled(durability, 200);
        let all = store.query(&Query::all()).expect("q");
        assert_eq!(all.len(), 200);
        assert_eq!(all.plan, Plan::FullScan);

        let q = Query::filter(filter("/region = 'r1' AND /price > 50"));
        let m = store.query(&q).expect("q");
        assert_eq!(m.plan, Plan::HashIndex("/region".into()));
        let expected = (0..200u64)
            .filter(|id| id % 4 == 1 && id * 7 % 100 > 50)
            .count();
        assert_eq!(m.len(), expected);
        assert!(
            m.scanned <= 50,
            "the index narrowed the scan to one region: {}",
            m.scanned
        );

        let q = Query::filter(filter("/region IN ('r1', 'r2')"));
        let m = store.query(&q).expect("q");
        assert_eq!(m.plan, Plan::HashIndex("/region".into()));
        assert_eq!(m.len(), 100);

        // Arrays: = is any element, and the index agrees.
        let q = Query::filter(filter("/tags = 'x'"));
        assert_eq!(store.count(&q).expect("count"), 200);

        let order = OrderBy::parse_list("/price DESC, /id").expect("order");
        let q = Query::filter(filter("/price >= 0"))
            .with_order(order)
            .with_top_n(5)
            .with_skip_n(2)
            .with_batch_size(2);
        let batches: Vec<_> = store
            .query(&q)
            .expect("q")
            .map(|b| b.expect("batch"))
            .collect();
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        let mut ids: Vec<(i64, u64)> = (0..200u64).map(|id| ((id * 7 % 100) as i64, id)).collect();
        ids.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let want: Vec<SowKey> = ids.iter().skip(2).take(5).map(|(_, id)| key(*id)).collect();
        let got: Vec<SowKey> = batches.iter().flatten().map(|r| r.key).collect();
        assert_eq!(got, want);

        let keys = vec![key(3), key(4), key(999), key(3)];
        let m = store.query(&Query::all().with_keys(keys)).expect("q");
        assert_eq!(m.plan, Plan::Keys);
        let records = m.collect_all().expect("all");
        assert_eq!(records.len(), 2);
        for r in &records {
            assert!(r.key == key(3) || r.key == key(4));
            assert!(r.bookmark == 4 || r.bookmark == 5);
        }
        let error = store
            .query(&Query::all().with_skip_n(1))
            .expect_err("skip needs order");
        assert!(error.to_string().contains("skip_n needs order_by"));
    }
}

#[test]
fn deletes_by_filter_keys_and_example_report_counts() {
    for durability in [Durability::Durable, Durability::Transient] {
        let (_disk, mut store) = filled(durability, 100);
        let n = store
            .delete_where(&filter("/region = 'r0'"), 500, 0)
            .expect("delete");
        assert_eq!(n, 25);
        assert_eq!(
            store
                .delete_keys(&[key(1), key(1), key(0)], 501, 0)
                .expect("keys"),
            1
        );
        assert_eq!(
            store
                .delete_example(br#"{"id":2,"anything":true}"#, 502, 0)
                .expect("example"),
            1
        );
        assert_eq!(store.len(), 73);
        assert_eq!(store.delete_where(&filter("1=1"), 503, 0).expect("all"), 73);
        assert!(store.is_empty());
        assert_eq!(
            store
                .count(&Query::filter(filter("/region = 'r1'")))
                .expect("c"),
            0
        );
    }
}

fn durable_with_history() -> SimStorage {
    let disk = SimStorage::new();
    let spec = spec(Durability::Durable, &[]);
    let (mut store, _) = open(&spec, &disk);
    for round in 0..3u64 {
        for id in 0..60u64 {
            let r = Rec {
                pad: 200,
                ..rec(round as i64, 1, round * 100 + id + 1)
            };
            store
                .upsert(&payload(id, &r), round * 100 + id + 1, 0)
                .expect("upsert");
        }
        store.checkpoint().expect("checkpoint");
    }
    drop(store);
    disk
}

#[test]
fn a_flipped_byte_in_an_older_synced_slab_is_reported_with_file_and_offset() {
    let disk = durable_with_history();
    let mut slabs: Vec<String> = disk
        .list("")
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".slab"))
        .collect();
    slabs.sort();
    assert!(slabs.len() >= 2, "{slabs:?}");
    let victim = slabs[0].clone();
    let offset = 64 + 40 + 20; // inside the first record's payload
    assert!(disk.edit_file(&victim, |bytes| bytes[offset] ^= 0x40));
    let spec = spec(Durability::Durable, &[]);
    let (store, recovery) = open(&spec, &disk);
    match &recovery {
        Recovery::Rebuild {
            reason: RebuildReason::Damaged(damage),
            quarantined,
        } => {
            assert_eq!(damage.file, victim);
            assert_eq!(
                damage.offset, 64,
                "the damaged record starts after the file header"
            );
            assert!(damage.what.contains("CRC32C"), "{damage:?}");
            assert_eq!(quarantined.len(), slabs.len());
        }
        other => panic!("expected a rebuild for damage, got {other:?}"),
    }
    assert_eq!(recovery.replay_after(), 0);
    assert!(store.is_empty(), "nothing from damaged files is served");
    // The damaged files are kept for inspection, not deleted.
    let kept = disk.list("quarantine").expect("list");
    assert_eq!(kept.len(), slabs.len());
}

#[test]
fn a_missing_listed_slab_means_rebuild() {
    let disk = durable_with_history();
    let mut slabs: Vec<String> = disk.list("").expect("list");
    slabs.sort();
    disk.remove(&slabs[0]).expect("remove");
    let spec = spec(Durability::Durable, &[]);
    let (_store, recovery) = open(&spec, &disk);
    assert_eq!(
        recovery,
        match &recovery {
            Recovery::Rebuild { quarantined, .. } => Recovery::Rebuild {
                reason: RebuildReason::Missing {
                    file: slabs[0].clone()
                },
                quarantined: quarantined.clone(),
            },
            other => panic!("expected a rebuild, got {other:?}"),
        }
    );
}

#[test]
fn a_torn_tail_after_the_checkpoint_is_reported_and_dropped() {
    let disk = SimStorage::new();
    let spec = spec(Durability::Durable, &[]);
    let (mut store, _) = open(&spec, &disk);
    for id in 0..5u64 {
        store
            .upsert(&payload(id, &rec(1, 1, id + 1)), id + 1, 0)
            .expect("upsert");
    }
    let covered = store.checkpoint().expect("checkpoint");
    assert_eq!(covered, 5);
    for id in 5..8u64 {
        store
            .upsert(&payload(id, &rec(1, 1, id + 1)), id + 1, 0)
            .expect("upsert");
    }
    drop(store);
    // Tear the last record: flip a byte in its payload (not synced, so this
    // is what a power cut in the middle of the write leaves).
    let mut slabs = disk.list("").expect("list");
    slabs.sort();
    let last = slabs.last().expect("a slab").clone();
    let bytes = disk.file_bytes(&last).expect("bytes");
    let end = bytes.iter().rposition(|&b| b != 0).expect("data");
    assert!(disk.edit_file(&last, |b| b[end - 3] ^= 1));
    let (store, recovery) = open(&spec, &disk);
    let Recovery::Resumed(report) = &recovery else {
        panic!("expected resume, got {recovery:?}");
    };
    assert_eq!(report.checkpoint, 5);
    assert_eq!(recovery.replay_after(), 5);
    assert_eq!(report.discarded_after_checkpoint, 2, "{report:?}");
    let torn = report.torn_tail.as_ref().expect("torn tail reported");
    assert_eq!(torn.file, last);
    assert!(torn.what.contains("CRC32C"), "{torn:?}");
    assert_eq!(store.len(), 5);
    drop(store);
    // The tail was cleared: a second open finds nothing to report.
    let (_store, recovery) = open(&spec, &disk);
    let Recovery::Resumed(report) = &recovery else {
        panic!("expected resume, got {recovery:?}");
    };
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.discarded_after_checkpoint, 0);
}

#[test]
fn compaction_gives_space_back_and_survives_restart() {
    let disk = SimStorage::new();
    let spec = spec(Durability::Durable, &["/region"]);
    let (mut store, _) = open(&spec, &disk);
    let mut bookmark = 0;
    for round in 0..10i64 {
        for id in 0..50u64 {
            bookmark += 1;
            let r = Rec {
                pad: 300,
                ..rec(round, (id % 3) as u8, bookmark)
            };
            store.upsert(&payload(id, &r), bookmark, 0).expect("upsert");
        }
    }
    for id in 0..25u64 {
        bookmark += 1;
        store.delete_key(key(id), bookmark, 0).expect("delete");
    }
    store.checkpoint().expect("checkpoint");
    let before = disk.used_bytes();
    let report = store.compact().expect("compact");
    let after = disk.used_bytes();
    assert!(report.slabs_released > 0, "{report:?}");
    assert!(after < before, "files shrank: {before} -> {after}");
    let stats = store.stats();
    assert_eq!(stats.records, 25);
    assert!(
        stats.slabs as u64 * TEST_SLAB <= 2 * (25 * 400) + 2 * TEST_SLAB,
        "{stats:?}"
    );
    drop(store);
    let (store, recovery) = open(&spec, &disk);
    assert!(matches!(recovery, Recovery::Resumed(_)), "{recovery:?}");
    assert_eq!(store.len(), 25);
    for id in 25..50u64 {
        let r = store.get(key(id)).expect("get").expect("present");
        assert!(String::from_utf8_lossy(&r.payload).contains("\"price\":9"));
    }
    for id in 0..25u64 {
        assert_eq!(
            store.get(key(id)).expect("get"),
            None,
            "deleted key {id} stays deleted"
        );
    }
    assert_eq!(
        store
            .count(&Query::filter(filter("/region = 'r1'")))
            .expect("count"),
        (25..50).filter(|id| id % 3 == 1).count()
    );
}

#[test]
fn files_of_another_topic_and_topics_the_configuration_does_not_cover_are_refused() {
    let disk = durable_with_history();
    let storage: Arc<dyn Storage> = Arc::new(disk);
    let error = SowStore::open(
        &spec(Durability::Durable, &[]),
        "other-topic",
        Some(storage.clone()),
    )
    .expect_err("not covered");
    assert!(
        error
            .to_string()
            .contains("the SOW configuration `orders` does not cover it"),
        "{error}"
    );
    let mut config = SowTopicConfig::new(TOPIC, &["/id"]);
    config.topic = TopicSelector::Pattern("orders|other-.*".into());
    config.slab_size = TEST_SLAB;
    let pattern = config.validate_for_tests().expect("valid");
    let error = SowStore::open(&pattern, "other-topic", Some(storage)).expect_err("wrong topic");
    assert!(
        error.to_string().contains("belongs to another topic"),
        "{error}"
    );
}

#[test]
fn sow_dump_reports_sizes_and_slab_usage() {
    let disk = durable_with_history();
    let report = statecast_sow::dump::sizing(&disk, true).expect("dump");
    assert_eq!(report.records, 60);
    assert!(report.max_payload > 200);
    assert_eq!(report.histogram.iter().map(|b| b.count).sum::<u64>(), 60);
    assert!(
        report
            .histogram
            .iter()
            .all(|b| b.from <= 270 && b.to >= 270)
    );
    assert!(report.live_fraction > 0.0 && report.live_fraction < 1.0);
    assert_eq!(report.recommended_slab_size, 1 << 20);
    assert!(report.slabs.len() >= 2);
    assert_eq!(report.records_list.iter().filter(|r| r.current).count(), 60);
}

#[test]
fn range_indexes_agree_with_evaluating_every_record_on_mixed_values() {
    let values = [
        "5",
        "5.0",
        "\"5\"",
        "\"10\"",
        "\"abc\"",
        "\"\"",
        "null",
        "true",
        "false",
        "[1, 20]",
        "\"9\"",
        "-3",
        "1e3",
        "\"1e3\"",
        "\"b\"",
        "[\"a\", 7]",
        "{\"x\":1}",
        "2.5",
    ];
    let mut config = SowTopicConfig::new("mixed", &["/id"]);
    config.durability = Durability::Transient;
    let spec = config.validate().expect("valid");
    let (mut store, _) = SowStore::open(&spec, "mixed", None).expect("open");
    let mut payloads = Vec::new();
    for (id, v) in values.iter().enumerate() {
        let p = format!(r#"{{"id":{id},"v":{v},"n":{}}}"#, (id * 37) % 11);
        store
            .upsert(p.as_bytes(), id as u64 + 1, 0)
            .expect("upsert");
        payloads.push(p);
    }
    store
        .upsert(br#"{"id":99,"n":3}"#, 100, 0)
        .expect("a record without /v");
    payloads.push(r#"{"id":99,"n":3}"#.to_string());
    let filters = [
        "/v > 4",
        "/v >= 5",
        "/v < 5",
        "/v <= '5'",
        "/v > 'a'",
        "/v < 'b'",
        "/v >= '10'",
        "/v BETWEEN 1 AND 10",
        "/v BETWEEN '1' AND '9'",
        "/v = 5",
        "/v < TRUE",
        "/v > 1e2",
        "3 < /v",
        "'abc' <= /v",
        "/v > NULL",
        "/v > 4 AND /n < 6",
        "/v < 0.0",
    ];
    for text in filters {
        let f = filter(text);
        let mut expected: Vec<SowKey> = payloads
            .iter()
            .filter(|p| f.matches(&statecast_filter::MessageContext::new(p.as_bytes())))
            .map(|p| store.key_of(p.as_bytes()).expect("key"))
            .collect();
        expected.sort();
        let m = store.query(&Query::filter(f.clone())).expect("query");
        assert_eq!(m.plan, Plan::RangeIndex("/v".into()), "{text}");
        let mut got = m.keys();
        got.sort();
        assert_eq!(got, expected, "{text}");
    }
    // order_by through the range index on a field of plain numbers, stopping
    // early, and writes after the index was built keep it right.
    let order = OrderBy::parse_list("/n DESC").expect("order");
    let q = Query::all()
        .with_order(order.clone())
        .with_top_n(4)
        .with_skip_n(1);
    assert!(matches!(
        store.query(&q).expect("q").plan,
        Plan::RangeOrder(_)
    ));
    store
        .upsert(br#"{"id":1000,"n":50}"#, 200, 0)
        .expect("upsert");
    store
        .upsert(br#"{"id":5,"n":-1}"#, 201, 0)
        .expect("replace");
    store
        .delete_example(br#"{"id":0}"#, 202, 0)
        .expect("delete");
    let m = store.query(&q).expect("q");
    assert!(matches!(m.plan, Plan::RangeOrder(_)));
    let got = m.keys();
    let full = store
        .query(&Query::all().with_order(order).with_top_n(1000))
        .expect("q");
    let want: Vec<SowKey> = full.keys().into_iter().skip(1).take(4).collect();
    assert_eq!(got, want);
    // Records without the field sort last: asking for more than the index
    // holds falls back to the full scan and still puts them at the end.
    store.upsert(br#"{"id":2000}"#, 203, 0).expect("no n");
    let all = store
        .query(
            &Query::all()
                .with_order(OrderBy::parse_list("/n").expect("o"))
                .with_top_n(1000),
        )
        .expect("q");
    assert_eq!(
        all.keys().last(),
        Some(&store.key_of(br#"{"id":2000}"#).expect("k"))
    );
}

#[test]
fn on_the_real_file_system_close_reopen_and_dump_read_only() {
    use statecast_journal::storage::{FsMode, FsStorage};
    fn assert_send<T: Send>() {}
    assert_send::<SowStore>();

    let dir = tempfile::tempdir().expect("temp dir");
    let spec = spec(Durability::Durable, &["/region"]);
    let open_fs = || {
        let storage: Arc<dyn Storage> =
            Arc::new(FsStorage::open(dir.path(), FsMode::Exclusive).expect("storage"));
        SowStore::open(&spec, TOPIC, Some(storage)).expect("open")
    };
    let (mut store, recovery) = open_fs();
    assert_eq!(recovery, Recovery::Fresh);
    for id in 0..300u64 {
        let r = Rec {
            pad: 100,
            ..rec((id % 50) as i64, (id % 4) as u8, id + 1)
        };
        store.upsert(&payload(id, &r), id + 1, 0).expect("upsert");
    }
    for id in 0..100u64 {
        store.delete_key(key(id), 400 + id, 0).expect("delete");
    }
    assert_eq!(store.close().expect("close"), 499);
    let (store, recovery) = open_fs();
    assert_eq!(recovery.replay_after(), 499);
    assert_eq!(store.len(), 200);
    assert_eq!(
        store
            .count(&Query::filter(filter("/region = 'r2'")))
            .expect("count"),
        (100..300).filter(|id| id % 4 == 2).count()
    );
    // sow-dump beside the open store: read-only, no lock.
    let read_only = FsStorage::open(dir.path(), FsMode::ReadOnly).expect("read-only");
    let report = statecast_sow::dump::sizing(&read_only, false).expect("dump");
    assert_eq!(report.records, 200);
    drop(store);
}

#[test]
fn damage_before_a_checkpoint_in_the_same_slab_is_never_taken_for_a_torn_tail() {
    // Cases: (what is done to the bytes of the first record, what the
    // report must say). Every record is synced: a checkpoint follows.
    type Edit = fn(&mut Vec<u8>);
    let cases: [(&str, Edit, &str); 3] = [
        ("flipped payload byte", |b| b[64 + 40 + 3] ^= 0x01, "CRC32C"),
        (
            "zeroed header",
            |b| b[64..64 + 40].fill(0),
            "records missing",
        ),
        ("bad magic", |b| b[64 + 4] ^= 0xff, "not a record header"),
    ];
    for (name, edit, expected) in cases {
        let disk = SimStorage::new();
        let spec = spec(Durability::Durable, &[]);
        let (mut store, _) = open(&spec, &disk);
        for id in 0..10u64 {
            store
                .upsert(&payload(id, &rec(1, 1, id + 1)), id + 1, 0)
                .expect("upsert");
        }
        store.checkpoint().expect("checkpoint");
        store
            .upsert(&payload(10, &rec(1, 1, 11)), 11, 0)
            .expect("upsert");
        store.checkpoint().expect("checkpoint");
        drop(store);
        let slabs = disk.list("").expect("list");
        assert_eq!(slabs.len(), 1, "{name}: one slab holds it all");
        let file = slabs[0].clone();
        assert!(disk.edit_file(&file, edit));
        let (store, recovery) = open(&spec, &disk);
        match &recovery {
            Recovery::Rebuild {
                reason: RebuildReason::Damaged(damage),
                ..
            } => {
                assert_eq!(damage.file, file, "{name}");
                assert_eq!(damage.offset, 64, "{name}");
                assert!(damage.what.contains(expected), "{name}: {damage:?}");
            }
            other => panic!("{name}: expected a rebuild, got {other:?}"),
        }
        assert!(store.is_empty(), "{name}");
    }
}

#[test]
fn a_newest_slab_whose_creation_was_cut_short_is_dropped() {
    let disk = durable_with_history();
    let mut slabs = disk.list("").expect("list");
    slabs.sort();
    let newest = slabs.last().expect("slab").clone();
    let seq = u64::from_str_radix(newest.trim_end_matches(".slab"), 16).expect("hex");
    // A file created (zero-filled) but whose header never reached the disk.
    let cut = slab_name(seq + 1);
    disk.insert_file(&cut, vec![0; TEST_SLAB as usize]);
    let spec = spec(Durability::Durable, &[]);
    let (store, recovery) = open(&spec, &disk);
    let Recovery::Resumed(report) = &recovery else {
        panic!("expected resume, got {recovery:?}");
    };
    assert_eq!(report.removed_files, vec![cut.clone()]);
    assert_eq!(store.len(), 60);
    assert!(!disk.list("").expect("list").contains(&cut));
}

#[test]
fn an_idle_checkpoint_costs_no_sync() {
    let disk = SimStorage::new();
    let spec = spec(Durability::Durable, &[]);
    let (mut store, _) = open(&spec, &disk);
    store
        .upsert(&payload(1, &rec(1, 1, 1)), 1, 0)
        .expect("upsert");
    assert_eq!(store.checkpoint().expect("checkpoint"), 1);
    let syncs = disk.sync_count();
    assert_eq!(store.checkpoint().expect("idle"), 1);
    assert_eq!(disk.sync_count(), syncs, "nothing new, nothing synced");
    // A delete of an absent key still moves the covered bookmark.
    store.delete_key(key(42), 2, 0).expect("delete");
    assert_eq!(store.checkpoint().expect("checkpoint"), 2);
    drop(store);
    let (_store, recovery) = open(&spec, &disk);
    assert_eq!(recovery.replay_after(), 2);
}

#[test]
fn topic_folders_are_safe_and_distinct() {
    let a = statecast_sow::topic_folder("orders/eu");
    let b = statecast_sow::topic_folder("orders_eu");
    assert!(a.starts_with("orders_eu-"), "{a}");
    assert_ne!(a, b, "a hash of the exact name keeps them apart");
    let dots = statecast_sow::topic_folder("../../etc");
    assert!(!dots.starts_with('.') && !dots.contains('/'), "{dots}");
    assert!(statecast_sow::topic_folder(&"x".repeat(500)).len() <= 64 + 17);
}

#[test]
fn sow_dump_lists_records_with_payloads_in_log_order() {
    let disk = durable_with_history();
    let mut current = BTreeMap::new();
    let mut kinds = BTreeMap::new();
    let mut last_position = (String::new(), 0u64);
    statecast_sow::dump::records(&disk, |record, payload| {
        let position = (record.file.clone(), record.offset);
        assert!(position > last_position, "log order");
        last_position = position;
        *kinds.entry(record.kind).or_insert(0usize) += 1;
        if record.current {
            current.insert(record.key, payload.to_vec());
        }
    })
    .expect("records");
    assert_eq!(current.len(), 60);
    assert!(
        kinds.get("checkpoint").is_some_and(|&n| n >= 1),
        "{kinds:?}"
    );
    for (k, p) in current {
        let text = String::from_utf8(p).expect("utf-8");
        assert!(text.contains("\"price\":2"), "latest round: {text}");
        let id: u64 = text
            .split("\"id\":")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|n| n.parse().ok())
            .expect("id");
        assert_eq!(SowKey(k), key(id));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    /// Arbitrary damage to the files never panics the open, and whatever is
    /// opened serves only records that pass their CRC.
    #[test]
    fn random_damage_never_panics_and_never_serves_a_bad_record(
        hits in proptest::collection::vec((0usize..8, 0usize..(TEST_SLAB as usize), 0u8..=255), 1..6),
        truncate in proptest::option::of((0usize..8, 0usize..(TEST_SLAB as usize))),
    ) {
        let disk = durable_with_history();
        let mut names = disk.list("").expect("list");
        names.sort();
        for (file, at, byte) in hits {
            let name = names[file % names.len()].clone();
            disk.edit_file(&name, |b| {
                if let Some(x) = b.get_mut(at) {
                    *x ^= byte | 1;
                }
            });
        }
        if let Some((file, len)) = truncate {
            let name = names[file % names.len()].clone();
            disk.edit_file(&name, |b| b.truncate(len));
        }
        let spec = spec(Durability::Durable, &["/region"]);
        let storage: Arc<dyn Storage> = Arc::new(disk.clone());
        if let Ok((store, _recovery)) = SowStore::open(&spec, TOPIC, Some(storage)) {
            let all = store.query(&Query::all()).expect("query").collect_all();
            proptest::prop_assert!(all.is_ok(), "{:?}", all.err());
            proptest::prop_assert!(store.len() <= 60);
        }
    }
}

/// Records are read straight for the answer, each checked against its
/// CRC on every read: a byte that rots after the store was opened makes
/// that record's read fail (naming the slab file), through the borrowed
/// reader, a detached cursor and `get` alike; the other records still read.
#[test]
fn a_record_damaged_after_opening_is_refused_on_every_read_path() {
    let (disk, store) = filled(Durability::Durable, 200);
    let needle = br#""id":17,"#;
    let mut damaged = 0;
    for name in disk.list("").expect("list") {
        disk.edit_file(&name, |bytes| {
            if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                // The digit of the id: still JSON, another record's id.
                if let Some(b) = bytes.get_mut(at + 5) {
                    *b = b'9';
                    damaged += 1;
                }
            }
        });
    }
    assert_eq!(damaged, 1, "one copy of record 17 on disk");
    let is_damage = |e: &statecast_sow::SowError| matches!(e, statecast_sow::SowError::Damaged { what, .. } if what.contains("CRC32C"));
    let mut matches = store.query(&Query::all()).expect("query");
    let mut read = 0;
    let mut failed = None;
    while let Some(record) = matches.next_record() {
        match record {
            Ok(_) => read += 1,
            Err(e) => failed = Some(e),
        }
    }
    let failed = failed.expect("the damaged record is not served");
    assert!(is_damage(&failed), "{failed}");
    assert!(read < 200, "the answer stops at the damage");
    let mut cursor = store.query(&Query::all()).expect("query").into_cursor();
    let mut failed = None;
    let mut ok = 0;
    while let Some(record) = cursor.next_record(&store) {
        match record {
            Ok(_) => ok += 1,
            Err(e) => failed = Some(e),
        }
    }
    assert_eq!(ok, read, "the cursor reads in the same order");
    assert!(failed.as_ref().is_some_and(is_damage), "{failed:?}");
    assert!(store.get(key(17)).is_err_and(|e| is_damage(&e)));
    assert!(store.get(key(18)).expect("read").is_some());
}

#[test]
fn lowering_slab_size_keeps_records_that_no_longer_fit_a_new_slab() {
    let disk = SimStorage::new();
    let big = spec(Durability::Durable, &[]);
    let (mut store, _) = open(&big, &disk);
    let large = Rec {
        pad: 12_000,
        ..rec(1, 1, 1)
    };
    store
        .upsert(&payload(0, &large), 1, 0)
        .expect("large record fits 16 KiB");
    store.close().expect("close");
    let mut config = SowTopicConfig::new(TOPIC, &["/id"]);
    config.slab_size = 8192;
    let small = config.validate_for_tests().expect("valid");
    let (mut store, _) = open(&small, &disk);
    let mut bookmark = 1;
    for round in 0..20u64 {
        for id in 1..10u64 {
            bookmark += 1;
            let r = Rec {
                pad: 300,
                ..rec(round as i64, 1, bookmark)
            };
            store.upsert(&payload(id, &r), bookmark, 0).expect("upsert");
        }
    }
    store.compact().expect("compact");
    let kept = store
        .get(key(0))
        .expect("get")
        .expect("the large record stays");
    assert_eq!(kept.payload, payload(0, &large));
    drop(store);
    let (store, _) = open(&small, &disk);
    assert_eq!(store.len(), 10);
}

/// A declared range index exists before any query, is rebuilt from the
/// records when a durable store reopens, follows every write, and answers
/// range queries the same as evaluating every record.
#[test]
fn declared_range_indexes_are_built_at_open_and_kept_up_to_date() {
    let disk = SimStorage::new();
    let mut config = SowTopicConfig::new(TOPIC, &["/id"]);
    config.slab_size = TEST_SLAB;
    config.range_indexes = vec!["/price".into(), "/price".into()];
    let spec = config.validate_for_tests().expect("valid");
    let (mut store, _) = open(&spec, &disk);
    let empty = store.stats().range_index_bytes;
    for id in 0..300u64 {
        let rec = Rec {
            price: (id * 7 % 100) as i64,
            region: (id % 4) as u8,
            pad: 10,
            bookmark: id + 1,
        };
        store.upsert(&payload(id, &rec), id + 1, 0).expect("upsert");
    }
    store.delete_key(key(3), 301, 0).expect("delete");
    assert!(
        store.stats().range_index_bytes > empty,
        "writes fill it, with no query having asked for it"
    );
    store.close().expect("close");

    let (store, recovery) = open(&spec, &disk);
    assert!(matches!(recovery, Recovery::Resumed(_)), "{recovery:?}");
    let built = store.stats().range_index_bytes;
    assert!(built > empty, "rebuilt from the records at open");
    let filter = Filter::parse("/price >= 20 AND /price < 50", &Limits::default()).expect("filter");
    let query = Query::filter(filter);
    let matches = store.query(&query).expect("query");
    assert_eq!(
        matches.plan,
        Plan::RangeIndex("/price".into()),
        "the query uses the declared index"
    );
    let n = matches.collect_all().expect("records").len();
    let expected = (0..300u64)
        .filter(|id| *id != 3 && (20..50).contains(&(id * 7 % 100)))
        .count();
    assert_eq!(n, expected);
    assert_eq!(
        store.stats().range_index_bytes,
        built,
        "the query built nothing more"
    );
}
