//! State-of-the-World commands: queries (`sow`), queries followed by a
//! subscription (`sow_and_subscribe`), deletes (`sow_delete`), and
//! publishing with an explicit SowKey. The wire rules are in
//! `protocol/SPEC.md` (the SOW commands).
//!
//! A query's answer is a processed ack, then a group of records (each a
//! delivery carrying its SowKey, or — with [`SowOptions::batch_size`] —
//! several to a `sow_batch` frame, handed out one by one all the same),
//! then `group_end` with the number of records. A failure ack means nothing follows: the call returns the
//! error. A failed `group_end` (the query stopped early) ends the stream
//! with an error after the records that were sent.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use statecast_protocol::{
    AckSet, AckType, Command, DecodeError, Deliver, GroupEnd, SowBatch, SowBatchRecords, SowDelete,
    SowQuery, Status, SubIds, Utf8,
};

use crate::client::{Event, Inbox, StreamEnd};
use crate::{Client, Error, PendingAck};

/// A SOW query (for [`Client::sow`] and [`Client::sow_and_subscribe`]).
#[derive(Debug, Clone, Default)]
pub struct SowOptions {
    /// A SOW topic, or a topic pattern (a regular expression) whose SOW
    /// topics are all queried.
    pub topic: String,
    /// Content filter: only the records it matches.
    pub filter: Option<String>,
    /// Sort order: `/path [ASC|DESC]`, comma-separated (ascending by
    /// default); applied to each topic's records separately.
    pub order_by: Option<String>,
    /// At most this many records (per topic).
    pub top_n: Option<u64>,
    /// Skip this many matching records first (per topic).
    pub skip_n: Option<u64>,
    /// Only the records with these SowKeys (empty: no restriction); with a
    /// filter, both must hold.
    pub sow_keys: Vec<u64>,
    /// Count the matching records instead of sending them.
    pub count_only: bool,
    /// The topic is literal even if it looks like a regular expression.
    pub non_regex_topic: bool,
    /// The most records per frame of the answer (`None`: the broker's
    /// default, 1 — one `deliver` per record). Batches change only how the
    /// records travel: the stream yields the same records either way.
    pub batch_size: Option<u32>,
}

impl SowOptions {
    /// A query of `topic`.
    #[must_use]
    pub fn topic(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            ..Self::default()
        }
    }

    /// With a content filter.
    #[must_use]
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// Sorted: `/path [ASC|DESC]`, comma-separated.
    #[must_use]
    pub fn order_by(mut self, order_by: impl Into<String>) -> Self {
        self.order_by = Some(order_by.into());
        self
    }

    /// At most `n` records.
    #[must_use]
    pub fn top_n(mut self, n: u64) -> Self {
        self.top_n = Some(n);
        self
    }

    /// Skipping the first `n` matching records.
    #[must_use]
    pub fn skip_n(mut self, n: u64) -> Self {
        self.skip_n = Some(n);
        self
    }

    /// Only the records with these SowKeys.
    #[must_use]
    pub fn sow_keys(mut self, keys: impl IntoIterator<Item = u64>) -> Self {
        self.sow_keys.extend(keys);
        self
    }

    /// Counting the matching records instead of sending them: the stream
    /// yields none, and [`SowResults::records`] is the count.
    #[must_use]
    pub fn count_only(mut self) -> Self {
        self.count_only = true;
        self
    }

    /// Taking the topic literally, not as a regular expression.
    #[must_use]
    pub fn non_regex_topic(mut self) -> Self {
        self.non_regex_topic = true;
        self
    }

    /// Up to `n` records per frame of the answer (`sow_batch` frames,
    /// SPEC.md section 4.14): fewer frames to decode for a large answer.
    /// The broker accepts 1 to [`statecast_protocol::SOW_BATCH_SIZE_MAX`]
    /// and refuses anything else with `invalid_field`.
    #[must_use]
    pub fn batch_size(mut self, n: u32) -> Self {
        self.batch_size = Some(n);
        self
    }

    /// The wire command's fields (`sub_id` doubles as the command id).
    fn query(&self, sub_id: u64) -> SowQuery {
        let options: Vec<&str> = [
            (self.count_only, "count_only"),
            (self.non_regex_topic, "non_regex_topic"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        SowQuery {
            command_id: Some(sub_id),
            sub_id,
            topic: Utf8::from(self.topic.as_str()),
            filter: self.filter.as_deref().map(Utf8::from),
            options: (!options.is_empty()).then(|| Utf8::from(options.join(","))),
            order_by: self.order_by.as_deref().map(Utf8::from),
            top_n: self.top_n,
            skip_n: self.skip_n,
            sow_keys: (!self.sow_keys.is_empty()).then(|| SubIds::from_ids(&self.sow_keys)),
            batch_size: self.batch_size,
        }
    }
}

/// One record of a SOW topic: the latest message for its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SowRecord {
    /// The record's topic.
    pub topic: Utf8,
    /// The record's SowKey (tools print it in decimal).
    pub key: u64,
    /// The journal bookmark of the message that wrote the record, when the
    /// topic is journaled.
    pub bookmark: Option<u64>,
    /// When the broker took that message, ns since the Unix epoch.
    pub timestamp: u64,
    /// The message body.
    pub payload: Bytes,
}

impl SowItem {
    /// A delivery that carries a SowKey is a record; one without is live.
    fn from_deliver(deliver: Deliver) -> Self {
        match deliver.sow_key {
            Some(key) => Self::Record(SowRecord {
                topic: deliver.topic,
                key,
                bookmark: deliver.bookmark,
                timestamp: deliver.timestamp,
                payload: deliver.payload,
            }),
            None => Self::Message(deliver),
        }
    }
}

/// The records of one `sow_batch` still to hand out, with their topic.
#[derive(Debug)]
struct BatchRecords {
    topic: Utf8,
    records: SowBatchRecords,
}

impl BatchRecords {
    fn new(batch: SowBatch) -> Self {
        Self {
            topic: batch.topic.clone(),
            records: batch.into_iter(),
        }
    }

    /// The next record as a [`SowRecord`], its payload a slice of the
    /// frame (no copy); `None` once the batch is done.
    fn next_record(&mut self) -> Option<Result<SowRecord, Error>> {
        Some(match self.records.next()? {
            Ok(record) => Ok(SowRecord {
                topic: self.topic.clone(),
                key: record.key,
                bookmark: record.bookmark,
                timestamp: record.timestamp,
                payload: record.payload,
            }),
            Err(error) => Err(Error::from(error)),
        })
    }
}

/// The error a failed `group_end` stands for.
fn group_failure(end: &GroupEnd) -> Option<Error> {
    (end.status == Status::Failure).then(|| Error::Failed {
        ack_type: "group_end",
        code: end.reason_code,
        reason: end
            .reason
            .as_ref()
            .map_or_else(|| "no reason given".to_owned(), Utf8::to_string),
    })
}

/// The answer to a [`Client::sow`] query: a stream of its records as they
/// arrive. The stream ends at the query's `group_end`, after which
/// [`SowResults::records`] holds the broker's count; a query that stopped
/// early ends with an error (the records before it stand).
#[derive(Debug)]
pub struct SowResults {
    inbox: Inbox,
    records: Option<u64>,
    /// The `sow_batch` being handed out.
    batch: Option<BatchRecords>,
}

impl SowResults {
    /// The query's id on its connection.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.inbox.id()
    }

    /// The `group_end`'s count once the stream has ended: records sent, or
    /// for a `count_only` query records matching. `None` before.
    #[must_use]
    pub fn records(&self) -> Option<u64> {
        self.records
    }

    /// Reads every record into a vector.
    ///
    /// # Errors
    /// When the query stopped early or the connection closed.
    pub async fn collect(mut self) -> Result<Vec<SowRecord>, Error> {
        let mut records = Vec::new();
        while let Some(record) = self.next().await {
            records.push(record?);
        }
        Ok(records)
    }

    /// Reads to the end and returns the `group_end`'s count (the records
    /// matching, for a `count_only` query).
    ///
    /// # Errors
    /// When the query stopped early or the connection closed.
    pub async fn count(mut self) -> Result<u64, Error> {
        while let Some(record) = self.next().await {
            record?;
        }
        self.records
            .ok_or_else(|| Error::Closed("the query ended without its group_end".into()))
    }
}

impl Stream for SowResults {
    type Item = Result<SowRecord, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(batch) = &mut self.batch {
                match batch.next_record() {
                    Some(record) => return Poll::Ready(Some(record)),
                    None => self.batch = None,
                }
            }
            let was_done = self.inbox.is_done();
            return match self.inbox.poll_event(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Event::Deliver(deliver))) => {
                    match SowItem::from_deliver(deliver) {
                        SowItem::Record(record) => Poll::Ready(Some(Ok(record))),
                        // A query registers no subscription: nothing live
                        // should name it.
                        _ => continue,
                    }
                }
                Poll::Ready(Some(Event::SowBatch(batch))) => {
                    self.batch = Some(BatchRecords::new(batch));
                    continue;
                }
                Poll::Ready(Some(Event::GroupEnd(end))) => {
                    self.records = Some(end.records);
                    self.inbox.finish();
                    Poll::Ready(group_failure(&end).map(Err))
                }
                Poll::Ready(Some(Event::Failed(error))) => {
                    self.inbox.finish();
                    Poll::Ready(Some(Err(error)))
                }
                Poll::Ready(None) if was_done || self.records.is_some() => Poll::Ready(None),
                // The routing stopped before the group ended: the
                // connection closed (its error may not have fitted in the
                // stream's buffer).
                Poll::Ready(None) => {
                    Poll::Ready(Some(Err(self.inbox.client().closed().unwrap_or_else(
                        || Error::Closed("the query's stream ended before its group_end".into()),
                    ))))
                }
            };
        }
    }
}

/// One item of a [`SowSubscription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SowItem {
    /// A record of the snapshot.
    Record(SowRecord),
    /// The snapshot is complete: `records` were sent. What follows is live.
    EndOfSnapshot {
        /// Records in the snapshot (the `group_end`'s count).
        records: u64,
    },
    /// A live message published after the snapshot was taken. (With a topic
    /// pattern whose topics live on different processors, one may arrive
    /// before [`SowItem::EndOfSnapshot`], always after its own topic's
    /// records.)
    Message(Deliver),
}

/// A [`Client::sow_and_subscribe`]: the snapshot's records, then
/// [`SowItem::EndOfSnapshot`], then live messages. Every message of a topic
/// is in the snapshot or among the live messages, never both, never
/// neither. The stream ends after yielding an error when the connection
/// closes or the snapshot stopped early.
#[derive(Debug)]
pub struct SowSubscription {
    inbox: Inbox,
    /// The `sow_batch` being handed out.
    batch: Option<BatchRecords>,
}

impl SowSubscription {
    /// The subscription's id on its connection.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.inbox.id()
    }

    /// Ends the subscription. No message for it arrives after the broker's
    /// ack, so the stream ends cleanly.
    ///
    /// # Errors
    /// When the broker refuses or the connection closes.
    pub async fn unsubscribe(mut self) -> Result<(), Error> {
        self.inbox.unsubscribe().await
    }
}

impl Stream for SowSubscription {
    type Item = Result<SowItem, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(batch) = &mut self.batch {
                match batch.next_record() {
                    Some(record) => return Poll::Ready(Some(record.map(SowItem::Record))),
                    None => self.batch = None,
                }
            }
            return Poll::Ready(match std::task::ready!(self.inbox.poll_event(cx)) {
                Some(Event::Deliver(deliver)) => Some(Ok(SowItem::from_deliver(deliver))),
                Some(Event::SowBatch(batch)) => {
                    self.batch = Some(BatchRecords::new(batch));
                    continue;
                }
                Some(Event::GroupEnd(end)) => match group_failure(&end) {
                    None => Some(Ok(SowItem::EndOfSnapshot {
                        records: end.records,
                    })),
                    Some(error) => {
                        // The snapshot is incomplete: following the updates
                        // would build a wrong state.
                        self.inbox.finish();
                        Some(Err(error))
                    }
                },
                Some(Event::Failed(error)) => {
                    self.inbox.finish();
                    Some(Err(error))
                }
                None => None,
            });
        }
    }
}

/// Which records a [`Client::sow_delete`] removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SowDeleteBy {
    /// The records matching a content filter (`1=1`: all).
    Filter(String),
    /// The records with these SowKeys.
    Keys(Vec<u64>),
    /// The record with the key computed from this example message.
    Example(Bytes),
}

impl Client {
    /// Queries the records of a SOW topic (or of every SOW topic a pattern
    /// matches); returns once the broker has accepted the query, with the
    /// records to come as a stream.
    ///
    /// # Errors
    /// [`Error::Failed`] when the broker refuses the query (e.g.
    /// `not_a_sow_topic`, `invalid_filter`, `invalid_field` for a bad
    /// `order_by`), [`Error::Closed`] when the connection closes.
    pub async fn sow(&self, options: SowOptions) -> Result<SowResults, Error> {
        let sub_id = self.inner.id();
        let inbox = self.open_inbox(sub_id, StreamEnd::GroupEnd)?;
        self.request(sub_id, Command::Sow(options.query(sub_id)))
            .await?;
        Ok(SowResults {
            inbox,
            records: None,
            batch: None,
        })
    }

    /// Queries a SOW topic and subscribes to it atomically: the stream
    /// yields the snapshot's records, [`SowItem::EndOfSnapshot`], then the
    /// live messages. On a topic without SOW the snapshot is empty.
    ///
    /// # Errors
    /// As [`Client::sow`], and the subscription's refusals
    /// (`duplicate_sub_id`, `too_many_subscriptions`).
    pub async fn sow_and_subscribe(&self, options: SowOptions) -> Result<SowSubscription, Error> {
        let sub_id = self.inner.id();
        let inbox = self.open_inbox(sub_id, StreamEnd::Unsubscribe)?;
        self.request(sub_id, Command::SowAndSubscribe(options.query(sub_id)))
            .await?;
        Ok(SowSubscription { inbox, batch: None })
    }

    /// Deletes records of the SOW topic `topic` (literal), asking for one
    /// ack type (`processed`, or `persisted`: once the delete's journal
    /// record is synced). The ack's `records` is the number deleted.
    ///
    /// # Errors
    /// When the connection is closed or the command cannot be encoded; the
    /// broker's refusal comes with the ack.
    pub async fn sow_delete(
        &self,
        topic: &str,
        by: SowDeleteBy,
        ack_type: AckType,
    ) -> Result<PendingAck, Error> {
        let command_id = self.inner.id();
        let mut delete = SowDelete {
            command_id,
            topic: Utf8::from(topic),
            filter: None,
            sow_keys: None,
            ack: AckSet::only(ack_type),
            payload: Bytes::new(),
        };
        match by {
            SowDeleteBy::Filter(filter) => delete.filter = Some(Utf8::from(filter)),
            SowDeleteBy::Keys(keys) => delete.sow_keys = Some(SubIds::from_ids(&keys)),
            SowDeleteBy::Example(payload) => delete.payload = payload,
        }
        self.send_acked(command_id, &Command::SowDelete(delete), ack_type)
            .await
    }

    /// Deletes the records of `topic` matching `filter` (`1=1`: all);
    /// returns how many were deleted, once processed.
    ///
    /// # Errors
    /// [`Error::Failed`] when the broker refuses (`not_a_sow_topic`,
    /// `invalid_filter`, `sow_error`), [`Error::Closed`].
    pub async fn sow_delete_filter(&self, topic: &str, filter: &str) -> Result<u64, Error> {
        self.sow_delete_processed(topic, SowDeleteBy::Filter(filter.to_owned()))
            .await
    }

    /// Deletes the records of `topic` with these SowKeys; returns how many
    /// were deleted, once processed.
    ///
    /// # Errors
    /// As [`Client::sow_delete_filter`].
    pub async fn sow_delete_keys(&self, topic: &str, keys: &[u64]) -> Result<u64, Error> {
        self.sow_delete_processed(topic, SowDeleteBy::Keys(keys.to_vec()))
            .await
    }

    /// Deletes the record of `topic` whose key the example message
    /// `payload` has; returns how many were deleted (0 or 1), once
    /// processed.
    ///
    /// # Errors
    /// As [`Client::sow_delete_filter`], and `invalid_sow_key` when the
    /// example has no key.
    pub async fn sow_delete_example(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
    ) -> Result<u64, Error> {
        self.sow_delete_processed(topic, SowDeleteBy::Example(payload.into()))
            .await
    }

    async fn sow_delete_processed(&self, topic: &str, by: SowDeleteBy) -> Result<u64, Error> {
        let ack = self
            .sow_delete(topic, by, AckType::Processed)
            .await?
            .wait()
            .await?;
        ack.records
            .ok_or(Error::Protocol(DecodeError::MissingField {
                command: "ack",
                field: "records",
            }))
    }

    /// Publishes to a SOW topic with the publisher's own key for the record
    /// (used instead of the topic's key fields), asking for the processed
    /// ack; returns once the message is in the write buffer.
    ///
    /// # Errors
    /// When the connection is closed or the command cannot be encoded; the
    /// broker's refusal (`invalid_sow_key`, `sow_message_too_large`) comes
    /// with the ack.
    pub async fn publish_with_key(
        &self,
        topic: &str,
        key: impl Into<Bytes>,
        payload: impl Into<Bytes>,
    ) -> Result<PendingAck, Error> {
        self.publish_command(topic, payload, AckType::Processed, None, Some(key.into()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_carries_every_option_it_was_given() {
        let query = SowOptions::topic("orders")
            .filter("/qty > 1")
            .order_by("/id DESC")
            .top_n(5)
            .skip_n(2)
            .sow_keys([7, 9])
            .count_only()
            .non_regex_topic()
            .query(42);
        assert_eq!(query.command_id, Some(42));
        assert_eq!(query.sub_id, 42);
        assert_eq!(query.topic.as_str(), "orders");
        assert_eq!(query.filter.as_ref().map(Utf8::as_str), Some("/qty > 1"));
        assert_eq!(query.order_by.as_ref().map(Utf8::as_str), Some("/id DESC"));
        assert_eq!((query.top_n, query.skip_n), (Some(5), Some(2)));
        assert_eq!(
            query.options.as_ref().map(Utf8::as_str),
            Some("count_only,non_regex_topic")
        );
        let keys: Vec<u64> = query.sow_keys.iter().flat_map(SubIds::iter).collect();
        assert_eq!(keys, [7, 9]);
    }

    #[test]
    fn a_plain_query_sends_no_optional_fields() {
        let query = SowOptions::topic("orders").query(1);
        assert_eq!(query.filter, None);
        assert_eq!(query.options, None);
        assert_eq!(query.order_by, None);
        assert_eq!((query.top_n, query.skip_n), (None, None));
        assert_eq!(query.sow_keys, None);
    }

    #[test]
    fn a_delivery_with_a_key_is_a_record_and_one_without_is_a_message() {
        let deliver = Deliver {
            topic: Utf8::from("orders"),
            sub_ids: SubIds::from_ids(&[3]),
            bookmark: Some(11),
            timestamp: 12,
            sow_key: Some(13),
            payload: Bytes::from_static(b"{}"),
        };
        let SowItem::Record(record) = SowItem::from_deliver(deliver.clone()) else {
            panic!("a delivery with a key is a record");
        };
        assert_eq!(
            (record.key, record.bookmark, record.timestamp),
            (13, Some(11), 12)
        );
        let live = Deliver {
            sow_key: None,
            ..deliver.clone()
        };
        assert_eq!(SowItem::from_deliver(live.clone()), SowItem::Message(live));
    }

    #[test]
    fn a_failed_group_end_names_its_reason() {
        let end = GroupEnd {
            command_id: Some(1),
            sub_id: 1,
            records: 3,
            status: Status::Failure,
            reason_code: statecast_protocol::ReasonCode::SowError,
            reason: Some(Utf8::from("the store failed")),
        };
        let text = group_failure(&end).unwrap().to_string();
        assert!(text.contains("sow_error"), "{text}");
        assert!(text.contains("the store failed"), "{text}");
        let ok = GroupEnd {
            status: Status::Success,
            reason_code: statecast_protocol::ReasonCode::None,
            reason: None,
            ..end
        };
        assert!(group_failure(&ok).is_none());
    }
}
