//! Starting the `hubsim` emulator binary for the test steps and the demo, and reading its banner.

use crate::util::{cargo, root, run, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running `hubsim serve`, killed on drop.
pub struct Emulator {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub http: String,
    /// Plain WebSocket endpoint for the browser on loopback.
    pub ws_plain: String,
    pub ca: PathBuf,
    /// Connection string of the demo device, if one was asked for.
    pub demo_connection_string: Option<String>,
}

/// Builds the emulator binary (`profile`: "dev" or "release") and returns its path.
pub fn build(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--locked", "-p", "hubsim-emulator", "--bin", "hubsim"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    Ok(root().join("target").join(if release { "release" } else { "debug" }).join("hubsim"))
}

impl Emulator {
    /// Starts `bin serve` with `args`, waiting until it printed its addresses.
    pub fn start(bin: &Path, data: &Path, args: &[&str]) -> Result<Emulator> {
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .args(args)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(out).lines();
        let (mut http, mut ws_plain, mut ca, mut cs) = (None, None, None, None);
        let wants_demo = args.contains(&"--demo-device");
        let mut expect_cs = false;
        while http.is_none() || ca.is_none() || (wants_demo && cs.is_none()) {
            let line = match lines.next() {
                Some(Ok(l)) => l,
                _ => {
                    let _ = child.kill();
                    return Err("the emulator exited before printing its addresses (is a port in use?)".into());
                }
            };
            println!("{line}");
            if expect_cs {
                cs = Some(line.trim().to_owned());
                expect_cs = false;
            } else if let Some(rest) = line.split("service API:").nth(1) {
                http = Some(rest.trim().to_owned());
            } else if line.contains("(loopback only)") {
                ws_plain = line.split_whitespace().last().map(str::to_owned);
            } else if let Some(rest) = line.split("trust this CA:").nth(1) {
                ca = Some(PathBuf::from(rest.trim()));
            } else if line.starts_with("connection string:") {
                expect_cs = true;
            }
        }
        // Keep draining stdout so the emulator never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Emulator {
            child,
            http: http.unwrap_or_default(),
            ws_plain: ws_plain.unwrap_or_default(),
            ca: ca.unwrap_or_default(),
            demo_connection_string: cs,
        })
    }

    /// The emulator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the emulator to exit (the demo).
    pub fn wait(mut self) -> Result {
        self.child.wait().map_err(|e| e.to_string())?;
        Ok(())
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
