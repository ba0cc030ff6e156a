//! Subscribes to a topic, publishes three messages to it, prints what
//! arrives, and exits. Run a broker first (`scripts/run`), then:
//!
//! ```sh
//! cargo run -p statecast-client --example pubsub -- 127.0.0.1:9007
//! ```

use futures::StreamExt;
use statecast_client::{AckType, Client, ClientOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), statecast_client::Error> {
    let server = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9007".to_owned());
    let client = Client::connect(&server, ClientOptions::new("example-pubsub")).await?;
    println!("connected to statecast {}", client.server().version);

    let mut orders = client.subscribe("orders").await?;
    for id in 1..=3 {
        let payload = format!(r#"{{"id":{id},"symbol":"IBM","qty":{}}}"#, id * 100);
        // Wait for the broker to confirm it took each message.
        client
            .publish_acked("orders", payload, AckType::Processed)
            .await?
            .wait()
            .await?;
    }
    for _ in 0..3 {
        match orders.next().await {
            Some(Ok(message)) => println!(
                "{}: {}",
                message.topic,
                String::from_utf8_lossy(&message.payload)
            ),
            Some(Err(error)) => return Err(error),
            None => break,
        }
    }
    client.close().await
}
