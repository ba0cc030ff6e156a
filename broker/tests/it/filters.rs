//! Content filters through real brokers: 10,000 filtered subscribers on one
//! topic each receive exactly their messages; a bad filter is refused with
//! the parser's message and the connection stays open.

use statecast_client::{ReasonCode, SubscribeOptions};

use crate::support::{Broker, ready_now, run_cli};

const CONNECTIONS: usize = 100;
const PER_CONNECTION: usize = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_filtered_subscribers_each_get_exactly_their_messages() {
    let broker = Broker::start();
    let mut subscribers = Vec::new();
    for c in 0..CONNECTIONS {
        let client = broker.client(&format!("filtered-{c}")).await;
        let mut subscriptions = Vec::new();
        for s in 0..PER_CONNECTION {
            let i = c * PER_CONNECTION + s;
            let options = SubscribeOptions::topic("ticks").filter(format!("/symbol = 'S{i}'"));
            subscriptions.push((i, client.subscribe_with(options).await.expect("subscribe")));
        }
        subscribers.push((client, subscriptions));
    }
    let publisher = broker.client("ticker").await;
    let total = CONNECTIONS * PER_CONNECTION;
    for i in 0..total {
        let body = format!(
            r#"{{"price":{i},"symbol":"S{i}","pad":"{}"}}"#,
            "x".repeat(i % 50)
        );
        publisher.publish("ticks", body).await.unwrap();
        if i % 10 == 0 {
            // Messages no subscriber wants.
            publisher
                .publish("ticks", format!(r#"{{"symbol":"X{i}"}}"#))
                .await
                .unwrap();
        }
    }
    publisher.flush().await.unwrap();
    let mut missing = Vec::new();
    for (client, mut subscriptions) in subscribers {
        client.flush().await.unwrap();
        for (i, subscription) in &mut subscriptions {
            let Some(message) = ready_now(subscription).flatten() else {
                missing.push(*i);
                continue;
            };
            let message = message.unwrap();
            let value: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
            assert_eq!(value["symbol"], format!("S{i}"));
            assert_eq!(
                message.sub_ids.iter().collect::<Vec<_>>(),
                [subscription.id()]
            );
            assert!(
                ready_now(subscription).is_none(),
                "subscriber {i} got exactly one message"
            );
        }
    }
    assert!(
        missing.is_empty(),
        "{} subscribers got nothing: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
}

#[tokio::test]
async fn a_bad_filter_is_refused_with_the_parsers_message() {
    let broker = Broker::start();
    let client = broker.client("bad-filter").await;
    match client
        .subscribe_with(SubscribeOptions::topic("t").filter("/price > AND /x = 1"))
        .await
    {
        Err(statecast_client::Error::Failed { code, reason, .. }) => {
            assert_eq!(code, ReasonCode::InvalidFilter);
            assert!(reason.starts_with("invalid filter:"), "{reason}");
            assert!(reason.contains("column"), "the position is given: {reason}");
        }
        other => panic!("expected invalid_filter, got {other:?}"),
    }
    let long = format!(
        "/a IN ({})",
        (0..5000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(
        client
            .subscribe_with(SubscribeOptions::topic("t").filter(long))
            .await
            .is_err(),
        "over limits.filter_bytes_max"
    );
    let mut good = client
        .subscribe_with(SubscribeOptions::topic("t").filter("/price > 100"))
        .await
        .unwrap();
    client.publish("t", r#"{"price":99}"#).await.unwrap();
    client.publish("t", r#"{"price":101}"#).await.unwrap();
    client.flush().await.unwrap();
    let message = ready_now(&mut good).flatten().unwrap().unwrap();
    assert_eq!(message.payload.as_ref(), br#"{"price":101}"#);
    assert!(ready_now(&mut good).is_none());
}

#[test]
fn the_cli_subscribes_with_a_filter() {
    let broker = Broker::start();
    let out = run_cli(
        &[
            "subscribe",
            "--server",
            &broker.client,
            "--topic",
            "t",
            "--filter",
            "/price >",
            "--timeout",
            "1",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid_filter"), "{stderr}");
}
