//! Bookmark subscriptions through real brokers: replay from `epoch`, from a
//! bookmark, from a time, bounded ranges, filters, unknown bookmarks, and
//! the hand-over to live delivery while publishes continue (no gap, no
//! duplicate).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use futures::StreamExt;
use statecast_client::{
    AckType, BookmarkStore, FileBookmarkStore, ReasonCode, SubscribeOptions, Subscription,
};

use crate::support::{Broker, ready_now};

fn seq_of(message: &statecast_client::Message) -> u64 {
    let value: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    value["seq"].as_u64().unwrap()
}

/// Publishes `{"seq":n}` for n in `range` to `topic` with persisted acks.
async fn publish_range(
    client: &statecast_client::Client,
    topic: &str,
    range: std::ops::Range<u64>,
) -> Vec<u64> {
    let mut bookmarks = Vec::new();
    let mut pending = Vec::new();
    for seq in range {
        pending.push(
            client
                .publish_acked(topic, format!(r#"{{"seq":{seq}}}"#), AckType::Persisted)
                .await
                .unwrap(),
        );
    }
    for ack in pending {
        bookmarks.push(ack.wait().await.unwrap().bookmark.unwrap());
    }
    bookmarks
}

async fn next_seq(subscription: &mut Subscription) -> u64 {
    seq_of(
        &subscription
            .next()
            .await
            .expect("stream open")
            .expect("message"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_epoch_hands_over_to_live_with_no_gap_and_no_duplicate() {
    // Two processors, and a pattern subscription that spans both.
    hand_over(Broker::start_with(
        "[threads]\nprocessors = 2\npin = false\n",
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_hand_over_with_the_processor_inline() {
    hand_over(Broker::start_with(
        "[threads]\npin = false\ninline = \"always\"\n",
    ))
    .await;
}

/// Each topic's `seq` values start at a multiple of this, far apart, so
/// that however long the live publisher runs (a loaded machine lets it run
/// well past the point the test waits for) they never overlap.
const TOPIC_SPAN: u64 = 1_000_000_000;

async fn hand_over(broker: Broker) {
    let publisher = broker.client("publisher").await;
    let topics = ["orders/a", "orders/b", "orders/c", "orders/d"];
    for (i, topic) in topics.iter().enumerate() {
        publish_range(
            &publisher,
            topic,
            (i as u64 * TOPIC_SPAN)..(i as u64 * TOPIC_SPAN + 500),
        )
        .await;
    }
    // Publishing continues through the replay and the hand-over.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let live = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        let publisher = broker.client("live-publisher").await;
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                for (i, topic) in topics.iter().enumerate() {
                    publisher
                        .publish(
                            topic,
                            format!(r#"{{"seq":{}}}"#, i as u64 * TOPIC_SPAN + 500 + n),
                        )
                        .await
                        .unwrap();
                }
                n += 1;
                sent.store(n, Ordering::Release);
                if n.is_multiple_of(16) {
                    publisher.flush().await.unwrap();
                }
            }
            publisher.flush().await.unwrap();
            n
        })
    };
    let client = broker.client("replayer").await;
    let mut single = client
        .subscribe_with(SubscribeOptions::topic("orders/a").bookmark("epoch"))
        .await
        .unwrap();
    let mut pattern = client
        .subscribe_with(SubscribeOptions::topic("^orders/").bookmark("epoch"))
        .await
        .unwrap();
    // Let the live stream run past the hand-over.
    while sent.load(Ordering::Acquire) < 300 {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Release);
    let per_topic = live.await.unwrap();
    client.flush().await.unwrap();
    // The single-topic subscription: 0..500 then 500..500+per_topic, in order.
    for expected in 0..500 + per_topic {
        assert_eq!(
            next_seq(&mut single).await,
            expected,
            "no gap, no duplicate"
        );
    }
    if let Some(extra) = ready_now(&mut single) {
        panic!(
            "nothing more after {} messages, got {:?}",
            500 + per_topic,
            extra
                .map(|m| m.map(|m| (m.bookmark, String::from_utf8_lossy(&m.payload).into_owned())))
        );
    }
    // The pattern subscription: per topic, contiguous and in order.
    let mut next = [0, TOPIC_SPAN, 2 * TOPIC_SPAN, 3 * TOPIC_SPAN];
    for _ in 0..4 * (500 + per_topic) {
        let seq = next_seq(&mut pattern).await;
        let topic = usize::try_from(seq / TOPIC_SPAN).unwrap();
        assert_eq!(seq, next[topic], "topic {topic}: no gap, no duplicate");
        next[topic] += 1;
    }
    if let Some(extra) = ready_now(&mut pattern) {
        panic!(
            "nothing more on the pattern, got {:?}",
            extra
                .map(|m| m.map(|m| (m.bookmark, String::from_utf8_lossy(&m.payload).into_owned())))
        );
    }
}

#[tokio::test]
async fn replay_from_a_bookmark_a_time_and_a_range() {
    let broker = Broker::start();
    let publisher = broker.client("publisher").await;
    let first = publish_range(&publisher, "r", 0..100).await;
    let middle = std::time::SystemTime::now();
    let second = publish_range(&publisher, "r", 100..200).await;
    let client = broker.client("reader").await;
    // After a bookmark: the messages after it.
    let mut after = client
        .subscribe_with(SubscribeOptions::topic("r").bookmark(first[49].to_string()))
        .await
        .unwrap();
    for expected in 50..200 {
        assert_eq!(next_seq(&mut after).await, expected);
    }
    // From a time: the messages stamped at or after it.
    let time = humantime::format_rfc3339_nanos(middle).to_string();
    let mut since = client
        .subscribe_with(SubscribeOptions::topic("r").bookmark(time))
        .await
        .unwrap();
    assert_eq!(next_seq(&mut since).await, 100);
    // A range [from:to): from included, to excluded; the stream then ends.
    let range = format!("[{}:{})", first[10], second[5]);
    let mut bounded = client
        .subscribe_with(SubscribeOptions::topic("r").bookmark(range))
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(message) = bounded.next().await {
        got.push(seq_of(&message.unwrap()));
    }
    assert_eq!(got, (10..105).collect::<Vec<_>>());
    // With a filter, replay applies it too.
    let mut odd = client
        .subscribe_with(
            SubscribeOptions::topic("r")
                .bookmark(format!("[epoch:{})", second[99] + 1))
                .filter("/seq % 2 = 1 AND /seq < 10"),
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(message) = odd.next().await {
        got.push(seq_of(&message.unwrap()));
    }
    assert_eq!(got, [1, 3, 5, 7, 9]);
}

#[tokio::test]
async fn unknown_bookmarks_fail_or_fall_back_as_asked() {
    let broker = Broker::start();
    let publisher = broker.client("publisher").await;
    publish_range(&publisher, "u", 0..3).await;
    let client = broker.client("reader").await;
    match client
        .subscribe_with(SubscribeOptions::topic("u").bookmark("1000"))
        .await
    {
        Err(statecast_client::Error::Failed { code, reason, .. }) => {
            assert_eq!(code, ReasonCode::BookmarkNotFound);
            assert!(reason.contains("bookmark_not_found=epoch|now"), "{reason}");
        }
        other => panic!("expected bookmark_not_found, got {other:?}"),
    }
    let mut options = SubscribeOptions::topic("u").bookmark("1000");
    options.options = Some("bookmark_not_found=epoch".into());
    let mut from_epoch = client.subscribe_with(options).await.unwrap();
    assert_eq!(next_seq(&mut from_epoch).await, 0);
    let mut options = SubscribeOptions::topic("u").bookmark("1000");
    options.options = Some("bookmark_not_found=now".into());
    let mut from_now = client.subscribe_with(options).await.unwrap();
    publish_range(&publisher, "u", 3..4).await;
    assert_eq!(next_seq(&mut from_now).await, 3);
    assert!(
        client
            .subscribe_with(SubscribeOptions::topic("u").bookmark("yesterday"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn unsubscribing_during_a_replay_stops_it() {
    let broker = Broker::start();
    let publisher = broker.client("publisher").await;
    publish_range(&publisher, "big", 0..20_000).await;
    let client = broker.client("reader").await;
    let mut subscription = client
        .subscribe_with(SubscribeOptions::topic("big").bookmark("epoch"))
        .await
        .unwrap();
    assert_eq!(next_seq(&mut subscription).await, 0);
    subscription.unsubscribe().await.unwrap();
    client.flush().await.unwrap();
    assert!(broker.admin_get("/health").contains("\"status\":\"ok\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resumes_after_the_last_message_it_saved() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let store = FileBookmarkStore::open(dir.path()).unwrap();
    let publisher = broker.client("publisher").await;
    publish_range(&publisher, "ledger", 0..100).await;
    {
        // The first run processes 40 messages, saving each, then stops.
        let client = broker.client("ledger-app").await;
        let options = SubscribeOptions::topic("ledger")
            .resume(&store, "ledger-app")
            .unwrap();
        let mut ledger = client.subscribe_with(options).await.unwrap();
        for expected in 0..40 {
            let message = ledger.next().await.unwrap().unwrap();
            assert_eq!(seq_of(&message), expected);
            store.save("ledger-app", message.bookmark.unwrap()).unwrap();
        }
    }
    publish_range(&publisher, "ledger", 100..150).await;
    // The second run picks up at message 40: nothing lost, nothing twice,
    // and then live messages.
    let client = broker.client("ledger-app").await;
    let options = SubscribeOptions::topic("ledger")
        .resume(&FileBookmarkStore::open(dir.path()).unwrap(), "ledger-app")
        .unwrap();
    let mut ledger = client.subscribe_with(options).await.unwrap();
    for expected in 40..150 {
        assert_eq!(next_seq(&mut ledger).await, expected);
    }
    publish_range(&publisher, "ledger", 150..151).await;
    assert_eq!(next_seq(&mut ledger).await, 150);
}
