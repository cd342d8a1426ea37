//! Nothing left behind: however tracer ends (report at the end, SIGTERM,
//! SIGKILL), the kernel holds none of its programs afterwards. Its own test
//! binary, so no other tracer runs meanwhile.

use tracer_tests::{Tracer, require_root, run_helper};

const HELPER: &str = env!("CARGO_BIN_EXE_tracer-test-helper");

/// Program names of tracer's kernel side, as the kernel keeps them (the
/// first 15 bytes of the function names).
fn tracer_programs() -> Vec<String> {
    let names: Vec<String> = serde_json::from_str(&run_helper(HELPER, &["bpf-progs"])).unwrap();
    let ours = [
        "block_rq_",
        "mm_page_alloc_",
        "mark_victim_",
        "mm_vmscan_",
        "mm_compaction_",
        "start_task_reap",
        "finish_task_rea",
        "reclaim_retry_z",
        "compact_retry_",
        "balance_dirty_p",
    ];
    names.into_iter().filter(|n| ours.iter().any(|p| n.starts_with(p))).collect()
}

/// Programs are freed asynchronously once their last file descriptor closes.
fn wait_until_none_left() -> Vec<String> {
    for _ in 0..50 {
        let left = tracer_programs();
        if left.is_empty() {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    tracer_programs()
}

#[test]
fn no_program_outlives_tracer_however_it_ends() {
    require_root();
    // A tracer that just exited (the previous test binary's) may still be
    // being freed.
    assert_eq!(
        wait_until_none_left(),
        Vec::<String>::new(),
        "another tracer is running; these tests need the machine"
    );
    for ending in ["duration", "SIGTERM", "SIGKILL"] {
        let mut tracer =
            Tracer::start(&["trace", "--duration", if ending == "duration" { "2s" } else { "120s" }]);
        let loaded = tracer_programs();
        assert!(loaded.len() >= 10, "every family attached: {loaded:?}");
        let done = match ending {
            "duration" => tracer.finish(),
            "SIGTERM" => tracer.stop_with(libc::SIGTERM),
            _ => tracer.stop_with(libc::SIGKILL),
        };
        if ending != "SIGKILL" {
            assert!(done.status.success(), "{ending}: {}", done.stderr);
            assert!(done.stdout.contains("lost events"), "{ending}: the report is printed");
        }
        assert_eq!(wait_until_none_left(), Vec::<String>::new(), "programs left after {ending}");
    }
}
