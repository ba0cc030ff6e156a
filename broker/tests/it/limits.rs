//! Limits through real brokers: many connections, the connection cap, and a
//! subscriber that stops reading.

use std::time::{Duration, Instant};

use futures::StreamExt;
use statecast_protocol::{Command, ReasonCode, Subscribe, Utf8};

use crate::support::{Broker, Raw};

fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(
        hard >= 4096,
        "this test needs `ulimit -Hn` of at least 4096, have {hard}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_connections_are_served() {
    raise_open_files();
    let broker = Broker::start();
    let mut clients = Vec::new();
    for i in 0..1000 {
        let client = broker.client(&format!("c{i}")).await;
        let subscription = client.subscribe(&format!("topic/{i}")).await.unwrap();
        clients.push((client, subscription));
    }
    assert!(
        broker.admin_get("/health").contains("\"connections\":1000"),
        "{}",
        broker.admin_get("/health")
    );
    let publisher = broker.client("publisher").await;
    for i in 0..1000 {
        publisher
            .publish(&format!("topic/{i}"), format!("hello {i}"))
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    for (i, (_client, subscription)) in clients.iter_mut().enumerate() {
        let message = subscription.next().await.unwrap().unwrap();
        assert_eq!(message.payload.as_ref(), format!("hello {i}").as_bytes());
    }
}

#[test]
fn connections_over_the_cap_are_refused_with_a_reason() {
    let broker = Broker::start_with("[limits]\nconnections_max = 2\n");
    let _a = Raw::logged_on(&broker.client, "a", None);
    let _b = Raw::logged_on(&broker.client, "b", None);
    let mut c = Raw::connect(&broker.client);
    let frames = c.drain_to_eof();
    let Some(Command::Ack(ack)) = frames.first() else {
        panic!("expected a failure ack, got {frames:?}")
    };
    assert_eq!(ack.reason_code, ReasonCode::TooManyConnections);
    drop(_a);
    // Once one closes, a new connection is served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut d = Raw::connect(&broker.client);
        d.send(&Command::Logon(statecast_protocol::Logon {
            command_id: Some(1),
            client_name: Utf8::from("d"),
            credentials: None,
            heartbeat_ms: None,
        }));
        match d.recv() {
            Some(Command::Ack(ack)) if ack.status == statecast_protocol::Status::Success => break,
            _ if Instant::now() < deadline => std::thread::park_timeout(Duration::from_millis(20)),
            other => panic!("a slot never freed up: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_disconnected_while_another_keeps_receiving() {
    let broker = Broker::start_with(
        "[limits]\nframe_bytes_max = \"64 KiB\"\nclient_outbound_bytes_max = \"1 MiB\"\n",
    );
    // The stalled subscriber: a raw socket that subscribes and never reads.
    let stalled = tokio::task::block_in_place(|| {
        let mut raw = Raw::logged_on(&broker.client, "stalled", None);
        raw.send(&Command::Subscribe(Subscribe {
            command_id: Some(2),
            sub_id: 1,
            topic: Utf8::from("firehose"),
            filter: None,
            options: None,
            bookmark: None,
        }));
        assert!(matches!(raw.recv(), Some(Command::Ack(_))));
        raw
    });
    let fast = broker.client("fast").await;
    let mut subscription = fast.subscribe("firehose").await.unwrap();
    const COUNT: u64 = 20_000;
    // The publisher stays at most WINDOW messages ahead of the fast reader,
    // so the fast reader's queue stays far below the 1 MiB limit while the
    // stalled one passes it.
    const WINDOW: u64 = 256;
    let progress = std::sync::Arc::new((
        std::sync::atomic::AtomicU64::new(0),
        tokio::sync::Notify::new(),
    ));
    let reader = {
        let progress = std::sync::Arc::clone(&progress);
        tokio::spawn(async move {
            let _fast = fast;
            for expected in 0..COUNT {
                let message = subscription.next().await.unwrap().unwrap();
                assert_eq!(
                    &message.payload[..8],
                    &expected.to_le_bytes(),
                    "the fast subscriber misses nothing"
                );
                progress
                    .0
                    .store(expected + 1, std::sync::atomic::Ordering::Release);
                progress.1.notify_one();
            }
        })
    };
    let publisher = broker.client("publisher").await;
    let mut payload = vec![b'x'; 1024];
    for seq in 0..COUNT {
        while seq >= progress.0.load(std::sync::atomic::Ordering::Acquire) + WINDOW {
            let notified = progress.1.notified();
            if seq < progress.0.load(std::sync::atomic::Ordering::Acquire) + WINDOW {
                break;
            }
            notified.await;
        }
        payload[..8].copy_from_slice(&seq.to_le_bytes());
        publisher
            .publish("firehose", payload.clone())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    reader.await.unwrap();
    assert!(
        broker.wait_for_log("slow client", Duration::from_secs(10)),
        "the broker logs why it disconnected the stalled subscriber:\n{}",
        broker.logs()
    );
    // The stalled socket now reads what the kernel had buffered, then the close.
    tokio::task::block_in_place(move || {
        let mut stalled = stalled;
        let frames = stalled.drain_to_eof();
        let delivered = frames
            .iter()
            .filter(|f| matches!(f, Command::Deliver(_)))
            .count() as u64;
        assert!(
            delivered < COUNT,
            "the stalled client was cut off ({delivered} delivered)"
        );
    });
}
