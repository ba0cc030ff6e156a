//! The checkpoint file: a small durable note “everything up to here was
//! synced” (and “shut down cleanly”), which lets recovery tell a torn tail
//! from damage to synced data and skip reading older segments.
//!
//! The file is one page with two 512-byte slots. Each write goes to the slot
//! not holding the newest valid checkpoint and is synced before it counts, so
//! a torn or lost slot write leaves the other slot, one generation older and
//! still true, in place: a checkpoint can only ever understate what was synced.

use std::io;

use crate::format::{
    CHECKPOINT_FIELDS_BYTES, CHECKPOINT_FILE_BYTES, CHECKPOINT_SLOT_BYTES, Checkpoint,
};
use crate::storage::{SegmentFile, Storage};

/// Name of the checkpoint file in the journal directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";

/// The newest valid checkpoint, if any, and the file if it exists.
pub(crate) type Found = (Option<Checkpoint>, Option<Box<dyn SegmentFile>>);

/// The checkpoint file opened for writing (owned by the flusher).
#[derive(Debug)]
pub(crate) struct CheckpointFile {
    file: Box<dyn SegmentFile>,
    last: Checkpoint,
}

impl CheckpointFile {
    /// Reads the newest valid slot of an existing file. `Ok(None)` when the
    /// file does not exist; the second value is the file for later writes.
    pub(crate) fn read(storage: &dyn Storage) -> io::Result<Found> {
        let names = storage.list("")?;
        if !names.iter().any(|name| name == CHECKPOINT_FILE) {
            return Ok((None, None));
        }
        let file = storage.open(CHECKPOINT_FILE)?;
        if file.capacity() != CHECKPOINT_FILE_BYTES {
            return Ok((None, Some(file)));
        }
        let mut best: Option<Checkpoint> = None;
        for slot in 0..2 {
            let mut raw = [0u8; CHECKPOINT_FIELDS_BYTES];
            file.read_at(slot * CHECKPOINT_SLOT_BYTES, &mut raw)?;
            if let Some(checkpoint) = Checkpoint::decode(&raw)
                && best.is_none_or(|best| checkpoint.generation > best.generation)
            {
                best = Some(checkpoint);
            }
        }
        Ok((best, Some(file)))
    }

    /// Takes over `file` (or creates a new one) and makes `checkpoint` the
    /// durable state before returning.
    pub(crate) fn install(
        storage: &dyn Storage,
        file: Option<Box<dyn SegmentFile>>,
        previous: Option<Checkpoint>,
        checkpoint: Checkpoint,
    ) -> io::Result<CheckpointFile> {
        let mut file = match file {
            Some(file) if file.capacity() == CHECKPOINT_FILE_BYTES => file,
            _ => {
                let file = storage.create(CHECKPOINT_FILE, CHECKPOINT_FILE_BYTES)?;
                storage.sync_dir("")?;
                file
            }
        };
        file.begin_append(0);
        let generation = previous.map_or(1, |previous| previous.generation + 1);
        let mut this = CheckpointFile {
            file,
            last: Checkpoint {
                generation: generation - 1,
                ..checkpoint
            },
        };
        this.write(checkpoint)?;
        Ok(this)
    }

    /// Writes and syncs a new checkpoint into the older slot.
    pub(crate) fn write(&mut self, checkpoint: Checkpoint) -> io::Result<()> {
        let generation = self.last.generation + 1;
        let record = Checkpoint {
            generation,
            ..checkpoint
        };
        let slot = generation % 2;
        self.file
            .write_at(slot * CHECKPOINT_SLOT_BYTES, &[&record.encode()])?;
        self.file
            .sync_range(slot * CHECKPOINT_SLOT_BYTES, CHECKPOINT_SLOT_BYTES)?;
        self.last = record;
        Ok(())
    }

    /// The last checkpoint written.
    pub(crate) fn last(&self) -> Checkpoint {
        self.last
    }
}
