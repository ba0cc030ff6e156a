//! A failed journal sync through a real broker: strace's fault injection
//! makes one of the journal's `fdatasync` calls fail with EIO while a publisher
//! waits for persisted acks. The broker must stop at once (exit status 3,
//! a message naming the failure), acknowledge nothing the failed sync
//! covered, and a restart on the same data must hold every acknowledged
//! message.

use std::collections::BTreeMap;
use std::process::Command as Process;
use std::time::Duration;

use futures::StreamExt;
use statecast_client::{AckType, Client, ClientOptions, PendingAck, SubscribeOptions};

use crate::support::Broker;

/// Publishes in flight.
const WINDOW: usize = 200;

fn strace_available() -> bool {
    Process::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_stops_the_broker_and_loses_nothing_acknowledged() {
    assert!(
        strace_available(),
        "this test needs strace (Debian package strace; scripts/setup --test installs it)"
    );
    // Fail the 40th fdatasync from the start: a few go to recovery and
    // preallocation at start-up, the rest are the flusher's group commits
    // under the publisher below.
    let mut broker = Broker::start_under(
        &[
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=fdatasync",
            "-e",
            "inject=fdatasync:error=EIO:when=40",
        ],
        "",
    );
    let client = Client::connect(&broker.client, ClientOptions::new("sync-failure"))
        .await
        .expect("connect");
    let mut window: std::collections::VecDeque<(u64, PendingAck)> = Default::default();
    // Acknowledged messages by bookmark.
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut sent = 0u64;
    let mut failure = None;
    'publish: for i in 0..1_000_000u64 {
        let payload = format!("message {i}");
        match client
            .publish_acked("journaled", payload.clone(), AckType::Persisted)
            .await
        {
            Ok(pending) => window.push_back((i, pending)),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
        sent += 1;
        while window.len() >= WINDOW || (i % 64 == 63 && !window.is_empty()) {
            let Some((i, pending)) = window.pop_front() else {
                break;
            };
            match pending.wait().await {
                Ok(ack) => {
                    let bookmark = ack.bookmark.expect("persisted acks carry bookmarks");
                    acked.insert(bookmark, format!("message {i}"));
                }
                Err(error) => {
                    failure = Some(error);
                    break 'publish;
                }
            }
        }
    }
    assert!(
        failure.is_some(),
        "the publisher saw the broker stop ({sent} sent)"
    );
    let status = broker
        .wait_exit(Duration::from_secs(30))
        .expect("the broker exits after a failed sync");
    assert_eq!(status.code(), Some(3), "fail-stop exit status");
    let logs = broker.logs();
    assert!(
        logs.contains("journal sync failed, stopping"),
        "the log names the failure: {logs}"
    );
    assert!(!acked.is_empty(), "some messages were acknowledged first");

    broker.restart();
    let reader = broker.client("sync-failure-reader").await;
    let last = *acked.keys().next_back().expect("acked");
    let mut replay = reader
        .subscribe_with(
            SubscribeOptions::topic("journaled").bookmark(format!("[epoch:{})", last + 1)),
        )
        .await
        .expect("replay what was acknowledged");
    let mut journal = BTreeMap::new();
    while let Some(message) = replay.next().await {
        let message = message.expect("replayed");
        journal.insert(
            message.bookmark.expect("bookmark"),
            String::from_utf8_lossy(&message.payload).into_owned(),
        );
    }
    for (bookmark, payload) in &acked {
        assert_eq!(
            journal.get(bookmark),
            Some(payload),
            "acknowledged bookmark {bookmark} survives the failed sync and the restart"
        );
    }
}
