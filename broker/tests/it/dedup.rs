//! Publisher de-duplication through real brokers: resends after a reconnect
//! and after a SIGKILL restart are acknowledged as duplicates and not
//! published again; a newer logon with a client name closes the older
//! connection; the SDK's reliable publisher delivers every message exactly
//! once while the broker is killed under it.

use futures::StreamExt;
use statecast_client::{PublisherOptions, ReliablePublisher, SubscribeOptions};
use statecast_protocol::{Ack, AckSet, AckType, Command, Publish, ReasonCode, Status, Utf8};

use crate::support::{Broker, Raw};

/// Publishes `sequence` with a persisted ack and returns that ack.
fn publish_persisted(raw: &mut Raw, sequence: u64) -> Ack {
    raw.send(&Command::Publish(Publish {
        command_id: Some(1000 + sequence),
        topic: Utf8::from("payments"),
        ack: AckSet::only(AckType::Persisted),
        sequence: Some(sequence),
        sow_key: None,
        payload: format!("order {sequence}").into(),
    }));
    loop {
        match raw.recv() {
            Some(Command::Ack(ack)) if ack.command_id == Some(1000 + sequence) => return ack,
            Some(_) => {}
            None => panic!("connection closed while waiting for the ack of {sequence}"),
        }
    }
}

/// Every payload of topic `payments` in the journal up to bookmark `last`,
/// in bookmark order (a bounded replay: its stream ends after `last`).
async fn journaled(broker: &Broker, last: u64) -> Vec<String> {
    let client = broker.client("journal-reader").await;
    let mut replay = client
        .subscribe_with(
            SubscribeOptions::topic("payments").bookmark(format!("[epoch:{})", last + 1)),
        )
        .await
        .expect("replay");
    let mut payloads = Vec::new();
    while let Some(message) = replay.next().await {
        let message = message.expect("replayed message");
        payloads.push(String::from_utf8_lossy(&message.payload).into_owned());
    }
    payloads
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_after_a_reconnect_and_a_restart_are_duplicates() {
    let mut broker = Broker::start();
    let (mut first, ack) = Raw::logon_ack(&broker.client, "order-gateway");
    assert_eq!(ack.sequence, Some(0), "a new name has persisted nothing");
    for sequence in 1..=5 {
        let ack = publish_persisted(&mut first, sequence);
        assert_eq!(ack.status, Status::Success);
        assert_eq!(ack.reason_code, ReasonCode::None);
        assert_eq!(ack.sequence, Some(sequence));
        assert!(ack.bookmark.is_some());
    }

    // The same name logs on again (the old connection still open, as
    // after a network failure): the old one is closed with a reason.
    let (mut second, ack) = Raw::logon_ack(&broker.client, "order-gateway");
    assert_eq!(ack.sequence, Some(5));
    let closing = first.drain_to_eof();
    assert!(
        closing.iter().any(|frame| matches!(frame, Command::Ack(ack)
            if ack.reason_code == ReasonCode::ClientReplaced && ack.status == Status::Failure)),
        "the older connection is told why it closes: {closing:?}"
    );
    for sequence in 4..=5 {
        let ack = publish_persisted(&mut second, sequence);
        assert_eq!(ack.status, Status::Success, "a duplicate is not a failure");
        assert_eq!(ack.reason_code, ReasonCode::Duplicate);
    }
    let ack = publish_persisted(&mut second, 6);
    assert_eq!(ack.reason_code, ReasonCode::None);

    // Across a SIGKILL restart the highest persisted sequence survives.
    broker.kill();
    broker.restart();
    let (mut third, ack) = Raw::logon_ack(&broker.client, "order-gateway");
    assert_eq!(ack.sequence, Some(6));
    assert_eq!(
        publish_persisted(&mut third, 6).reason_code,
        ReasonCode::Duplicate
    );
    let last = publish_persisted(&mut third, 7);
    assert_eq!(last.reason_code, ReasonCode::None);
    // Sequences are per name: another publisher starts at 0.
    let (_other, ack) = Raw::logon_ack(&broker.client, "other-gateway");
    assert_eq!(ack.sequence, Some(0));

    let expected: Vec<String> = (1..=7).map(|s| format!("order {s}")).collect();
    let last = last.bookmark.expect("a bookmark");
    assert_eq!(
        journaled(&broker, last).await,
        expected,
        "each message once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reliable_publisher_delivers_exactly_once_across_broker_kills() {
    const MESSAGES: u64 = 20_000;
    const KILLS: u64 = 3;
    let mut broker = Broker::start();
    let options = PublisherOptions::new("reliable");
    let mut publisher = ReliablePublisher::connect(&broker.client, options)
        .await
        .expect("connect");
    let (progress, mut watch) = tokio::sync::watch::channel(0u64);
    let task = tokio::spawn(async move {
        for i in 0..MESSAGES {
            publisher
                .publish("payments", format!("payment {i}"))
                .await
                .unwrap_or_else(|e| panic!("publish {i}: {e}"));
            progress.send_replace(i + 1);
        }
        publisher.flush().await.expect("flush");
        publisher
    });
    for kill in 1..=KILLS {
        // Kill at spread-out points of the run, while publishes are in flight.
        let at = MESSAGES * kill / (KILLS + 1);
        watch
            .wait_for(|&sent| sent >= at)
            .await
            .expect("the publisher runs");
        broker.kill();
        broker.restart_on_the_same_port();
    }
    let publisher = task.await.expect("publisher task");
    assert!(
        publisher.reconnects() >= KILLS,
        "{} reconnects",
        publisher.reconnects()
    );
    assert_eq!(publisher.persisted_sequence(), MESSAGES);
    let last = publisher.last_bookmark().expect("acks carry bookmarks");
    let got = journaled(&broker, last).await;
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("payment {i}")).collect();
    if got != expected {
        let first_bad = got
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(got.len().min(expected.len()));
        panic!(
            "journal holds {} messages, expected {}; first difference at {first_bad}: {:?} vs {:?}",
            got.len(),
            expected.len(),
            got.get(first_bad),
            expected.get(first_bad)
        );
    }
}

/// A command's acks reach the client in the order processed, then
/// persisted — also for a duplicate, whose persisted ack is due at once
/// (the journal persisted it long ago) while its processed ack is still
/// in the processor's output for the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processed_ack_comes_before_the_persisted_ack_of_the_same_publish() {
    let broker = Broker::start();
    let (mut raw, _) = Raw::logon_ack(&broker.client, "ordered-acks");
    for sequence in 1..=3 {
        assert_eq!(
            publish_persisted(&mut raw, sequence).status,
            Status::Success
        );
    }
    // Resends (duplicates) and new publishes, each asking for both acks.
    let mut highest = 3;
    for (round, sequence) in [1, 2, 3, 4, 2, 5, 3, 6].into_iter().enumerate() {
        let command_id = 5000 + round as u64;
        let resent = sequence <= highest;
        highest = highest.max(sequence);
        raw.send(&Command::Publish(Publish {
            command_id: Some(command_id),
            topic: Utf8::from("payments"),
            ack: AckSet::only(AckType::Processed).with(AckType::Persisted),
            sequence: Some(sequence),
            sow_key: None,
            payload: format!("order {sequence}").into(),
        }));
        let mut kinds = Vec::new();
        while kinds.len() < 2 {
            match raw.recv() {
                Some(Command::Ack(ack)) if ack.command_id == Some(command_id) => {
                    assert_eq!(ack.status, Status::Success, "{ack:?}");
                    kinds.push(ack.ack_type);
                }
                Some(_) => {}
                None => panic!("connection closed while waiting for the acks of {command_id}"),
            }
        }
        assert_eq!(
            kinds,
            [AckType::Processed, AckType::Persisted],
            "sequence {sequence} (resent: {resent})"
        );
    }
}
