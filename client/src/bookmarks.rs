//! Where a subscriber keeps the bookmark of the last message it processed,
//! so that after a restart it resumes right after it (a bookmark
//! subscription from that bookmark replays what it missed, then goes live
//! with no gap and no duplicate).
//!
//! ```no_run
//! use futures::StreamExt;
//! use statecast_client::{BookmarkStore, Client, ClientOptions, FileBookmarkStore, SubscribeOptions};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = FileBookmarkStore::open("./bookmarks")?;
//! let client = Client::connect("127.0.0.1:9007", ClientOptions::new("billing")).await?;
//! let options = SubscribeOptions::topic("orders").resume(&store, "billing-orders")?;
//! let mut orders = client.subscribe_with(options).await?;
//! while let Some(message) = orders.next().await {
//!     let message = message?;
//!     // ... process it, then record that it is done:
//!     if let Some(bookmark) = message.bookmark {
//!         store.save("billing-orders", bookmark)?;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Saving after every message costs one small file write, an fsync and a
//! rename; an application that can process a message twice after a crash
//! may save every N messages instead (it then resumes up to N back).

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::SubscribeOptions;

/// A place that remembers, per subscription name, the last processed
/// bookmark.
pub trait BookmarkStore {
    /// The last bookmark saved under `name`, if any.
    ///
    /// # Errors
    /// When the store cannot be read, or what it holds is damaged.
    fn load(&self, name: &str) -> io::Result<Option<u64>>;

    /// Records that every message up to `bookmark` under `name` is
    /// processed. A bookmark below the one saved is ignored (bookmarks only
    /// move forward).
    ///
    /// # Errors
    /// When the store cannot be written.
    fn save(&self, name: &str, bookmark: u64) -> io::Result<()>;
}

impl SubscribeOptions {
    /// Starts after the bookmark saved under `name` in `store`, or from the
    /// start of the journal (`epoch`) when none is saved yet.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn resume(mut self, store: &impl BookmarkStore, name: &str) -> io::Result<Self> {
        self.bookmark = Some(match store.load(name)? {
            Some(bookmark) => bookmark.to_string(),
            None => "epoch".to_owned(),
        });
        Ok(self)
    }
}

/// Bookmarks in one directory, one small file per subscription name,
/// replaced atomically (write, fsync, rename, fsync the directory) on each
/// save, so a crash leaves either the old or the new bookmark.
#[derive(Debug)]
pub struct FileBookmarkStore {
    dir: PathBuf,
    /// Serialises saves of one process (files are per name, the temporary
    /// file is shared).
    lock: Mutex<()>,
}

impl FileBookmarkStore {
    /// Opens (creating) the directory `dir`.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            lock: Mutex::new(()),
        })
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        let valid = !name.is_empty()
            && name.len() <= 200
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !name.starts_with('.');
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "bookmark store name `{name}` must be 1–200 characters of A–Z, a–z, 0–9, '-', '_' or '.', not starting with '.'"
                ),
            ));
        }
        Ok(self.dir.join(format!("{name}.bookmark")))
    }
}

impl BookmarkStore for FileBookmarkStore {
    fn load(&self, name: &str) -> io::Result<Option<u64>> {
        let path = self.path(name)?;
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error),
        };
        text.trim().parse().map(Some).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} does not hold a bookmark (a decimal number): {:?}; delete it to start from epoch",
                    path.display(),
                    text.trim()
                ),
            )
        })
    }

    fn save(&self, name: &str, bookmark: u64) -> io::Result<()> {
        let path = self.path(name)?;
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        if self.load(name)?.is_some_and(|saved| saved >= bookmark) {
            return Ok(());
        }
        let temporary = self.dir.join(format!(".{name}.bookmark.tmp"));
        {
            let mut file = std::fs::File::create(&temporary)?;
            writeln!(file, "{bookmark}")?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

/// Bookmarks in memory: for tests, and for applications that keep them in
/// their own database (load at start, save with their own transaction).
#[derive(Debug, Default)]
pub struct MemoryBookmarkStore {
    bookmarks: Mutex<HashMap<String, u64>>,
}

impl BookmarkStore for MemoryBookmarkStore {
    fn load(&self, name: &str) -> io::Result<Option<u64>> {
        Ok(self
            .bookmarks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied())
    }

    fn save(&self, name: &str, bookmark: u64) -> io::Result<()> {
        let mut bookmarks = self
            .bookmarks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let saved = bookmarks.entry(name.to_owned()).or_insert(bookmark);
        *saved = (*saved).max(bookmark);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn temp_dir(test: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("statecast-bookmarks-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_saved_bookmark_is_loaded_and_never_moves_back() {
        let dir = temp_dir("saved");
        let store = FileBookmarkStore::open(&dir).unwrap();
        assert_eq!(store.load("orders").unwrap(), None);
        store.save("orders", 42).unwrap();
        store.save("orders", 7).unwrap();
        assert_eq!(store.load("orders").unwrap(), Some(42));
        let reopened = FileBookmarkStore::open(&dir).unwrap();
        assert_eq!(reopened.load("orders").unwrap(), Some(42));
        let options = SubscribeOptions::topic("t")
            .resume(&reopened, "orders")
            .unwrap();
        assert_eq!(options.bookmark.as_deref(), Some("42"));
        let fresh = SubscribeOptions::topic("t")
            .resume(&reopened, "other")
            .unwrap();
        assert_eq!(fresh.bookmark.as_deref(), Some("epoch"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_names_and_damaged_files_are_clear_errors() {
        let dir = temp_dir("bad");
        let store = FileBookmarkStore::open(&dir).unwrap();
        for bad in ["", "../x", "a/b", ".hidden"] {
            let error = store.save(bad, 1).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        std::fs::write(dir.join("x.bookmark"), "not a number").unwrap();
        let error = store.load("x").unwrap_err();
        assert!(error.to_string().contains("delete it"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_memory_store_keeps_the_highest() {
        let store = MemoryBookmarkStore::default();
        store.save("a", 5).unwrap();
        store.save("a", 3).unwrap();
        assert_eq!(store.load("a").unwrap(), Some(5));
    }
}
