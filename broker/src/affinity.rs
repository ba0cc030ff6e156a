//! Pinning threads to CPUs, through nix's safe wrappers of
//! `sched_getaffinity` / `sched_setaffinity`.

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// The CPUs this process may run on (`taskset`, cgroups), or `None` when the
/// kernel will not say.
#[must_use]
pub fn allowed_cpus() -> Option<Vec<usize>> {
    let set = sched_getaffinity(Pid::from_raw(0)).ok()?;
    Some(
        (0..CpuSet::count())
            .filter(|cpu| set.is_set(*cpu).unwrap_or(false))
            .collect(),
    )
}

/// Pins the calling thread to `cpus`.
///
/// # Errors
/// The kernel's error, e.g. when a CPU is not allowed.
pub fn pin_current_thread(cpus: &[usize]) -> nix::Result<()> {
    let mut set = CpuSet::new();
    for cpu in cpus {
        set.set(*cpu)?;
    }
    // Pid 0 is the calling thread for sched_setaffinity.
    sched_setaffinity(Pid::from_raw(0), &set)
}
