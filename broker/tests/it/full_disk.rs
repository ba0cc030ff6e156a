//! A full disk through a real broker: its data directory on a small tmpfs
//! fills up under a publisher; publishes then fail with `journal_error`
//! naming the cause, nothing acknowledged is lost, and once space returns
//! publishing resumes without a restart.
//!
//! Mounting a tmpfs needs root (CI runs as root); elsewhere the test says
//! it was skipped.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command as Process;

use futures::StreamExt;
use statecast_client::{AckType, Error, ReasonCode, SubscribeOptions};

use crate::support::{Broker, path_str};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u32>().ok())
        })
        == Some(0)
}

struct Unmount(String);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_publishes_clearly_and_publishing_resumes_when_space_returns() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let mut mounted = None;
    let broker = Broker::start_prepared(
        &[],
        "[journal]\nsegment_bytes = \"1 MiB\"\npreallocate = 1\n",
        |data: &Path| {
            std::fs::create_dir_all(data).expect("data dir");
            let ok = Process::new("mount")
                .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs", path_str(data)])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "mount -t tmpfs failed (root, but no mount permission?)");
            // Most of the space goes to a filler, removed later.
            std::fs::write(data.join("filler"), vec![1u8; 3 << 20]).expect("filler");
            mounted = Some(Unmount(path_str(data).to_owned()));
        },
    );
    let _unmount = mounted.expect("mounted");
    let client = broker.client("filler-up").await;
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let payload_pad = "x".repeat(1000);
    let mut refusal = None;
    for i in 0..20_000u64 {
        let payload = format!(r#"{{"i":{i},"pad":"{payload_pad}"}}"#);
        let ack = client
            .publish_acked("disk", payload.clone(), AckType::Persisted)
            .await
            .expect("send")
            .wait()
            .await;
        match ack {
            Ok(ack) => {
                acked.insert(ack.bookmark.expect("bookmark"), payload);
            }
            Err(error) => {
                refusal = Some(error);
                break;
            }
        }
    }
    match refusal {
        Some(Error::Failed { code, reason, .. }) => {
            assert_eq!(code, ReasonCode::JournalError);
            assert!(
                reason.contains("space") || reason.contains("No space"),
                "the reason names the cause: {reason}"
            );
        }
        other => panic!("expected a journal_error once the disk is full, got {other:?}"),
    }
    assert!(
        acked.len() > 100,
        "{} acknowledged before the disk filled",
        acked.len()
    );

    // Everything acknowledged is there.
    let last = *acked.keys().next_back().expect("acked");
    let reader = broker.client("disk-reader").await;
    let mut replay = reader
        .subscribe_with(SubscribeOptions::topic("disk").bookmark(format!("[epoch:{})", last + 1)))
        .await
        .expect("replay");
    let mut replayed = BTreeMap::new();
    while let Some(message) = replay.next().await {
        let message = message.expect("replayed");
        replayed.insert(
            message.bookmark.expect("bookmark"),
            String::from_utf8_lossy(&message.payload).into_owned(),
        );
    }
    assert_eq!(
        replayed, acked,
        "every acknowledged message, and only those"
    );

    // Space returns: publishing resumes, no restart.
    std::fs::remove_file(broker.data_dir().join("filler")).expect("remove filler");
    let mut resumed = false;
    for i in 0..1000 {
        let ack = client
            .publish_acked("disk", format!(r#"{{"after":{i}}}"#), AckType::Persisted)
            .await
            .expect("send")
            .wait()
            .await;
        if ack.is_ok() {
            resumed = true;
            break;
        }
        // The housekeeper prepares the next segment in the background; a
        // refusal until then is expected and says why.
        tokio::task::yield_now().await;
    }
    assert!(resumed, "publishing resumes once space returns");
}
