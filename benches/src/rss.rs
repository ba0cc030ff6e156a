//! Resident memory of a process from `/proc/<pid>/status` (`VmRSS` and its
//! anonymous, file-backed and shared parts) and `/proc/<pid>/smaps` (the
//! resident bytes of each mapping, summed by what the mapping is: the
//! broker's SOW slab files, its journal segments, anonymous memory, other
//! files), to tell what a server's memory growth is made of.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One reading, KiB.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rss {
    /// `VmRSS`: everything resident.
    pub vm_rss_kib: u64,
    /// `RssAnon`.
    pub rss_anon_kib: u64,
    /// `RssFile`: pages of mapped files (e.g. mmap'd slab files).
    pub rss_file_kib: u64,
    /// `RssShmem`.
    pub rss_shmem_kib: u64,
    /// Resident KiB by kind of mapping (`sow`, `journal`, `anon`, `other`).
    #[serde(default)]
    pub by_mapping: BTreeMap<String, u64>,
}

impl Rss {
    /// Reads process `pid`; `None` when it cannot be read.
    pub fn read(pid: u32) -> Option<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let mut rss = Self::parse_status(&status)?;
        if let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) {
            rss.by_mapping = Self::parse_smaps(&smaps);
        }
        Some(rss)
    }

    fn parse_status(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(name)?.strip_prefix(':')?;
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        };
        Some(Self {
            vm_rss_kib: field("VmRSS")?,
            rss_anon_kib: field("RssAnon").unwrap_or(0),
            rss_file_kib: field("RssFile").unwrap_or(0),
            rss_shmem_kib: field("RssShmem").unwrap_or(0),
            by_mapping: BTreeMap::new(),
        })
    }

    fn parse_smaps(smaps: &str) -> BTreeMap<String, u64> {
        let mut sums = BTreeMap::new();
        let mut kind = "anon";
        for line in smaps.lines() {
            if let Some(rest) = line.strip_prefix("Rss:") {
                let kib: u64 = rest
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .unwrap_or(0);
                *sums.entry(kind.to_owned()).or_insert(0) += kib;
            } else if is_mapping_header(line) {
                // address perms offset dev inode [path]
                let path = line.split_whitespace().nth(5).unwrap_or("");
                kind = if path.is_empty() || path.starts_with('[') {
                    "anon"
                } else if path.contains("/sow/") {
                    "sow"
                } else if path.contains("/journal/") {
                    "journal"
                } else {
                    "other"
                };
            }
        }
        sums
    }
}

/// A smaps line that starts a mapping: `start-end perms …`.
fn is_mapping_header(line: &str) -> bool {
    let Some(range) = line.split_whitespace().next() else {
        return false;
    };
    range.split_once('-').is_some_and(|(a, b)| {
        !a.is_empty()
            && a.bytes().all(|c| c.is_ascii_hexdigit())
            && b.bytes().all(|c| c.is_ascii_hexdigit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_smaps_are_parsed() {
        let status = "Name:\tstatecast\nVmRSS:\t  2048 kB\nRssAnon:\t  1024 kB\nRssFile:\t  1000 kB\nRssShmem:\t 24 kB\n";
        let rss = Rss::parse_status(status).expect("parsed");
        assert_eq!(
            (
                rss.vm_rss_kib,
                rss.rss_anon_kib,
                rss.rss_file_kib,
                rss.rss_shmem_kib
            ),
            (2048, 1024, 1000, 24)
        );
        let smaps = "\
55d0c0000000-55d0c0100000 rw-p 00000000 00:00 0 \n\
Size:               1024 kB\n\
Rss:                 100 kB\n\
7f0000000000-7f0000400000 rw-s 00000000 fd:00 12 /data/sow/orders/slab.3\n\
Rss:                4096 kB\n\
7f1000000000-7f1008000000 r--s 00000000 fd:00 13 /data/journal/00000001.seg\n\
Rss:                 512 kB\n\
7f2000000000-7f2000001000 r-xp 00000000 fd:00 14 /usr/lib/libc.so.6\n\
Rss:                   4 kB\n\
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]\n\
Rss:                  12 kB\n";
        let sums = Rss::parse_smaps(smaps);
        assert_eq!(sums.get("anon"), Some(&112));
        assert_eq!(sums.get("sow"), Some(&4096));
        assert_eq!(sums.get("journal"), Some(&512));
        assert_eq!(sums.get("other"), Some(&4));
        assert!(Rss::parse_status("Name: x\n").is_none());
    }
}
