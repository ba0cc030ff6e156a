//! Publish/subscribe behaviour through real brokers: ordering and
//! completeness of fan-out, topic patterns, unsubscribe.

use bytes::Bytes;
use futures::StreamExt;
use statecast_protocol::{Command, Publish, Subscribe, Unsubscribe, Utf8};

use crate::support::{Broker, Raw, ready_now};

const MESSAGES: u64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_subscribers_each_get_all_messages_in_publish_order() {
    fan_out_in_order(Broker::start()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_with_the_processor_inline_on_the_io_thread() {
    fan_out_in_order(Broker::start_with(
        "[threads]\npin = false\ninline = \"always\"\n",
    ))
    .await;
}

async fn fan_out_in_order(broker: Broker) {
    let mut subscribers = Vec::new();
    for i in 0..4 {
        let client = broker.client(&format!("sub-{i}")).await;
        let subscription = client.subscribe("stream").await.expect("subscribe");
        subscribers.push((client, subscription));
    }
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|(client, mut subscription)| {
            tokio::spawn(async move {
                let _client = client;
                let mut expected = 0u64;
                while expected < MESSAGES {
                    let message = subscription
                        .next()
                        .await
                        .expect("stream open")
                        .expect("message");
                    let seq: u64 = std::str::from_utf8(&message.payload)
                        .unwrap()
                        .parse()
                        .unwrap();
                    assert_eq!(seq, expected, "messages arrive once each, in publish order");
                    assert_eq!(message.topic.as_str(), "stream");
                    expected += 1;
                }
                expected
            })
        })
        .collect();
    let publisher = broker.client("publisher").await;
    for seq in 0..MESSAGES {
        publisher
            .publish("stream", seq.to_string())
            .await
            .expect("publish");
    }
    publisher.flush().await.expect("flush");
    for reader in readers {
        assert_eq!(reader.await.expect("reader"), MESSAGES);
    }
}

/// With topics spread over several processors, a flush acked by one of them
/// still comes after every delivery the others produced before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_is_a_barrier_across_processors() {
    const TOPICS: usize = 12;
    const ROUNDS: usize = 50;
    let broker = Broker::start_with("[threads]\npin = false\nio = 1\nprocessors = 3\n");
    // The same connection publishes and subscribes, so its flush races
    // the deliveries of its own publishes on every processor.
    let client = broker.client("barrier").await;
    let mut subscription = client.subscribe("^t[0-9]+$").await.unwrap();
    // Traffic from another connection keeps every processor busy with
    // batches queued behind the flush.
    let noise = broker.client("noise").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let noise_task = {
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                noise.publish(&format!("n{}", i % 12), "x").await.unwrap();
                i += 1;
                if i.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    for burst in 0..20 {
        for round in 0..ROUNDS {
            for topic in 0..TOPICS {
                client
                    .publish(&format!("t{topic}"), round.to_string())
                    .await
                    .unwrap();
            }
        }
        client.flush().await.unwrap();
        let got = buffered(&mut subscription);
        assert_eq!(
            got.len(),
            TOPICS * ROUNDS,
            "burst {burst}: everything published before the flush is readable"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    noise_task.await.unwrap();
}

/// Collects what a subscription holds right now (after a flush barrier,
/// everything delivered before it is buffered).
fn buffered(subscription: &mut statecast_client::Subscription) -> Vec<String> {
    let mut topics = Vec::new();
    while let Some(Some(Ok(message))) = ready_now(subscription) {
        topics.push(format!(
            "{}={}",
            message.topic,
            String::from_utf8_lossy(&message.payload)
        ));
    }
    topics
}

#[tokio::test]
async fn patterns_match_the_right_topics() {
    let broker = Broker::start();
    let client = broker.client("patterns").await;
    let mut regional = client.subscribe("^orders/(eu|us)$").await.unwrap();
    let mut quotes = client.subscribe("quotes.*").await.unwrap();
    let mut literal = client
        .subscribe_with(statecast_client::SubscribeOptions {
            topic: "a+b".into(),
            filter: None,
            options: Some("non_regex_topic".into()),
            bookmark: None,
        })
        .await
        .unwrap();
    let publisher = broker.client("publisher").await;
    for topic in [
        "orders/eu",
        "orders/us",
        "orders/asia",
        "orders/eu/x",
        "quotes.fx",
        "xquotes",
        "quote",
        "a+b",
        "aab",
    ] {
        publisher
            .publish(topic, topic.to_uppercase())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(
        buffered(&mut regional),
        ["orders/eu=ORDERS/EU", "orders/us=ORDERS/US"]
    );
    let mut got = buffered(&mut quotes);
    got.sort();
    assert_eq!(
        got,
        ["quotes.fx=QUOTES.FX", "xquotes=XQUOTES"],
        "patterns match anywhere unless anchored"
    );
    assert_eq!(buffered(&mut literal), ["a+b=A+B"]);
}

#[tokio::test]
async fn a_pattern_subscription_sees_topics_first_published_before_it() {
    let broker = Broker::start();
    let publisher = broker.client("publisher").await;
    publisher.publish("early/topic", "before").await.unwrap();
    publisher.flush().await.unwrap();
    let client = broker.client("late").await;
    let mut subscription = client.subscribe("^early/").await.unwrap();
    publisher.publish("early/topic", "after").await.unwrap();
    publisher.flush().await.unwrap();
    client.flush().await.unwrap();
    assert_eq!(buffered(&mut subscription), ["early/topic=after"]);
}

#[test]
fn unsubscribe_stops_delivery_after_its_ack() {
    let broker = Broker::start();
    let mut raw = Raw::logged_on(&broker.client, "raw", None);
    for (sub_id, topic) in [(1, "t"), (2, "^t$")] {
        raw.send(&Command::Subscribe(Subscribe {
            command_id: Some(10 + sub_id),
            sub_id,
            topic: Utf8::from(topic),
            filter: None,
            options: None,
            bookmark: None,
        }));
        let Some(Command::Ack(ack)) = raw.recv() else {
            panic!("subscribe ack")
        };
        assert_eq!(ack.sub_id, Some(sub_id));
    }
    let publish = |body: &'static str| {
        Command::Publish(Publish {
            command_id: None,
            topic: Utf8::from("t"),
            ack: statecast_protocol::AckSet::NONE,
            sequence: None,
            sow_key: None,
            payload: Bytes::from_static(body.as_bytes()),
        })
    };
    raw.send(&publish("x"));
    let Some(Command::Deliver(first)) = raw.recv() else {
        panic!("delivery")
    };
    let mut ids: Vec<u64> = first.sub_ids.iter().collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        [1, 2],
        "one delivery names both matching subscriptions"
    );
    raw.send(&Command::Unsubscribe(Unsubscribe {
        command_id: Some(20),
        sub_id: Some(1),
    }));
    let Some(Command::Ack(ack)) = raw.recv() else {
        panic!("unsubscribe ack")
    };
    assert_eq!(
        (ack.command_id, ack.status),
        (Some(20), statecast_protocol::Status::Success)
    );
    raw.send(&publish("y"));
    let Some(Command::Deliver(second)) = raw.recv() else {
        panic!("delivery")
    };
    assert_eq!(second.sub_ids.iter().collect::<Vec<_>>(), [2]);
    assert_eq!(second.payload.as_ref(), b"y");
    // Unsubscribe-all, then nothing more arrives before the flush ack.
    raw.send(&Command::Unsubscribe(Unsubscribe {
        command_id: Some(21),
        sub_id: None,
    }));
    let Some(Command::Ack(ack)) = raw.recv() else {
        panic!("unsubscribe-all ack")
    };
    assert_eq!(ack.command_id, Some(21));
    raw.send(&publish("z"));
    raw.send(&Command::Flush(statecast_protocol::Flush {
        command_id: 22,
    }));
    match raw.recv() {
        Some(Command::Ack(ack)) => assert_eq!(ack.command_id, Some(22)),
        other => panic!("expected only the flush ack, got {other:?}"),
    }
    // An unknown sub id is refused and the connection stays usable.
    raw.send(&Command::Unsubscribe(Unsubscribe {
        command_id: Some(23),
        sub_id: Some(99),
    }));
    let Some(Command::Ack(ack)) = raw.recv() else {
        panic!("ack")
    };
    assert_eq!(
        ack.reason_code,
        statecast_protocol::ReasonCode::UnknownSubId
    );
}

#[tokio::test]
async fn persisted_acks_carry_bookmarks_and_are_refused_for_topics_not_journaled() {
    let broker = Broker::start_with(
        "[journal]\ntopics = [\"journaled/.*\"]\nsegment_bytes = \"4 MiB\"\npreallocate = 1\n",
    );
    let client = broker.client("acker").await;
    let pending = client
        .publish_acked("t", "x", statecast_client::AckType::Processed)
        .await
        .unwrap();
    let ack = pending.wait().await.expect("processed ack");
    assert_eq!(
        ack.bookmark, None,
        "a topic that is not journaled has no bookmark"
    );
    let mut bookmarks = Vec::new();
    for _ in 0..3 {
        let pending = client
            .publish_acked("journaled/a", "x", statecast_client::AckType::Persisted)
            .await
            .unwrap();
        let ack = pending.wait().await.expect("persisted ack");
        assert_eq!(ack.ack_type, statecast_client::AckType::Persisted);
        bookmarks.push(ack.bookmark.expect("a persisted ack names its bookmark"));
    }
    assert!(
        bookmarks.windows(2).all(|w| w[0] < w[1]),
        "bookmarks increase: {bookmarks:?}"
    );
    let pending = client
        .publish_acked("t", "x", statecast_client::AckType::Persisted)
        .await
        .unwrap();
    match pending.wait().await {
        Err(statecast_client::Error::Failed { code, reason, .. }) => {
            assert_eq!(code, statecast_client::ReasonCode::AckNotAvailable);
            assert!(reason.contains("journal"), "{reason}");
        }
        other => panic!("expected ack_not_available, got {other:?}"),
    }
}

#[tokio::test]
async fn duplicate_sub_ids_and_bad_patterns_are_refused_without_closing() {
    let broker = Broker::start();
    let client = broker.client("refused").await;
    match client.subscribe("bad(").await {
        Err(statecast_client::Error::Failed { code, reason, .. }) => {
            assert_eq!(code, statecast_client::ReasonCode::InvalidTopic);
            assert!(reason.contains("invalid topic pattern"), "{reason}");
        }
        other => panic!("expected invalid_topic, got {other:?}"),
    }
    let long = "x".repeat(2000);
    assert!(
        client.subscribe(&long).await.is_err(),
        "topics over limits.topic_bytes_max are refused"
    );
    client.flush().await.expect("the connection is still open");
}
