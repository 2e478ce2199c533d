//! `cargo xtask fuzz --minutes N`: long fuzzing runs of the proptest targets in `crates/hubsim-proto/tests/fuzz.rs`
//! (fresh random seeds each round, 100 000 cases per target), until the time is up or a failure is found. A
//! failure is saved by proptest under `crates/hubsim-proto/proptest-regressions/` and replayed by every later
//! `cargo xtask test`: commit that file.

use crate::util::{cargo, run, step, Result};
use std::time::{Duration, Instant};

pub fn run_fuzz(args: &[String]) -> Result {
    let minutes: u64 = match args {
        [flag, n] if flag == "--minutes" => n.parse().map_err(|_| format!("--minutes takes a number, not '{n}'"))?,
        [] => 10,
        _ => return Err("usage: cargo xtask fuzz [--minutes N]".into()),
    };
    let end = Instant::now() + Duration::from_secs(minutes * 60);
    let mut round = 0;
    while Instant::now() < end {
        round += 1;
        step(&format!("fuzz round {round} ({} s left)", end.saturating_duration_since(Instant::now()).as_secs()));
        run(cargo()
            .args(["test", "--release", "-p", "hubsim-proto", "--test", "fuzz"])
            .env("HUBSIM_FUZZ_CASES", "100000"))?;
    }
    eprintln!("\n{round} rounds, no failure");
    Ok(())
}
