//! Durability under SIGKILL: a publisher sends with `persisted` acks while
//! the broker is killed with SIGKILL at random moments. After every
//! restart, a replay from `epoch` must hold every acknowledged message
//! exactly once, in the order it was published, and nothing that was never
//! sent. `STATECAST_CRASH_CYCLES` sets the number of kills (default 50);
//! `STATECAST_SEED` replays a failing run (the seed is printed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use statecast_client::{AckType, SubscribeOptions};

use crate::support::Broker;

/// splitmix64: small, seedable, good enough to pick kill moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[derive(Default)]
struct History {
    /// Per cycle: how many messages were sent (acked or not).
    sent: HashMap<u64, u64>,
    /// (cycle, seq) of every acknowledged message, with its bookmark.
    acked: Vec<(u64, u64, u64)>,
}

/// Publishes `{"c":cycle,"s":n}` with persisted acks, 64 in flight, until
/// the connection fails.
async fn publish_until_killed(broker_addr: String, cycle: u64, history: Arc<Mutex<History>>) {
    let Ok(client) = statecast_client::Client::connect(
        &broker_addr,
        statecast_client::ClientOptions::new("crash"),
    )
    .await
    else {
        return;
    };
    let mut window = std::collections::VecDeque::new();
    let mut seq = 0u64;
    loop {
        let sent = client
            .publish_acked(
                "crash/log",
                format!(r#"{{"c":{cycle},"s":{seq}}}"#),
                AckType::Persisted,
            )
            .await;
        let Ok(pending) = sent else { break };
        history.lock().unwrap().sent.insert(cycle, seq + 1);
        window.push_back((seq, pending));
        seq += 1;
        if window.len() >= 64 {
            let (seq, pending) = window.pop_front().unwrap();
            match pending.wait().await {
                Ok(ack) => history.lock().unwrap().acked.push((
                    cycle,
                    seq,
                    ack.bookmark.expect("bookmark"),
                )),
                Err(_) => break,
            }
        }
    }
    // The broker died: acks still in flight are unknown, not acknowledged.
}

/// Replays the whole journal and checks it against the history.
async fn verify(broker: &Broker, history: &History, seed: u64, cycle: u64) {
    let end = broker.journal_health()["appended"]
        .as_u64()
        .expect("appended")
        + 1;
    let client = broker.client("verifier").await;
    let mut replay = client
        .subscribe_with(SubscribeOptions::topic("crash/log").bookmark(format!("[epoch:{end})")))
        .await
        .expect("replay");
    let mut seen: HashMap<(u64, u64), u64> = HashMap::new();
    let mut last_per_cycle: HashMap<u64, u64> = HashMap::new();
    let mut last_bookmark = 0;
    while let Some(message) = replay.next().await {
        let message =
            message.unwrap_or_else(|e| panic!("seed {seed}, cycle {cycle}: replay failed: {e}"));
        let value: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        let (c, s) = (value["c"].as_u64().unwrap(), value["s"].as_u64().unwrap());
        let bookmark = message.bookmark.expect("journaled messages have bookmarks");
        assert!(
            bookmark > last_bookmark,
            "seed {seed}: bookmarks out of order"
        );
        last_bookmark = bookmark;
        assert!(
            s < history.sent.get(&c).copied().unwrap_or(0),
            "seed {seed}: ({c},{s}) was never sent"
        );
        assert!(
            seen.insert((c, s), bookmark).is_none(),
            "seed {seed}: ({c},{s}) replayed twice"
        );
        if let Some(previous) = last_per_cycle.insert(c, s) {
            assert!(
                s > previous,
                "seed {seed}: cycle {c} out of order: {s} after {previous}"
            );
        }
    }
    for (c, s, bookmark) in &history.acked {
        assert_eq!(
            seen.get(&(*c, *s)),
            Some(bookmark),
            "seed {seed}, after kill {cycle}: acknowledged ({c},{s}) at bookmark {bookmark} is missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_sigkill_at_random_moments() {
    let cycles = env_u64("STATECAST_CRASH_CYCLES").unwrap_or(50);
    let seed = env_u64("STATECAST_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    eprintln!("crash loop: {cycles} kills, STATECAST_SEED={seed}");
    let mut rng = Rng(seed);
    let history = Arc::new(Mutex::new(History::default()));
    let mut broker = Broker::start();
    for cycle in 0..cycles {
        let publisher = tokio::spawn(publish_until_killed(
            broker.client.clone(),
            cycle,
            Arc::clone(&history),
        ));
        // The moment of the kill is what this test randomises.
        tokio::time::sleep(Duration::from_millis(rng.range(5, 150))).await;
        tokio::task::block_in_place(|| broker.kill());
        publisher.await.unwrap();
        tokio::task::block_in_place(|| broker.restart());
        let snapshot = {
            let history = history.lock().unwrap();
            History {
                sent: history.sent.clone(),
                acked: history.acked.clone(),
            }
        };
        verify(&broker, &snapshot, seed, cycle).await;
    }
    let history = history.lock().unwrap();
    eprintln!(
        "crash loop: {} messages acknowledged across {cycles} kills",
        history.acked.len()
    );
    assert!(
        history.acked.len() as u64 > cycles,
        "the publisher got acks in most cycles"
    );
}
