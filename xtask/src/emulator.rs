//! Starting the `hubsim` emulator binary for the test steps and the demo, and reading its ready file.

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
    /// The iothubowner policy's connection string (for the service API and the service SDKs).
    pub service_connection_string: String,
    /// A day-long iothubowner token for the service API (`Authorization` header), signed by `hubsim sas`.
    pub token: String,
}

/// Builds the `hubsim` binary (`release` or dev profile) and returns its path.
pub fn build(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "--locked", "-p", "hubsim-cli", "--bin", "hubsim"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    Ok(root().join("target").join(if release { "release" } else { "debug" }).join("hubsim"))
}

impl Emulator {
    /// Starts `bin serve` with `args` and reads its ready file (`--ready-file`), which the emulator writes before
    /// it prints anything: the first line on stdout means the file is complete.
    pub fn start(bin: &Path, data: &Path, args: &[&str]) -> Result<Emulator> {
        let ready_path = data.with_extension("ready.json");
        let _ = std::fs::remove_file(&ready_path);
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--data")
            .arg(data)
            .arg("--ready-file")
            .arg(&ready_path)
            .args(args)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(out).lines();
        match lines.next() {
            Some(Ok(_banner)) => {}
            _ => {
                let _ = child.kill();
                return Err("the emulator exited before it was ready (is a port in use?)".into());
            }
        }
        let text =
            std::fs::read_to_string(&ready_path).map_err(|e| format!("reading {}: {e}", ready_path.display()))?;
        let ready: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("the ready file: {e}"))?;
        let field = |k: &str| ready[k].as_str().map(str::to_owned);
        // Keep draining stdout (the rest of the banner) so the emulator never blocks on a full pipe; the ready
        // file already holds everything the banner says.
        std::thread::spawn(move || for _ in lines {});
        let service_connection_string =
            field("serviceConnectionString").ok_or("the ready file has no serviceConnectionString")?;
        let out = Command::new(bin)
            .args(["sas", "--ttl", "86400", "--connection-string", &service_connection_string])
            .output()
            .map_err(|e| format!("hubsim sas: {e}"))?;
        if !out.status.success() {
            return Err(format!("hubsim sas failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        Ok(Emulator {
            service_connection_string,
            token,
            child,
            http: field("serviceApi").ok_or("the ready file has no serviceApi")?,
            ws_plain: field("plainWebSocket").unwrap_or_default(),
            ca: field("caPath").map(PathBuf::from).unwrap_or_default(),
            demo_connection_string: field("demoConnectionString"),
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
