//! Thread placement against hwloc synthetic topologies (this machine has
//! one NUMA node), through `statecast placement`.

use crate::support::binary;

fn placement(synthetic: &str, args: &[&str]) -> serde_json::Value {
    let output = std::process::Command::new(binary())
        .arg("placement")
        .args(args)
        .env("HWLOC_SYNTHETIC", synthetic)
        .output()
        .expect("run statecast placement");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

#[test]
fn two_numa_nodes_critical_threads_on_node0_others_on_node1() {
    let value = placement("pack:2 numa:1 core:4 pu:1", &[]);
    assert_eq!(value["numa_nodes"], 2);
    assert_eq!(
        value["node0_cores"],
        serde_json::json!([[0], [1], [2], [3]])
    );
    assert_eq!(value["other_pus"], serde_json::json!([4, 5, 6, 7]));
    assert_eq!(
        value["plan"],
        "io-0=cpu0 processor-0=cpu1 processor-1=cpu2 flusher=cpu3 others=cpu{4,5,6,7}"
    );
}

#[test]
fn hyperthreads_are_used_after_every_core() {
    let value = placement("numa:2 core:2 pu:2", &["--io", "2", "--processors", "2"]);
    assert_eq!(value["node0_cores"], serde_json::json!([[0, 1], [2, 3]]));
    assert_eq!(
        value["plan"],
        "io-0=cpu0 io-1=cpu1 processor-0=cpu2 processor-1=cpu3 flusher=cpu0 others=cpu{4,5,6,7}"
    );
}

#[test]
fn one_node_machine_shares_what_is_left() {
    let value = placement("numa:1 core:8 pu:1", &[]);
    assert_eq!(value["numa_nodes"], 1);
    assert_eq!(
        value["plan"],
        "io-0=cpu0 io-1=cpu2 processor-0=cpu1 processor-1=cpu3 processor-2=cpu4 processor-3=cpu5 flusher=cpu6 others=cpu{7}"
    );
}
