//! The running broker: threads, sockets and their wiring. Everything that
//! touches the OS lives here; the logic it drives lives in `core`.
//!
//! Threads (see ARCHITECTURE.md for who owns what):
//! - `acceptor`: accepts connections, deals them to I/O threads, enforces
//!   the instance-wide outbound limit;
//! - `io-N` (pinned): mio event loops owning connections and sessions;
//! - `processor-N` (pinned): single writers of the topics they own;
//! - `admin`: the admin HTTP listener;
//! - the caller's thread waits for signals.

mod acceptor;
mod admin;
mod io;
mod journaling;
mod names;
mod out_queue;
mod outbound;
mod processor;
mod recv;
mod replayer;
mod sow;

use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::affinity;
use crate::config::Config;
use crate::core::session::SessionLimits;
use crate::placement::{self, Machine, Plan, Role};
pub use outbound::Totals;

/// Why the broker could not start.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The configuration key it came from.
        key: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The data directory could not be created or locked.
    #[error("data directory {path}: {message}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What went wrong and what to do.
        message: String,
    },
    /// A thread or poller could not be created.
    #[error("cannot start {what}: {source}")]
    Thread {
        /// Which.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The journal could not be opened (it names the file and what to do).
    #[error("{0}")]
    Journal(String),
    /// The SOW could not be recovered (it names the topic and file).
    #[error("{0}")]
    Sow(String),
}

/// An exclusive lock on the data directory, held for the broker's life, so
/// that two brokers never share one directory.
#[derive(Debug)]
struct DataDirLock {
    _lock: nix::fcntl::Flock<File>,
}

fn lock_data_dir(dir: &Path) -> Result<DataDirLock, StartError> {
    let fail = |message: String| StartError::DataDir {
        path: dir.to_owned(),
        message,
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create it: {e}")))?;
    let path = dir.join("statecast.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| fail(format!("cannot open {}: {e}", path.display())))?;
    let mut lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        fail(format!(
            "is in use by another statecast process ({}; {errno}); stop it or choose another --data-dir",
            if holder.trim().is_empty() { "pid unknown".to_owned() } else { format!("pid {}", holder.trim()) }
        ))
    })?;
    let _ = lock.set_len(0);
    let _ = writeln!(lock, "{}", std::process::id());
    Ok(DataDirLock { _lock: lock })
}

fn log_recovery(report: &statecast_journal::RecoveryReport) {
    tracing::info!(
        created = report.created,
        clean_shutdown = report.clean_shutdown,
        first_bookmark = report.first_bookmark,
        last_bookmark = report.last_bookmark,
        records_scanned = report.records_scanned,
        bytes_scanned = report.bytes_scanned,
        publishers = report.publishers,
        duration_ms = report.duration.as_millis(),
        "journal recovered"
    );
    for truncation in &report.truncations {
        tracing::warn!("journal recovery truncated a torn tail: {truncation:?}");
    }
    for (file, label) in &report.dropped_files {
        tracing::warn!("journal recovery dropped {file} ({label:?})");
    }
    if let Some(damage) = &report.quarantined_damage {
        tracing::error!(
            "journal recovery quarantined damaged data: {damage:?}; files: {:?}",
            report.quarantined_files
        );
    }
    for warning in &report.warnings {
        tracing::warn!("journal: {warning}");
    }
}

/// Whether the single processor runs on the single I/O thread: when they
/// would share one CPU anyway (`threads.inline = "auto"`), or always/never
/// as configured.
fn run_inline(config: &Config, plan: &Plan) -> bool {
    let single = plan.io_threads == 1 && plan.processor_threads == 1;
    match config.threads.inline.as_str() {
        "always" => single,
        "never" => false,
        _ => {
            let same_cpu = matches!(
                (plan.cpu(Role::Io(0)), plan.cpu(Role::Processor(0))),
                (Some(io), Some(processor)) if io == processor
            );
            let one_cpu = affinity::allowed_cpus().is_some_and(|cpus| cpus.len() == 1);
            single && (same_cpu || one_cpu)
        }
    }
}

/// A running broker.
#[derive(Debug)]
pub struct Server {
    client_addr: SocketAddr,
    admin_addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    acceptor_waker: Arc<mio::Waker>,
    io: Vec<Arc<outbound::IoShared>>,
    acceptor: Option<JoinHandle<()>>,
    admin: Option<JoinHandle<()>>,
    io_threads: Vec<JoinHandle<()>>,
    processor_threads: Vec<JoinHandle<()>>,
    totals: Arc<Totals>,
    plan: Plan,
    journaling: Option<Arc<journaling::Journaling>>,
    journal_threads: Vec<JoinHandle<()>>,
    replayer: Option<(
        JoinHandle<()>,
        crossbeam_channel::Sender<replayer::ReplayerMsg>,
    )>,
    _lock: DataDirLock,
}

fn spawn(
    name: String,
    cpus: Vec<usize>,
    body: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, StartError> {
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            if !cpus.is_empty()
                && let Err(error) = affinity::pin_current_thread(&cpus)
            {
                tracing::warn!(%error, ?cpus, "{name}: could not pin thread; running unpinned");
            }
            body();
        })
        .map_err(|source| StartError::Thread {
            what: "a thread".into(),
            source,
        })
}

fn discover_machine() -> Machine {
    match placement::discover() {
        Ok(machine) => machine,
        Err(error) => {
            let cpus = affinity::allowed_cpus().unwrap_or_else(|| vec![0]);
            tracing::warn!(%error, "using a flat topology of the allowed CPUs {cpus:?}");
            Machine::flat(&cpus)
        }
    }
}

fn bind(addr: SocketAddr, key: &'static str) -> Result<std::net::TcpListener, StartError> {
    std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, key, source })
}

impl Server {
    /// Binds the listeners, starts every thread, and returns once the
    /// broker accepts connections.
    ///
    /// # Errors
    /// A listener cannot be bound, the data directory cannot be locked, or
    /// a thread cannot be started.
    pub fn start(config: &Config) -> Result<Self, StartError> {
        let started = Instant::now();
        let lock = lock_data_dir(&config.server.data_dir)?;
        match affinity::raise_open_files_limit() {
            Ok(limit) if limit < config.limits.connections_max as u64 + 64 => tracing::warn!(
                limit,
                connections_max = config.limits.connections_max,
                "the open-files limit is below limits.connections_max + 64: raise it (`ulimit -n`, LimitNOFILE=) or lower limits.connections_max"
            ),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot read or raise the open-files limit"),
        }
        let machine = discover_machine();
        let plan = placement::plan(
            &machine,
            config.threads.io,
            config.threads.processors,
            config.journal.enabled(),
            config.threads.pin,
        );
        tracing::info!(
            numa_nodes = machine.numa_nodes,
            node0_cores = machine.node0_core_count(),
            "thread placement: {plan}"
        );

        let opened = journaling::Journaling::open(config)
            .map_err(|error| StartError::Journal(error.to_string()))?;
        if let Some(opened) = &opened {
            log_recovery(&opened.report);
        }

        let sow_specs = Arc::new(config.sow.specs()?);
        let mut sow_sets = sow::recover(
            &sow_specs,
            &config.server.data_dir,
            opened.as_ref().map(|o| &*o.journaling),
            plan.processor_threads,
        )
        .map_err(StartError::Sow)?
        .into_iter();
        let checkpoint_interval = Duration::from_millis(config.sow.checkpoint_interval_ms);
        let mut processor_sow = || processor::ProcessorSow {
            topics: sow_sets.next().unwrap_or_default(),
            checkpoint_interval,
        };

        let client_listener = bind(config.listen_addr()?, "server.listen")?;
        let admin_listener = bind(config.admin_addr()?, "server.admin_listen")?;
        let thread_error = |what: &str| {
            let what = what.to_owned();
            move |source| StartError::Thread { what, source }
        };
        let client_addr = client_listener
            .local_addr()
            .map_err(thread_error("the client listener"))?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(thread_error("the admin listener"))?;
        client_listener
            .set_nonblocking(true)
            .map_err(thread_error("the client listener"))?;

        let totals = Arc::new(Totals::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let limits = Arc::new(SessionLimits::from_config(config, plan.processor_threads));
        let io_settings = io::IoSettings {
            limits,
            client_outbound_bytes_max: usize::try_from(config.limits.client_outbound_bytes_max.0)
                .unwrap_or(usize::MAX),
            client_outbound_stall: Duration::from_millis(config.limits.client_outbound_stall_ms),
            sow_answer_stall: Duration::from_millis(config.limits.sow_answer_stall_ms),
            drain_timeout: Duration::from_millis(config.shutdown.drain_timeout_ms),
        };
        let registry: Arc<acceptor::ConnRegistry> = Arc::new(Mutex::new(Vec::new()));
        let names = Arc::new(names::NameRegistry::default());

        let (senders, receivers): (Vec<_>, Vec<_>) = (0..plan.processor_threads)
            .map(|_| crossbeam_channel::unbounded())
            .unzip();
        let mut receivers: Vec<Option<_>> = receivers.into_iter().map(Some).collect();
        let inline = run_inline(config, &plan);
        if inline {
            tracing::info!(
                "processor-0 runs inline on io-0 (they would share one CPU; threads.inline)"
            );
        }
        // The replayer serves bookmark subscriptions; it talks to processors.
        let (replayer_tx, replayer_rx) = crossbeam_channel::unbounded();
        let processors_done = Arc::new(AtomicUsize::new(0));
        let next_conn_id = Arc::new(AtomicU64::new(1));
        let inflight_max =
            usize::try_from(config.limits.io_inflight_bytes_max.0).unwrap_or(usize::MAX);
        let mut io_loops = Vec::new();
        for index in 0..plan.io_threads {
            let wiring = io::IoWiring {
                processors: senders.clone(),
                totals: Arc::clone(&totals),
                next_conn_id: Arc::clone(&next_conn_id),
                processors_done: Arc::clone(&processors_done),
                registry: Arc::clone(&registry),
                journal: opened.as_ref().map(|o| Arc::clone(&o.journaling)),
                names: Arc::clone(&names),
                inline: if inline && index == 0 {
                    receivers.get_mut(0).and_then(Option::take).map(|inbox| {
                        (
                            inbox,
                            opened.as_ref().map(|_| replayer_tx.clone()),
                            processor_sow(),
                        )
                    })
                } else {
                    None
                },
            };
            let io = io::IoThread::new(index, inflight_max, io_settings.clone(), wiring)
                .map_err(thread_error("an I/O event loop"))?;
            io_loops.push(io);
        }
        let io_shared: Vec<_> = io_loops.iter().map(io::IoThread::shared).collect();
        // An inline processor is woken through its I/O thread.
        let wakers: Vec<Option<Arc<outbound::IoShared>>> = (0..senders.len())
            .map(|index| {
                (inline && index == 0)
                    .then(|| io_shared.first().cloned())
                    .flatten()
            })
            .collect();
        let replayer = opened
            .as_ref()
            .map(|o| replayer::Replayer::new(Arc::clone(&o.journaling), senders.clone(), wakers));
        drop(senders);

        let pin_for = |role: Role| plan.cpu(role).map(|cpu| vec![cpu]).unwrap_or_default();
        let mut processor_threads = Vec::new();
        for (index, inbox) in receivers.into_iter().enumerate() {
            let Some(inbox) = inbox else {
                continue; // Runs inline on an I/O thread.
            };
            let sow = processor_sow();
            let journal = opened.as_ref().map(|o| Arc::clone(&o.journaling));
            let replayer = opened.as_ref().map(|_| replayer_tx.clone());
            let done = Arc::clone(&processors_done);
            let io_count = plan.io_threads;
            processor_threads.push(spawn(
                format!("processor-{index}"),
                pin_for(Role::Processor(index)),
                move || {
                    processor::run(index, inbox, io_count, &done, journal, replayer, sow);
                },
            )?);
        }
        // The journal's threads: the flusher (pinned: it gates persisted
        // acks) and the housekeeper (spares, retention).
        let mut journal_threads = Vec::new();
        let mut replayer_thread = None;
        let journaling = match opened {
            None => None,
            Some(opened) => {
                let journaling = opened.journaling;
                let flusher = opened.flusher;
                journal_threads.push(spawn(
                    "flusher".into(),
                    pin_for(Role::Flusher),
                    move || {
                        if let Err(failure) = flusher.run() {
                            // Fail-stop: after a failed sync the kernel may have
                            // dropped the pages, and nothing after it may be
                            // acknowledged. A restart recovers from the disk.
                            tracing::error!("journal sync failed, stopping the broker: {failure}");
                            eprintln!("statecast: journal sync failed, stopping: {failure}");
                            std::process::exit(3);
                        }
                    },
                )?);
                let housekeeper = opened.housekeeper;
                journal_threads.push(spawn(
                    "housekeeper".into(),
                    plan.others.clone(),
                    move || housekeeper.run(),
                )?);
                if let Some(replayer) = replayer {
                    replayer_thread =
                        Some(spawn("replayer".into(), plan.others.clone(), move || {
                            replayer.run(&replayer_rx);
                        })?);
                }
                Some(journaling)
            }
        };
        let mut io_threads = Vec::new();
        for (index, io) in io_loops.into_iter().enumerate() {
            io_threads.push(spawn(
                format!("io-{index}"),
                pin_for(Role::Io(index)),
                move || io.run(),
            )?);
        }

        let listener = mio::net::TcpListener::from_std(client_listener);
        let (acceptor, acceptor_waker) = acceptor::Acceptor::new(
            listener,
            io_shared.clone(),
            Arc::clone(&totals),
            config.limits.connections_max,
            usize::try_from(config.limits.outbound_total_bytes_max.0).unwrap_or(usize::MAX),
            Arc::clone(&shutdown),
        )
        .map_err(thread_error("the acceptor"))?;
        let acceptor_registry = Arc::clone(&registry);
        let acceptor = spawn("acceptor".into(), plan.others.clone(), move || {
            acceptor.run(&acceptor_registry)
        })?;

        let admin_totals = Arc::clone(&totals);
        let admin_shutdown = Arc::clone(&shutdown);
        let admin_journal = journaling.clone();
        let admin = spawn("admin".into(), plan.others.clone(), move || {
            admin::run(
                &admin_listener,
                &admin_totals,
                admin_journal.as_deref(),
                &admin_shutdown,
                started,
            );
        })?;

        tracing::info!(%client_addr, %admin_addr, data_dir = %config.server.data_dir.display(), "statecast {} ready", env!("CARGO_PKG_VERSION"));
        Ok(Self {
            client_addr,
            admin_addr,
            shutdown,
            acceptor_waker,
            io: io_shared,
            acceptor: Some(acceptor),
            admin: Some(admin),
            io_threads,
            processor_threads,
            totals,
            plan,
            journaling,
            journal_threads,
            replayer: replayer_thread.map(|thread| (thread, replayer_tx)),
            _lock: lock,
        })
    }

    /// The client listener's actual address.
    #[must_use]
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The admin listener's actual address.
    #[must_use]
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Instance-wide counters.
    #[must_use]
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// The thread placement in force.
    #[must_use]
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Shuts down cleanly: stop accepting, process what was read, drain
    /// queues to clients within `shutdown.drain_timeout_ms`, close
    /// connections, join every thread.
    pub fn shutdown(mut self) {
        let started = Instant::now();
        self.shutdown.store(true, Ordering::Release);
        let _ = self.acceptor_waker.wake();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for io in &self.io {
            io.shutdown.store(true, Ordering::Release);
            io.wake();
        }
        for thread in self.io_threads.drain(..) {
            let _ = thread.join();
        }
        for thread in self.processor_threads.drain(..) {
            let _ = thread.join();
        }
        if let Some((thread, inbox)) = self.replayer.take() {
            let _ = inbox.send(replayer::ReplayerMsg::Stop);
            let _ = thread.join();
        }
        // Processors are done appending: close the journal cleanly (final
        // sync, clean-shutdown checkpoint) so the next start skips the scan.
        if let Some(journaling) = self.journaling.take() {
            journaling.close();
        }
        for thread in self.journal_threads.drain(..) {
            let _ = thread.join();
        }
        admin::wake(self.admin_addr);
        if let Some(admin) = self.admin.take() {
            let _ = admin.join();
        }
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis(),
            "statecast stopped"
        );
    }
}
