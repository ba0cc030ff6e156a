//! A publisher that loses nothing and duplicates nothing across
//! disconnections and broker restarts.
//!
//! Every publish is numbered (the broker's publisher de-duplication,
//! `protocol/SPEC.md` §4.3), asks for a `persisted` ack, and is kept until
//! that ack arrives. When the connection fails, the publisher reconnects
//! with the same client name; the logon ack says which sequence the broker
//! has persisted for that name, so the publisher forgets what is covered
//! and resends the rest in order. A resend of something the broker had
//! journaled but not yet acknowledged is acknowledged as a duplicate and
//! not published again. The result is exactly-once publication for a
//! publisher that keeps its name.
//!
//! The numbering continues from the broker's figure at the first logon, so
//! a restarted application with the same name goes on where it stopped
//! (what it had not handed over before it stopped is its own to resend).

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use statecast_protocol::{Ack, AckType, ReasonCode};

use crate::{Client, ClientOptions, Error, PendingAck};

/// How a [`ReliablePublisher`] behaves.
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// The connection's options; its `name` identifies the publisher to
    /// the broker's de-duplication and must stay the same across runs.
    pub client: ClientOptions,
    /// Publishes sent and not yet persisted before [`ReliablePublisher::publish`]
    /// waits for the oldest.
    pub window: usize,
    /// How long to keep trying to reconnect before giving up.
    pub reconnect_timeout: Duration,
}

impl PublisherOptions {
    /// Defaults (a window of 1,000, reconnecting for up to 60 s) for the
    /// publisher named `name`.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            client: ClientOptions::new(name),
            window: 1000,
            reconnect_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug)]
struct InFlight {
    sequence: u64,
    topic: String,
    payload: Bytes,
    /// `None` until sent on the current connection.
    pending: Option<PendingAck>,
}

/// A publisher with sequence numbers, persisted acks and resending; see the
/// module documentation.
#[derive(Debug)]
pub struct ReliablePublisher {
    addr: String,
    options: PublisherOptions,
    client: Option<Client>,
    next_sequence: u64,
    in_flight: VecDeque<InFlight>,
    persisted_sequence: u64,
    acked: u64,
    duplicates: u64,
    reconnects: u64,
    last_bookmark: Option<u64>,
}

impl ReliablePublisher {
    /// Connects to `addr` and logs on as `options.client.name`.
    ///
    /// # Errors
    /// When the first connection fails, or the broker has no journal (it
    /// could not de-duplicate resends).
    pub async fn connect(addr: &str, options: PublisherOptions) -> Result<Self, Error> {
        let client = Client::connect(addr, options.client.clone()).await?;
        let Some(persisted) = client.server().persisted_sequence else {
            return Err(Error::Failed {
                ack_type: AckType::Processed.name(),
                code: ReasonCode::AckNotAvailable,
                reason:
                    "the broker has no journal: persisted acks and de-duplication are not available"
                        .into(),
            });
        };
        Ok(Self {
            addr: addr.to_owned(),
            options,
            client: Some(client),
            next_sequence: persisted + 1,
            in_flight: VecDeque::new(),
            persisted_sequence: persisted,
            acked: 0,
            duplicates: 0,
            reconnects: 0,
            last_bookmark: None,
        })
    }

    /// Publishes `payload` to `topic`; returns its sequence number once it
    /// is sent (waiting for the oldest publish's ack while the window is
    /// full). Connection failures are handled here: the publisher
    /// reconnects and resends.
    ///
    /// # Errors
    /// When reconnecting fails for `reconnect_timeout`, or the broker
    /// refuses an earlier publish (its ack is a failure: e.g.
    /// `journal_error`, or a topic that is not journaled); that publish is
    /// dropped and the error says which sequence it had.
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Bytes>) -> Result<u64, Error> {
        while self.in_flight.len() >= self.options.window.max(1) {
            self.settle_oldest().await?;
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.in_flight.push_back(InFlight {
            sequence,
            topic: topic.to_owned(),
            payload: payload.into(),
            pending: None,
        });
        self.send_unsent().await?;
        Ok(sequence)
    }

    /// Waits until every publish so far is persisted; returns the highest
    /// persisted sequence.
    ///
    /// # Errors
    /// As [`ReliablePublisher::publish`].
    pub async fn flush(&mut self) -> Result<u64, Error> {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        Ok(self.persisted_sequence)
    }

    /// Flushes, then closes the connection.
    ///
    /// # Errors
    /// As [`ReliablePublisher::flush`].
    pub async fn close(mut self) -> Result<u64, Error> {
        let persisted = self.flush().await?;
        if let Some(client) = self.client.take() {
            let _ = client.close().await;
        }
        Ok(persisted)
    }

    /// The highest sequence known to be persisted.
    #[must_use]
    pub fn persisted_sequence(&self) -> u64 {
        self.persisted_sequence
    }

    /// Publishes sent and not yet known to be persisted.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Publishes acknowledged as persisted (duplicates included, and those
    /// found persisted at a reconnect).
    #[must_use]
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Resends the broker acknowledged as duplicates.
    #[must_use]
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Successful reconnections.
    #[must_use]
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The highest bookmark seen on an ack.
    #[must_use]
    pub fn last_bookmark(&self) -> Option<u64> {
        self.last_bookmark
    }

    /// Waits for the oldest publish's ack, reconnecting and resending when
    /// the connection fails.
    async fn settle_oldest(&mut self) -> Result<(), Error> {
        loop {
            let Some(front) = self.in_flight.front_mut() else {
                return Ok(());
            };
            let Some(pending) = front.pending.take() else {
                self.send_unsent().await?;
                continue;
            };
            match pending.wait().await {
                Ok(ack) => {
                    self.settled(&ack);
                    return Ok(());
                }
                Err(Error::Failed {
                    ack_type,
                    code,
                    reason,
                }) if code != ReasonCode::ShuttingDown => {
                    let sequence = front.sequence;
                    self.in_flight.pop_front();
                    return Err(Error::Failed {
                        ack_type,
                        code,
                        reason: format!("publish with sequence {sequence} refused: {reason}"),
                    });
                }
                Err(error) => {
                    tracing::debug!("publisher connection lost: {error}; reconnecting");
                    self.reconnect(error).await?;
                }
            }
        }
    }

    fn settled(&mut self, ack: &Ack) {
        if let Some(front) = self.in_flight.pop_front() {
            self.persisted_sequence = self.persisted_sequence.max(front.sequence);
        }
        self.acked += 1;
        if ack.reason_code == ReasonCode::Duplicate {
            self.duplicates += 1;
        }
        if let Some(bookmark) = ack.bookmark {
            self.last_bookmark = Some(self.last_bookmark.map_or(bookmark, |b| b.max(bookmark)));
        }
    }

    /// Sends every publish not yet sent on the current connection, in
    /// order, reconnecting as needed.
    async fn send_unsent(&mut self) -> Result<(), Error> {
        loop {
            let Some(client) = &self.client else {
                self.reconnect(Error::Closed("not connected".into()))
                    .await?;
                continue;
            };
            let mut failed = None;
            for entry in self.in_flight.iter_mut().filter(|e| e.pending.is_none()) {
                match client
                    .publish_sequenced(
                        &entry.topic,
                        entry.payload.clone(),
                        AckType::Persisted,
                        entry.sequence,
                    )
                    .await
                {
                    Ok(pending) => entry.pending = Some(pending),
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
            match failed {
                None => return Ok(()),
                Some(error @ Error::Encode(_)) => return Err(error),
                Some(error) => self.reconnect(error).await?,
            }
        }
    }

    /// Replaces the connection; forgets what the broker says it persisted
    /// and marks the rest unsent.
    async fn reconnect(&mut self, cause: Error) -> Result<(), Error> {
        self.client = None;
        for entry in &mut self.in_flight {
            entry.pending = None;
        }
        let deadline = tokio::time::Instant::now() + self.options.reconnect_timeout;
        let mut backoff = Duration::from_millis(20);
        tracing::debug!("publisher reconnecting after: {cause}");
        loop {
            let last = match Client::connect(&self.addr, self.options.client.clone()).await {
                Ok(client) => {
                    let persisted = client.server().persisted_sequence.unwrap_or(0);
                    while self
                        .in_flight
                        .front()
                        .is_some_and(|e| e.sequence <= persisted)
                    {
                        self.in_flight.pop_front();
                        self.acked += 1;
                    }
                    self.persisted_sequence = self.persisted_sequence.max(persisted);
                    // Another process with this name may have gone further:
                    // never reuse a number the broker has seen.
                    if self.next_sequence <= persisted {
                        self.next_sequence = persisted + 1;
                    }
                    self.client = Some(client);
                    self.reconnects += 1;
                    tracing::info!(
                        persisted,
                        resending = self.in_flight.len(),
                        "publisher reconnected"
                    );
                    return Ok(());
                }
                Err(error) => error,
            };
            if tokio::time::Instant::now() + backoff > deadline {
                return Err(Error::Closed(format!(
                    "could not reconnect to {} within {} ms: {last}",
                    self.addr,
                    self.options.reconnect_timeout.as_millis()
                )));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}
