//! Journal recovery through real brokers: a damaged last record (a torn
//! tail) is cut and reported and the broker serves everything before it;
//! damage in the middle of older, synced data stops the start with the file
//! and offset, until the operator asks to quarantine from that point.

use std::ops::ControlFlow;
use std::path::Path;

use futures::StreamExt;
use statecast_client::{AckType, SubscribeOptions};

use crate::support::Broker;

/// (file, offset, stored bytes) of the record with `bookmark`.
fn locate(journal: &Path, bookmark: u64) -> (String, u64, u64) {
    let mut found = None;
    statecast_journal::dump::records(journal, &Default::default(), |record| {
        if record.bookmark == bookmark {
            found = Some((record.file.to_owned(), record.offset, record.stored_bytes));
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("dump the journal");
    found.unwrap_or_else(|| panic!("bookmark {bookmark} is in the journal"))
}

/// Flips one bit of `file` at `offset`.
fn flip(journal: &Path, file: &str, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(journal.join(file))
        .expect("open segment");
    let mut byte = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut byte).unwrap();
    byte[0] ^= 0x10;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&byte).unwrap();
    f.sync_all().unwrap();
}

/// Publishes `count` messages of about 1 KiB with persisted acks; returns
/// their bookmarks.
async fn publish(broker: &Broker, count: u64) -> Vec<u64> {
    let client = broker.client("recovery-publisher").await;
    let mut pending = Vec::new();
    for i in 0..count {
        let payload = format!(r#"{{"i":{i},"pad":"{}"}}"#, "p".repeat(1000));
        pending.push(
            client
                .publish_acked("t", payload, AckType::Persisted)
                .await
                .unwrap(),
        );
    }
    let mut bookmarks = Vec::new();
    for ack in pending {
        bookmarks.push(ack.wait().await.expect("persisted").bookmark.unwrap());
    }
    bookmarks
}

/// The `i` of every message of topic `t` with a bookmark below `end`.
async fn replay(broker: &Broker, end: u64) -> Vec<u64> {
    let (seen, error) = replay_until_error(broker, end).await;
    assert_eq!(error, None, "the replay ends cleanly");
    seen
}

/// Replays topic `t` below `end` and returns the `i` of each message, and
/// the error that ended the stream early, if any.
async fn replay_until_error(broker: &Broker, end: u64) -> (Vec<u64>, Option<String>) {
    let client = broker.client("recovery-reader").await;
    let mut stream = client
        .subscribe_with(SubscribeOptions::topic("t").bookmark(format!("[epoch:{end})")))
        .await
        .expect("replay");
    let mut seen = Vec::new();
    while let Some(message) = stream.next().await {
        match message {
            Ok(message) => {
                let value: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
                seen.push(value["i"].as_u64().unwrap());
            }
            Err(error) => return (seen, Some(error.to_string())),
        }
    }
    (seen, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_reported_and_everything_before_it_served() {
    let mut broker = Broker::start();
    let bookmarks = publish(&broker, 200).await;
    let last = *bookmarks.last().unwrap();
    broker.kill();
    // A crash while writing the next record: its first bytes reached the
    // file (a plausible length, then garbage), the rest did not.
    let journal = broker.data_dir().join("journal");
    let (file, offset, stored) = locate(&journal, last);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(journal.join(&file))
            .unwrap();
        f.seek(SeekFrom::Start(offset + stored)).unwrap();
        let mut torn = 1059u32.to_le_bytes().to_vec();
        torn.extend((0..60u8).map(|b| b.wrapping_mul(37) | 1));
        f.write_all(&torn).unwrap();
        f.sync_all().unwrap();
    }

    broker.restart();
    let logs = broker.logs();
    assert!(
        logs.contains("torn tail"),
        "recovery reports what it cut: {logs}"
    );
    let seen = replay(&broker, last + 1).await;
    assert_eq!(seen, (0..200).collect::<Vec<_>>(), "every complete record");
    // The broker serves: new messages get new bookmarks (never reused).
    let after = publish(&broker, 1).await;
    assert!(after[0] > last, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_synced_data_refuses_to_start_until_quarantined() {
    let mut broker = Broker::start();
    let bookmarks = publish(&broker, 200).await;
    let damaged = bookmarks[100];
    // Recovery knows data is synced up to the last checkpoint (written when
    // the flusher enters a segment and at most once a second, on a sync):
    // keep a trickle of persisted publishes going until it covers the
    // record to damage.
    let mut trickle = 0;
    while broker.journal_health()["checkpointed"]
        .as_u64()
        .unwrap_or(0)
        < damaged
    {
        publish(&broker, 1).await;
        trickle += 1;
        assert!(trickle < 20_000, "no checkpoint covered bookmark {damaged}");
    }
    broker.kill();
    // Bit rot in a record that was synced (and acknowledged) before the
    // crash, in the part recovery scans.
    let journal = broker.data_dir().join("journal");
    let (file, offset, stored) = locate(&journal, damaged);
    flip(&journal, &file, offset + stored / 2);

    let (status, stderr) = broker.start_refused();
    assert!(!status.success(), "strict recovery refuses to start");
    assert!(
        stderr.contains(&file) && stderr.contains(&format!("offset {offset}")),
        "the refusal names the file and the offset ({file} at {offset}): {stderr}"
    );
    assert!(
        stderr.contains("quarantine"),
        "and says what the operator can do: {stderr}"
    );

    broker.append_config("recovery = \"quarantine\"\n");
    broker.restart();
    assert!(
        broker.data_dir().join("journal/quarantine").is_dir(),
        "the damaged data is set aside, not deleted"
    );
    let seen = replay(&broker, damaged).await;
    assert_eq!(
        seen,
        (0..100).collect::<Vec<_>>(),
        "everything before the damage"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_an_older_segment_stops_a_replay_with_an_error() {
    let mut broker = Broker::start_with("[journal]\nsegment_bytes = \"1 MiB\"\npreallocate = 1\n");
    // About 3 segments, then a clean shutdown: sealed segments covered by
    // the checkpoint are not rescanned at start, so damage there shows
    // when a reader reaches it — and must never be skipped silently.
    let bookmarks = publish(&broker, 2500).await;
    let last = *bookmarks.last().unwrap();
    broker.terminate();
    let journal = broker.data_dir().join("journal");
    let damaged = bookmarks[100];
    let (file, offset, stored) = locate(&journal, damaged);
    let (last_file, _, _) = locate(&journal, last);
    assert_ne!(file, last_file, "the damage is in an older segment");
    flip(&journal, &file, offset + stored / 2);

    broker.restart();
    let (seen, error) = replay_until_error(&broker, last + 1).await;
    assert_eq!(
        seen,
        (0..100).collect::<Vec<_>>(),
        "records before the damage"
    );
    let error = error.expect("the replay ends with an error, not a silent skip");
    assert!(error.contains(&file), "the error names the file: {error}");
}
