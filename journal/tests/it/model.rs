//! Model test (test plan M1): random sequences of append, sync, read from a
//! random bookmark, retention and restart (clean shutdown, process kill,
//! power loss) run against the journal on the simulated disk and against a
//! plain `Vec` model; every read must equal the model's slice, a restart may
//! only lose records above the persisted watermark (and only on power loss),
//! and retention may only raise the first bookmark, past persisted records.
//! Cases: `STATECAST_MODEL_CASES` (default 200).

use std::collections::VecDeque;

use proptest::prelude::*;
use statecast_journal::sim::{SimRng, SimStorage};
use statecast_journal::{JournalConfig, NewRecord, Opened, Retention, Start};

use crate::support::{count, open_sim, small_config};

#[derive(Debug, Clone)]
enum Op {
    Append { topic: u8, len: u16 },
    Sync,
    Read { from: u16 },
    Retention,
    Restart { kind: u8, seed: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..4, 0u16..2500).prop_map(|(topic, len)| Op::Append { topic, len }),
        3 => Just(Op::Sync),
        2 => any::<u16>().prop_map(|from| Op::Read { from }),
        1 => Just(Op::Retention),
        1 => (0u8..3, any::<u64>()).prop_map(|(kind, seed)| Op::Restart { kind, seed }),
    ]
}

fn config() -> JournalConfig {
    JournalConfig {
        retention: Retention {
            max_bytes: Some(4 * 8192),
            ..Retention::default()
        },
        ..small_config(8192)
    }
}

fn payload(bookmark: u64, len: u16) -> Vec<u8> {
    (0..len).map(|i| (bookmark as u16 ^ i) as u8).collect()
}

struct Model {
    /// Records from the first retained one: (bookmark, topic, payload).
    records: VecDeque<(u64, Vec<u8>, Vec<u8>)>,
    /// Last appended bookmark.
    last: u64,
    /// Next bookmark the appender hands out (jumps after an unclean restart).
    next: u64,
    persisted: u64,
}

fn check_read(opened: &Opened, model: &Model, from: u16) {
    let first = model.records.front().map_or(model.last + 1, |r| r.0);
    let start = first + u64::from(from) % (model.last + 1 - first + 1);
    let mut reader = opened.journal.reader(Start::At(start)).expect("reader");
    let mut expected = model.records.iter().filter(|r| r.0 >= start);
    while let Some(record) = reader.next_record().expect("read") {
        let (bookmark, topic, payload) = expected
            .next()
            .expect("the journal served a record the model lacks");
        assert_eq!(record.bookmark, *bookmark);
        assert_eq!(record.topic(), topic.as_slice());
        assert_eq!(record.payload(), payload.as_slice());
    }
    assert!(expected.next().is_none(), "the journal missed records");
}

fn run(ops: Vec<Op>) {
    let mut storage = SimStorage::new();
    let mut opened = open_sim(&storage, config());
    let mut model = Model {
        records: VecDeque::new(),
        last: 0,
        next: 1,
        persisted: 0,
    };
    for op in ops {
        match op {
            Op::Append { topic, len } => {
                let topic = vec![b'a' + topic];
                let payload = payload(model.next, len);
                let appended = opened
                    .appender
                    .append(NewRecord::new(&topic, &payload))
                    .expect("append");
                assert_eq!(appended.bookmark, model.next);
                model.records.push_back((model.next, topic, payload));
                model.last = model.next;
                model.next += 1;
            }
            Op::Sync => {
                model.persisted = opened.flusher.sync_now().expect("sync");
                assert_eq!(model.persisted, model.last);
            }
            Op::Read { from } => check_read(&opened, &model, from),
            Op::Retention => {
                let before = opened.journal.first_bookmark();
                opened.journal.enforce_retention().expect("retention");
                let after = opened.journal.first_bookmark();
                assert!(after >= before);
                assert!(
                    model
                        .records
                        .iter()
                        .filter(|r| r.0 < after)
                        .all(|r| r.0 <= model.persisted),
                    "retention only removes persisted records"
                );
                model.records.retain(|r| r.0 >= after);
            }
            Op::Restart { kind, seed } => {
                match kind {
                    0 => {
                        let Opened {
                            journal,
                            appender,
                            flusher,
                            ..
                        } = opened;
                        drop(appender);
                        journal.shutdown();
                        flusher.run().expect("final sync");
                        model.persisted = model.last;
                    }
                    _ => drop(opened),
                }
                storage = match kind {
                    0 | 1 => storage.kill_image(),
                    _ => storage.crash_image(&mut SimRng::new(seed)),
                };
                opened = open_sim(&storage, config());
                assert_eq!(opened.report.clean_shutdown, kind == 0);
                let last = opened.journal.appended();
                assert!(
                    last >= model.persisted,
                    "persisted records lost: {last} < {}",
                    model.persisted
                );
                if kind < 2 {
                    assert_eq!(last, model.last, "nothing is lost without a power cut");
                }
                model.records.retain(|r| r.0 <= last);
                model.last = last;
                model.next = opened.appender.next_bookmark();
                assert!(model.next > last);
                model.persisted = last;
                assert!(
                    opened.journal.first_bookmark()
                        <= model.records.front().map_or(u64::MAX, |r| r.0)
                );
                check_read(&opened, &model, 0);
            }
        }
    }
    check_read(&opened, &model, 0);
}

#[test]
fn journal_matches_a_vec_model() {
    let cases = count("STATECAST_MODEL_CASES", 200) as u32;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(op(), 1..80), |ops| {
            run(ops);
            Ok(())
        })
        .unwrap_or_else(|error| panic!("{error}"));
}
