//! Recovery on open, written as a labelled decision table.
//!
//! Recovery reads the checkpoint (“synced up to segment S, offset O”), then
//! the header of every segment file, then the records of every segment not
//! known to be synced (S and later; older ones are read lazily by the first
//! reader that needs them). Every situation it can meet has a [`Label`]; the
//! table [`DECISIONS`] says, once, what produces each situation and what
//! recovery does about it. The code classifies, then looks the action up.
//!
//! The split that matters is between the *synced region* (everything before
//! the checkpoint) and the *tail* (after it). Damage in the tail is what a
//! crash while writing leaves — a torn or missing page, a record half
//! written — and is cut off: the bytes are zeroed (and synced) from the first
//! bad record on, and the report says which file, which offset, how many
//! bytes. Damage in the synced region cannot come from a crash: it is bit
//! rot, a misdirected write or an edited file, and the journal refuses to
//! start ([`crate::OpenError::Corrupt`], naming file and offset) unless the
//! operator chose [`RecoveryMode::Quarantine`], which moves everything from
//! that point on into `quarantine/` and continues with a bookmark jump so no
//! bookmark is reused. Nothing is ever skipped over silently.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checkpoint::CheckpointFile;
use crate::dedup::DedupState;
use crate::error::{Damage, OpenError};
use crate::format::{
    Checkpoint, HEADER_PAGE_BYTES, HeaderVerdict, SEGMENT_HEADER_BYTES, SEGMENT_VERSION,
    SegmentHeader, crc_seed,
};
use crate::segment::{
    ScanResult, ScanStart, ScanStop, Segment, first_nonzero, nonzero_extent, parse_segment_name,
    scan_segment, segment_name,
};
use crate::storage::{SegmentFile, Storage};

/// What to do when synced data is found damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Refuse to open, naming the file and offset (the default).
    #[default]
    Strict,
    /// Move everything from the damage on into `quarantine/` and continue.
    Quarantine,
}

/// The situations recovery distinguishes. See [`DECISIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Label {
    /// A: a record whose length, CRC, bookmark and time check out.
    RecordValid,
    /// B: a zero length word and only zeros after it: the end of the data.
    CleanEnd,
    /// C: the segment has no room for another record header: go to the next.
    SegmentFull,
    /// D: a zero length word in the tail with non-zero bytes after it.
    TornZeroResidue,
    /// E: in the tail, a length that cannot be right.
    TornBadLength,
    /// F: in the tail, a record whose CRC fails.
    TornBadCrc,
    /// G: in the tail, a record with a valid CRC but the wrong bookmark or time
    /// (a stale record, a write that landed in the wrong place).
    TornMisplaced,
    /// H: in the tail, a segment header that is not valid (never synced).
    TornHeader,
    /// I: in the tail, a segment that does not continue the previous one.
    AfterEnd,
    /// J: a zero length word (or a missing continuation) inside synced data.
    SyncedZeroLength,
    /// K: a length that cannot be right inside synced data.
    SyncedBadLength,
    /// L: a CRC failure inside synced data.
    SyncedBadCrc,
    /// M: a valid-CRC record at the wrong position inside synced data.
    SyncedMisplaced,
    /// N: a damaged or zeroed header of a synced segment.
    SyncedHeaderDamaged,
    /// O: a synced segment is missing, or segments do not chain.
    SyncedSegmentMissing,
    /// P: a zero-header file after the data: a preallocated spare.
    Spare,
    /// Q: no valid checkpoint although segments exist: nothing is known
    /// synced, so all damage counts as tail.
    CheckpointMissing,
}

/// What recovery does for a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Keep the record and go on.
    Keep,
    /// The data ends here; nothing to repair.
    End,
    /// Go on with the next segment.
    NextSegment,
    /// Zero from here to the last non-zero byte, sync, report; the data ends here.
    TruncateAndReport,
    /// Remove the file (it holds nothing that was synced) and report.
    DropFileAndReport,
    /// Refuse to open (or quarantine from here in quarantine mode).
    RefuseOrQuarantine,
    /// Keep the file as a preallocated spare.
    KeepSpare,
    /// Report and go on treating every segment as tail.
    ReportAndContinue,
}

/// One row of the decision table.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    /// The situation.
    pub label: Label,
    /// What produces it.
    pub cause: &'static str,
    /// What recovery does.
    pub action: Action,
}

/// The decision table. `journal/FORMAT.md` prints it; every label has a test
/// in `tests/it/recovery_table.rs`.
pub const DECISIONS: &[Decision] = &[
    Decision {
        label: Label::RecordValid,
        cause: "normal data",
        action: Action::Keep,
    },
    Decision {
        label: Label::CleanEnd,
        cause: "end of the data in the last segment, or unused room at the end of a sealed one",
        action: Action::End,
    },
    Decision {
        label: Label::SegmentFull,
        cause: "a segment filled to the last byte",
        action: Action::NextSegment,
    },
    Decision {
        label: Label::TornZeroResidue,
        cause: "crash: a page of the tail was lost while a later one reached the disk",
        action: Action::TruncateAndReport,
    },
    Decision {
        label: Label::TornBadLength,
        cause: "crash: the length word of the last record was torn",
        action: Action::TruncateAndReport,
    },
    Decision {
        label: Label::TornBadCrc,
        cause: "crash: the last record was written in part (torn page, lost sector)",
        action: Action::TruncateAndReport,
    },
    Decision {
        label: Label::TornMisplaced,
        cause: "crash: an old record from before a previous truncation, or a write that landed elsewhere",
        action: Action::TruncateAndReport,
    },
    Decision {
        label: Label::TornHeader,
        cause: "crash: a segment was activated but its header page never reached the disk",
        action: Action::DropFileAndReport,
    },
    Decision {
        label: Label::AfterEnd,
        cause: "crash: pages of a later segment reached the disk while the end of the previous one did not",
        action: Action::DropFileAndReport,
    },
    Decision {
        label: Label::SyncedZeroLength,
        cause: "bit rot or an edit zeroed synced records, or synced records are missing",
        action: Action::RefuseOrQuarantine,
    },
    Decision {
        label: Label::SyncedBadLength,
        cause: "bit rot or a misdirected write in synced data",
        action: Action::RefuseOrQuarantine,
    },
    Decision {
        label: Label::SyncedBadCrc,
        cause: "bit rot or a misdirected write in synced data",
        action: Action::RefuseOrQuarantine,
    },
    Decision {
        label: Label::SyncedMisplaced,
        cause: "a misdirected write or a file copied into the wrong place",
        action: Action::RefuseOrQuarantine,
    },
    Decision {
        label: Label::SyncedHeaderDamaged,
        cause: "bit rot or an edit of a synced segment's header",
        action: Action::RefuseOrQuarantine,
    },
    Decision {
        label: Label::SyncedSegmentMissing,
        cause: "a synced segment file was deleted, renamed or replaced",
        action: Action::RefuseOrQuarantine,
    },
    Decision {
        label: Label::Spare,
        cause: "a preallocated segment not yet used",
        action: Action::KeepSpare,
    },
    Decision {
        label: Label::CheckpointMissing,
        cause: "the checkpoint file was deleted or both slots rotted",
        action: Action::ReportAndContinue,
    },
];

impl Label {
    /// The label's row in [`DECISIONS`].
    #[allow(
        clippy::expect_used,
        reason = "DECISIONS is a constant table; the every_label_has_exactly_one_row test checks every label has its row"
    )]
    pub fn decision(self) -> &'static Decision {
        DECISIONS
            .iter()
            .find(|decision| decision.label == self)
            .expect("every label has a row in DECISIONS")
    }

    /// What recovery does.
    pub fn action(self) -> Action {
        self.decision().action
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Label::RecordValid => "valid record",
            Label::CleanEnd => "clean end",
            Label::SegmentFull => "segment full",
            Label::TornZeroResidue => "torn tail: lost page before written bytes",
            Label::TornBadLength => "torn tail: bad length",
            Label::TornBadCrc => "torn tail: CRC mismatch",
            Label::TornMisplaced => "torn tail: misplaced record",
            Label::TornHeader => "torn segment header",
            Label::AfterEnd => "segment after the end of the log",
            Label::SyncedZeroLength => "synced data missing",
            Label::SyncedBadLength => "synced record with a bad length",
            Label::SyncedBadCrc => "synced record with a CRC mismatch",
            Label::SyncedMisplaced => "synced record at the wrong position",
            Label::SyncedHeaderDamaged => "synced segment header damaged",
            Label::SyncedSegmentMissing => "synced segment missing",
            Label::Spare => "preallocated spare",
            Label::CheckpointMissing => "checkpoint missing",
        }
    }

    /// The synced-region counterpart of a tail label.
    pub fn in_synced_region(self) -> Label {
        match self {
            Label::TornZeroResidue | Label::CleanEnd => Label::SyncedZeroLength,
            Label::TornBadLength => Label::SyncedBadLength,
            Label::TornBadCrc => Label::SyncedBadCrc,
            Label::TornMisplaced => Label::SyncedMisplaced,
            Label::TornHeader => Label::SyncedHeaderDamaged,
            Label::AfterEnd => Label::SyncedSegmentMissing,
            other => other,
        }
    }
}

/// What recovery found in one segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentReport {
    /// File name.
    pub file: String,
    /// Segment index.
    pub segment: u64,
    /// The label that decided the segment's fate (`RecordValid` for a segment
    /// kept whole, `CleanEnd`/`Torn…` for the last one, `Spare`, …).
    pub label: Label,
    /// True when its records were read and checked at open.
    pub scanned: bool,
    /// Records kept (when scanned).
    pub records: u64,
    /// First and last bookmark kept (`first > last` when none).
    pub first_bookmark: u64,
    /// Last bookmark kept.
    pub last_bookmark: u64,
}

/// Bytes cut from the tail of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// Where and why.
    pub damage: Damage,
    /// Number of bytes zeroed (from `damage.offset` to the last non-zero byte).
    pub bytes_zeroed: u64,
}

/// Everything recovery kept, dropped and repaired. The broker logs it.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// Instance id of the journal.
    pub instance_id: u64,
    /// True when the journal had been shut down cleanly.
    pub clean_shutdown: bool,
    /// True when the directory held no journal and one was created.
    pub created: bool,
    /// The checkpoint found (synced up to).
    pub checkpoint: Option<Checkpoint>,
    /// Per segment file, in order.
    pub segments: Vec<SegmentReport>,
    /// Tail cuts (at most one in practice).
    pub truncations: Vec<Truncation>,
    /// Files removed because they followed the end of the log, with the label.
    pub dropped_files: Vec<(String, Label)>,
    /// Damage in synced data that quarantine mode set aside.
    pub quarantined_damage: Option<Damage>,
    /// Files moved to `quarantine/`.
    pub quarantined_files: Vec<String>,
    /// Situations worth a warning that did not stop the open.
    pub warnings: Vec<String>,
    /// Oldest bookmark in the journal (`last + 1` when empty).
    pub first_bookmark: u64,
    /// Newest bookmark kept.
    pub last_bookmark: u64,
    /// Records read and checked at open.
    pub records_scanned: u64,
    /// Bytes of records read and checked at open.
    pub bytes_scanned: u64,
    /// Publishers in the de-dup table.
    pub publishers: usize,
    /// Wall time of the open.
    pub duration: Duration,
}

impl RecoveryReport {
    /// True when recovery dropped or repaired anything.
    pub fn lost_anything(&self) -> bool {
        !self.truncations.is_empty()
            || !self.dropped_files.is_empty()
            || self.quarantined_damage.is_some()
    }
}

/// The result handed to `Journal::open`.
pub(crate) struct Recovered {
    pub instance_id: u64,
    /// Older segments (read mode), oldest first.
    pub sealed: Vec<Arc<Segment>>,
    /// The last data segment, in append mode at its end, if any.
    pub active: Option<ActiveSegment>,
    /// Spares, in index order, following the active segment.
    pub spares: Vec<(u64, Box<dyn SegmentFile>)>,
    /// Next bookmark to hand out (above `last_bookmark + 1` after an
    /// unclean stop or a quarantine).
    pub next_bookmark: u64,
    /// Last bookmark in the journal (0 when empty).
    pub last_bookmark: u64,
    /// Highest timestamp seen.
    pub last_timestamp_ns: u64,
    /// First append must start a new segment (after a quarantine jump).
    pub force_roll: bool,
    pub checkpoint: CheckpointFile,
    pub dedup: DedupState,
    pub report: RecoveryReport,
    /// Highest segment index ever seen (spares are numbered after it).
    pub highest_index: u64,
}

pub(crate) struct ActiveSegment {
    pub header: SegmentHeader,
    pub file: Box<dyn SegmentFile>,
    pub scan: ScanResult,
}

/// Options recovery needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecoveryOptions {
    pub mode: RecoveryMode,
    pub verify_all: bool,
    pub index_every_bytes: u64,
    pub now_ns: u64,
    pub new_instance_id: Option<u64>,
}

struct Entry {
    index: u64,
    name: String,
    file: Box<dyn SegmentFile>,
    verdict: HeaderVerdict,
}

fn storage_error(op: &'static str, name: impl Into<String>) -> impl FnOnce(io::Error) -> OpenError {
    let name = name.into();
    move |source| OpenError::Storage { op, name, source }
}

/// A fresh random instance id (no extra dependency: time, pid and a stack
/// address through SplitMix64).
fn new_instance_id(now_ns: u64) -> u64 {
    let local = 0u8;
    let mut rng = crate::sim::SimRng::new(
        now_ns ^ u64::from(std::process::id()).rotate_left(32) ^ (&local as *const u8 as u64),
    );
    loop {
        let id = rng.next_u64();
        if id != 0 {
            return id;
        }
    }
}

/// Position in the journal: (segment index, byte offset).
type Position = (u64, u64);

struct Walk {
    checkpoint: Option<Checkpoint>,
    report: RecoveryReport,
}

impl Walk {
    fn synced(&self, at: Position) -> bool {
        self.checkpoint
            .is_some_and(|c| at < (c.segment_index, c.offset))
    }

    fn header_synced(&self, index: u64) -> bool {
        self.checkpoint
            .is_some_and(|c| index <= c.segment_index && c.bookmark > 0)
    }

    fn damage(&self, index: u64, offset: u64, label: Label, detail: String) -> Damage {
        Damage {
            file: segment_name(index),
            segment: index,
            offset,
            label,
            detail,
        }
    }

    /// Zeroes `file` from `offset` to its last non-zero byte and syncs.
    fn truncate(
        &mut self,
        file: &mut Box<dyn SegmentFile>,
        damage: Damage,
    ) -> Result<(), OpenError> {
        let name = damage.file.clone();
        let extent =
            nonzero_extent(file.as_ref(), damage.offset).map_err(storage_error("read", &name))?;
        file.begin_append(damage.offset);
        zero_range(file.as_ref(), damage.offset, extent)
            .map_err(storage_error("truncate", &name))?;
        tracing::warn!(file = %name, offset = damage.offset, bytes = extent - damage.offset, "journal: cut torn tail");
        self.report.truncations.push(Truncation {
            bytes_zeroed: extent.saturating_sub(damage.offset),
            damage,
        });
        Ok(())
    }
}

/// Writes zeros over `from..to` and syncs them.
pub(crate) fn zero_range(file: &dyn SegmentFile, from: u64, to: u64) -> io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0u8; 64 * 1024];
    let mut at = from;
    while at < to {
        // The first min(to - at, ZEROS.len()) bytes of ZEROS.
        let rest = usize::try_from(to - at).unwrap_or(usize::MAX);
        let zeros = ZEROS.get(..rest).unwrap_or(&ZEROS);
        file.write_at(at, &[zeros])?;
        at += zeros.len() as u64;
    }
    if to > from {
        file.sync_range(from, to - from)?;
    }
    Ok(())
}

fn read_header(file: &dyn SegmentFile) -> HeaderVerdict {
    let mut raw = [0u8; SEGMENT_HEADER_BYTES];
    if file.capacity() < HEADER_PAGE_BYTES || file.read_at(0, &mut raw).is_err() {
        return HeaderVerdict::BadMagic;
    }
    SegmentHeader::decode(&raw)
}

/// Runs recovery over `storage`. See the module doc.
pub(crate) fn recover(
    storage: &dyn Storage,
    options: RecoveryOptions,
) -> Result<Recovered, OpenError> {
    let started = Instant::now();
    let names = storage
        .list("")
        .map_err(storage_error("list", "the journal directory"))?;
    let (checkpoint, checkpoint_file) = CheckpointFile::read(storage)
        .map_err(storage_error("read", crate::checkpoint::CHECKPOINT_FILE))?;
    let mut entries = Vec::new();
    for name in &names {
        let Some(index) = parse_segment_name(name) else {
            continue;
        };
        let file = storage.open(name).map_err(storage_error("open", name))?;
        let verdict = read_header(file.as_ref());
        entries.push(Entry {
            index,
            name: name.clone(),
            file,
            verdict,
        });
    }
    entries.sort_by_key(|entry| entry.index);
    let highest_index = entries.last().map_or(0, |entry| entry.index);

    // Instance id: the checkpoint's, else the first valid header's, else new.
    let first_valid = entries.iter().find_map(|entry| match entry.verdict {
        HeaderVerdict::Valid(header) => Some(header.instance_id),
        _ => None,
    });
    let created = checkpoint.is_none() && first_valid.is_none();
    let instance_id = checkpoint
        .map(|c| c.instance_id)
        .or(first_valid)
        .or(options.new_instance_id)
        .unwrap_or_else(|| new_instance_id(options.now_ns));
    for entry in &mut entries {
        match entry.verdict {
            HeaderVerdict::UnsupportedVersion(version) => {
                return Err(OpenError::UnsupportedVersion {
                    name: entry.name.clone(),
                    version,
                    supported: SEGMENT_VERSION,
                });
            }
            HeaderVerdict::Valid(header) if header.instance_id != instance_id => {
                return Err(OpenError::ForeignFile {
                    name: entry.name.clone(),
                    found: header.instance_id,
                    expected: instance_id,
                });
            }
            // A header naming another index or size is a misdirected write.
            HeaderVerdict::Valid(header)
                if header.segment_index != entry.index
                    || header.capacity_bytes != entry.file.capacity() =>
            {
                entry.verdict = HeaderVerdict::BadCrc;
            }
            _ => {}
        }
    }

    let mut dedup = match DedupState::load(storage, instance_id) {
        Ok(dedup) => dedup,
        Err(error) if options.mode == RecoveryMode::Quarantine => {
            tracing::warn!(%error, "journal: de-dup state damaged; starting it afresh (quarantine mode)");
            DedupState::empty()
        }
        Err(error) => return Err(error.into()),
    };
    let dedup_from = if dedup.files_found || dedup.len() > 0 {
        dedup.snapshot_bookmark()
    } else {
        u64::MAX
    };

    let mut walk = Walk {
        checkpoint,
        report: RecoveryReport {
            instance_id,
            clean_shutdown: checkpoint.is_some_and(|c| c.clean),
            created,
            checkpoint,
            ..RecoveryReport::default()
        },
    };
    if checkpoint.is_none() && !entries.is_empty() {
        walk.report.warnings.push(
            "no valid checkpoint: every segment is treated as un-synced tail, so damage anywhere is cut, not refused"
                .into(),
        );
        walk.report.segments.push(SegmentReport {
            file: crate::checkpoint::CHECKPOINT_FILE.into(),
            segment: 0,
            label: Label::CheckpointMissing,
            scanned: false,
            records: 0,
            first_bookmark: 0,
            last_bookmark: 0,
        });
    }

    // Pass A: the chain of valid, consecutive headers from the oldest file.
    let mut chain: Vec<(u64, Box<dyn SegmentFile>, SegmentHeader)> = Vec::new();
    let mut rest: Vec<Entry> = Vec::new();
    for entry in entries {
        let continues = match (entry.verdict, chain.last()) {
            (HeaderVerdict::Valid(_), None) => rest.is_empty(),
            (HeaderVerdict::Valid(header), Some((index, _, previous))) => {
                rest.is_empty()
                    && entry.index == index + 1
                    && header.first_bookmark > header.previous_last_bookmark
                    && header.previous_last_bookmark >= previous.previous_last_bookmark
            }
            _ => false,
        };
        if continues && let HeaderVerdict::Valid(header) = entry.verdict {
            chain.push((entry.index, entry.file, header));
        } else {
            rest.push(entry);
        }
    }

    // Pass B: records.
    let mut sealed: Vec<Arc<Segment>> = Vec::new();
    let mut active: Option<ActiveSegment> = None;
    let mut corruption: Option<Damage> = None;
    let mut cut_after: Option<u64> = None; // segments after this index are dropped
    let mut last_timestamp_ns = 0u64;
    let chain_headers: Vec<SegmentHeader> = chain.iter().map(|(_, _, header)| *header).collect();
    let chain_len = chain.len();
    let mut chain_iter = chain.into_iter().enumerate();
    while let Some((position, (index, file, header))) = chain_iter.next() {
        let next = chain_headers.get(position + 1).copied();
        // Index mismatch with the checkpoint: a synced segment is missing
        // before this one.
        if position == 0
            && let Some(c) = checkpoint
            && c.segment_index < index
            && c.bookmark > 0
        {
            corruption = Some(walk.damage(
                c.segment_index,
                0,
                Label::SyncedSegmentMissing,
                format!(
                    "the checkpoint names segment {} but the oldest file is segment {index}",
                    c.segment_index
                ),
            ));
            // Everything present is after the missing synced data.
            rest.splice(
                0..0,
                std::iter::once(Entry {
                    index,
                    name: segment_name(index),
                    file,
                    verdict: HeaderVerdict::Valid(header),
                }),
            );
            for (_, (index, file, header)) in chain_iter.by_ref() {
                rest.push(Entry {
                    index,
                    name: segment_name(index),
                    file,
                    verdict: HeaderVerdict::Valid(header),
                });
            }
            rest.sort_by_key(|entry| entry.index);
            break;
        }
        let lazy = !options.verify_all
            && next.is_some_and(|next| {
                walk.header_synced(next.segment_index) && next.previous_last_bookmark <= dedup_from
            });
        if lazy && let Some(next) = next {
            let file: Arc<dyn SegmentFile> = Arc::from(file);
            walk.report.segments.push(SegmentReport {
                file: segment_name(index),
                segment: index,
                label: Label::RecordValid,
                scanned: false,
                records: 0,
                first_bookmark: header.first_bookmark,
                last_bookmark: next.previous_last_bookmark,
            });
            last_timestamp_ns = last_timestamp_ns.max(header.first_timestamp_ns);
            sealed.push(Segment::lazy(header, file, next.previous_last_bookmark));
            continue;
        }
        let seed = crc_seed(instance_id, index);
        let scan = scan_segment(
            file.as_ref(),
            &header,
            seed,
            ScanStart::segment_start(&header),
            options.index_every_bytes,
            |record, _, _, _| {
                if record.bookmark > dedup_from {
                    dedup.apply(record.bookmark, record.origin, record.origin_sequence);
                }
            },
        )
        .map_err(storage_error("read", segment_name(index)))?;
        walk.report.records_scanned += scan.records;
        walk.report.bytes_scanned += scan.record_bytes;
        last_timestamp_ns = last_timestamp_ns.max(scan.last_timestamp_ns);
        let continues = next.is_some_and(|next| next.previous_last_bookmark == scan.last_bookmark);
        let (label, end_here) = match &scan.stop {
            ScanStop::Full | ScanStop::ZeroLength if continues => (Label::RecordValid, false),
            ScanStop::Full if next.is_none() => (Label::SegmentFull, true),
            ScanStop::Full | ScanStop::ZeroLength => {
                if walk.synced((index, scan.end))
                    || next.is_some_and(|n| walk.header_synced(n.segment_index))
                {
                    let detail = match next {
                        Some(next) => format!(
                            "records end at bookmark {} but segment {} continues after bookmark {}",
                            scan.last_bookmark, next.segment_index, next.previous_last_bookmark
                        ),
                        None => format!(
                            "records end at bookmark {} before the synced end",
                            scan.last_bookmark
                        ),
                    };
                    // Synced data beyond this segment is gone: a missing
                    // segment if the checkpoint is in a later one.
                    let label =
                        if next.is_none() && checkpoint.is_some_and(|c| c.segment_index > index) {
                            Label::SyncedSegmentMissing
                        } else {
                            Label::SyncedZeroLength
                        };
                    corruption = Some(walk.damage(index, scan.end, label, detail));
                    (label, true)
                } else if walk.report.clean_shutdown {
                    (Label::CleanEnd, true)
                } else {
                    match first_nonzero(file.as_ref(), scan.end)
                        .map_err(storage_error("read", segment_name(index)))?
                    {
                        Some(_) => (Label::TornZeroResidue, true),
                        None => (Label::CleanEnd, true),
                    }
                }
            }
            ScanStop::Damaged {
                offset,
                label,
                detail,
            } => {
                if walk.synced((index, *offset)) {
                    corruption =
                        Some(walk.damage(index, *offset, label.in_synced_region(), detail.clone()));
                    (label.in_synced_region(), true)
                } else {
                    (*label, true)
                }
            }
        };
        walk.report.segments.push(SegmentReport {
            file: segment_name(index),
            segment: index,
            label,
            scanned: true,
            records: scan.records,
            first_bookmark: header.first_bookmark,
            last_bookmark: scan.last_bookmark,
        });
        if corruption.is_some() {
            // Keep the damaged segment available for quarantine handling.
            rest.insert(
                0,
                Entry {
                    index,
                    name: segment_name(index),
                    file,
                    verdict: HeaderVerdict::Valid(header),
                },
            );
            for (_, (index, file, header)) in chain_iter.by_ref() {
                rest.push(Entry {
                    index,
                    name: segment_name(index),
                    file,
                    verdict: HeaderVerdict::Valid(header),
                });
            }
            rest.sort_by_key(|entry| entry.index);
            break;
        }
        if !end_here && position + 1 < chain_len {
            let file: Arc<dyn SegmentFile> = Arc::from(file);
            sealed.push(Segment::known(header, file, &scan, true));
            continue;
        }
        // This segment is the end of the log.
        let mut file = file;
        match label.action() {
            Action::TruncateAndReport => {
                let offset = scan.end;
                let detail = match &scan.stop {
                    ScanStop::Damaged { detail, .. } => detail.clone(),
                    _ => "non-zero bytes after the end of the records".into(),
                };
                let damage = walk.damage(index, offset, label, detail);
                walk.truncate(&mut file, damage)?;
            }
            _ => file.begin_append(scan.end),
        }
        cut_after = Some(index);
        active = Some(ActiveSegment { header, file, scan });
        // Remaining chain segments follow the end: dropped.
        for (_, (index, file, header)) in chain_iter.by_ref() {
            rest.push(Entry {
                index,
                name: segment_name(index),
                file,
                verdict: HeaderVerdict::Valid(header),
            });
        }
        rest.sort_by_key(|entry| entry.index);
        break;
    }
    // The chain ended with a sealed segment whose successor is not in the
    // chain (rest holds it): scan the last sealed one to make it active.
    if corruption.is_none()
        && active.is_none()
        && let Some(last) = sealed.pop()
    {
        match Arc::try_unwrap(last) {
            Ok(segment) => {
                let index = segment.index;
                let header = segment.header;
                drop(segment);
                let mut file = storage
                    .open(&segment_name(index))
                    .map_err(storage_error("open", segment_name(index)))?;
                let scan = scan_segment(
                    file.as_ref(),
                    &header,
                    crc_seed(instance_id, index),
                    ScanStart::segment_start(&header),
                    options.index_every_bytes,
                    |record, _, _, _| {
                        if record.bookmark > dedup_from {
                            dedup.apply(record.bookmark, record.origin, record.origin_sequence);
                        }
                    },
                )
                .map_err(storage_error("read", segment_name(index)))?;
                if let ScanStop::Damaged {
                    offset,
                    label,
                    detail,
                } = &scan.stop
                {
                    corruption =
                        Some(walk.damage(index, *offset, label.in_synced_region(), detail.clone()));
                    rest.insert(
                        0,
                        Entry {
                            index,
                            name: segment_name(index),
                            file,
                            verdict: HeaderVerdict::Valid(header),
                        },
                    );
                } else {
                    file.begin_append(scan.end);
                    cut_after = Some(index);
                    active = Some(ActiveSegment { header, file, scan });
                }
            }
            Err(_) => unreachable!("recovery holds the only reference to its segments"),
        }
    }

    // A damaged or zeroed header of a segment the checkpoint covers.
    if corruption.is_none()
        && let Some(entry) = rest
            .iter()
            .find(|entry| !matches!(entry.verdict, HeaderVerdict::Valid(_)))
        && walk.header_synced(entry.index)
    {
        corruption = Some(walk.damage(
            entry.index,
            0,
            Label::SyncedHeaderDamaged,
            format!("the header reads as {:?}", entry.verdict),
        ));
        if let Some(active) = active.take() {
            rest.insert(
                0,
                Entry {
                    index: active.header.segment_index,
                    name: segment_name(active.header.segment_index),
                    file: active.file,
                    verdict: HeaderVerdict::Valid(active.header),
                },
            );
        }
    }

    // The log must reach the checkpoint.
    if corruption.is_none()
        && let Some(c) = checkpoint
        && c.bookmark > 0
    {
        let end: Position = active
            .as_ref()
            .map_or((0, 0), |a| (a.header.segment_index, a.scan.end));
        let last_bookmark = active.as_ref().map_or(0, |a| a.scan.last_bookmark);
        if end < (c.segment_index, c.offset) || last_bookmark < c.bookmark {
            let (index, offset) = if end.0 == 0 {
                (c.segment_index, 0)
            } else {
                end
            };
            let label = if end.0 == c.segment_index {
                Label::SyncedZeroLength
            } else {
                Label::SyncedSegmentMissing
            };
            corruption = Some(walk.damage(
                index,
                offset,
                label,
                format!(
                    "the log ends at bookmark {last_bookmark} (segment {}, offset {}) but the checkpoint says \
                     bookmark {} was synced",
                    end.0, end.1, c.bookmark
                ),
            ));
            if let Some(active) = active.take() {
                rest.insert(
                    0,
                    Entry {
                        index: active.header.segment_index,
                        name: segment_name(active.header.segment_index),
                        file: active.file,
                        verdict: HeaderVerdict::Valid(active.header),
                    },
                );
            }
        }
    }

    let mut force_roll = false;
    let mut next_bookmark_floor = 0u64;
    if let Some(damage) = corruption {
        if options.mode == RecoveryMode::Strict {
            return Err(OpenError::Corrupt {
                damage: Box::new(damage),
            });
        }
        tracing::error!(%damage, "journal: quarantining damaged synced data");
        // Quarantine: the damaged segment (copied, then cut) and all later
        // files go to quarantine/.
        next_bookmark_floor = checkpoint.map_or(0, |c| c.bookmark.max(c.reserved_bookmark)) + 1;
        force_roll = true;
        let mut remaining = Vec::new();
        for entry in rest {
            if entry.index == damage.segment && damage.offset >= HEADER_PAGE_BYTES {
                let HeaderVerdict::Valid(header) = entry.verdict else {
                    unreachable!("a record-level damage has a valid header")
                };
                let copy = format!("quarantine/{}", entry.name);
                copy_file(storage, entry.file.as_ref(), &copy)
                    .map_err(storage_error("copy to quarantine", &copy))?;
                walk.report.quarantined_files.push(copy);
                let mut file = entry.file;
                let extent = nonzero_extent(file.as_ref(), damage.offset)
                    .map_err(storage_error("read", &entry.name))?;
                // Read what is kept (up to the damage) before cutting.
                let mut scan = scan_segment(
                    file.as_ref(),
                    &header,
                    crc_seed(instance_id, entry.index),
                    ScanStart::segment_start(&header),
                    options.index_every_bytes,
                    |_, _, _, _| {},
                )
                .map_err(storage_error("read", &entry.name))?;
                assert!(
                    scan.end <= damage.offset,
                    "the scan stops at or before the damage"
                );
                scan.stop = ScanStop::ZeroLength;
                let cut = scan.end;
                file.begin_append(cut);
                zero_range(file.as_ref(), cut, extent.max(cut))
                    .map_err(storage_error("truncate", &entry.name))?;
                cut_after = Some(entry.index);
                active = Some(ActiveSegment { header, file, scan });
            } else if entry.index >= damage.segment {
                let to = format!("quarantine/{}", entry.name);
                storage
                    .rename(&entry.name, &to)
                    .map_err(storage_error("move to quarantine", &entry.name))?;
                walk.report.quarantined_files.push(to);
            } else {
                remaining.push(entry);
            }
        }
        storage
            .sync_dir("quarantine")
            .map_err(storage_error("sync", "quarantine/"))?;
        storage
            .sync_dir("")
            .map_err(storage_error("sync", "the journal directory"))?;
        rest = remaining;
        if active.is_none() {
            // The damaged segment went whole: the last sealed one becomes active.
            if let Some(last) = sealed.pop() {
                let index = last.index;
                let header = last.header;
                drop(last);
                let mut file = storage
                    .open(&segment_name(index))
                    .map_err(storage_error("open", segment_name(index)))?;
                let scan = scan_segment(
                    file.as_ref(),
                    &header,
                    crc_seed(instance_id, index),
                    ScanStart::segment_start(&header),
                    options.index_every_bytes,
                    |_, _, _, _| {},
                )
                .map_err(storage_error("read", segment_name(index)))?;
                file.begin_append(scan.end);
                cut_after = Some(index);
                active = Some(ActiveSegment { header, file, scan });
            }
        }
        walk.report.quarantined_damage = Some(damage);
    }

    // Pass C: files after the end. Zero-header files numbered right after
    // the active segment are spares; everything else goes.
    let mut spares: Vec<(u64, Box<dyn SegmentFile>)> = Vec::new();
    let mut expected_spare =
        cut_after.map_or_else(|| rest.first().map_or(1, |e| e.index), |index| index + 1);
    for entry in rest {
        let clean_zero = matches!(entry.verdict, HeaderVerdict::Zero)
            && (walk.report.clean_shutdown
                || first_nonzero(entry.file.as_ref(), 0)
                    .map_err(storage_error("read", &entry.name))?
                    .is_none());
        if clean_zero && entry.index == expected_spare {
            walk.report.segments.push(SegmentReport {
                file: entry.name.clone(),
                segment: entry.index,
                label: Label::Spare,
                scanned: false,
                records: 0,
                first_bookmark: 0,
                last_bookmark: 0,
            });
            spares.push((entry.index, entry.file));
            expected_spare += 1;
            continue;
        }
        let label = match entry.verdict {
            HeaderVerdict::Valid(_) => Label::AfterEnd,
            HeaderVerdict::Zero if clean_zero => Label::Spare,
            _ => Label::TornHeader,
        };
        drop(entry.file);
        storage
            .remove(&entry.name)
            .map_err(storage_error("remove", &entry.name))?;
        tracing::warn!(file = %entry.name, label = label.name(), "journal: removed file after the end of the log");
        walk.report.dropped_files.push((entry.name, label));
    }
    if !walk.report.dropped_files.is_empty() {
        storage
            .sync_dir("")
            .map_err(storage_error("sync", "the journal directory"))?;
    }

    // Bookmarks and the checkpoint file.
    let last_bookmark = active
        .as_ref()
        .map(|a| a.scan.last_bookmark)
        .or_else(|| {
            sealed
                .last()
                .map(|s| s.last_bookmark.load(std::sync::atomic::Ordering::Acquire))
        })
        .unwrap_or_else(|| checkpoint.map_or(0, |c| c.bookmark));
    // After an unclean stop, continue above every bookmark that may have
    // been handed out (the durable reservation), so that none is reused.
    let reserved_floor = checkpoint
        .filter(|c| !c.clean)
        .map_or(0, |c| c.reserved_bookmark + 1);
    // An empty active segment already names its first bookmark (it may
    // follow a jump whose first record never made it).
    let active_next = active.as_ref().map(|a| {
        if a.scan.records > 0 {
            a.scan.last_bookmark + 1
        } else {
            a.header.first_bookmark
        }
    });
    let next_bookmark = (last_bookmark + 1)
        .max(next_bookmark_floor)
        .max(reserved_floor)
        .max(active_next.unwrap_or(0));
    if active_next.is_some_and(|expected| expected != next_bookmark) {
        // A jump is recorded by a new segment's header (previous last bookmark).
        force_roll = true;
    }
    let reserved_bookmark = next_bookmark - 1 + crate::journal::BOOKMARK_RESERVATION;
    let first_bookmark = sealed
        .first()
        .map(|s| s.header.first_bookmark)
        .or_else(|| active.as_ref().map(|a| a.header.first_bookmark))
        .unwrap_or(next_bookmark);
    if let Some(active) = &active {
        last_timestamp_ns = last_timestamp_ns.max(active.scan.last_timestamp_ns);
    }
    walk.report.first_bookmark = first_bookmark;
    walk.report.last_bookmark = last_bookmark;
    walk.report.publishers = dedup.len();
    if dedup.unknown_origins > 0 {
        walk.report.warnings.push(format!(
            "{} records name a publisher id the de-dup state does not know",
            dedup.unknown_origins
        ));
    }
    let checkpoint_file = match checkpoint {
        Some(c) if walk.report.quarantined_damage.is_none() => CheckpointFile::install(
            storage,
            checkpoint_file,
            checkpoint,
            Checkpoint {
                clean: false,
                reserved_bookmark,
                ..c
            },
        )
        .map_err(storage_error("write", crate::checkpoint::CHECKPOINT_FILE))?,
        _ => {
            // Record the new state at once, so the next open agrees with it.
            let quarantined = walk.report.quarantined_damage.is_some();
            let state = match &active {
                Some(active) if quarantined => Checkpoint {
                    instance_id,
                    generation: 0,
                    segment_index: active.header.segment_index,
                    offset: active.scan.end,
                    bookmark: last_bookmark,
                    clean: false,
                    reserved_bookmark,
                },
                // Nothing is known synced.
                _ => Checkpoint {
                    instance_id,
                    generation: 0,
                    segment_index: 0,
                    offset: HEADER_PAGE_BYTES,
                    bookmark: 0,
                    clean: false,
                    reserved_bookmark,
                },
            };
            if quarantined && let Some(active) = &active {
                active
                    .file
                    .sync_range(0, active.scan.end)
                    .map_err(storage_error("sync", segment_name(state.segment_index)))?;
            }
            CheckpointFile::install(storage, checkpoint_file, checkpoint, state)
                .map_err(storage_error("write", crate::checkpoint::CHECKPOINT_FILE))?
        }
    };
    let mut report = walk.report;
    report.duration = started.elapsed();
    Ok(Recovered {
        instance_id,
        sealed,
        active,
        spares,
        next_bookmark,
        last_bookmark,
        last_timestamp_ns,
        force_roll,
        checkpoint: checkpoint_file,
        dedup,
        report,
        highest_index,
    })
}

/// Copies a whole file to `to` (quarantine) and syncs the copy.
fn copy_file(storage: &dyn Storage, from: &dyn SegmentFile, to: &str) -> io::Result<()> {
    let capacity = from.capacity();
    let mut copy = storage.create(to, capacity)?;
    copy.begin_append(0);
    let mut buffer = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < capacity {
        // Shorter only for the last piece of the file.
        buffer.truncate(usize::try_from(capacity - at).unwrap_or(usize::MAX));
        from.read_at(at, &mut buffer)?;
        copy.write_at(at, &[&buffer])?;
        at += buffer.len() as u64;
    }
    copy.sync_range(0, capacity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_has_exactly_one_row() {
        for decision in DECISIONS {
            let rows = DECISIONS
                .iter()
                .filter(|other| other.label == decision.label)
                .count();
            assert_eq!(rows, 1, "{:?} has {rows} rows", decision.label);
        }
        assert_eq!(
            Label::TornBadCrc.in_synced_region().action(),
            Action::RefuseOrQuarantine
        );
        assert_eq!(Label::TornBadCrc.action(), Action::TruncateAndReport);
    }
}
