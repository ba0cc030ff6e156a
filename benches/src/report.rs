//! The JSON lines a run prints (W1's [`Report`], W2's [`DurableReport`]),
//! and the statistics they are computed from.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::payload::{self, SEQ_PUBLISHER_STRIDE};
use crate::rss::Rss;

/// Latency figures in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Messages measured.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

impl Latency {
    /// From a histogram of nanoseconds.
    pub fn from_ns(histogram: &Histogram<u64>) -> Self {
        let us = |ns: u64| (ns as f64 / 100.0).round() / 10.0;
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            mean: (histogram.mean() / 100.0).round() / 10.0,
            p50: us(histogram.value_at_quantile(0.5)),
            p90: us(histogram.value_at_quantile(0.9)),
            p99: us(histogram.value_at_quantile(0.99)),
            p999: us(histogram.value_at_quantile(0.999)),
            max: us(histogram.max()),
        }
    }
}

/// What one subscriber saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubscriberReport {
    /// Messages received.
    pub received: u64,
    /// Messages published and not received.
    pub lost: u64,
    /// Messages that came at or before one already received from the same
    /// publisher (reordered or duplicated).
    pub out_of_order: u64,
    /// `received` ÷ time from the first publish to this subscriber's last
    /// message, msgs/s.
    pub delivered_rate: f64,
    /// Median publish→deliver latency, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// Why the subscription ended early, if it did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// One run's result: the JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Target name (`relay`, `statecast`, `nats`…).
    pub target: String,
    /// Free-text label from `--label`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub label: Option<String>,
    /// Publisher connections.
    pub publishers: usize,
    /// Subscriber connections.
    pub subscribers: usize,
    /// Message size, bytes.
    pub size: usize,
    /// Fixed total rate asked for, msgs/s; `null` = as fast as possible.
    pub rate: Option<f64>,
    /// Messages published (all publishers).
    pub published: u64,
    /// Time from the first publish to the last publish call's return, s.
    pub publish_secs: f64,
    /// `published` ÷ `publish_secs`, msgs/s.
    pub publish_rate: f64,
    /// The slowest subscriber's delivered rate, msgs/s.
    pub delivered_rate_min: f64,
    /// The mean of the subscribers' delivered rates, msgs/s.
    pub delivered_rate_mean: f64,
    /// Messages received by all subscribers ÷ time from the first publish to
    /// the last message anywhere, deliveries/s.
    pub deliveries_rate: f64,
    /// Messages published and not received, summed over subscribers.
    pub lost: u64,
    /// Reordered or duplicated messages, summed over subscribers.
    pub out_of_order: u64,
    /// Publish→deliver latency over every subscriber's messages.
    pub latency_us: Latency,
    /// Per subscriber.
    pub subscriber_detail: Vec<SubscriberReport>,
    /// CPU used by this process over the run, % of one core.
    pub client_cpu_pct: Option<f64>,
    /// CPU used by `--server-pid` over the run, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Time from the first publish to the end of the run, s.
    pub wall_secs: f64,
    /// Extra subscriptions with filters no message matches
    /// (`--filtered-subscriptions`).
    #[serde(default)]
    pub filtered_subscriptions: u64,
    /// Messages delivered to those (should be 0).
    #[serde(default)]
    pub filtered_deliveries: u64,
    /// Errors met (publisher or subscriber); empty on a clean run.
    pub errors: Vec<String>,
}

/// The value of [`DurableReport::workload`].
pub const DURABLE_WORKLOAD: &str = "durable";

/// One W2 run's result (`statecast-bench durable`): the JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DurableReport {
    /// Always [`DURABLE_WORKLOAD`]: tells W2 lines from W1's.
    pub workload: String,
    /// Target name (`statecast`, `redis-always`, `jetstream`…).
    pub target: String,
    /// Free-text label from `--label`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub label: Option<String>,
    /// The acknowledgement asked for, where the target has a choice
    /// (statecast: `persisted` or `processed`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ack: Option<String>,
    /// The documents sent (`w2`, `order`); absent in lines from before
    /// `order` existed (`w2`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub doc: Option<String>,
    /// Update size, bytes (the mean, for `order` documents).
    pub size: usize,
    /// Distinct keys (update `n` is for key `n % keys`).
    pub keys: u64,
    /// Most updates sent and not yet acknowledged.
    pub window: usize,
    /// Updates sent.
    pub sent: u64,
    /// Updates acknowledged (successfully).
    pub acked: u64,
    /// Time from the first send to the last acknowledgement, s.
    pub secs: f64,
    /// `acked` ÷ `secs`, updates/s.
    pub updates_rate: f64,
    /// `updates_rate` × `size`, MB/s (10⁶ bytes) of payload.
    pub payload_mb_per_sec: f64,
    /// Send→acknowledgement latency of every acknowledged update.
    pub ack_latency_us: Latency,
    /// First and last stamp (bookmark, stream sequence) acknowledged, when
    /// the target's acks carry one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stamps: Option<(u64, u64)>,
    /// What was checked after the last acknowledgement (stamps in order and
    /// gap-free; the server's state read back where the target can).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub check: Option<String>,
    /// The read-back's query on a fresh connection, ms: from sending it to
    /// the whole state received (statecast: `sow` → `group_end`; Redis:
    /// `HGETALL`; JetStream: KV watch until nothing is pending).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub readback_ms: Option<f64>,
    /// Opening the read-back's connection, ms.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub readback_connect_ms: Option<f64>,
    /// Records (keys) the read-back returned or counted.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub readback_records: Option<u64>,
    /// Payload bytes the server should hold: the last update of each key.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stored_payload_bytes: Option<u64>,
    /// The server's resident memory before the first update.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub server_rss_before: Option<Rss>,
    /// The server's resident memory after the last acknowledgement.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub server_rss_after: Option<Rss>,
    /// CPU used by this process over the run, % of one core.
    pub client_cpu_pct: Option<f64>,
    /// CPU used by `--server-pid` over the run, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// Time from the first send to the end of the read-back, s.
    pub wall_secs: f64,
    /// Errors met (sending, acknowledgements, the check); empty on a clean run.
    pub errors: Vec<String>,
}

/// The value of [`RestartReport::workload`].
pub const RESTART_WORKLOAD: &str = "restart";

/// One W3 run's result (`statecast-bench restart`): the JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestartReport {
    /// Always [`RESTART_WORKLOAD`].
    pub workload: String,
    /// Target name (`statecast-sow`, `redis-always`, `jetstream`…).
    pub target: String,
    /// Free-text label from `--label`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub label: Option<String>,
    /// How the previous server process was stopped (`--stopped-by`:
    /// `sigterm`, `sigkill`).
    pub stopped_by: String,
    /// Keys the state should hold.
    pub keys: u64,
    /// The read-back: `full` (every key's last value checked) or `count`.
    pub read_back: String,
    /// From spawning the server to its ready line in its output, ms.
    pub ready_ms: Option<f64>,
    /// From spawning the server to the first connection that opened, ms.
    pub connected_ms: Option<f64>,
    /// From spawning the server to the whole state read back and checked, ms.
    pub state_ms: Option<f64>,
    /// The successful read-back's own query time, ms.
    pub readback_ms: Option<f64>,
    /// Read-back attempts (one every `--retry-ms` until one succeeds).
    pub attempts: u64,
    /// What the successful read-back checked.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub check: Option<String>,
    /// The last failed attempt's error (e.g. Redis's `LOADING`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_retry_error: Option<String>,
    /// The server's resident memory once the state was read back.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub server_rss: Option<Rss>,
    /// The restarted server's process id (still running with `--stop none`).
    pub server_pid: u32,
    /// How the restarted server was stopped afterwards (`sigterm`, `sigkill`, `none`).
    pub stop: String,
    /// From the stop signal to the process's exit, ms (`sigterm`: its
    /// graceful shutdown).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stop_ms: Option<f64>,
    /// Errors; empty on a clean run.
    pub errors: Vec<String>,
}

/// The value of [`SowQueryReport::workload`].
pub const SOW_QUERY_WORKLOAD: &str = "sow-query";

/// One `statecast-bench sow-query` result: the JSON line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SowQueryReport {
    /// Always [`SOW_QUERY_WORKLOAD`].
    pub workload: String,
    /// Free-text label from `--label`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub label: Option<String>,
    /// The SOW topic.
    pub topic: String,
    /// The filter.
    pub filter: Option<String>,
    /// `count_only` queries (nothing delivered).
    pub count_only: bool,
    /// The topic's records (a `count_only` query without a filter).
    pub topic_records: u64,
    /// That count's time, ms.
    pub count_all_ms: f64,
    /// Records matching the filter (`group_end`).
    pub matched: u64,
    /// The untimed first queries (`--warmup`), ms.
    #[serde(default)]
    pub first_query_ms: Vec<f64>,
    /// Each timed query's time, send → `group_end`, ms.
    pub query_ms: Vec<f64>,
    /// `topic_records` ÷ the median query time: records scanned per second.
    pub scanned_per_sec: f64,
    /// CPU used by `--server-pid` over the queries, % of one core.
    pub server_cpu_pct: Option<f64>,
    /// The server's CPU time per record scanned, µs (over all the queries).
    pub server_cpu_us_per_record: Option<f64>,
    /// Errors; empty on a clean run.
    pub errors: Vec<String>,
}

/// Statistics one subscriber accumulates, message by message.
#[derive(Debug)]
pub struct SubscriberStats {
    /// Messages received.
    pub received: u64,
    /// See [`SubscriberReport::out_of_order`].
    pub out_of_order: u64,
    /// Payloads that were not W1 messages.
    pub unparsed: u64,
    /// [`payload::now_ns`] at the last message.
    pub last_ns: u64,
    /// Publish→deliver latency, ns.
    pub latency: Histogram<u64>,
    /// Last sequence number seen per publisher.
    last_seq: Vec<Option<u64>>,
    /// Why the subscription ended, if it did.
    pub error: Option<String>,
}

impl SubscriberStats {
    /// Empty statistics for a run with `publishers` publishers.
    pub fn new(publishers: usize) -> Self {
        Self {
            received: 0,
            out_of_order: 0,
            unparsed: 0,
            last_ns: 0,
            latency: new_histogram(),
            last_seq: vec![None; publishers],
            error: None,
        }
    }

    /// Accounts for one received message.
    pub fn on_message(&mut self, message: &[u8]) {
        let now = payload::now_ns();
        self.received += 1;
        self.last_ns = now;
        let Some((ts, seq)) = payload::parse(message) else {
            self.unparsed += 1;
            return;
        };
        self.latency
            .saturating_record(now.saturating_sub(ts).max(1));
        let publisher = usize::try_from(seq / SEQ_PUBLISHER_STRIDE).unwrap_or(usize::MAX);
        if let Some(last) = self.last_seq.get_mut(publisher) {
            if last.is_some_and(|last| seq <= last) {
                self.out_of_order += 1;
            } else {
                *last = Some(seq);
            }
        } else {
            self.unparsed += 1;
        }
    }
}

/// A histogram of nanoseconds from 1 ns to one hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::MessageBuilder;

    #[test]
    fn stats_count_latency_and_order_per_publisher() {
        let mut builder = MessageBuilder::new(256).unwrap();
        let mut stats = SubscriberStats::new(2);
        let ts = payload::now_ns();
        for seq in [0, 1, SEQ_PUBLISHER_STRIDE, 2, 1, SEQ_PUBLISHER_STRIDE + 1] {
            stats.on_message(&builder.build(ts, seq));
        }
        stats.on_message(b"not a bench message");
        stats.on_message(&builder.build(ts, 7 * SEQ_PUBLISHER_STRIDE));
        assert_eq!(stats.received, 8);
        assert_eq!(stats.out_of_order, 1);
        assert_eq!(stats.unparsed, 2);
        assert_eq!(stats.latency.len(), 7);
        let latency = Latency::from_ns(&stats.latency);
        assert!(latency.p50 >= 0.0 && latency.max >= latency.p99 && latency.p99 >= latency.p50);
    }

    #[test]
    fn latency_is_in_microseconds() {
        let mut histogram = new_histogram();
        for ns in [1_000, 2_000, 3_000] {
            histogram.record(ns).unwrap();
        }
        let latency = Latency::from_ns(&histogram);
        assert_eq!(latency.count, 3);
        assert_eq!(latency.p50, 2.0);
        assert_eq!(latency.max, 3.0);
    }
}
