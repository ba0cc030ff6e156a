//! Thread placement: which CPUs the broker's threads run on.
//!
//! Critical threads (network I/O, topic processors, later the journal
//! flusher) are pinned one per core to the cores of NUMA node 0, where the
//! NIC and the broker's memory are expected to live; the other threads
//! (acceptor, admin, signals) are kept off those cores where there is room.
//!
//! The plan is computed by a pure function over a [`Machine`] description so
//! it can be tested against any topology; [`discover`] builds that
//! description with hwloc. hwloc2 2.2.0 panics on
//! `objects_with_type(NUMANode)` with hwloc 2.x (NUMA nodes have no normal
//! depth any more), so node 0 is found through each PU's nodeset instead.

use std::collections::BTreeMap;
use std::fmt;

/// What the planner needs to know about the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Number of NUMA nodes.
    pub numa_nodes: usize,
    /// The cores of the first NUMA node, each as the OS indexes of its
    /// processing units (hardware threads) that this process may use.
    pub node0_cores: Vec<Vec<usize>>,
    /// Usable processing units on the other nodes.
    pub other_pus: Vec<usize>,
}

impl Machine {
    /// A machine of `cores` single-threaded cores on one node, for when
    /// hwloc cannot be used.
    #[must_use]
    pub fn flat(pus: &[usize]) -> Self {
        Self {
            numa_nodes: 1,
            node0_cores: pus.iter().map(|pu| vec![*pu]).collect(),
            other_pus: Vec::new(),
        }
    }

    /// Cores on node 0.
    #[must_use]
    pub fn node0_core_count(&self) -> usize {
        self.node0_cores.len()
    }
}

/// The role of a thread, for placement and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Network event loop.
    Io(usize),
    /// Topic processor.
    Processor(usize),
    /// The journal's flusher (sync loop).
    Flusher,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(i) => write!(f, "io-{i}"),
            Self::Processor(i) => write!(f, "processor-{i}"),
            Self::Flusher => f.write_str("flusher"),
        }
    }
}

/// Where every thread runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Each critical thread's CPU, or `None` when pinning is off.
    pub critical: BTreeMap<Role, Option<usize>>,
    /// CPUs for the non-critical threads (empty: leave them unpinned).
    pub others: Vec<usize>,
    /// I/O threads to start.
    pub io_threads: usize,
    /// Processor threads to start.
    pub processor_threads: usize,
}

impl Plan {
    /// The CPU planned for a critical thread.
    #[must_use]
    pub fn cpu(&self, role: Role) -> Option<usize> {
        self.critical.get(&role).copied().flatten()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (role, cpu) in &self.critical {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            match cpu {
                Some(cpu) => write!(f, "{role}=cpu{cpu}")?,
                None => write!(f, "{role}=unpinned")?,
            }
        }
        if self.others.is_empty() {
            f.write_str(" others=unpinned")
        } else {
            let list: Vec<String> = self.others.iter().map(ToString::to_string).collect();
            write!(f, " others=cpu{{{}}}", list.join(","))
        }
    }
}

/// Thread counts when the configuration says 0 (auto).
#[must_use]
pub fn auto_counts(machine: &Machine, io: usize, processors: usize) -> (usize, usize) {
    let cores = machine.node0_core_count().max(1);
    let io = if io == 0 { (cores / 4).max(1) } else { io };
    let processors = if processors == 0 {
        (cores / 2).max(1)
    } else {
        processors
    };
    (io, processors)
}

/// Plans placement: critical threads round-robin over node 0's cores, first
/// hardware thread of each core first (so no two critical threads share a
/// core while a core is free), processors before I/O threads interleaved so
/// that each kind spreads; others go to the remaining CPUs.
#[must_use]
pub fn plan(machine: &Machine, io: usize, processors: usize, flusher: bool, pin: bool) -> Plan {
    let (io, processors) = auto_counts(machine, io, processors);
    let mut roles: Vec<Role> = (0..io.max(processors))
        .flat_map(|i| {
            let mut pair = Vec::with_capacity(2);
            if i < io {
                pair.push(Role::Io(i));
            }
            if i < processors {
                pair.push(Role::Processor(i));
            }
            pair
        })
        .collect();
    if flusher {
        roles.push(Role::Flusher);
    }
    // CPUs in placement order: hardware thread 0 of every core, then thread 1...
    let depth = machine.node0_cores.iter().map(Vec::len).max().unwrap_or(0);
    let order: Vec<usize> = (0..depth)
        .flat_map(|t| {
            machine
                .node0_cores
                .iter()
                .filter_map(move |core| core.get(t).copied())
        })
        .collect();
    let mut critical = BTreeMap::new();
    for (i, role) in roles.iter().enumerate() {
        let cpu = if pin && !order.is_empty() {
            order.get(i % order.len()).copied()
        } else {
            None
        };
        critical.insert(*role, cpu);
    }
    let used: Vec<usize> = critical.values().flatten().copied().collect();
    let others = if !pin {
        Vec::new()
    } else if !machine.other_pus.is_empty() {
        machine.other_pus.clone()
    } else {
        let free: Vec<usize> = order
            .iter()
            .copied()
            .filter(|cpu| !used.contains(cpu))
            .collect();
        // No free CPU on a one-node machine: share them all rather than pile
        // every helper thread onto one critical core.
        if free.is_empty() { Vec::new() } else { free }
    };
    Plan {
        critical,
        others,
        io_threads: io,
        processor_threads: processors,
    }
}

/// Why discovery fell back to a flat machine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hwloc topology discovery failed: {0}")]
pub struct DiscoveryError(pub String);

/// Describes this machine with hwloc, keeping only the CPUs this process may
/// run on (so `taskset` and cgroup limits are honoured).
///
/// # Errors
/// When hwloc cannot load a topology or finds no usable CPU.
pub fn discover() -> Result<Machine, DiscoveryError> {
    use hwloc2::{ObjectType, Topology};

    let topology =
        Topology::new().ok_or_else(|| DiscoveryError("hwloc_topology_load failed".into()))?;
    // A synthetic topology (HWLOC_SYNTHETIC, used to test placement) is not
    // this machine: the process's real affinity mask does not apply to it.
    let allowed = if std::env::var_os("HWLOC_SYNTHETIC").is_some() {
        None
    } else {
        crate::affinity::allowed_cpus()
    };
    let numa_nodes = topology
        .object_at_root()
        .nodeset()
        .map_or(1, |set| set.weight().max(1) as usize);
    let pu_depth = topology
        .depth_for_type(&ObjectType::PU)
        .map_err(|e| DiscoveryError(format!("no PU depth: {e:?}")))?;
    let core_depth = topology.depth_for_type(&ObjectType::Core).ok();
    // The lowest NUMA node index any PU belongs to is "node 0".
    let mut pus: Vec<(usize, Option<u32>, usize)> = Vec::new(); // (os index, node, core)
    for pu in topology.objects_at_depth(pu_depth) {
        let os_index = pu.os_index() as usize;
        if !allowed.as_ref().is_none_or(|set| set.contains(&os_index)) {
            continue;
        }
        let node = pu.nodeset().and_then(|set| u32::try_from(set.first()).ok());
        let mut core = os_index;
        let mut ancestor = pu.parent();
        while let Some(object) = ancestor {
            if Some(object.depth()) == core_depth {
                core = object.logical_index() as usize;
                break;
            }
            ancestor = object.parent();
        }
        pus.push((os_index, node, core));
    }
    if pus.is_empty() {
        return Err(DiscoveryError("no usable processing unit".into()));
    }
    let node0 = pus.iter().filter_map(|(_, node, _)| *node).min();
    let mut cores: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    let mut other_pus = Vec::new();
    for (os_index, node, core) in pus {
        if node == node0 || node.is_none() {
            cores.entry(core).or_default().push(os_index);
        } else {
            other_pus.push(os_index);
        }
    }
    Ok(Machine {
        numa_nodes,
        node0_cores: cores.into_values().collect(),
        other_pus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_nodes_four_cores() -> Machine {
        Machine {
            numa_nodes: 2,
            node0_cores: vec![vec![0], vec![1], vec![2], vec![3]],
            other_pus: vec![4, 5, 6, 7],
        }
    }

    #[test]
    fn critical_threads_go_to_node0_cores_and_others_elsewhere() {
        let plan = plan(&two_nodes_four_cores(), 0, 0, false, true);
        assert_eq!((plan.io_threads, plan.processor_threads), (1, 2));
        assert_eq!(plan.cpu(Role::Io(0)), Some(0));
        assert_eq!(plan.cpu(Role::Processor(0)), Some(1));
        assert_eq!(plan.cpu(Role::Processor(1)), Some(2));
        assert_eq!(plan.others, vec![4, 5, 6, 7]);
    }

    #[test]
    fn smt_siblings_are_used_only_after_every_core() {
        let machine = Machine {
            numa_nodes: 1,
            node0_cores: vec![vec![0, 2], vec![1, 3]],
            other_pus: vec![],
        };
        let plan = plan(&machine, 2, 2, false, true);
        assert_eq!(plan.cpu(Role::Io(0)), Some(0));
        assert_eq!(plan.cpu(Role::Processor(0)), Some(1));
        assert_eq!(
            plan.cpu(Role::Io(1)),
            Some(2),
            "sibling of core 0, after both cores"
        );
        assert_eq!(plan.cpu(Role::Processor(1)), Some(3));
        assert!(plan.others.is_empty(), "no CPU left: helpers float");
    }

    #[test]
    fn single_node_leaves_free_cores_to_others() {
        let machine = Machine::flat(&[0, 1, 2, 3, 4, 5, 6, 7]);
        let plan = plan(&machine, 1, 2, false, true);
        assert_eq!(plan.others, vec![3, 4, 5, 6, 7]);
    }

    #[test]
    fn more_threads_than_cores_wrap_around() {
        let plan = plan(&Machine::flat(&[1]), 2, 2, false, true);
        assert!(plan.critical.values().all(|cpu| *cpu == Some(1)));
    }

    #[test]
    fn the_flusher_comes_after_io_and_processors() {
        let four = plan(&two_nodes_four_cores(), 1, 2, true, true);
        assert_eq!(four.cpu(Role::Flusher), Some(3));
        let two = plan(&Machine::flat(&[0, 1]), 1, 1, true, true);
        assert_eq!(
            two.cpu(Role::Flusher),
            Some(0),
            "two cores: it shares the I/O thread's"
        );
    }

    #[test]
    fn pin_off_leaves_everything_unpinned() {
        let plan = plan(&two_nodes_four_cores(), 2, 2, false, false);
        assert!(plan.critical.values().all(Option::is_none));
        assert!(plan.others.is_empty());
        assert_eq!(
            plan.to_string(),
            "io-0=unpinned io-1=unpinned processor-0=unpinned processor-1=unpinned others=unpinned"
        );
    }
}
