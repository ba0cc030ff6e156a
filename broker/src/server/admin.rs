//! The admin HTTP listener. This version serves `GET /health` only (a JSON
//! liveness document); the monitoring tree and Prometheus metrics come with
//! the monitoring work. Requests are bounded (8 KiB, 2 s) and handled one at
//! a time on a thread of their own, away from the data path.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::journaling::Journaling;
use super::outbound::Totals;

const REQUEST_BYTES_MAX: usize = 8 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves until `shutdown` is set (and a connection wakes the accept).
pub fn run(
    listener: &TcpListener,
    totals: &Totals,
    journal: Option<&Journaling>,
    shutdown: &AtomicBool,
    started: Instant,
) {
    for stream in listener.incoming() {
        if shutdown.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else {
            continue;
        };
        if let Err(error) = serve(stream, totals, journal, started) {
            tracing::debug!(%error, "admin request failed");
        }
    }
}

fn serve(
    mut stream: TcpStream,
    totals: &Totals,
    journal: Option<&Journaling>,
    started: Instant,
) -> io::Result<()> {
    stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        if request.len() >= REQUEST_BYTES_MAX {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "{\"error\":\"request too large\"}",
            );
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let line = request.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some("GET"), Some("/health")) => {
            let journal = journal.map(|j| {
                let journal = j.journal();
                let health = journal.health();
                serde_json::json!({
                    "healthy": health.is_ok(),
                    "failure": health.err().map(|f| f.to_string()),
                    "first_bookmark": journal.first_bookmark(),
                    "appended": journal.appended(),
                    "persisted": journal.persisted(),
                    "checkpointed": journal.checkpointed(),
                })
            });
            let healthy = journal.as_ref().is_none_or(|j| j["healthy"] == true);
            let body = serde_json::json!({
                "status": if healthy { "ok" } else { "failed" },
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_ms": started.elapsed().as_millis() as u64,
                "connections": totals.connections.load(Ordering::Relaxed),
                "outbound_bytes": totals.outbound_bytes.load(Ordering::Relaxed),
                "journal": journal,
            });
            let status = if healthy {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            respond(&mut stream, status, &body.to_string())
        }
        (Some("GET"), Some(_)) => respond(
            &mut stream,
            "404 Not Found",
            "{\"error\":\"not found; this version serves GET /health\"}",
        ),
        _ => respond(
            &mut stream,
            "405 Method Not Allowed",
            "{\"error\":\"only GET is served\"}",
        ),
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())
}

/// Unblocks the accept loop after `shutdown` is set.
pub fn wake(addr: std::net::SocketAddr) {
    let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(200));
}
