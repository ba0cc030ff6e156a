//! statecast-client: the async Rust client for the statecast broker.
//!
//! It owns the client side of the wire protocol: connecting and logging on,
//! publishing (fire-and-forget or awaiting an ack), subscriptions as
//! [`futures::Stream`]s of messages, unsubscribing, flush barriers, and
//! heartbeats in both directions; and the [`ReliablePublisher`], which
//! numbers publishes, keeps them until they are persisted, and after a
//! reconnect resends exactly what the broker lacks; and bookmark stores
//! ([`FileBookmarkStore`]) with which a subscriber resumes after the last
//! message it processed; and the State-of-the-World commands
//! ([`Client::sow`], [`Client::sow_and_subscribe`], [`Client::sow_delete`],
//! [`Client::publish_with_key`]). The CLI, the load
//! generator and applications use it.
//!
//! **Invariant:** the client depends only on `statecast-protocol` among the
//! workspace crates; it knows nothing of the broker's internals.
//!
//! ```no_run
//! use futures::StreamExt;
//! use statecast_client::{Client, ClientOptions};
//!
//! # async fn demo() -> Result<(), statecast_client::Error> {
//! let client = Client::connect("127.0.0.1:9007", ClientOptions::new("example")).await?;
//! let mut orders = client.subscribe("orders").await?;
//! client.publish("orders", r#"{"id":1,"qty":5}"#).await?;
//! if let Some(message) = orders.next().await {
//!     println!("{}", String::from_utf8_lossy(&message?.payload));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Connections are owned by two background tasks (a reader and a writer)
//! on the caller's tokio runtime. Writes are coalesced: many publishes are
//! sent in one system call. When the broker (or the network) is slower than
//! the application, [`Client::publish`] waits for buffer space instead of
//! buffering without bound.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod bookmarks;
mod client;
mod error;
mod publisher;
mod sow;

pub use bookmarks::{BookmarkStore, FileBookmarkStore, MemoryBookmarkStore};
pub use client::{Client, ClientOptions, PendingAck, ServerInfo, SubscribeOptions, Subscription};
pub use error::Error;
pub use publisher::{PublisherOptions, ReliablePublisher};
pub use sow::{SowDeleteBy, SowItem, SowOptions, SowRecord, SowResults, SowSubscription};
pub use statecast_protocol::{AckType, Deliver as Message, ReasonCode, SubIds, Utf8};
