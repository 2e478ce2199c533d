//! `cargo xtask test`: every check and test, after [`crate::setup`].

use crate::util::{cargo, root, run as sh, step, tool, Result};

pub fn run_all() -> Result {
    step("format");
    sh(cargo().args(["fmt", "--all", "--check"]))?;

    step("clippy (native, then the web app for wasm32)");
    sh(cargo().args(["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]))?;
    sh(cargo().args([
        "clippy",
        "-p",
        "hubsim-web",
        "--target",
        "wasm32-unknown-unknown",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ]))?;

    step("native tests");
    sh(cargo().args(["test", "--workspace", "--locked"]))?;

    step("hubsim-proto builds for wasm32-unknown-unknown");
    sh(cargo().args(["build", "-p", "hubsim-proto", "--target", "wasm32-unknown-unknown", "--locked"]))?;

    step("web app: wasm-bindgen tests in headless Chromium");
    sh(tool("cargo")
        .args(["test", "-p", "hubsim-web", "--target", "wasm32-unknown-unknown", "--locked"])
        .env("CHROMEDRIVER", "/usr/bin/chromedriver"))?;

    step("web app: trunk build --release");
    sh(tool("trunk").args(["build", "--release"]).current_dir(root()))?;
    Ok(())
}

pub fn run(args: &[String]) -> Result {
    if !args.iter().any(|a| a == "--no-setup") {
        crate::setup::run()?;
    }
    run_all()?;
    eprintln!("\nall checks and tests passed");
    Ok(())
}
