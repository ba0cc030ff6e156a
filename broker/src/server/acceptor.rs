//! The acceptor thread: accepts client connections, enforces the connection
//! cap, deals connections to I/O threads, and does the instance-wide
//! housekeeping that belongs to no connection (the total outbound limit).

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use statecast_protocol::{Ack, AckType, Command, ReasonCode};

use super::outbound::{ConnShared, IoShared, Totals};

const LISTENER: Token = Token(0);
/// The acceptor's waker token.
pub const ACCEPTOR_WAKER: Token = Token(1);

/// How often the instance-wide outbound total is checked.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(50);

/// Registry of live connections, for instance-wide decisions.
pub type ConnRegistry = std::sync::Mutex<Vec<std::sync::Weak<ConnShared>>>;

/// The acceptor's state.
pub struct Acceptor {
    poll: Poll,
    listener: TcpListener,
    io: Vec<Arc<IoShared>>,
    totals: Arc<Totals>,
    connections_max: usize,
    outbound_total_max: usize,
    shutdown: Arc<AtomicBool>,
    next_io: usize,
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("io", &self.io.len())
            .finish_non_exhaustive()
    }
}

impl Acceptor {
    /// An acceptor over `listener`; returns it and the waker that stops it.
    ///
    /// # Errors
    /// When the poller cannot be created.
    pub fn new(
        mut listener: TcpListener,
        io: Vec<Arc<IoShared>>,
        totals: Arc<Totals>,
        connections_max: usize,
        outbound_total_max: usize,
        shutdown: Arc<AtomicBool>,
    ) -> io::Result<(Self, Arc<Waker>)> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), ACCEPTOR_WAKER)?);
        Ok((
            Self {
                poll,
                listener,
                io,
                totals,
                connections_max,
                outbound_total_max,
                shutdown,
                next_io: 0,
            },
            waker,
        ))
    }

    /// Accepts until shutdown. `registry` lists live connections.
    pub fn run(mut self, registry: &ConnRegistry) {
        let mut events = Events::with_capacity(64);
        loop {
            if let Err(error) = self.poll.poll(&mut events, Some(HOUSEKEEPING_INTERVAL))
                && error.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(%error, "acceptor: poll failed; no new connections will be accepted");
                return;
            }
            if self.shutdown.load(Ordering::Acquire) {
                tracing::debug!("acceptor: stopped accepting");
                return;
            }
            if events.iter().any(|e| e.token() == LISTENER) {
                self.accept_all();
            }
            self.enforce_outbound_total(registry);
            self.prune(registry);
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // EMFILE and friends: log and try again at the next event
                    // or housekeeping tick rather than spin.
                    tracing::warn!(%error, "accept failed (check `ulimit -n`)");
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let open = self.totals.connections.fetch_add(1, Ordering::AcqRel);
        if open >= self.connections_max {
            self.totals.connections.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(%peer, open, "refusing connection: limits.connections_max ({}) reached", self.connections_max);
            let ack = Ack::failure(
                AckType::Processed,
                None,
                ReasonCode::TooManyConnections,
                format!("the broker has {open} connections, its limit (limits.connections_max)"),
            );
            if let Ok(frame) = Command::Ack(ack).to_bytes() {
                let _ = stream.write(&frame);
            }
            return;
        }
        self.totals.accepted.fetch_add(1, Ordering::Relaxed);
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "could not set TCP_NODELAY");
        }
        let Some(io) = self.io.get(self.next_io % self.io.len().max(1)) else {
            return;
        };
        self.next_io = self.next_io.wrapping_add(1);
        io.new_conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((stream, peer));
        io.wake();
    }

    /// Drops registry entries of closed connections once they dominate it.
    fn prune(&self, registry: &ConnRegistry) {
        let mut conns = registry.lock().unwrap_or_else(PoisonError::into_inner);
        if conns.len() > 2 * self.totals.connections.load(Ordering::Relaxed) + 64 {
            conns.retain(|weak| weak.strong_count() > 0);
        }
    }

    /// Past the instance-wide outbound limit, the client with the largest
    /// queue is disconnected as slow.
    fn enforce_outbound_total(&self, registry: &ConnRegistry) {
        if self.totals.outbound_bytes.load(Ordering::Acquire) <= self.outbound_total_max {
            return;
        }
        let mut conns = registry.lock().unwrap_or_else(PoisonError::into_inner);
        conns.retain(|weak| weak.strong_count() > 0);
        let largest = conns
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .filter(|c| !c.is_closed() && !c.is_slow())
            .max_by_key(|c| c.queued());
        if let Some(conn) = largest {
            tracing::warn!(
                conn = conn.id,
                queued = conn.queued(),
                total = self.totals.outbound_bytes.load(Ordering::Acquire),
                "outbound total over limits.outbound_total_bytes_max ({}): disconnecting the largest queue's client",
                self.outbound_total_max
            );
            conn.mark_slow();
        }
    }
}
