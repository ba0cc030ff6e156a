//! A processor thread: the single writer of the topics it owns. It takes
//! batches of commands from the I/O threads, runs them through its
//! [`Router`], and flushes the resulting frames to the connections' queues
//! once per batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::Receiver;

use super::outbound::{ConnShared, IoShared, ProcessorSink};
use crate::core::router::{ProcessorCommand, Router};

/// Commands from one I/O thread's loop iteration for one processor.
#[derive(Debug)]
pub struct Batch {
    /// The I/O thread that read them (for back-pressure accounting).
    pub origin: Arc<IoShared>,
    /// Bytes the origin counted for them.
    pub bytes: usize,
    /// The commands, in the order they were read.
    pub commands: Vec<ProcessorCommand<Arc<ConnShared>>>,
}

/// What a processor receives.
#[derive(Debug)]
pub enum ProcessorMsg {
    /// Work.
    Batch(Batch),
    /// One I/O thread will send nothing more (clean shutdown).
    Drain,
    /// A replay asks to hand its subscription over to live delivery.
    GoLive {
        /// The replay, for the answer.
        replay: u64,
        /// The subscriber.
        conn_id: u64,
        /// The subscription.
        sub_id: u64,
        /// The replay has read every record below this bookmark.
        read_below: u64,
    },
    /// A replay ended without going live: forget its pending subscription.
    DropPending {
        /// The subscriber.
        conn_id: u64,
        /// The subscription.
        sub_id: u64,
    },
}

/// Batches handled before output is flushed, so that a processor that is
/// behind still flushes regularly.
const BATCHES_PER_FLUSH_MAX: usize = 16;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Runs processor `index` until every I/O thread has sent [`ProcessorMsg::Drain`].
pub fn run(
    index: usize,
    inbox: Receiver<ProcessorMsg>,
    io_threads: usize,
    done: &AtomicUsize,
    journal: Option<Arc<super::journaling::Journaling>>,
    replayer: Option<crossbeam_channel::Sender<super::replayer::ReplayerMsg>>,
) {
    let mut router: Router<Arc<ConnShared>> = Router::new();
    let mut sink = ProcessorSink::new(journal, replayer.clone());
    let mut drained = 0;
    let mut handled: Vec<(Arc<IoShared>, usize)> = Vec::new();
    'outer: while drained < io_threads {
        let Ok(first) = inbox.recv() else {
            break;
        };
        let now = now_ns();
        let mut next = Some(first);
        let mut batches = 0;
        while let Some(message) = next.take() {
            match message {
                ProcessorMsg::Drain => {
                    drained += 1;
                    if drained == io_threads {
                        break;
                    }
                }
                ProcessorMsg::GoLive {
                    replay,
                    conn_id,
                    sub_id,
                    read_below,
                } => {
                    let answer = router.go_live(conn_id, sub_id, read_below);
                    if let Some(replayer) = &replayer {
                        let _ = replayer.send(super::replayer::ReplayerMsg::Answer {
                            replay,
                            processor: index,
                            answer,
                        });
                    }
                }
                ProcessorMsg::DropPending { conn_id, sub_id } => {
                    router.drop_pending(conn_id, sub_id)
                }
                ProcessorMsg::Batch(batch) => {
                    for command in batch.commands {
                        router.handle(command, now, &mut sink);
                    }
                    handled.push((batch.origin, batch.bytes));
                    batches += 1;
                }
            }
            if batches < BATCHES_PER_FLUSH_MAX {
                next = inbox.try_recv().ok();
            }
        }
        sink.flush();
        for (origin, bytes) in handled.drain(..) {
            origin.processed(bytes);
        }
        if drained == io_threads {
            break 'outer;
        }
    }
    let stats = router.stats();
    tracing::debug!(
        published = stats.published,
        delivered = stats.delivered,
        encode_failures = sink.encode_failures(),
        append_failures = sink.append_failures(),
        "processor-{index} stopped"
    );
    done.fetch_add(1, Ordering::AcqRel);
}
