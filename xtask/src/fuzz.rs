//! Fuzzing with cargo-fuzz (libFuzzer) and the nightly toolchain. The
//! targets live in `fuzz/`, a workspace of its own; their build goes to
//! `target/fuzz`, the corpus they grow to `target/fuzz-corpus`, seeded from
//! `fuzz/seeds`.

use std::time::Duration;

use anyhow::{Context as _, Result};

use crate::{setup, util};

/// Every fuzz target.
pub const TARGETS: [&str; 1] = ["capture_reader"];

/// Runs each target for `time`; fails on the first crash (libFuzzer saves
/// the input under fuzz/artifacts/).
pub fn run(time: Duration) -> Result<()> {
    let workspace = util::workspace()?;
    let root = workspace.workspace_root.as_std_path();
    let target = workspace.target_directory.as_std_path();
    let cargo_fuzz = setup::cargo_fuzz_path()?;
    for name in TARGETS {
        let corpus = target.join("fuzz-corpus").join(name);
        std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
        let seeds = root.join("fuzz/seeds").join(name);
        println!("xtask: fuzzing {name} for {} s", time.as_secs());
        let mut cmd = setup::nightly(&[&cargo_fuzz.to_string_lossy(), "fuzz", "run", name]);
        cmd.current_dir(root)
            .arg(&corpus)
            .arg(&seeds)
            .arg("--target-dir")
            .arg(target.join("fuzz"))
            .arg("--")
            .arg(format!("-max_total_time={}", time.as_secs()))
            // One line every few seconds rather than one per new input.
            .arg("-print_final_stats=1")
            .arg("-verbosity=0");
        util::run(&mut cmd, &format!("fuzzing {name}"))?;
    }
    Ok(())
}
