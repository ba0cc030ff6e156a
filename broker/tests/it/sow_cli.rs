//! The State of the World as tools and applications use it: the `sow`,
//! `sow-and-subscribe` and `sow-delete` commands run as processes, and the
//! SDK's SOW calls (`Client::sow`, `sow_and_subscribe`, `sow_delete_*`,
//! `publish_with_key`), each against a real broker.

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};

use futures::StreamExt;
use statecast_client::{
    AckType, Client, Error, ReasonCode, SowDeleteBy, SowItem, SowOptions, SowRecord,
    SowSubscription,
};

use crate::support::{Broker, binary, run_cli};

/// `orders` keyed by /id (as the default configuration has it) and `blobs`
/// with publisher-given keys.
const CONFIG: &str = r#"
[[sow.topics]]
topic = "orders"
key = ["/id"]
[[sow.topics]]
topic = "blobs"
"#;

/// Runs a client command against `broker`, asserting it succeeds; returns
/// its stdout lines.
fn cli_ok(broker: &Broker, args: &[&str], stdin: Option<&[u8]>) -> Vec<String> {
    let mut full = vec![args[0], "--server", &broker.client];
    full.extend_from_slice(&args[1..]);
    let out = run_cli(&full, stdin);
    assert!(
        out.status.success(),
        "statecast {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Publishes one message to `orders` (processed ack) and returns its bookmark.
fn publish_order(broker: &Broker, payload: &str) -> String {
    let line = format!("{payload}\n");
    let out = cli_ok(
        broker,
        &["publish", "--topic", "orders", "--ack", "processed"],
        Some(line.as_bytes()),
    );
    let summary: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
    summary["last_bookmark"]
        .as_str()
        .expect("a journaled publish has a bookmark")
        .to_owned()
}

fn json_lines(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[test]
fn sow_prints_exactly_the_records_a_query_matches() {
    let broker = Broker::start_with(CONFIG);
    let b1 = publish_order(&broker, r#"{"id":1,"qty":5}"#);
    let _replaced = publish_order(&broker, r#"{"id":2,"qty":7}"#);
    let b3 = publish_order(&broker, r#"{"id":3,"qty":1}"#);
    let b2 = publish_order(&broker, r#"{"id":2,"qty":9}"#);

    let all = json_lines(&cli_ok(
        &broker,
        &[
            "sow",
            "--topic",
            "orders",
            "--order-by",
            "/id",
            "--format",
            "json",
        ],
        None,
    ));
    assert_eq!(all.len(), 3, "one record per key: {all:?}");
    let keys: Vec<String> = all
        .iter()
        .map(|r| r["key"].as_str().expect("key as a string").to_owned())
        .collect();
    for key in &keys {
        assert!(key.parse::<u64>().is_ok(), "keys print in decimal: {key}");
    }
    let expected = |key: &str, bookmark: &str, data: serde_json::Value| {
        serde_json::json!({
            "cmd": "sow", "topic": "orders", "key": key, "bookmark": bookmark, "data": data,
        })
    };
    assert_eq!(
        all,
        [
            expected(&keys[0], &b1, serde_json::json!({"id": 1, "qty": 5})),
            expected(&keys[1], &b2, serde_json::json!({"id": 2, "qty": 9})),
            expected(&keys[2], &b3, serde_json::json!({"id": 3, "qty": 1})),
        ],
        "the latest message per key, with the bookmark that wrote it"
    );
    let text = cli_ok(
        &broker,
        &[
            "sow",
            "--topic",
            "orders",
            "--order-by",
            "/id",
            "--format",
            "json",
        ],
        None,
    );
    assert!(
        text[0].starts_with(r#"{"cmd":"sow","topic":"orders","key":"#),
        "keys in the documented order: {}",
        text[0]
    );

    // A filter, descending order, paging, keys; --format data prints payloads.
    let filtered = cli_ok(
        &broker,
        &[
            "sow",
            "--topic",
            "orders",
            "--filter",
            "/qty > 1",
            "--order-by",
            "/qty DESC",
        ],
        None,
    );
    assert_eq!(filtered, [r#"{"id":2,"qty":9}"#, r#"{"id":1,"qty":5}"#]);
    let paged = cli_ok(
        &broker,
        &[
            "sow",
            "--topic",
            "orders",
            "--order-by",
            "/id",
            "--skip-n",
            "1",
            "--top-n",
            "1",
        ],
        None,
    );
    assert_eq!(paged, [r#"{"id":2,"qty":9}"#]);
    let by_key = cli_ok(
        &broker,
        &[
            "sow",
            "--topic",
            "orders",
            "--order-by",
            "/id",
            "--key",
            &keys[2],
            &keys[0],
        ],
        None,
    );
    assert_eq!(by_key, [r#"{"id":1,"qty":5}"#, r#"{"id":3,"qty":1}"#]);

    // --count prints the number matching and no record.
    let count = cli_ok(
        &broker,
        &[
            "sow", "--topic", "orders", "--filter", "/qty < 9", "--count",
        ],
        None,
    );
    assert_eq!(count, [r#"{"count":2}"#]);
}

#[test]
fn sow_delete_prints_the_count_and_the_records_are_gone() {
    let broker = Broker::start_with(CONFIG);
    for id in 1..=5 {
        publish_order(&broker, &format!(r#"{{"id":{id},"qty":{}}}"#, id * 10));
    }
    let deleted = cli_ok(
        &broker,
        &["sow-delete", "--topic", "orders", "--filter", "/qty >= 40"],
        None,
    );
    assert_eq!(deleted, [r#"{"deleted":2}"#]);
    let left = cli_ok(
        &broker,
        &["sow", "--topic", "orders", "--order-by", "/id"],
        None,
    );
    assert_eq!(
        left,
        [
            r#"{"id":1,"qty":10}"#,
            r#"{"id":2,"qty":20}"#,
            r#"{"id":3,"qty":30}"#
        ]
    );

    // By example: the key computed from a message.
    let deleted = cli_ok(
        &broker,
        &[
            "sow-delete",
            "--topic",
            "orders",
            "--example",
            r#"{"id":2}"#,
        ],
        None,
    );
    assert_eq!(deleted, [r#"{"deleted":1}"#]);

    // By key, as `sow --format json` prints it; a key already gone counts 0.
    let records = json_lines(&cli_ok(
        &broker,
        &[
            "sow", "--topic", "orders", "--filter", "/id = 3", "--format", "json",
        ],
        None,
    ));
    let key = records[0]["key"].as_str().unwrap().to_owned();
    let deleted = cli_ok(
        &broker,
        &["sow-delete", "--topic", "orders", "--key", &key],
        None,
    );
    assert_eq!(deleted, [r#"{"deleted":1}"#]);
    let deleted = cli_ok(
        &broker,
        &["sow-delete", "--topic", "orders", "--key", &key],
        None,
    );
    assert_eq!(deleted, [r#"{"deleted":0}"#]);
    let left = cli_ok(&broker, &["sow", "--topic", "orders"], None);
    assert_eq!(left, [r#"{"id":1,"qty":10}"#]);
    let deleted = cli_ok(
        &broker,
        &["sow-delete", "--topic", "orders", "--filter", "1=1"],
        None,
    );
    assert_eq!(deleted, [r#"{"deleted":1}"#]);
    let count = cli_ok(&broker, &["sow", "--topic", "orders", "--count"], None);
    assert_eq!(count, [r#"{"count":0}"#]);
}

#[test]
fn sow_commands_fail_with_one_line_naming_the_reason_and_misuse_is_status_2() {
    let broker = Broker::start_with(CONFIG);
    let failures: [&[&str]; 3] = [
        &["sow", "--topic", "not-sow"],
        &["sow", "--topic", "orders", "--filter", "/qty >"],
        &["sow-delete", "--topic", "not-sow", "--filter", "1=1"],
    ];
    let reasons = ["not_a_sow_topic", "invalid_filter", "not_a_sow_topic"];
    for (args, reason) in failures.iter().zip(reasons) {
        let mut full = vec![args[0], "--server", &broker.client];
        full.extend_from_slice(&args[1..]);
        let out = run_cli(&full, None);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(reason), "{args:?} names {reason}: {stderr}");
    }
    let usage: [&[&str]; 3] = [
        &["sow-delete", "--topic", "orders"],
        &[
            "sow-delete",
            "--topic",
            "orders",
            "--filter",
            "1=1",
            "--key",
            "1",
        ],
        &["sow", "--topic", "orders", "--key", "not-a-number"],
    ];
    for args in usage {
        let out = run_cli(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?} is bad usage");
    }
}

#[test]
fn sow_and_subscribe_prints_the_snapshot_then_live_messages() {
    let broker = Broker::start_with(CONFIG);
    let b1 = publish_order(&broker, r#"{"id":1,"qty":5}"#);
    let b2 = publish_order(&broker, r#"{"id":2,"qty":6}"#);
    let mut child = Process::new(binary())
        .args([
            "sow-and-subscribe",
            "--server",
            &broker.client,
            "--topic",
            "orders",
            "--order-by",
            "/id",
            "--format",
            "json",
            "--count",
            "3",
            "--timeout",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = || -> serde_json::Value {
        let line = lines.next().expect("a line").expect("readable");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    };
    // The snapshot is printed once the subscription is in place: what is
    // published after it arrives live.
    let first = next();
    let second = next();
    assert_eq!(
        (&first["cmd"], &first["bookmark"], &first["data"]),
        (
            &serde_json::json!("sow"),
            &serde_json::json!(b1),
            &serde_json::json!({"id": 1, "qty": 5})
        )
    );
    assert_eq!(
        (&second["cmd"], &second["bookmark"], &second["data"]),
        (
            &serde_json::json!("sow"),
            &serde_json::json!(b2),
            &serde_json::json!({"id": 2, "qty": 6})
        )
    );
    let b3 = publish_order(&broker, r#"{"id":1,"qty":8}"#);
    let live = next();
    assert_eq!(
        live,
        serde_json::json!({
            "cmd": "publish", "topic": "orders", "key": null, "bookmark": b3,
            "data": {"id": 1, "qty": 8},
        })
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "--count 3 ends it: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A timeout before --count is reached is a failure.
    let out = run_cli(
        &[
            "sow-and-subscribe",
            "--server",
            &broker.client,
            "--topic",
            "orders",
            "--count",
            "5",
            "--timeout",
            "2",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        2,
        "the snapshot was printed"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_queries_follows_and_deletes_records() {
    let broker = Broker::start_with(CONFIG);
    let client = broker.client("sow-sdk").await;
    for (id, qty) in [(1, 5), (2, 7), (3, 1)] {
        client
            .publish_acked(
                "orders",
                format!(r#"{{"id":{id},"qty":{qty}}}"#),
                AckType::Processed,
            )
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
    }

    let mut results = client
        .sow(
            SowOptions::topic("orders")
                .filter("/qty > 1")
                .order_by("/id"),
        )
        .await
        .unwrap();
    let mut payloads = Vec::new();
    let mut keys = Vec::new();
    while let Some(record) = results.next().await {
        let record = record.unwrap();
        assert_eq!(record.topic.as_str(), "orders");
        assert!(record.bookmark.is_some());
        keys.push(record.key);
        payloads.push(String::from_utf8(record.payload.to_vec()).unwrap());
    }
    assert_eq!(payloads, [r#"{"id":1,"qty":5}"#, r#"{"id":2,"qty":7}"#]);
    assert_eq!(results.records(), Some(2), "the group_end's count");
    let count = client
        .sow(SowOptions::topic("orders").count_only())
        .await
        .unwrap()
        .count()
        .await
        .unwrap();
    assert_eq!(count, 3);
    let by_key = client
        .sow(SowOptions::topic("orders").sow_keys([keys[1]]))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(by_key.len(), 1);
    assert_eq!(&by_key[0].payload[..], br#"{"id":2,"qty":7}"#);

    // sow_and_subscribe: records, the end of the snapshot, then live.
    let mut follow = client
        .sow_and_subscribe(SowOptions::topic("orders").order_by("/id"))
        .await
        .unwrap();
    let snapshot = snapshot_then_live(&client, &mut follow, 3, r#"{"id":3,"qty":2}"#).await;
    assert_eq!(snapshot.len(), 3);
    follow.unsubscribe().await.unwrap();

    // Deletes return the count from the ack, processed or persisted.
    assert_eq!(
        client
            .sow_delete_filter("orders", "/qty = 2")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        client.sow_delete_keys("orders", &[keys[0]]).await.unwrap(),
        1
    );
    let ack = client
        .sow_delete(
            "orders",
            SowDeleteBy::Example(r#"{"id":2}"#.into()),
            AckType::Persisted,
        )
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(ack.records, Some(1));
    let left = client
        .sow(SowOptions::topic("orders"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_publishes_with_explicit_keys_and_reports_refusals() {
    let broker = Broker::start_with(CONFIG);
    let client = broker.client("sow-sdk-keys").await;
    for (key, payload) in [("a", "first"), ("b", "second"), ("a", "third")] {
        client
            .publish_with_key("blobs", key, payload)
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    let records = client
        .sow(SowOptions::topic("blobs"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut payloads: Vec<&[u8]> = records.iter().map(|r| &r.payload[..]).collect();
    payloads.sort_unstable();
    assert_eq!(
        payloads,
        [&b"second"[..], &b"third"[..]],
        "one record per key"
    );

    fn failed<T: std::fmt::Debug>(result: Result<T, Error>) -> (ReasonCode, String) {
        match result {
            Err(Error::Failed { code, reason, .. }) => (code, reason),
            other => panic!("expected a failure ack, got {other:?}"),
        }
    }
    // A topic without key fields needs the publisher's key.
    let (code, _) = failed(
        client
            .publish_acked("blobs", "keyless", AckType::Processed)
            .await
            .unwrap()
            .wait()
            .await,
    );
    assert_eq!(code, ReasonCode::InvalidSowKey);
    let (code, reason) = failed(
        client
            .sow(SowOptions::topic("not-sow"))
            .await
            .map(|r| r.id()),
    );
    assert_eq!(code, ReasonCode::NotASowTopic);
    assert!(reason.contains("not-sow"), "{reason}");
    let (code, _) = failed(
        client
            .sow(SowOptions::topic("orders").order_by("no-slash"))
            .await
            .map(|r| r.id()),
    );
    assert_eq!(code, ReasonCode::InvalidField);
    let (code, _) = failed(client.sow_delete_filter("orders", "/id =").await);
    assert_eq!(code, ReasonCode::InvalidFilter);
    // The connection is still good after refusals.
    client.flush().await.unwrap();
}

/// `--batch-size` changes how the records travel, not what is printed;
/// a size the broker refuses is a failure naming the field and the limit.
#[test]
fn sow_with_a_batch_size_prints_the_same_records() {
    let broker = Broker::start_with(CONFIG);
    for id in 0..7 {
        publish_order(&broker, &format!(r#"{{"id":{id},"qty":{}}}"#, id * 3));
    }
    let query = |extra: &[&str]| {
        let mut args = vec![
            "sow",
            "--topic",
            "orders",
            "--order-by",
            "/id",
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        cli_ok(&broker, &args, None)
    };
    let plain = query(&[]);
    assert_eq!(plain.len(), 7);
    for size in ["1", "3", "10000"] {
        assert_eq!(query(&["--batch-size", size]), plain, "--batch-size {size}");
    }
    for size in ["0", "10001"] {
        let out = run_cli(
            &[
                "sow",
                "--server",
                &broker.client,
                "--topic",
                "orders",
                "--batch-size",
                size,
            ],
            None,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--batch-size {size}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.contains("invalid_field") && stderr.contains("10000"),
            "names the reason and the limit: {stderr}"
        );
    }
}

/// The SDK yields a batched answer's records exactly as an unbatched one's,
/// and a batched `sow_and_subscribe` goes on to live messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_yields_batched_records_as_unbatched_ones() {
    let broker = Broker::start_with(CONFIG);
    let client = broker.client("sow-sdk-batches").await;
    for id in 0..25 {
        client
            .publish_acked(
                "orders",
                format!(r#"{{"id":{id},"qty":{id}}}"#),
                AckType::Processed,
            )
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    let query = || SowOptions::topic("orders").order_by("/id");
    let plain = client.sow(query()).await.unwrap().collect().await.unwrap();
    assert_eq!(plain.len(), 25);
    for size in [2, 7, 100] {
        let mut results = client.sow(query().batch_size(size)).await.unwrap();
        let mut batched = Vec::new();
        while let Some(record) = results.next().await {
            batched.push(record.unwrap());
        }
        assert_eq!(batched, plain, "batch_size {size}");
        assert_eq!(results.records(), Some(25));
    }

    let mut follow = client
        .sow_and_subscribe(query().batch_size(4))
        .await
        .unwrap();
    let snapshot = snapshot_then_live(&client, &mut follow, 25, r#"{"id":99,"qty":1}"#).await;
    assert_eq!(snapshot, plain);
    follow.unsubscribe().await.unwrap();

    let refused = client.sow(query().batch_size(0)).await.unwrap_err();
    match refused {
        Error::Failed { code, reason, .. } => {
            assert_eq!(code, ReasonCode::InvalidField);
            assert!(reason.contains("10000"), "{reason}");
        }
        other => panic!("expected the broker's refusal, got {other:?}"),
    }
}

/// Reads `follow`'s snapshot, which must end with a count of `records`;
/// then publishes `body` to `orders` and checks that it arrives live.
/// Returns the snapshot.
async fn snapshot_then_live(
    client: &Client,
    follow: &mut SowSubscription,
    records: u64,
    body: &str,
) -> Vec<SowRecord> {
    let mut snapshot = Vec::new();
    loop {
        match follow.next().await.unwrap().unwrap() {
            SowItem::Record(record) => snapshot.push(record),
            SowItem::EndOfSnapshot { records: sent } => {
                assert_eq!(sent, records);
                break;
            }
            SowItem::Message(message) => panic!("live before the snapshot ended: {message:?}"),
        }
    }
    client
        .publish_acked("orders", body.to_owned(), AckType::Processed)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    match follow.next().await.unwrap().unwrap() {
        SowItem::Message(message) => assert_eq!(&message.payload[..], body.as_bytes()),
        other => panic!("expected the live update, got {other:?}"),
    }
    snapshot
}
