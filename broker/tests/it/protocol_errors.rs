//! Bad input from the network: each malformed frame gets the documented
//! failure ack and only its connection closes, while another client's
//! stream continues uninterrupted.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use statecast_protocol::{AckSet, Command, Publish, ReasonCode, Status, Utf8};

use crate::support::{Broker, Raw};

/// Sends `bytes` (after logging on when `logon`) and returns the reason code
/// of the failure ack that precedes the close.
fn rejected(broker: &Broker, logon: bool, bytes: &[u8]) -> ReasonCode {
    let mut raw = if logon {
        Raw::logged_on(&broker.client, "bad", None)
    } else {
        Raw::connect(&broker.client)
    };
    raw.send_bytes(bytes);
    let frames = raw.drain_to_eof();
    let acks: Vec<_> = frames
        .iter()
        .filter_map(|f| match f {
            Command::Ack(ack) => Some(ack),
            _ => None,
        })
        .collect();
    assert_eq!(
        acks.len(),
        1,
        "exactly one failure ack before the close: {frames:?}"
    );
    assert_eq!(acks[0].status, Status::Failure);
    assert!(
        acks[0].reason.as_ref().is_some_and(|r| !r.is_empty()),
        "the ack explains itself"
    );
    acks[0].reason_code
}

fn frame(command: u8, fields: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let length = u32::try_from(8 + fields.len() + payload.len()).unwrap();
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(&[1, command, 0, 0]);
    bytes.extend_from_slice(&u32::try_from(fields.len()).unwrap().to_le_bytes());
    bytes.extend_from_slice(fields);
    bytes.extend_from_slice(payload);
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_closes_only_the_offending_connection() {
    let broker = Broker::start();
    // A healthy subscriber and publisher stream through the whole test.
    let subscriber = broker.client("healthy-sub").await;
    let mut subscription = subscriber.subscribe("healthy").await.unwrap();
    let publisher = broker.client("healthy-pub").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = {
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                publisher
                    .publish("healthy", sent.to_string())
                    .await
                    .unwrap();
                sent += 1;
                if sent.is_multiple_of(100) {
                    publisher.flush().await.unwrap();
                }
            }
            publisher.flush().await.unwrap();
            sent
        })
    };

    let cases: Vec<(&str, bool, Vec<u8>, ReasonCode)> = vec![
        (
            "garbage",
            false,
            b"\x03\x00\x00\x00garbage".to_vec(),
            ReasonCode::MalformedFrame,
        ),
        (
            "oversize before logon",
            false,
            u32::MAX.to_le_bytes().to_vec(),
            ReasonCode::FrameTooLarge,
        ),
        (
            "oversize after logon",
            true,
            (64u32 << 20).to_le_bytes().to_vec(),
            ReasonCode::FrameTooLarge,
        ),
        (
            "just over the pre-logon limit",
            false,
            frame(1, &vec![0u8; 65 * 1024], b""),
            ReasonCode::FrameTooLarge,
        ),
        (
            "wrong version",
            false,
            {
                let mut f = frame(1, b"", b"");
                f[4] = 7;
                f
            },
            ReasonCode::UnsupportedVersion,
        ),
        (
            "unknown command",
            true,
            frame(0x7f, b"", b""),
            ReasonCode::UnknownCommand,
        ),
        (
            "reserved command",
            true,
            frame(0x13, b"", b""),
            ReasonCode::UnknownCommand,
        ),
        (
            "field overruns the fields area",
            true,
            frame(3, &[2, 100, 0, b'x'], b""),
            ReasonCode::MalformedFrame,
        ),
        (
            "fields_len past the frame",
            true,
            {
                let mut f = frame(3, b"", b"");
                f[8] = 200;
                f
            },
            ReasonCode::MalformedFrame,
        ),
        (
            "publish without topic",
            true,
            frame(3, b"", b"payload"),
            ReasonCode::MissingField,
        ),
        (
            "topic not utf-8",
            true,
            frame(3, &[2, 2, 0, 0xff, 0xfe], b""),
            ReasonCode::InvalidField,
        ),
        (
            "publish before logon",
            false,
            Command::Publish(Publish {
                command_id: None,
                topic: Utf8::from("t"),
                ack: AckSet::NONE,
                sequence: None,
                sow_key: None,
                payload: Bytes::new(),
            })
            .to_bytes()
            .unwrap()
            .to_vec(),
            ReasonCode::NotLoggedOn,
        ),
        (
            "second logon",
            true,
            Command::Logon(statecast_protocol::Logon {
                command_id: None,
                client_name: Utf8::from("again"),
                credentials: None,
                heartbeat_ms: None,
            })
            .to_bytes()
            .unwrap()
            .to_vec(),
            ReasonCode::AlreadyLoggedOn,
        ),
        (
            "ack from a client",
            true,
            frame(6, &[9, 1, 0, 1, 10, 1, 0, 0], b""),
            ReasonCode::UnknownCommand,
        ),
    ];
    for (name, logon, bytes, expected) in cases {
        let broker = &broker;
        let code = tokio::task::block_in_place(|| rejected(broker, logon, &bytes));
        assert_eq!(code, expected, "case {name}");
    }
    // A truncated frame followed by the client hanging up: no ack is owed,
    // the broker just drops the connection.
    tokio::task::block_in_place(|| {
        let mut raw = Raw::logged_on(&broker.client, "truncated", None);
        raw.send_bytes(&frame(3, &[2, 1, 0, b't'], b"payload")[..15]);
        raw.stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(raw.drain_to_eof().is_empty());
    });

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = publishing.await.unwrap();
    subscriber.flush().await.unwrap();
    for expected in 0..sent {
        let message = subscription.next().await.unwrap().unwrap();
        assert_eq!(
            message.payload.as_ref(),
            expected.to_string().as_bytes(),
            "the healthy stream has no gap"
        );
    }
    assert!(sent > 0);
    assert!(broker.admin_get("/health").contains("\"status\":\"ok\""));
}

#[test]
fn a_client_that_never_logs_on_is_closed_at_the_logon_timeout() {
    let broker = Broker::start_with("[connections]\nlogon_timeout_ms = 300\n");
    let started = Instant::now();
    let mut raw = Raw::connect(&broker.client);
    let frames = raw.drain_to_eof();
    let elapsed = started.elapsed();
    let Some(Command::Ack(ack)) = frames.first() else {
        panic!("expected a failure ack, got {frames:?}")
    };
    assert_eq!(ack.reason_code, ReasonCode::LogonTimeout);
    assert!(
        elapsed >= Duration::from_millis(300),
        "not before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "promptly after it: {elapsed:?}"
    );
}

#[test]
fn a_silent_client_is_closed_after_two_heartbeat_intervals() {
    let broker = Broker::start();
    let started = Instant::now();
    let mut raw = Raw::logged_on(&broker.client, "silent", Some(200));
    let mut heartbeats = 0;
    let mut failure = None;
    while let Some(frame) = raw.recv_any() {
        match frame {
            Command::Heartbeat(_) => heartbeats += 1,
            Command::Ack(ack) => failure = Some(ack),
            other => panic!("unexpected {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    let ack = failure.expect("a failure ack before the close");
    assert_eq!(ack.reason_code, ReasonCode::HeartbeatTimeout);
    assert!(
        heartbeats >= 1,
        "the broker sends heartbeats to an idle client"
    );
    assert!(
        elapsed >= Duration::from_millis(400),
        "not before two intervals: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "promptly after: {elapsed:?}"
    );
}

#[tokio::test]
async fn a_client_that_heartbeats_stays_connected() {
    let broker = Broker::start();
    let client = statecast_client::Client::connect(
        &broker.client,
        statecast_client::ClientOptions::new("beating").heartbeat(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    assert_eq!(client.server().heartbeat, Duration::from_millis(100));
    // Ten heartbeat intervals pass with no traffic but heartbeats.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(client.closed().is_none(), "{:?}", client.closed());
    client.flush().await.expect("still connected");
}
