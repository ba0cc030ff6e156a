//! A connection's queue of frames for its I/O thread, and the hold that
//! keeps a SOW answer atomic for its client.
//!
//! From a query's `group_begin` to its `group_end`, frames that are not
//! that answer's (deliveries from other processors, the broker's replies to
//! the client's other commands, persisted acks) wait in `held`, in order,
//! and follow the `group_end` (AMPS: "other messages for the client wait
//! until the query finishes"). Frames come tagged: the I/O thread tags a
//! query's `group_begin` ([`Tag::Begin`]), processors tag the records and
//! `group_end` of the answer they send ([`Tag::Answer`], [`Tag::End`]);
//! everything else is [`Tag::Plain`]. A `group_begin` that arrives while
//! another answer is open waits in `held` too, and opens its answer when
//! released, so answers follow each other whole.
//!
//! Held frames count against the client's outbound limit like queued ones:
//! a client whose other traffic outgrows it while an answer is open is
//! slow, as in AMPS ("large queries ⇒ slow-client pressure").

use std::collections::VecDeque;

use bytes::Bytes;

/// What a frame is to the hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// Any frame that is not part of a SOW answer.
    Plain,
    /// A heartbeat: never held. It orders nothing, and a query that takes
    /// long to scan before its first record must not look like a silent
    /// broker to the client's liveness check.
    Heartbeat,
    /// The `group_begin` of query `sub_id`: opens its answer.
    Begin(u64),
    /// A record (a `deliver` or `sow_batch`) of query `sub_id`'s answer.
    Answer(u64),
    /// The `group_end` of query `sub_id`: closes its answer.
    End(u64),
}

/// Consecutive chunks of a processor's batch that belong to an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The first chunk.
    pub start: usize,
    /// One past the last chunk.
    pub end: usize,
    /// Every chunk in it carries this tag.
    pub tag: Tag,
}

/// Frames for the I/O thread, and those held behind an open answer.
#[derive(Debug, Default)]
pub struct OutQueue {
    /// For the I/O thread to write, in order.
    pub frames: Vec<Bytes>,
    /// The query whose answer is open: from its `group_begin` until its
    /// `group_end` was queued.
    open: Option<u64>,
    /// Frames that came while an answer was open and are not its own.
    held: VecDeque<(Bytes, Tag)>,
    held_bytes: usize,
}

impl OutQueue {
    /// Whether an answer is open or frames are held: chunks must be routed
    /// one by one ([`Self::push`]) rather than appended.
    #[must_use]
    pub fn holding(&self) -> bool {
        self.open.is_some() || !self.held.is_empty()
    }

    /// The query whose answer is open, if any.
    #[must_use]
    pub fn open(&self) -> Option<u64> {
        self.open
    }

    /// Bytes held behind the open answer.
    #[must_use]
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Queues one frame: for the I/O thread, or held behind the open
    /// answer. A `group_end` releases what its answer held.
    pub fn push(&mut self, frame: Bytes, tag: Tag) {
        self.route(frame, tag);
        if self.open.is_none() && !self.held.is_empty() {
            self.release();
        }
    }

    /// Queues `chunks` (emptied), tagged by `spans` (in order, not
    /// overlapping; chunks outside them are plain).
    pub fn push_all(&mut self, chunks: &mut Vec<Bytes>, spans: &[Span]) {
        let mut spans = spans.iter().peekable();
        for (i, chunk) in chunks.drain(..).enumerate() {
            while spans.next_if(|span| span.end <= i).is_some() {}
            let tag = match spans.peek() {
                Some(span) if span.start <= i => span.tag,
                _ => Tag::Plain,
            };
            self.push(chunk, tag);
        }
    }

    /// Drops everything (the connection closed).
    pub fn clear(&mut self) {
        self.frames.clear();
        self.held.clear();
        self.held_bytes = 0;
        self.open = None;
    }

    fn route(&mut self, frame: Bytes, tag: Tag) {
        match (self.open, tag) {
            (None, Tag::Begin(sub_id)) => {
                self.frames.push(frame);
                self.open = Some(sub_id);
            }
            (None, _) | (Some(_), Tag::Heartbeat) => self.frames.push(frame),
            (Some(open), Tag::Answer(sub_id)) if sub_id == open => self.frames.push(frame),
            (Some(open), Tag::End(sub_id)) if sub_id == open => {
                self.frames.push(frame);
                self.open = None;
            }
            (Some(_), _) => {
                self.held_bytes += frame.len();
                self.held.push_back((frame, tag));
            }
        }
    }

    /// Routes the held frames again, in order, now that no answer is open:
    /// up to the next `group_begin` they go out; after it, that answer's
    /// own go out and the rest stay held until its `group_end`.
    fn release(&mut self) {
        let mut pending = std::mem::take(&mut self.held);
        self.held_bytes = 0;
        while let Some((frame, tag)) = pending.pop_front() {
            self.route(frame, tag);
            if self.open.is_none() && !self.held.is_empty() {
                // An answer opened and closed within the released frames:
                // what it held came before the rest.
                let mut again = std::mem::take(&mut self.held);
                self.held_bytes = 0;
                again.append(&mut pending);
                pending = again;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(id: u8) -> Bytes {
        Bytes::from(vec![id])
    }

    fn ids(queue: &OutQueue) -> Vec<u8> {
        queue.frames.iter().map(|f| f[0]).collect()
    }

    #[test]
    fn an_open_answer_holds_everything_else_until_its_group_end() {
        let mut queue = OutQueue::default();
        queue.push(frame(1), Tag::Plain);
        queue.push(frame(2), Tag::Begin(7));
        queue.push(frame(3), Tag::Plain);
        queue.push(frame(4), Tag::Answer(7));
        queue.push(frame(5), Tag::Answer(8));
        queue.push(frame(6), Tag::Answer(7));
        queue.push(frame(9), Tag::Heartbeat);
        assert_eq!(ids(&queue), [1, 2, 4, 6, 9], "a heartbeat is never held");
        assert_eq!(queue.held_bytes(), 2);
        queue.push(frame(7), Tag::End(7));
        assert_eq!(ids(&queue), [1, 2, 4, 6, 9, 7, 3, 5]);
        assert!(!queue.holding());
        assert_eq!(queue.held_bytes(), 0);
    }

    #[test]
    fn a_second_answer_waits_whole_behind_the_first() {
        let mut queue = OutQueue::default();
        queue.push(frame(1), Tag::Begin(1));
        queue.push(frame(2), Tag::Begin(2));
        queue.push(frame(3), Tag::Answer(2));
        queue.push(frame(4), Tag::Plain);
        queue.push(frame(5), Tag::Answer(1));
        assert_eq!(ids(&queue), [1, 5]);
        queue.push(frame(6), Tag::End(1));
        // Answer 2 opened on release: its record went out, the plain frame
        // after it waits for its end.
        assert_eq!(ids(&queue), [1, 5, 6, 2, 3]);
        assert_eq!(queue.open(), Some(2));
        queue.push(frame(7), Tag::Answer(2));
        queue.push(frame(8), Tag::End(2));
        assert_eq!(ids(&queue), [1, 5, 6, 2, 3, 7, 8, 4]);
        assert!(!queue.holding());
    }

    #[test]
    fn spans_tag_the_chunks_they_cover() {
        let mut queue = OutQueue::default();
        queue.push(frame(0), Tag::Begin(3));
        let mut chunks: Vec<Bytes> = (1..=6).map(frame).collect();
        let spans = [
            Span {
                start: 1,
                end: 3,
                tag: Tag::Answer(3),
            },
            Span {
                start: 3,
                end: 4,
                tag: Tag::End(3),
            },
        ];
        queue.push_all(&mut chunks, &spans);
        assert!(chunks.is_empty());
        // 1 waits; 2 and 3 are records, 4 the group_end; 5 and 6 follow
        // the released 1.
        assert_eq!(ids(&queue), [0, 2, 3, 4, 1, 5, 6]);
    }

    /// A model: each answer's frames in order, none of another's or any
    /// plain frame between its `group_begin` and `group_end`, and every
    /// frame out once its answers are complete.
    fn tag_strategy() -> impl Strategy<Value = Tag> {
        prop_oneof![
            Just(Tag::Plain),
            Just(Tag::Heartbeat),
            (0u64..3).prop_map(Tag::Begin),
            (0u64..3).prop_map(Tag::Answer),
            (0u64..3).prop_map(Tag::End),
        ]
    }

    proptest! {
        #[test]
        fn answers_go_out_whole_and_nothing_is_lost_or_reordered_within_its_kind(
            pushes in proptest::collection::vec(tag_strategy(), 0..60),
        ) {
            // Each query opens at most once, and its answer frames come
            // only after its begin (as the broker sends them).
            let mut begun = [false; 3];
            let mut ended = [false; 3];
            let mut sent: Vec<(u16, Tag)> = Vec::new();
            for tag in pushes {
                let ok = match tag {
                    Tag::Plain | Tag::Heartbeat => true,
                    Tag::Begin(q) => !std::mem::replace(&mut begun[q as usize], true),
                    Tag::Answer(q) => begun[q as usize] && !ended[q as usize],
                    Tag::End(q) => {
                        begun[q as usize] && !std::mem::replace(&mut ended[q as usize], true)
                    }
                };
                if ok {
                    sent.push((sent.len() as u16, tag));
                }
            }
            let mut queue = OutQueue::default();
            for (id, tag) in &sent {
                queue.push(Bytes::copy_from_slice(&id.to_le_bytes()), *tag);
            }
            let out: Vec<u16> = queue
                .frames
                .iter()
                .map(|f| u16::from_le_bytes([f[0], f[1]]))
                .collect();
            let tag_of = |id: u16| sent[id as usize].1;
            // Between a begin and its end, only that answer's frames.
            let mut open: Option<u64> = None;
            for &id in &out {
                match (open, tag_of(id)) {
                    (None, Tag::Begin(q)) => open = Some(q),
                    (None, _) | (Some(_), Tag::Heartbeat) => {}
                    (Some(o), Tag::Answer(q)) => prop_assert_eq!(o, q),
                    (Some(o), Tag::End(q)) => {
                        prop_assert_eq!(o, q);
                        open = None;
                    }
                    (Some(o), other) => prop_assert!(false, "{other:?} inside answer {o}"),
                }
            }
            // Everything is out, or held behind the answer still open.
            if open.is_none() {
                prop_assert_eq!(out.len(), sent.len());
                prop_assert!(!queue.holding());
            } else {
                prop_assert_eq!(queue.open(), open);
            }
            // Frames of one answer, plain frames and heartbeats keep their order.
            // (-1: plain frames, -2: heartbeats, else the query.)
            for kind in [-2i64, -1, 0, 1, 2] {
                let of_kind = |id: &u16| match tag_of(*id) {
                    Tag::Plain => kind == -1,
                    Tag::Heartbeat => kind == -2,
                    Tag::Begin(q) | Tag::Answer(q) | Tag::End(q) => kind == q as i64,
                };
                let order: Vec<u16> = out.iter().copied().filter(of_kind).collect();
                let mut sorted = order.clone();
                sorted.sort_unstable();
                prop_assert_eq!(order, sorted);
            }
        }
    }
}
