//! The command line as scripts use it: the ready line, publish/subscribe
//! through real processes, output formats and exit codes.

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};

use crate::support::{Broker, binary, run_cli};

/// Publishes `{"probe":true}` to `topic` until told to stop: a subscriber
/// process is ready once a probe reaches it (the only signal there is from
/// outside the process).
struct Prober {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Prober {
    fn start(server: &str, topic: &str) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (server, topic, flag) = (
            server.to_owned(),
            topic.to_owned(),
            std::sync::Arc::clone(&stop),
        );
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Acquire) {
                let out = run_cli(
                    &[
                        "publish",
                        "--server",
                        &server,
                        "--topic",
                        &topic,
                        "--ack",
                        "processed",
                    ],
                    Some(b"{\"probe\":true}\n"),
                );
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                std::thread::park_timeout(std::time::Duration::from_millis(20));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn publish_and_subscribe_round_trip_through_processes() {
    let broker = Broker::start();
    let mut subscriber = Process::new(binary())
        .args([
            "subscribe",
            "--server",
            &broker.client,
            "--topic",
            "cli",
            "--format",
            "json",
            "--timeout",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(subscriber.stdout.take().unwrap()).lines();
    let prober = Prober::start(&broker.client, "cli");
    let first = lines
        .next()
        .expect("the subscriber received a probe")
        .unwrap();
    drop(prober);
    let value: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(value["cmd"], "publish");
    assert_eq!(value["topic"], "cli");
    assert_eq!(value["data"], serde_json::json!({"probe": true}));
    assert!(
        value["bookmark"].is_string(),
        "journaled messages carry their bookmark: {value}"
    );
    let out = run_cli(
        &["publish", "--server", &broker.client, "--topic", "cli"],
        Some(b"{\"n\":1}\n\nplain words\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["published"], 2, "empty lines are skipped");
    assert_eq!(summary["acked"], 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(r#"{"published":2,"acked":0,"last_bookmark":"#),
        "keys in the documented order: {text}"
    );
    let mut rest = Vec::new();
    for line in lines.by_ref() {
        let value: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if value["data"] != serde_json::json!({"probe": true}) {
            rest.push(value["data"].clone());
        }
        if rest.len() == 2 {
            break;
        }
    }
    assert_eq!(
        rest,
        [
            serde_json::json!({"n": 1}),
            serde_json::json!("plain words")
        ],
        "non-JSON payloads are strings"
    );
    let _ = subscriber.kill();
    let _ = subscriber.wait();
}

#[test]
fn subscribe_count_exits_after_n_messages() {
    let broker = Broker::start();
    let subscriber = Process::new(binary())
        .args([
            "subscribe",
            "--server",
            &broker.client,
            "--topic",
            "counted",
            "--count",
            "1",
            "--timeout",
            "60",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let prober = Prober::start(&broker.client, "counted");
    let out = subscriber.wait_with_output().unwrap();
    drop(prober);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"probe\":true}\n",
        "--format data prints the payload"
    );
}

#[test]
fn data_format_prints_payloads_and_timeout_bounds_the_wait() {
    let broker = Broker::start();
    let out = run_cli(
        &[
            "subscribe",
            "--server",
            &broker.client,
            "--topic",
            "quiet",
            "--timeout",
            "0.3",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "a timeout without --count is a normal end"
    );
    assert!(out.stdout.is_empty());
    let out = run_cli(
        &[
            "subscribe",
            "--server",
            &broker.client,
            "--topic",
            "quiet",
            "--timeout",
            "0.3",
            "--count",
            "1",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("timed out") && stderr.contains("0 of 1"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line on stderr: {stderr}");
}

#[test]
fn publish_file_with_processed_and_persisted_acks() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.txt");
    let lines: String = (0..2500).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&file, lines).unwrap();
    let mut last_bookmark = 0u64;
    for ack in ["processed", "persisted"] {
        let out = run_cli(
            &[
                "publish",
                "--server",
                &broker.client,
                "--topic",
                "f",
                "--ack",
                ack,
                "--name",
                "file-loader",
                "--file",
                crate::support::path_str(&file),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(summary["published"], 2500, "{ack}");
        assert_eq!(summary["acked"], 2500, "{ack}");
        let bookmark: u64 = summary["last_bookmark"].as_str().unwrap().parse().unwrap();
        assert_eq!(bookmark, last_bookmark + 2500, "{ack}: bookmarks run on");
        last_bookmark = bookmark;
    }
}

#[test]
fn errors_exit_1_with_one_line_and_bad_usage_exits_2() {
    let broker = Broker::start_with("[journal]\ntopics = []\n[sow]\ntopics = []\n");
    let out = run_cli(
        &[
            "publish",
            "--server",
            &broker.client,
            "--topic",
            "t",
            "--ack",
            "persisted",
        ],
        Some(b"x\n"),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ack_not_available"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let out = run_cli(&["ping", "--server", "127.0.0.1:1"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the broker"));

    for args in [
        &["publish"][..],
        &["subscribe", "--topic", "t", "--format", "xml"],
        &["serve", "--bogus"],
        &["nonsense"],
    ] {
        let out = run_cli(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = run_cli(&["ping", "--server", &broker.client], None);
    assert!(out.status.success());
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(value["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn help_exists_for_every_command() {
    for command in [
        "serve",
        "publish",
        "subscribe",
        "ping",
        "placement",
        "default-config",
    ] {
        let out = run_cli(&[command, "--help"], None);
        assert!(out.status.success(), "{command} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{command}"
        );
    }
}

#[test]
fn serve_refuses_a_bad_config_and_a_locked_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "[limits]\nconnections_max = 0\n").unwrap();
    let out = run_cli(
        &["serve", "--config", crate::support::path_str(&config)],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("limits.connections_max") && stderr.contains("between 1 and"),
        "{stderr}"
    );

    let broker = Broker::start();
    let data = broker.data_dir();
    let out = run_cli(
        &[
            "serve",
            "--data-dir",
            crate::support::path_str(&data),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another statecast process")
            && stderr.contains(&broker.pid().to_string()),
        "{stderr}"
    );
}

#[test]
fn sigterm_shuts_down_cleanly_and_sigquit_does_not() {
    let mut broker = Broker::start();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(broker.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT).unwrap();
    assert!(broker.wait_for_log("SIGQUIT", std::time::Duration::from_secs(5)));
    let out = run_cli(&["ping", "--server", &broker.client], None);
    assert!(
        out.status.success(),
        "the broker still serves after SIGQUIT"
    );
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = broker
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("exits after SIGTERM");
    assert!(status.success());
    assert!(broker.logs().contains("statecast stopped"));
}

#[test]
fn journal_dump_prints_records_and_a_summary_beside_a_running_broker() {
    let broker = Broker::start();
    let out = run_cli(
        &[
            "publish",
            "--server",
            &broker.client,
            "--topic",
            "dumped",
            "--ack",
            "persisted",
        ],
        Some(b"{\"n\":1}\n{\"n\":2}\nplain\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        summary["last_bookmark"], "3",
        "persisted acks name their bookmarks"
    );
    let data = broker.data_dir();
    let out = run_cli(
        &[
            "journal-dump",
            crate::support::path_str(&data),
            "--topic",
            "dumped",
            "--from",
            "2",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["bookmark"], 2);
    assert_eq!(records[0]["payload"], serde_json::json!({"n": 2}));
    assert_eq!(records[1]["payload"], "plain");
    let out = run_cli(
        &["journal-dump", crate::support::path_str(&data), "--stats"],
        None,
    );
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stats["records"], 3);
    assert!(
        stats["overhead_per_record"].as_f64().unwrap() <= 48.0,
        "{stats}"
    );
    assert_eq!(stats["issues"], serde_json::json!([]));
}
