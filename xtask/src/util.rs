//! Small helpers for running commands.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

pub type Result<T = ()> = std::result::Result<T, String>;

/// The repository root (the parent of `xtask/`). `cargo run` (the `cargo xtask` alias) sets `CARGO_MANIFEST_DIR`
/// when it starts the program, so a `target/` copied or linked from another checkout still works on this one; the
/// path compiled in is the fallback for the binary started by hand.
pub fn root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    let manifest = manifest.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// Prints a step header.
pub fn step(name: &str) {
    eprintln!("\n==> {name}");
}

/// Runs `cmd`, failing with its description when it does not succeed.
pub fn run(cmd: &mut Command) -> Result {
    let t = Instant::now();
    let desc = describe(cmd);
    eprintln!("$ {desc}");
    let status = cmd.status().map_err(|e| format!("cannot start `{desc}`: {e}"))?;
    eprintln!("   ({:.1} s)", t.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{desc}` failed ({status})"))
    }
}

/// Runs `cmd` and returns its stdout, or `None` if it cannot run or fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `cargo` with the repository as working directory.
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// A command with `~/.cargo/bin` and `/usr/local/bin` first on PATH, where the installs go.
pub fn tool(name: &str) -> Command {
    let mut c = Command::new(name);
    c.env("PATH", path_with_tools());
    c.current_dir(root());
    c
}

/// `trunk build --release`, the shipped web app: the wasm is built with the standard library compiled for it
/// (`-Z build-std`, `opt-level = "z"` like the app) and `-C panic=immediate-abort`, so no panic message, location
/// or formatting machinery is linked in (a panic traps, as `panic = "abort"` already did: wasm32 has no stderr to
/// print to and the app installs no panic hook). Measured: 294.2 → 269.0 KB of wasm gzipped (BENCHMARKS.md).
/// Both are unstable cargo/rustc options, enabled on the stable toolchain with `RUSTC_BOOTSTRAP=1` for this one
/// build only (`setup` installs the `rust-src` component they need); a plain `trunk build --release` still works,
/// without the saving. Trunk.toml's post-build hook runs `cargo xtask` without these variables.
pub fn trunk_release() -> Command {
    let mut c = tool("trunk");
    c.args(["build", "--release"])
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_UNSTABLE_BUILD_STD", "std,panic_abort")
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS", "-Zunstable-options -Cpanic=immediate-abort");
    c
}

pub fn path_with_tools() -> String {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{home}/.cargo/bin:/usr/local/bin:{path}")
}

/// A file's size and its size after `gzip -9` (Debian's gzip, as `cargo xtask bench` measures), in bytes.
pub fn gzip_size(path: &Path) -> Result<(u64, u64)> {
    let raw = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?.len();
    let z =
        Command::new("sh").arg("-c").arg("gzip -9 -c \"$0\" | wc -c").arg(path).output().map_err(|e| e.to_string())?;
    let gz = String::from_utf8_lossy(&z.stdout).trim().parse().map_err(|_| "gzip failed")?;
    Ok((raw, gz))
}
