//! The relay: a null broker that copies every `publish` frame it receives to
//! every subscriber connection, verbatim, and does nothing else.
//!
//! It answers just enough of statecast's protocol for the bare framing client
//! (`target/raw.rs`) to run the same handshake as against the broker: a
//! `logon`, `subscribe`, `unsubscribe` or `flush` gets a success ack; a
//! connection that has subscribed receives the publish frames of every
//! connection, whatever their topic; heartbeats are ignored. Its figures
//! are the ceiling the generator can measure through the network on this
//! machine: generator + kernel + two loopback hops, no broker work.
//!
//! One blocking thread per connection: a publisher's thread reads a buffer
//! of frames and writes each complete run of publish frames to every
//! subscriber socket in one `write` each — the least work a broker could do.
//! A slow subscriber blocks the publishers (TCP back-pressure), nothing is
//! buffered or dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use anyhow::Context as _;
use bytes::Bytes;
use statecast_protocol::{Ack, AckType, Command, CommandCode, FrameDecoder, Utf8};

/// Largest frame accepted.
const MAX_FRAME_BYTES: usize = 64 << 20;
/// Bytes read at a time.
const READ_BUFFER_BYTES: usize = 256 * 1024;
const PUBLISH: u8 = CommandCode::Publish as u8;

/// `statecast-bench relay` options.
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
}

/// One subscriber connection's sending side.
#[derive(Debug)]
struct Sink {
    id: u64,
    stream: Mutex<TcpStream>,
}

impl Sink {
    fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut stream = self.stream.lock().unwrap_or_else(PoisonError::into_inner);
        stream.write_all(bytes)
    }
}

/// The subscriber list, with a version so that readers refresh their copy
/// only when it changes.
#[derive(Debug, Default)]
struct Relay {
    subscribers: RwLock<Vec<Arc<Sink>>>,
    version: AtomicU64,
    next_id: AtomicU64,
}

impl Relay {
    fn add(&self, sink: &Arc<Sink>) {
        let mut subscribers = self
            .subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !subscribers.iter().any(|s| s.id == sink.id) {
            subscribers.push(Arc::clone(sink));
        }
        self.version.fetch_add(1, Ordering::Release);
    }

    fn remove(&self, id: u64) {
        let mut subscribers = self
            .subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|s| s.id != id);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Refreshes `cache` if the list changed since `seen`.
    fn refresh(&self, seen: &mut u64, cache: &mut Vec<Arc<Sink>>) {
        let version = self.version.load(Ordering::Acquire);
        if version != *seen {
            let subscribers = self
                .subscribers
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            cache.clone_from(&subscribers);
            *seen = version;
        }
    }
}

/// Runs the relay until the process is killed.
///
/// # Errors
/// When the listener cannot be opened.
pub fn main(args: &RelayArgs) -> anyhow::Result<()> {
    let listener =
        TcpListener::bind(&args.listen).with_context(|| format!("listening on {}", args.listen))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready client={}", listener.local_addr()?)?;
    stdout.flush()?;
    let relay = Arc::new(Relay::default());
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("relay: accept: {error}");
                continue;
            }
        };
        let relay = Arc::clone(&relay);
        std::thread::spawn(move || {
            let id = relay.next_id.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = serve(&relay, id, stream) {
                eprintln!("relay: connection {id}: {error:#}");
            }
            relay.remove(id);
        });
    }
    Ok(())
}

/// Serves one connection until it closes.
fn serve(relay: &Relay, id: u64, mut stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let sink = Arc::new(Sink {
        id,
        stream: Mutex::new(stream.try_clone()?),
    });
    let decoder = FrameDecoder::new(MAX_FRAME_BYTES);
    let mut buf = vec![0u8; READ_BUFFER_BYTES];
    let mut filled = 0;
    let mut seen = u64::MAX;
    let mut subscribers: Vec<Arc<Sink>> = Vec::new();
    loop {
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let mut at = 0;
        let mut run_start = None;
        while let Some(total) = decoder.peek_len(&buf[at..filled])? {
            if at + total > filled {
                if total > buf.len() {
                    buf.resize(total, 0);
                }
                break;
            }
            if buf[at + 5] == PUBLISH {
                run_start.get_or_insert(at);
            } else {
                if let Some(start) = run_start.take() {
                    relay.refresh(&mut seen, &mut subscribers);
                    forward(relay, &subscribers, &buf[start..at]);
                }
                control(relay, &sink, &decoder, &buf[at..at + total])?;
            }
            at += total;
        }
        if let Some(start) = run_start {
            relay.refresh(&mut seen, &mut subscribers);
            forward(relay, &subscribers, &buf[start..at]);
        }
        buf.copy_within(at..filled, 0);
        filled -= at;
    }
}

/// Copies a run of publish frames to every subscriber.
fn forward(relay: &Relay, subscribers: &[Arc<Sink>], frames: &[u8]) {
    for subscriber in subscribers {
        if subscriber.write(frames).is_err() {
            relay.remove(subscriber.id);
        }
    }
}

/// Answers a frame other than a publish.
fn control(
    relay: &Relay,
    sink: &Arc<Sink>,
    decoder: &FrameDecoder,
    frame: &[u8],
) -> anyhow::Result<()> {
    let frame = decoder.decode_one(Bytes::copy_from_slice(frame))?;
    let ack = match Command::decode(&frame)? {
        Command::Logon(logon) => Ack {
            server_version: Some(Utf8::from("statecast-bench relay")),
            heartbeat_ms: logon.heartbeat_ms,
            max_frame_bytes: u32::try_from(MAX_FRAME_BYTES).ok(),
            ..Ack::success(AckType::Processed, logon.command_id)
        },
        Command::Subscribe(subscribe) => {
            relay.add(sink);
            Ack {
                sub_id: Some(subscribe.sub_id),
                ..Ack::success(AckType::Processed, subscribe.command_id)
            }
        }
        Command::Unsubscribe(unsubscribe) => {
            relay.remove(sink.id);
            Ack::success(AckType::Processed, unsubscribe.command_id)
        }
        Command::Flush(flush) => Ack::success(AckType::Processed, Some(flush.command_id)),
        _ => return Ok(()),
    };
    sink.write(&Command::Ack(ack).to_bytes()?)?;
    Ok(())
}
