//! `statecast sow-dump DIR --topic T [--stats]`: the records of a durable
//! SOW topic's slab files, one line each, or (`--stats`) their sizing
//! summary: records, payload bytes, slab usage, the message-size histogram
//! and the `slab_size` to configure. `docs/sow-dump.md` describes the
//! output.
//!
//! Read-only: the folder is opened with `FsMode::ReadOnly` (no lock, files
//! read with `pread`, every write refused), so it is safe beside a running
//! broker. The reading itself is `statecast_sow::dump`.

use std::io::{self, BufWriter, Write as _};
use std::path::{Path, PathBuf};

use anyhow::bail;
use statecast_journal::storage::{FsMode, FsStorage, Storage};
use statecast_sow::dump::{self, SizeBucket, SizingReport};
use statecast_sow::format::{FILE_HEADER_BYTES, RECORD_HEADER_BYTES, parse_slab_name, record_span};
use statecast_sow::{MAX_SLAB_SIZE, MIN_SLAB_SIZE, QUARANTINE_FOLDER, topic_folder};

use super::{SowDumpArgs, time_text};
use crate::core::sow::{TOPIC_FILE, read_topic_file};

/// How many records of the largest message a slab should hold (the rule of
/// `dump::sizing`'s recommendation, restated in its advice).
const RECORDS_PER_SLAB: u64 = 8;

/// Bytes of a slab file's header.
const FILE_HEADER: u64 = FILE_HEADER_BYTES as u64;

/// Bytes a slab loses to headers besides each record's: the file header and
/// one record header (the largest message is `slab_size` minus this).
const SLAB_OVERHEAD: u64 = (FILE_HEADER_BYTES + RECORD_HEADER_BYTES) as u64;

/// Width of the longest histogram bar.
const BAR_WIDTH: u64 = 40;

/// Runs the command.
pub(super) fn run(args: &SowDumpArgs) -> anyhow::Result<()> {
    let folder = topic_dir(&args.dir, &args.topic)?;
    let storage = FsStorage::open(&folder, FsMode::ReadOnly)
        .map_err(|e| anyhow::anyhow!("opening {} read-only: {e}", folder.display()))?;
    let quarantined = storage
        .list(QUARANTINE_FOLDER)
        .map_err(|e| read_error(&e, &folder))?
        .len();
    if args.stats {
        let report = dump::sizing(&storage, false).map_err(|e| read_error(&e, &folder))?;
        let text = stats_text(&args.topic, &folder, &report, quarantined);
        let mut stdout = io::stdout().lock();
        return match stdout.write_all(text.as_bytes()) {
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other.map_err(Into::into),
        };
    }
    let (listed, current) = match list(&storage, &folder)? {
        Some(counts) => counts,
        // The reader went away (`| head`): nothing more to say.
        None => return Ok(()),
    };
    // The listing has no way to say where a scan stopped: a second look,
    // for the summary on stderr (stdout stays records only).
    let report = dump::sizing(&storage, false).map_err(|e| read_error(&e, &folder))?;
    let mut summary = format!(
        "sow-dump: {listed} records listed, {current} current, from {} in {}",
        count(report.slabs.len() as u64, "slab file"),
        folder.display()
    );
    for slab in &report.slabs {
        if let Some(stopped) = &slab.stopped {
            summary.push_str(&format!("; {} stopped at {stopped}", slab.file));
        }
    }
    if quarantined > 0 {
        summary.push_str(&format!(
            "; {quarantined} files in {QUARANTINE_FOLDER}/ (not read)"
        ));
    }
    eprintln!("{summary}");
    Ok(())
}

/// Writes one line per record to stdout. Returns (records, current ones),
/// or `None` when stdout was closed early.
fn list(storage: &FsStorage, folder: &Path) -> anyhow::Result<Option<(u64, u64)>> {
    let mut out = BufWriter::new(io::stdout().lock());
    let mut write_failed: Option<io::Error> = None;
    let (mut listed, mut current) = (0u64, 0u64);
    dump::records(storage, |record, _payload| {
        if write_failed.is_some() {
            return;
        }
        listed += 1;
        current += u64::from(record.current);
        let written = writeln!(
            out,
            "file={} offset={} kind={} key={} bookmark={} time={} length={} current={}",
            record.file,
            record.offset,
            record.kind,
            record.key,
            record.bookmark,
            time_text(record.timestamp_ns),
            record.len,
            if record.current { "yes" } else { "no" },
        );
        if let Err(error) = written {
            write_failed = Some(error);
        }
    })
    .map_err(|e| read_error(&e, folder))?;
    let result = match write_failed {
        Some(error) => Err(error),
        None => out.flush(),
    };
    match result {
        Ok(()) => Ok(Some((listed, current))),
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The topic's folder: `DIR/sow/<folder>`, `DIR/<folder>`, or `DIR` itself
/// when it is named `<folder>`.
fn topic_dir(dir: &Path, topic: &str) -> anyhow::Result<PathBuf> {
    let folder = topic_folder(topic);
    let usage = format!(
        "give DIR as the broker's data directory (server.data_dir), its sow/ directory, or the topic's folder {folder}"
    );
    if !dir.exists() {
        bail!("{} does not exist: {usage}", dir.display());
    }
    if !dir.is_dir() {
        bail!("{} is not a directory: {usage}", dir.display());
    }
    let in_data = dir.join("sow").join(&folder);
    let in_sow = dir.join(&folder);
    for candidate in [&in_data, &in_sow] {
        if candidate.is_dir() {
            return Ok(candidate.clone());
        }
    }
    if dir.file_name().is_some_and(|name| name == folder.as_str()) {
        return Ok(dir.to_path_buf());
    }
    if is_sow_folder(dir) {
        bail!(
            "{} is the SOW folder of {}, not of topic {topic:?} (that one is named {folder}): check --topic",
            dir.display(),
            folder_label(dir)
        );
    }
    let sow_dir = if dir.join("sow").is_dir() {
        dir.join("sow")
    } else {
        dir.to_path_buf()
    };
    let mut others: Vec<String> = std::fs::read_dir(&sow_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| is_sow_folder(&e.path()))
                .map(|e| folder_label(&e.path()))
                .collect()
        })
        .unwrap_or_default();
    others.sort();
    let others = if others.is_empty() {
        String::new()
    } else {
        format!(
            " (the SOW folders in {} hold {})",
            sow_dir.display(),
            others.join(", ")
        )
    };
    bail!(
        "no SOW folder for topic {topic:?}: looked for {} and {}{others}; check --topic (a durable SOW topic) and {usage}",
        in_data.display(),
        in_sow.display(),
    )
}

/// Whether `dir` is a topic's SOW folder: it has the broker's `TOPIC` file
/// or at least one slab file.
fn is_sow_folder(dir: &Path) -> bool {
    dir.join(TOPIC_FILE).is_file()
        || std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_str().and_then(parse_slab_name).is_some())
        })
}

/// A SOW folder as a person knows it: `topic "T"` from its `TOPIC` file,
/// else `folder NAME`.
fn folder_label(dir: &Path) -> String {
    match read_topic_file(dir) {
        Ok(topic) => format!("topic {topic:?}"),
        Err(_) => format!(
            "folder {}",
            dir.file_name().unwrap_or_default().to_string_lossy()
        ),
    }
}

/// An error reading the folder, with its path and, for a file that went
/// away, why that happens.
fn read_error(error: &io::Error, folder: &Path) -> anyhow::Error {
    if error.kind() == io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "reading the slab files in {}: {error} (a file went away while being read: a running broker removes slabs after compacting them; run the command again)",
            folder.display()
        )
    } else {
        anyhow::anyhow!("reading the slab files in {}: {error}", folder.display())
    }
}

/// `bytes` as `N GiB`/`N MiB`/`N KiB` when exact, else `N bytes`.
fn size_text(bytes: u64) -> String {
    for (unit, name) in [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{} {name}", bytes / unit);
        }
    }
    format!("{bytes} bytes")
}

/// The largest message a slab of `slab_size` bytes holds.
fn max_payload(slab_size: u64) -> u64 {
    slab_size.saturating_sub(SLAB_OVERHEAD) & !7
}

/// `part` of `whole` in percent, one decimal.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0.0%".to_owned();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// Every power-of-two bucket from the smallest to the largest non-empty
/// one, the empty ones between them included.
fn filled_buckets(histogram: &[SizeBucket]) -> Vec<SizeBucket> {
    let index = |b: &SizeBucket| b.to.trailing_zeros();
    let (Some(first), Some(last)) = (histogram.first(), histogram.last()) else {
        return Vec::new();
    };
    (index(first)..=index(last))
        .map(|b| SizeBucket {
            from: if b == 0 { 0 } else { (1u64 << (b - 1)) + 1 },
            to: 1u64 << b,
            count: histogram
                .iter()
                .find(|h| index(h) == b)
                .map_or(0, |h| h.count),
        })
        .collect()
}

/// The `--stats` output.
fn stats_text(topic: &str, folder: &Path, report: &SizingReport, quarantined: usize) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let total: usize = report.slabs.iter().map(|s| s.records).sum();
    let live: u64 = report.slabs.iter().map(|s| s.live).sum();
    let written: u64 = report.slabs.iter().map(|s| s.written).sum();
    // Writing into a String cannot fail.
    let _ = writeln!(t, "topic: {topic:?} in {}", folder.display());
    let _ = writeln!(
        t,
        "records: {} live of {total} in the files (live: a key's latest version, not deleted, current=yes in the listing; the others are replaced versions, tombstones and checkpoints)",
        report.records
    );
    let _ = writeln!(
        t,
        "payload: {} bytes in live records, largest message {} bytes",
        report.payload_bytes, report.max_payload
    );
    let _ = writeln!(
        t,
        "slabs: {}, {} bytes ({}), {written} bytes written, {live} bytes live ({} of the files)",
        count(report.slabs.len() as u64, "file"),
        report.file_bytes,
        size_text(report.file_bytes),
        percent(live, report.file_bytes),
    );
    for slab in &report.slabs {
        let _ = write!(
            t,
            "  {} size={} written={} live={} ({}) records={}",
            slab.file,
            slab.capacity,
            slab.written,
            slab.live,
            percent(slab.live, slab.capacity),
            slab.records
        );
        if let Some(stopped) = &slab.stopped {
            let _ = write!(t, " stopped at {stopped}");
        }
        t.push('\n');
    }
    if report.slabs.iter().any(|s| s.stopped.is_some()) {
        let _ = writeln!(
            t,
            "  (records after a stop are not read: beside a running broker the newest slab may stop at a record being written; otherwise it is a torn tail or damage, which the broker's recovery reports)"
        );
    }
    if quarantined > 0 {
        let _ = writeln!(
            t,
            "quarantine: {quarantined} files in {QUARANTINE_FOLDER}/ (moved there by a recovery that found damage; not read)"
        );
    }
    let _ = writeln!(t, "message sizes (live records, payload bytes: count):");
    let buckets = filled_buckets(&report.histogram);
    let most = buckets.iter().map(|b| b.count).max().unwrap_or(0);
    let width = buckets.last().map_or(1, |b| b.to.to_string().len());
    if buckets.is_empty() {
        let _ = writeln!(t, "  (none)");
    }
    for bucket in &buckets {
        let bar = if most == 0 || bucket.count == 0 {
            0
        } else {
            (bucket.count * BAR_WIDTH).div_ceil(most)
        };
        let line = format!(
            "  {:>width$}-{:<width$} {:>8} {}",
            bucket.from,
            bucket.to,
            bucket.count,
            "#".repeat(usize::try_from(bar).unwrap_or(0)),
        );
        let _ = writeln!(t, "{}", line.trim_end());
    }
    t.push_str(&advice(report));
    t
}

/// `n` and `what`, plural when `n` is not 1.
fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// The `slab_size` advice (three lines: the value, why, and how it compares
/// with the files), from `dump::sizing`'s recommendation.
fn advice(report: &SizingReport) -> String {
    let recommended = report.recommended_slab_size;
    let setting = format!("slab_size = \"{}\"", size_text(recommended));
    if report.records == 0 {
        return format!(
            "slab_size: no live records to size from: keep the topic's slab_size, or choose at least {RECORDS_PER_SLAB} x (largest expected message + 104) bytes, from {} to {}\n",
            size_text(MIN_SLAB_SIZE),
            size_text(MAX_SLAB_SIZE)
        );
    }
    let span = usize::try_from(report.max_payload).map_or(u64::MAX, |len| record_span(len) as u64);
    let needed = RECORDS_PER_SLAB.saturating_mul(span.saturating_add(SLAB_OVERHEAD));
    let why = if needed > MAX_SLAB_SIZE {
        format!(
            "{} is the largest slab_size allowed; it holds only {} of the largest message ({} bytes, {span} with its record header), so consider smaller messages",
            size_text(MAX_SLAB_SIZE),
            (MAX_SLAB_SIZE - FILE_HEADER) / span.max(1),
            report.max_payload
        )
    } else if needed <= MIN_SLAB_SIZE {
        format!(
            "{} is the smallest slab_size allowed and holds {RECORDS_PER_SLAB} or more of the largest message ({} bytes, {span} with its record header)",
            size_text(MIN_SLAB_SIZE),
            report.max_payload
        )
    } else {
        format!(
            "the smallest power of two that holds {RECORDS_PER_SLAB} of the largest message ({} bytes, {span} with its record header)",
            report.max_payload
        )
    };
    let newest = report.slabs.last().map(|s| s.capacity);
    let compared = match newest {
        Some(size) if size == recommended => {
            "the newest slab already has that size: keep it".to_owned()
        }
        Some(size) if size < recommended => format!(
            "the newest slab is {} (messages up to {} bytes), smaller: raise slab_size; slabs on disk keep their size, new ones take the new one",
            size_text(size),
            max_payload(size)
        ),
        Some(size) => format!(
            "the newest slab is {} (messages up to {} bytes), larger than needed: no change is required; lower it to save memory (recovery and compaction read a slab whole), keep it for fewer files",
            size_text(size),
            max_payload(size)
        ),
        None => "there are no slab files yet".to_owned(),
    };
    format!(
        "slab_size: set {setting} ({recommended} bytes) in this topic's [[sow.topics]] entry\n  why: {why}\n  now: {compared}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_show_in_exact_units() {
        assert_eq!(size_text(1 << 20), "1 MiB");
        assert_eq!(size_text(3 << 30), "3 GiB");
        assert_eq!(size_text(4096), "4 KiB");
        assert_eq!(size_text(1000), "1000 bytes");
        assert_eq!(size_text((1 << 20) + 4096), "1028 KiB");
    }

    #[test]
    fn the_largest_message_of_a_slab_matches_the_store() {
        assert_eq!(max_payload(1 << 20), (1 << 20) - 104);
        assert_eq!(max_payload(4096 + 3), 4096 - 104);
    }

    #[test]
    fn empty_buckets_between_used_ones_are_shown() {
        let used = [
            SizeBucket {
                from: 3,
                to: 4,
                count: 2,
            },
            SizeBucket {
                from: 17,
                to: 32,
                count: 5,
            },
        ];
        let all = filled_buckets(&used);
        let shown: Vec<(u64, u64, u64)> = all.iter().map(|b| (b.from, b.to, b.count)).collect();
        assert_eq!(
            shown,
            [(3, 4, 2), (5, 8, 0), (9, 16, 0), (17, 32, 5)],
            "every bucket from the first used to the last"
        );
        assert!(filled_buckets(&[]).is_empty());
        let first = filled_buckets(&[SizeBucket {
            from: 0,
            to: 1,
            count: 1,
        }]);
        assert_eq!((first[0].from, first[0].to), (0, 1));
    }
}
