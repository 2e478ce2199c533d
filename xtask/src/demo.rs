//! `cargo xtask demo`: builds the web app, starts the emulator serving it with a demo device, and prints the URL
//! and the connection string. Extra arguments go to `hubsim serve` (e.g. `--http-port 9090`).

use crate::emulator::{self, Emulator};
use crate::util::{root, run as sh, step, trunk_release, Result};

pub fn run(args: &[String]) -> Result {
    crate::setup::run()?;
    step("build the web app (trunk build --release)");
    sh(&mut trunk_release())?;
    step("build and start the emulator");
    let bin = emulator::build(true)?;
    let data = root().join(".hubsim");
    let mut serve_args: Vec<&str> = vec!["--web-dir", "dist", "--demo-device", "demo-device"];
    serve_args.extend(args.iter().map(String::as_str));
    let emu = Emulator::start(&bin, &data, &serve_args)?;
    let url = emu.http.replace("127.0.0.1", "localhost");
    println!();
    println!("┌─ hubsim demo ───────────────────────────────────────────────────────────────");
    println!("│ open            {url}/");
    println!("│ paste this connection string and press Connect:");
    println!("│   {}", emu.demo_connection_string.clone().unwrap_or_default());
    println!("│ the emulator's CA (for SDKs over 8883/443): {}", emu.ca.display());
    println!("│ then send a C2D message to it from another terminal:");
    println!("│   target/release/hubsim c2d send demo-device --body 'hello' --prop color=blue --hub {}", emu.http);
    println!("│ watch telemetry:  target/release/hubsim events --follow --hub {}", emu.http);
    println!("└─ Ctrl+C stops the emulator; its data stays in .hubsim/");
    emu.wait()
}
