//! A State-of-the-World query over raw frames (protocol/SPEC.md §4.9,
//! §4.12, §4.13), on the bare framing client of `raw.rs`: no SDK between
//! the timer and the broker.
//!
//! One `sow` command, then its answer in order: the `processed` ack carrying
//! the query's `sub_id`, `group_begin`, one `deliver` per record (each
//! naming the query and carrying the record's SowKey) or, with a
//! `batch_size` above 1, `sow_batch` frames of several records (§4.14),
//! `group_end` with the number of records. [`SowConnection::query`] times it from just before the
//! command is written to the socket to the decoding of `group_end`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use statecast_protocol::{Command, Decoded, DeliverDecoder, SowQuery, Status, Utf8};
use tokio::io::AsyncWriteExt as _;
use tokio::net::tcp::OwnedWriteHalf;

use super::raw::{Reader, logon};

/// A logged-on connection that sends SOW queries.
#[derive(Debug)]
pub struct SowConnection {
    reader: Reader,
    write: OwnedWriteHalf,
    next_id: u64,
}

/// What one query returned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SowAnswer {
    /// Records delivered.
    pub received: u64,
    /// `records` of `group_end` (with `count_only`, the records matching).
    pub group_records: u64,
    /// From writing the command to decoding `group_end`.
    pub elapsed: Duration,
}

/// A query's parameters beyond the topic.
#[derive(Debug, Clone, Default)]
pub struct SowRequest {
    /// The content filter.
    pub filter: Option<String>,
    /// Only count the matching records (`count_only`).
    pub count_only: bool,
    /// Records per frame of the answer (`None`: the broker's default, 1).
    pub batch_size: Option<u32>,
}

impl SowConnection {
    /// Connects to the broker at `addr` and logs on as `name`.
    ///
    /// # Errors
    /// When the broker cannot be reached or refuses the logon.
    pub async fn connect(addr: &str, name: &str) -> anyhow::Result<Self> {
        let (reader, write) = logon(addr, name).await?;
        Ok(Self {
            reader,
            write,
            next_id: 1,
        })
    }

    /// Runs one `sow` on `topic` and hands each record's payload to
    /// `on_record` as it is decoded.
    ///
    /// # Errors
    /// A failure ack, a failed `group_end`, a frame out of the order of
    /// §4.9, a record that is not the query's or carries no SowKey, a
    /// `group_end` whose count differs from the records delivered, or the
    /// connection closing.
    pub async fn query(
        &mut self,
        topic: &str,
        request: &SowRequest,
        mut on_record: impl FnMut(&Bytes),
    ) -> anyhow::Result<SowAnswer> {
        let sub_id = self.next_id;
        self.next_id += 1;
        let command = Command::Sow(SowQuery {
            command_id: Some(sub_id),
            sub_id,
            topic: Utf8::from(topic),
            filter: request.filter.as_deref().map(Utf8::from),
            options: request.count_only.then(|| Utf8::from("count_only")),
            order_by: None,
            top_n: None,
            skip_n: None,
            sow_keys: None,
            batch_size: request.batch_size,
        });
        let bytes = command.to_bytes()?;
        let start = Instant::now();
        self.write.write_all(&bytes).await?;
        let mut acked = false;
        let mut begun = false;
        let mut received = 0u64;
        // Records are decoded as the SDK decodes deliveries (one pass, the
        // topic compared with the last one instead of revalidated); any
        // other frame by the generic decoder.
        let mut deliveries = DeliverDecoder::new();
        loop {
            let frame = self.reader.next_frame().await?.with_context(|| {
                format!("the broker closed the connection after {received} records")
            })?;
            let command = match deliveries.decode(frame)? {
                Decoded::Deliver(record) => Command::Deliver(record),
                Decoded::Other(frame) => Command::decode(&frame)?,
            };
            match command {
                Command::Heartbeat(_) => {}
                Command::Ack(ack) => {
                    ensure!(
                        !acked && ack.sub_id == Some(sub_id),
                        "unexpected ack {ack:?}"
                    );
                    if ack.status == Status::Failure {
                        bail!(
                            "the broker refused the sow: {:?} {}",
                            ack.reason_code,
                            ack.reason.as_ref().map_or("", Utf8::as_str)
                        );
                    }
                    acked = true;
                }
                Command::GroupBegin(begin) => {
                    ensure!(
                        acked && !begun && begin.sub_id == sub_id,
                        "unexpected group_begin {begin:?}"
                    );
                    begun = true;
                }
                Command::Deliver(record) => {
                    ensure!(begun, "a record before group_begin");
                    ensure!(
                        record.sub_ids.iter().next() == Some(sub_id) && record.sow_key.is_some(),
                        "a deliver that is not a record of the query: sub_ids {:?}, sow_key {:?}",
                        record.sub_ids.iter().collect::<Vec<_>>(),
                        record.sow_key
                    );
                    received += 1;
                    on_record(&record.payload);
                }
                Command::SowBatch(batch) => {
                    ensure!(begun, "a sow_batch before group_begin");
                    ensure!(
                        batch.sub_id == sub_id && request.batch_size.is_some_and(|n| n > 1),
                        "a sow_batch that is not the query's: sub_id {}",
                        batch.sub_id
                    );
                    ensure!(
                        batch.records <= u64::from(request.batch_size.unwrap_or(1)),
                        "a sow_batch of {} records, above the batch_size asked for",
                        batch.records
                    );
                    // Each record's message is lent as a slice of the
                    // frame: no copy.
                    for record in batch {
                        received += 1;
                        on_record(&record?.payload);
                    }
                }
                Command::GroupEnd(end) => {
                    let elapsed = start.elapsed();
                    ensure!(
                        begun && end.sub_id == sub_id,
                        "unexpected group_end {end:?}"
                    );
                    if end.status == Status::Failure {
                        bail!(
                            "the query stopped after {received} records: {:?} {}",
                            end.reason_code,
                            end.reason.as_ref().map_or("", Utf8::as_str)
                        );
                    }
                    ensure!(
                        request.count_only || end.records == received,
                        "group_end counts {} records, {received} were delivered",
                        end.records
                    );
                    ensure!(
                        !request.count_only || received == 0,
                        "a count_only query delivered {received} records"
                    );
                    return Ok(SowAnswer {
                        received,
                        group_records: end.records,
                        elapsed,
                    });
                }
                other => bail!("unexpected {} during a sow", other.code().name()),
            }
        }
    }
}
