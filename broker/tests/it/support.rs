//! Test support: real `statecast serve` processes on ephemeral ports, and a
//! raw blocking protocol client for byte-level tests.
//!
//! A broker is started with `--listen 127.0.0.1:0`; the test waits for its
//! ready line (never a sleep) and kills it when the handle drops.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use statecast_client::{Client, ClientOptions};
use statecast_protocol::{Command, FrameDecoder, Logon, Utf8};

/// The next item of `stream` if one is ready now, without waiting.
///
/// `now_or_never` alone is not enough: tokio's cooperative budget (128
/// ready polls per task poll) makes a channel report `Pending` once the
/// test task has drawn many items without yielding, so a check over
/// thousands of subscriptions would see spurious gaps. `unconstrained`
/// lifts the budget for this one poll.
pub fn ready_now<S: futures::Stream + Unpin>(stream: &mut S) -> Option<Option<S::Item>> {
    use futures::{FutureExt, StreamExt};
    tokio::task::unconstrained(stream.next()).now_or_never()
}

/// The broker binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_statecast"))
}

/// A running broker, killed on drop.
pub struct Broker {
    child: Child,
    /// Client listener address.
    pub client: String,
    /// Admin listener address.
    pub admin: String,
    dir: tempfile::TempDir,
}

impl Broker {
    /// A broker on the default configuration (pinning off: tests share cores).
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// A broker with extra configuration TOML laid over the test defaults.
    pub fn start_with(extra: &str) -> Self {
        Self::start_under(&[], extra)
    }

    /// Like [`Broker::start_with`], with the broker run by `wrapper` (a
    /// command and its arguments, e.g. strace with fault injection).
    /// Restarts run it without the wrapper.
    pub fn start_under(wrapper: &[&str], extra: &str) -> Self {
        Self::start_prepared(wrapper, extra, |_| {})
    }

    /// Like [`Broker::start_under`], calling `prepare` with the data
    /// directory's path (not yet created) before the broker starts: e.g.
    /// to mount a small filesystem there.
    pub fn start_prepared(wrapper: &[&str], extra: &str, prepare: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        prepare(&dir.path().join("data"));
        // Small journal segments: tests publish little, and preallocating
        // the default 128 MiB files would dominate their run time.
        let mut config = String::new();
        if !extra.contains("[threads]") {
            config.push_str("[threads]\npin = false\n");
        }
        if !extra.contains("[journal]") {
            config.push_str("[journal]\nsegment_bytes = \"4 MiB\"\npreallocate = 1\n");
        }
        config.push_str(extra);
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        let (child, client, admin) = Self::spawn(wrapper, dir.path(), "127.0.0.1:0");
        Self {
            child,
            client,
            admin,
            dir,
        }
    }

    /// Starts `statecast serve` on the configuration and data in `dir`;
    /// returns once it printed its ready line.
    fn spawn(wrapper: &[&str], dir: &Path, listen: &str) -> (Child, String, String) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("stderr.log"))
            .expect("stderr log");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Process::new(program);
                command.args(args).arg(binary());
                command
            }
            None => Process::new(binary()),
        };
        let mut child = command
            .args([
                "serve",
                "--listen",
                listen,
                "--admin-listen",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(dir.join("config.toml"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env(
                "RUST_LOG",
                std::env::var("STATECAST_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            // STATECAST_TEST_LOG=1 shows the broker's log while debugging.
            .stderr(if std::env::var_os("STATECAST_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::from(stderr)
            })
            .spawn()
            .expect("spawn statecast serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("ready ") => line,
            other => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                panic!("broker did not print its ready line ({other:?}); stderr:\n{log}");
            }
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(name))
                .unwrap_or_else(|| panic!("ready line lacks {name}: {line}"))
                .to_owned()
        };
        (child, field("client="), field("admin="))
    }

    /// Kills the broker with SIGKILL (no clean shutdown) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on the same configuration and data.
    pub fn restart(&mut self) {
        let (child, client, admin) = Self::spawn(&[], self.dir.path(), "127.0.0.1:0");
        self.child = child;
        self.client = client;
        self.admin = admin;
    }

    /// Starts the broker again on the same configuration, data and client
    /// port, as an operator's restart does (clients reconnect to the same
    /// address).
    pub fn restart_on_the_same_port(&mut self) {
        let (child, client, admin) = Self::spawn(&[], self.dir.path(), &self.client.clone());
        self.child = child;
        self.client = client;
        self.admin = admin;
    }

    /// Stops the broker cleanly (SIGTERM) and waits for it to exit.
    pub fn terminate(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let status = self
            .wait_exit(Duration::from_secs(30))
            .expect("the broker exits after SIGTERM");
        assert!(status.success(), "clean shutdown: {status}");
    }

    /// Appends `text` to the broker's configuration file (used by the next
    /// restart).
    pub fn append_config(&self, text: &str) {
        let path = self.dir.path().join("config.toml");
        let mut config = std::fs::read_to_string(&path).expect("config");
        config.push_str(text);
        std::fs::write(&path, config).expect("write config");
    }

    /// Starts the broker on its configuration and data expecting it to
    /// refuse to start; returns its exit status and stderr.
    pub fn start_refused(&self) -> (std::process::ExitStatus, String) {
        let dir = self.dir.path();
        let mut child = Process::new(binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(dir.join("config.toml"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn statecast serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return (status, stderr);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("the broker started although it should have refused");
            }
            std::thread::park_timeout(Duration::from_millis(10));
        }
    }

    /// The journal's figures from `GET /health`.
    pub fn journal_health(&self) -> serde_json::Value {
        let response = self.admin_get("/health");
        let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
        let value: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"));
        value["journal"].clone()
    }

    /// The broker's stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Connects an SDK client.
    pub async fn client(&self, name: &str) -> Client {
        Client::connect(&self.client, ClientOptions::new(name))
            .await
            .expect("connect")
    }

    /// Fetches `GET path` from the admin port.
    pub fn admin_get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(&self.admin).expect("admin connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    }

    /// Waits for the process to exit, returning its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::park_timeout(Duration::from_millis(10));
        }
        None
    }

    /// Waits until the log contains `text`, polling the file.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().contains(text) {
                return true;
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking connection speaking raw frames.
pub struct Raw {
    /// The socket.
    pub stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl Raw {
    /// Connects without logging on.
    pub fn connect(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).expect("raw connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(64 << 20),
        }
    }

    /// Connects and logs on, asking for `heartbeat_ms`.
    pub fn logged_on(addr: &str, name: &str, heartbeat_ms: Option<u32>) -> Self {
        let mut raw = Self::connect(addr);
        raw.send(&Command::Logon(Logon {
            command_id: Some(1),
            client_name: Utf8::from(name),
            credentials: None,
            heartbeat_ms,
        }));
        match raw.recv() {
            Some(Command::Ack(ack)) if ack.status == statecast_protocol::Status::Success => raw,
            other => panic!("logon failed: {other:?}"),
        }
    }

    /// Connects and logs on as `name`; returns the logon ack too.
    pub fn logon_ack(addr: &str, name: &str) -> (Self, statecast_protocol::Ack) {
        let mut raw = Self::connect(addr);
        raw.send(&Command::Logon(Logon {
            command_id: Some(1),
            client_name: Utf8::from(name),
            credentials: None,
            heartbeat_ms: None,
        }));
        match raw.recv() {
            Some(Command::Ack(ack)) if ack.status == statecast_protocol::Status::Success => {
                (raw, ack)
            }
            other => panic!("logon failed: {other:?}"),
        }
    }

    /// Sends a command.
    pub fn send(&mut self, command: &Command) {
        self.send_bytes(&command.to_bytes().expect("encode"));
    }

    /// Sends raw bytes.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// The next frame, skipping heartbeats; `None` at EOF.
    pub fn recv(&mut self) -> Option<Command> {
        loop {
            match self.recv_any()? {
                Command::Heartbeat(_) => {}
                other => return Some(other),
            }
        }
    }

    /// The next frame, heartbeats included; `None` at EOF or reset.
    pub fn recv_any(&mut self) -> Option<Command> {
        loop {
            if let Some(frame) = self
                .decoder
                .decode(&mut self.buf)
                .expect("broker frames decode")
            {
                return Some(Command::decode(&frame).expect("broker commands decode"));
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("raw read failed: {e}"),
            }
        }
    }

    /// Reads until EOF, returning every frame received before it.
    pub fn drain_to_eof(&mut self) -> Vec<Command> {
        let mut frames = Vec::new();
        while let Some(frame) = self.recv_any() {
            frames.push(frame);
        }
        frames
    }
}

/// Runs a `statecast` client command with arguments and optional stdin.
pub fn run_cli(args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    let mut child = Process::new(binary())
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn statecast");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

/// Path helper for temp files.
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
