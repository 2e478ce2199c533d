//! `cargo xtask`: the project's commands.
//!
//! - `cargo xtask test`  — installs what is missing (idempotent), then runs every check and test.
//! - `cargo xtask e2e`   — only the browser end-to-end tests, on free ports (Playwright arguments pass through).
//! - `cargo xtask setup` — only the installs.
//! - `cargo xtask tidy`  — the invariants of ARCHITECTURE.md, checked against the tree.
//! - `cargo xtask demo`  — builds the web app, starts the emulator serving it with a demo device, prints the URL
//!   and the connection string.
//!
//! Tools the build needs and nobody may download at build time (this network reaches only crates.io, npm, PyPI
//! and Debian) are installed from those registries at pinned versions; see [`setup`].

mod bench;
mod bench_report;
mod e2e;
mod emulator;
mod fuzz;
mod post_build;
mod setup;
mod tidy;
mod util;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test::run(&args[1..]),
        Some("setup") => setup::run(),
        Some("demo") => demo::run(&args[1..]),
        Some("e2e") => e2e::run(&args[1..]),
        Some("post-build") => post_build::run(),
        Some("fuzz") => fuzz::run_fuzz(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("tidy") => tidy::run(),
        _ => {
            eprintln!("usage: cargo xtask <test|e2e|setup|demo|bench|fuzz|tidy>\n\n  test   install what is missing, then run every check and test\n  e2e    only the browser tests, on free ports: e2e [playwright args]\n  setup  only install what is missing\n  demo   build the app and run the emulator with a demo device\n  bench  run the benchmarks, write BENCHMARKS.md and target/bench/results.json\n         (--only emulator | --only web: only those rows, the others kept from the last run)\n  fuzz   long fuzzing runs: fuzz --minutes N\n  tidy   check the invariants of ARCHITECTURE.md");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

mod demo;
mod test;
