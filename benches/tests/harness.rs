//! End-to-end checks of the harness: the generator against the `mem` target
//! and against a real relay process, through the binary as scripts run it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_statecast-bench");

/// Kills the relay when the test ends, also on failure.
struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_relay() -> (Relay, String) {
    let mut child = Command::new(BIN)
        .args(["relay", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the relay starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let relay = Relay(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("a ready line");
    let addr = line
        .trim()
        .strip_prefix("ready client=")
        .unwrap_or_else(|| panic!("unexpected ready line {line:?}"))
        .to_owned();
    (relay, addr)
}

fn run(args: &[&str]) -> serde_json::Value {
    let output = Command::new(BIN)
        .arg("run")
        .args(args)
        .output()
        .expect("the generator runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("UTF-8");
    assert_eq!(stdout.lines().count(), 1, "one JSON line: {stdout}");
    serde_json::from_str(&stdout).expect("JSON")
}

fn check_complete(report: &serde_json::Value, published: u64, subscribers: usize) {
    assert_eq!(report["published"], published, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["out_of_order"], 0, "{report}");
    assert_eq!(
        report["errors"].as_array().map(Vec::len),
        Some(0),
        "{report}"
    );
    let detail = report["subscriber_detail"].as_array().expect("detail");
    assert_eq!(detail.len(), subscribers);
    for subscriber in detail {
        assert_eq!(subscriber["received"], published, "{report}");
    }
    assert_eq!(
        report["latency_us"]["count"].as_u64(),
        Some(published * subscribers as u64)
    );
    assert!(report["delivered_rate_min"].as_f64().expect("a rate") > 0.0);
}

#[test]
fn mem_target_delivers_everything() {
    let report = run(&["--target", "mem", "--subscribers", "3", "--count", "5000"]);
    check_complete(&report, 5000, 3);
}

#[test]
fn relay_target_delivers_everything_at_max_and_fixed_rate() {
    let (relay, addr) = start_relay();
    let pid = relay.0.id().to_string();
    let report = run(&[
        "--target",
        "relay",
        "--server",
        &addr,
        "--server-pid",
        &pid,
        "--subscribers",
        "2",
        "--publishers",
        "2",
        "--count",
        "20001",
        "--label",
        "t",
    ]);
    check_complete(&report, 20_001, 2);
    assert_eq!(report["label"], "t");
    assert!(report["server_cpu_pct"].as_f64().is_some());

    let report = run(&[
        "--target",
        "relay",
        "--server",
        &addr,
        "--subscribers",
        "1",
        "--rate",
        "2000",
        "--duration",
        "0.5",
    ]);
    check_complete(&report, 1000, 1);
    let rate = report["publish_rate"].as_f64().expect("a rate");
    assert!((1500.0..2500.0).contains(&rate), "paced at {rate} msgs/s");
}

#[test]
fn filtered_subscriptions_are_refused_for_targets_without_filters() {
    for target in ["mem", "relay", "nats"] {
        let output = Command::new(BIN)
            .args([
                "run",
                "--target",
                target,
                "--filtered-subscriptions",
                "10",
                "--count",
                "10",
            ])
            .output()
            .expect("the generator runs");
        assert!(!output.status.success(), "{target} accepted it");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--filtered-subscriptions needs --target statecast or statecast-raw"),
            "{target}: {stderr}"
        );
        assert!(output.stdout.is_empty(), "{target}: no JSON line");
    }
}
