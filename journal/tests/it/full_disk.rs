//! Full disk (test plan D6): preallocation failing with ENOSPC gives a clear
//! error, consumes no bookmark, loses nothing acknowledged, and appends work
//! again once space returns. Runs on the simulated disk always, and on a real
//! 1 MiB tmpfs when the tests run as root (skipped, with a note, otherwise or
//! when the mount is refused).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use statecast_journal::sim::SimStorage;
use statecast_journal::{AppendError, Journal, JournalConfig, NewRecord};

use crate::support::{open_sim, read_all, small_config};

#[test]
fn preallocation_failure_is_a_clear_error_and_appends_resume_when_space_returns() {
    let storage = SimStorage::new();
    let opened = open_sim(&storage, small_config(8192));
    let journal = opened.journal.clone();
    let mut appender = opened.appender;
    let mut flusher = opened.flusher;
    storage.set_space_bytes(storage.used_bytes());
    let mut last = 0;
    let error = loop {
        match appender.append(NewRecord::new(b"t", &[9; 1000])) {
            Ok(appended) => {
                last = appended.bookmark;
                flusher.sync_now().expect("sync");
            }
            Err(error) => break error,
        }
    };
    match &error {
        AppendError::NoSpace { source, .. } => {
            assert_eq!(source.raw_os_error(), Some(libc::ENOSPC))
        }
        other => panic!("expected NoSpace, got {other}"),
    }
    assert!(error.to_string().contains("free space"), "{error}");
    assert!(
        journal.health().is_ok(),
        "a full disk is not an I/O failure: no latch"
    );
    assert_eq!(journal.persisted(), last);
    assert_eq!(read_all(&journal).len() as u64, last);
    storage.set_space_bytes(u64::MAX);
    let appended = appender
        .append(NewRecord::new(b"t", &[9; 1000]))
        .expect("space is back");
    assert_eq!(
        appended.bookmark,
        last + 1,
        "the failed append took no bookmark"
    );
    flusher.sync_now().expect("sync");
    drop((appender, flusher));
    let reopened = open_sim(&storage.kill_image(), small_config(8192));
    assert_eq!(read_all(&reopened.journal).len() as u64, last + 1);
}

fn is_root() -> bool {
    nix_uid() == 0
}

fn nix_uid() -> u32 {
    // SAFETY-free: getuid cannot fail; read it through /proc to avoid unsafe.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(u32::MAX)
}

fn run(command: &str, args: &[&str]) -> bool {
    Command::new(command)
        .args(args)
        .status()
        .is_ok_and(|status| status.success())
}

#[test]
fn real_tmpfs_fills_up_without_sigbus_and_recovers() {
    if !is_root() {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let base = Path::new("/work/tmp-journal");
    let _ = std::fs::create_dir_all(base);
    let dir = tempfile::Builder::new()
        .prefix("tmpfs-")
        .tempdir_in(base)
        .or_else(|_| tempfile::tempdir())
        .expect("dir");
    let mount = dir.path().to_str().expect("utf-8 path").to_string();
    if !run("mount", &["-t", "tmpfs", "-o", "size=1m", "tmpfs", &mount]) {
        eprintln!("skipped: mount -t tmpfs refused");
        return;
    }
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let journal_dir = dir.path().join("journal");
    // A filler takes most of the space, so the journal hits the limit soon.
    let filler = dir.path().join("filler");
    std::fs::write(&filler, vec![1u8; 512 << 10]).expect("filler");
    let config = JournalConfig {
        segment_bytes: 64 << 10,
        preallocate: 1,
        ..JournalConfig::default()
    };
    let opened = Journal::open(&journal_dir, config.clone()).expect("open on tmpfs");
    let statecast_journal::Opened {
        journal,
        mut appender,
        flusher,
        housekeeper,
        ..
    } = opened;
    let flusher = flusher.spawn().expect("flusher");
    let housekeeper = housekeeper.spawn().expect("housekeeper");
    let mut last = 0;
    let error = loop {
        match appender.append(NewRecord::new(b"t", &[5; 1024])) {
            Ok(appended) => last = appended.bookmark,
            Err(error) => break error,
        }
        assert!(last < 100_000, "the tmpfs never filled up");
    };
    assert!(matches!(error, AppendError::NoSpace { .. }), "{error}");
    journal
        .wait_persisted(last, Duration::from_secs(10))
        .expect("everything appended is persisted");
    std::fs::remove_file(&filler).expect("free space");
    let appended = appender
        .append(NewRecord::new(b"t", &[5; 1024]))
        .expect("appends resume");
    assert_eq!(appended.bookmark, last + 1);
    journal
        .wait_persisted(last + 1, Duration::from_secs(10))
        .expect("persisted");
    drop(appender);
    journal.shutdown();
    flusher.join().expect("clean stop");
    housekeeper.join().expect("housekeeper stops");
    drop(journal);
    let reopened = Journal::open(&journal_dir, config).expect("reopen");
    assert_eq!(read_all(&reopened.journal).len() as u64, last + 1);
    eprintln!("tmpfs: {last} records of 1 KiB before ENOSPC");
}
