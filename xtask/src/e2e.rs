//! `cargo xtask e2e [playwright arguments]`: only the browser end-to-end tests, for working on the web app.
//!
//! Builds the app (a debug `trunk build`, fast to rebuild; `--release` for the shipped profile) and the emulator, starts the emulator on ports chosen by the system
//! (so several checkouts can run at once and nothing needs root), and runs Playwright with the given arguments
//! (a file or `-g "title"` to run a subset). `cargo xtask test` runs the same tests on IoT Hub's real ports.

use crate::emulator::{self, Emulator};
use crate::util::{root, run as sh, step, tool, trunk_release, Result};

pub fn run(args: &[String]) -> Result {
    let release = args.first().is_some_and(|a| a == "--release");
    let args = if release { &args[1..] } else { args };
    crate::setup::run()?;
    crate::setup::e2e_node_modules()?;
    step(if release { "web app: trunk build --release" } else { "web app: trunk build (debug)" });
    if release {
        sh(&mut trunk_release())?;
    } else {
        sh(tool("trunk").arg("build"))?;
    }
    step("start the emulator on free ports");
    let bin = emulator::build(false)?;
    let data = root().join("target").join("xtask-e2e-emulator");
    let _ = std::fs::remove_dir_all(&data);
    let emu =
        Emulator::start(&bin, &data, &["--mqtt-port", "0", "--ws-port", "0", "--http-port", "0", "--web-dir", "dist"])?;
    step("web app: end-to-end tests (Playwright)");
    sh(tool("npx")
        .args(["playwright", "test"])
        .args(args)
        .current_dir(root().join("tests/e2e"))
        .env("HUBSIM_HTTP", &emu.http)
        .env("HUBSIM_TOKEN", &emu.token))?;
    Ok(())
}
