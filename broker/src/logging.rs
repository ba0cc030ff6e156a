//! Logging: `tracing` events to stderr and, when enabled, to
//! `<data_dir>/logs/statecast.log`, rotated by size (`statecast.log.1` is the
//! newest rotated file, `.N` the oldest kept).

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LoggingConfig;

/// A log file that rotates itself when it passes a size.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    kept: usize,
}

impl RotatingFile {
    /// Opens (appending to) `dir/statecast.log`, creating `dir`.
    ///
    /// # Errors
    /// When the directory or file cannot be created.
    pub fn open(dir: &Path, max_bytes: u64, kept: usize) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("statecast.log");
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path,
            file,
            written,
            max_bytes,
            kept,
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        let _ = std::fs::remove_file(self.rotated(self.kept));
        for n in (1..self.kept).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written > 0 && self.written + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A `MakeWriter` sharing one [`RotatingFile`] between threads.
#[derive(Debug, Clone)]
struct SharedFile(Arc<Mutex<RotatingFile>>);

/// The writer handed to one log event.
#[derive(Debug)]
struct SharedFileGuard<'a>(&'a Mutex<RotatingFile>);

impl Write for SharedFileGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}

impl<'a> MakeWriter<'a> for SharedFile {
    type Writer = SharedFileGuard<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SharedFileGuard(&self.0)
    }
}

/// Installs the global subscriber for `serve`. `RUST_LOG` overrides the
/// configured level.
///
/// # Errors
/// When the log file cannot be opened.
pub fn init_server(config: &LoggingConfig, log_dir: &Path) -> io::Result<()> {
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.level));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_thread_names(true);
    let file = if config.file {
        let rotating = RotatingFile::open(log_dir, config.file_bytes_max.0, config.files_kept)?;
        Some(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_thread_names(true)
                .with_writer(SharedFile(Arc::new(Mutex::new(rotating)))),
        )
    } else {
        None
    };
    let _ = tracing_subscriber::registry()
        .with(stderr.with_filter(filter()))
        .with(file.map(|layer| layer.with_filter(filter())))
        .try_init();
    Ok(())
}

/// Installs a stderr-only subscriber at `warn` for client commands.
pub fn init_client() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init();
}

use tracing_subscriber::Layer as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RotatingFile::open(dir.path(), 100, 2).unwrap();
        for i in 0..10 {
            writeln!(log, "line {i:02} {}", "x".repeat(40)).unwrap();
        }
        let current = std::fs::read_to_string(dir.path().join("statecast.log")).unwrap();
        assert!(current.contains("line 09"));
        assert!(dir.path().join("statecast.log.1").exists());
        assert!(dir.path().join("statecast.log.2").exists());
        assert!(
            !dir.path().join("statecast.log.3").exists(),
            "only 2 rotated files are kept"
        );
        let newest_rotated = std::fs::read_to_string(dir.path().join("statecast.log.1")).unwrap();
        assert!(newest_rotated.contains("line 07"), "{newest_rotated}");
    }
}
