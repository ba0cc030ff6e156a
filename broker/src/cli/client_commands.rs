//! The client commands: `publish`, `subscribe`, `ping`, and the printing
//! and bounds (`--count`, `--timeout`) the SOW commands share.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use statecast_client::{
    AckType, Client, ClientOptions, Message, PendingAck, PublisherOptions, ReliablePublisher,
    SubscribeOptions,
};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use super::{AckArg, Format, PublishArgs, ServerArg, SubscribeArgs};

/// Publishes in flight before `publish` waits for the oldest ack.
const ACK_WINDOW: usize = 1000;

/// Runs an async command on a single-threaded runtime.
pub fn run<F, Fut>(command: F) -> anyhow::Result<()>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    crate::logging::init_client();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(command())
}

fn client_name(command: &str) -> String {
    format!("statecast-{command}-{}", std::process::id())
}

/// Connects to `server` as `statecast-<command>-<pid>`.
pub(super) async fn connect(server: &str, command: &str) -> anyhow::Result<Client> {
    Client::connect(server, ClientOptions::new(client_name(command)))
        .await
        .with_context(|| format!("cannot reach the broker at {server}"))
}

/// `statecast publish`.
pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let input: Box<dyn AsyncBufRead + Unpin> = match &args.file {
        Some(path) => Box::new(BufReader::new(
            tokio::fs::File::open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?,
        )),
        None => Box::new(BufReader::new(tokio::io::stdin())),
    };
    let name = args.name.clone().unwrap_or_else(|| client_name("publish"));
    let mut tally = Tally::default();
    let (result, closed) = if args.ack == AckArg::Persisted {
        let mut publisher =
            ReliablePublisher::connect(&args.server.server, PublisherOptions::new(name))
                .await
                .with_context(|| format!("cannot reach the broker at {}", args.server.server))?;
        let result = publish_reliably(&mut publisher, &args, input, &mut tally).await;
        tally.acked = publisher.acked();
        tally.last_bookmark = publisher.last_bookmark();
        let closed = publisher.close().await.map(|_| ());
        (result, closed)
    } else {
        let client = Client::connect(&args.server.server, ClientOptions::new(name))
            .await
            .with_context(|| format!("cannot reach the broker at {}", args.server.server))?;
        let result = publish_lines(&client, &args, input, &mut tally).await;
        (result, client.close().await)
    };
    println!(
        "{}",
        serde_json::json!({
            "published": tally.published,
            "acked": tally.acked,
            "last_bookmark": tally.last_bookmark.map(|b| b.to_string()),
        })
    );
    result?;
    closed.context("the final flush failed")?;
    Ok(())
}

/// What `publish` reports.
#[derive(Debug, Default)]
struct Tally {
    published: u64,
    acked: u64,
    last_bookmark: Option<u64>,
}

impl Tally {
    fn acked(&mut self, ack: &statecast_protocol::Ack) {
        self.acked += 1;
        if let Some(bookmark) = ack.bookmark {
            self.last_bookmark = Some(self.last_bookmark.map_or(bookmark, |b| b.max(bookmark)));
        }
    }
}

/// Reads one message per line from `input`.
async fn next_line(
    input: &mut Box<dyn AsyncBufRead + Unpin>,
    line: &mut Vec<u8>,
) -> anyhow::Result<bool> {
    loop {
        line.clear();
        let n = input
            .read_until(b'\n', line)
            .await
            .context("cannot read the input")?;
        if n == 0 {
            return Ok(false);
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        if !line.is_empty() {
            return Ok(true);
        }
    }
}

/// `--ack persisted`: numbered publishes that survive reconnects.
async fn publish_reliably(
    publisher: &mut ReliablePublisher,
    args: &PublishArgs,
    mut input: Box<dyn AsyncBufRead + Unpin>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let mut line = Vec::new();
    while next_line(&mut input, &mut line).await? {
        publisher
            .publish(&args.topic, bytes::Bytes::copy_from_slice(&line))
            .await?;
        tally.published += 1;
    }
    publisher.flush().await?;
    Ok(())
}

async fn publish_lines(
    client: &Client,
    args: &PublishArgs,
    mut input: Box<dyn AsyncBufRead + Unpin>,
    tally: &mut Tally,
) -> anyhow::Result<()> {
    let ack_type = match args.ack {
        AckArg::None => None,
        AckArg::Processed => Some(AckType::Processed),
        AckArg::Persisted => Some(AckType::Persisted),
    };
    let mut window: VecDeque<PendingAck> = VecDeque::new();
    let mut line = Vec::new();
    while next_line(&mut input, &mut line).await? {
        let payload = bytes::Bytes::copy_from_slice(&line);
        match ack_type {
            None => client.publish(&args.topic, payload).await?,
            Some(ack_type) => {
                window.push_back(client.publish_acked(&args.topic, payload, ack_type).await?);
                if window.len() >= ACK_WINDOW
                    && let Some(pending) = window.pop_front()
                {
                    let ack = pending.wait().await?;
                    tally.acked(&ack);
                }
            }
        }
        tally.published += 1;
    }
    while let Some(pending) = window.pop_front() {
        let ack = pending.wait().await?;
        tally.acked(&ack);
    }
    Ok(())
}

/// One printed message: what `--format` shows of it.
pub(super) struct Printed<'a> {
    /// `publish` for a live message, `sow` for a SOW record.
    pub cmd: &'static str,
    pub topic: &'a str,
    /// A SOW record's key.
    pub key: Option<u64>,
    pub bookmark: Option<u64>,
    pub payload: &'a [u8],
}

impl<'a> From<&'a Message> for Printed<'a> {
    fn from(message: &'a Message) -> Self {
        Self {
            cmd: "publish",
            topic: message.topic.as_str(),
            key: None,
            bookmark: message.bookmark,
            payload: &message.payload,
        }
    }
}

/// The output line for a message: its payload (`data`), or
/// `{"cmd","topic","key","bookmark","data"}` (`json`; data as JSON when
/// the payload is JSON, else a string; key and bookmark as decimal strings).
pub(super) fn render(message: &Printed<'_>, format: Format) -> Vec<u8> {
    match format {
        Format::Data => {
            let mut line = message.payload.to_vec();
            line.push(b'\n');
            line
        }
        Format::Json => {
            let data =
                serde_json::from_slice::<serde_json::Value>(message.payload).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(message.payload).into_owned())
                });
            let object = serde_json::json!({
                "cmd": message.cmd,
                "topic": message.topic,
                "key": message.key.map(|k| k.to_string()),
                "bookmark": message.bookmark.map(|b| b.to_string()),
                "data": data,
            });
            let mut line = object.to_string().into_bytes();
            line.push(b'\n');
            line
        }
    }
}

/// Writes `line` to stdout; `false` when the reader has gone (a broken
/// pipe ends the command quietly).
pub(super) fn print_line(
    stdout: &mut std::io::StdoutLock<'_>,
    line: &[u8],
) -> anyhow::Result<bool> {
    match stdout.write_all(line).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(error) => Err(error).context("cannot write to stdout"),
    }
}

/// The deadline `--timeout SECS` sets.
pub(super) fn deadline(timeout: Option<f64>) -> anyhow::Result<Option<tokio::time::Instant>> {
    match timeout {
        Some(secs) if secs.is_finite() && secs >= 0.0 => Ok(Some(
            tokio::time::Instant::now() + Duration::from_secs_f64(secs),
        )),
        Some(secs) => bail!("--timeout must be a non-negative number of seconds, not {secs}"),
        None => Ok(None),
    }
}

/// The next item of `stream`, bounded by `--count` and `--timeout`:
/// `Ok(None)` when the command is done (count reached, or the timeout
/// passed without a count to reach), an error when the timeout passed
/// before the count was reached.
pub(super) async fn next_bounded<S: futures::Stream + Unpin>(
    stream: &mut S,
    received: u64,
    count: Option<u64>,
    deadline: Option<tokio::time::Instant>,
    timeout: Option<f64>,
) -> anyhow::Result<Option<Option<S::Item>>> {
    if count.is_some_and(|count| received >= count) {
        return Ok(None);
    }
    match deadline {
        Some(deadline) => match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(next) => Ok(Some(next)),
            Err(_) => match count {
                Some(count) => bail!(
                    "timed out after {} s with {received} of {count} messages",
                    timeout.unwrap_or_default()
                ),
                None => Ok(None),
            },
        },
        None => Ok(Some(stream.next().await)),
    }
}

/// `statecast subscribe`.
pub async fn subscribe(args: SubscribeArgs) -> anyhow::Result<()> {
    let deadline = deadline(args.timeout)?;
    let client = connect(&args.server.server, "subscribe").await?;
    let mut options = SubscribeOptions::topic(&args.topic);
    options.filter.clone_from(&args.filter);
    options.bookmark.clone_from(&args.bookmark);
    let bounded = args
        .bookmark
        .as_deref()
        .is_some_and(|b| b.trim_start().starts_with('['));
    let mut subscription = client
        .subscribe_with(options)
        .await
        .context("the subscription was refused")?;
    let mut received = 0u64;
    let mut stdout = std::io::stdout().lock();
    loop {
        let Some(next) = next_bounded(
            &mut subscription,
            received,
            args.count,
            deadline,
            args.timeout,
        )
        .await?
        else {
            return Ok(());
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => return Err(error).context("the subscription ended"),
            None if bounded => return Ok(()),
            None => bail!("the subscription ended"),
        };
        if !print_line(&mut stdout, &render(&Printed::from(&message), args.format))? {
            return Ok(());
        }
        received += 1;
    }
}

/// `statecast ping`.
pub async fn ping(args: ServerArg) -> anyhow::Result<()> {
    let started = Instant::now();
    let client = connect(&args.server, "ping").await?;
    let connected = started.elapsed();
    let rtt = client
        .flush()
        .await
        .context("the broker did not answer a flush")?;
    println!(
        "{}",
        serde_json::json!({
            "server": args.server,
            "version": client.server().version,
            "connect_us": connected.as_micros() as u64,
            "rtt_us": rtt.as_micros() as u64,
        })
    );
    Ok(())
}
