//! Entry points for the fuzz targets in `fuzz/`, kept here so that the
//! committed corpora replay as ordinary tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use statecast_protocol::Ack;

use crate::core::router::{Completion, Message, ProcessorCommand, Router, Sink};
use crate::core::session::{Action, Session, SessionLimits, Targets};

struct Discard;

impl Sink<u64> for Discard {
    fn deliver(&mut self, _: &u64, sub_ids: &[u64], _: &Message<'_>) {
        assert!(
            !sub_ids.is_empty(),
            "a delivery names at least one subscription"
        );
    }
    fn reply(&mut self, _: &u64, _: Ack) {}
    fn send(&mut self, _: &u64, _: statecast_protocol::Command) {}
}

/// Feeds `data` to one connection's session, split into reads at
/// data-dependent points, and runs every resulting command through a
/// processor's router: nothing may panic, and after a close nothing more is
/// produced.
pub fn connection(data: &[u8]) {
    // One SOW topic (kept in memory) so that SOW commands reach the stores.
    let limits_sow: Arc<Vec<statecast_sow::TopicSpec>> = Arc::new(
        statecast_sow::SowTopicConfig::new("sow", &["/id"])
            .validate()
            .into_iter()
            .collect(),
    );
    let limits = Arc::new(SessionLimits {
        frame_bytes_max: 1 << 16,
        frame_bytes_max_before_logon: 512,
        topic_bytes_max: 64,
        subscriptions_max: 16,
        heartbeat_default: Duration::from_secs(1),
        heartbeat_min: Duration::from_millis(100),
        heartbeat_max: Duration::from_secs(10),
        logon_timeout: Duration::from_secs(1),
        processors: 2,
        filter: statecast_filter::Limits::default(),
        server_version: "fuzz",
        sow: Arc::clone(&limits_sow),
    });
    let start = Instant::now();
    let mut session = Session::new(limits, start);
    let sow = || crate::core::sow::SowTopics::new(Arc::clone(&limits_sow), None);
    let mut routers = [
        Router::<u64>::with_sow(sow()),
        Router::<u64>::with_sow(sow()),
    ];
    let mut buf = BytesMut::new();
    let mut actions = Vec::new();
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    for (i, chunk) in data.chunks(step).enumerate() {
        let closed_before = session.is_closed();
        buf.extend_from_slice(chunk);
        let now = start + Duration::from_millis(i as u64 * 10);
        session.on_bytes(&mut buf, now, &mut actions);
        session.on_tick(now, now, &mut actions);
        if closed_before {
            assert!(actions.is_empty(), "a closed session produces nothing");
        }
        for action in actions.drain(..) {
            let targets = |t: Targets| -> Vec<usize> {
                match t {
                    Targets::One(p) => vec![p],
                    Targets::All => vec![0, 1],
                }
            };
            let commands: Vec<(usize, ProcessorCommand<u64>)> = match action {
                Action::Publish {
                    processor,
                    topic,
                    payload,
                    command_id,
                    ack,
                    sequence,
                    sow_key,
                } => {
                    vec![(
                        processor,
                        ProcessorCommand::Publish {
                            conn: 1,
                            topic,
                            payload,
                            command_id,
                            ack,
                            sequence,
                            sow_key,
                        },
                    )]
                }
                Action::Sow {
                    targets: t,
                    request,
                } => {
                    let done = Completion::shared(targets(t).len());
                    targets(t)
                        .into_iter()
                        .map(|p| {
                            (
                                p,
                                ProcessorCommand::Sow {
                                    conn: 1,
                                    request: Arc::clone(&request),
                                    done: done.clone(),
                                },
                            )
                        })
                        .collect()
                }
                Action::SowDelete {
                    processor,
                    topic,
                    selector,
                    command_id,
                    ack,
                } => vec![(
                    processor,
                    ProcessorCommand::SowDelete {
                        conn: 1,
                        topic,
                        selector,
                        command_id,
                        ack,
                    },
                )],
                Action::Subscribe {
                    targets: t,
                    sub_id,
                    topic,
                    filter,
                    replay,
                    command_id,
                } => {
                    let done = Completion::shared(targets(t).len());
                    targets(t)
                        .into_iter()
                        .map(|p| {
                            (
                                p,
                                ProcessorCommand::Subscribe {
                                    conn: 1,
                                    sub_id,
                                    topic: topic.clone(),
                                    filter: filter.clone(),
                                    replay: replay.map(|spec| {
                                        (spec, crate::core::router::ReplayCancel::new())
                                    }),
                                    command_id,
                                    done: done.clone(),
                                },
                            )
                        })
                        .collect()
                }
                Action::Unsubscribe {
                    targets: t,
                    sub_id,
                    command_id,
                } => {
                    let done = Completion::shared(targets(t).len());
                    targets(t)
                        .into_iter()
                        .map(|p| {
                            (
                                p,
                                ProcessorCommand::Unsubscribe {
                                    conn: 1,
                                    sub_id,
                                    command_id,
                                    done: done.clone(),
                                },
                            )
                        })
                        .collect()
                }
                Action::Flush { command_id } => {
                    let done = Completion::shared(2);
                    (0..2)
                        .map(|p| {
                            (
                                p,
                                ProcessorCommand::Flush {
                                    conn: 1,
                                    command_id,
                                    done: done.clone(),
                                },
                            )
                        })
                        .collect()
                }
                Action::Reply(_) | Action::LoggedOn(_) | Action::Rejected(_) | Action::Close(_) => {
                    Vec::new()
                }
            };
            for (processor, command) in commands {
                if let Some(router) = routers.get_mut(processor) {
                    router.handle(command, 0, &mut Discard);
                }
            }
        }
    }
}
