//! CPU time of a process (all its threads) from `/proc/<pid>/stat`, to tell
//! whether the generator or the server was the bottleneck of a run.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Clock ticks per second (`getconf CLK_TCK`, 100 on every common Linux).
fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// User + system CPU time used so far by process `pid` (`None` for this
/// process), or `None` when it cannot be read.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = ticks_per_second();
    Some(Duration::from_nanos(
        (utime + stime).saturating_mul(1_000_000_000) / ticks,
    ))
}

/// A CPU-time reading of one process at one instant.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    pid: Option<u32>,
    cpu: Option<Duration>,
    at: Instant,
}

impl CpuMark {
    /// Reads process `pid`'s CPU time now (`None` = this process).
    pub fn now(pid: Option<u32>) -> Self {
        Self {
            pid,
            cpu: cpu_time(pid),
            at: Instant::now(),
        }
    }

    /// Percent of one core used since this mark.
    pub fn percent_since(&self) -> Option<f64> {
        let end = cpu_time(self.pid)?;
        let wall = self.at.elapsed().as_secs_f64();
        let used = end.checked_sub(self.cpu?)?.as_secs_f64();
        (wall > 0.0).then(|| 100.0 * used / wall)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(cpu_time(None).is_some());
        assert!(cpu_time(Some(std::process::id())).is_some());
        let mark = CpuMark::now(None);
        let started = Instant::now();
        let mut spin = 0u64;
        while started.elapsed() < Duration::from_millis(60) {
            spin = std::hint::black_box(spin.wrapping_add(1));
        }
        let percent = mark.percent_since().unwrap();
        assert!((0.0..=250.0).contains(&percent), "{percent}");
    }
}
