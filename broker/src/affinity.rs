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

/// Raises the soft limit on open files to the hard limit (a broker needs a
/// descriptor per connection) and returns the limit in force.
///
/// # Errors
/// The kernel's error.
pub fn raise_open_files_limit() -> nix::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
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
