//! Idempotent installation of everything the tests need (see `../shared/reference/toolchain.md` for why each
//! version is pinned). Each step checks first and does nothing when the right version is present, so a second
//! run takes about a second.

use crate::util::{output, run as sh, step, tool, Result};
use std::process::Command;

pub const TRUNK_VERSION: &str = "0.21.14";
pub const BINARYEN_VERSION: &str = "132.0.0";
const APT_PACKAGES: &[&str] = &["chromium", "chromium-driver", "fonts-liberation"];

pub fn run() -> Result {
    step("setup: install what is missing");
    apt(APT_PACKAGES)?;
    rust_target()?;
    rust_src()?;
    trunk()?;
    wasm_bindgen()?;
    wasm_opt()?;
    minify_node_modules()?;
    Ok(())
}

fn has_version(bin: &str, needle: &str) -> bool {
    output(tool(bin).arg("--version")).is_some_and(|v| v.contains(needle))
}

/// Installs missing Debian packages (`apt-get update` only when something is missing).
pub fn apt(packages: &[&str]) -> Result {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        eprintln!("   apt: {} already installed", packages.join(", "));
        return Ok(());
    }
    let sudo = |args: &[&str]| {
        let mut c = if is_root() {
            Command::new(args[0])
        } else {
            let mut c = Command::new("sudo");
            c.arg(args[0]);
            c
        };
        c.args(&args[1..]).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    sh(&mut sudo(&["apt-get", "update", "-qq"]))?;
    let mut args = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    sh(&mut sudo(&args))
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0")
}

/// The standard library's source, which the release web build compiles for wasm32 itself
/// ([`crate::util::trunk_release`]). rustup's distribution server is reachable here (toolchain.md).
fn rust_src() -> Result {
    if output(Command::new("rustup").args(["component", "list", "--installed"]))
        .is_some_and(|t| t.lines().any(|l| l.starts_with("rust-src")))
    {
        eprintln!("   rust component rust-src already installed");
        return Ok(());
    }
    sh(Command::new("rustup").args(["component", "add", "rust-src"]))
}

fn rust_target() -> Result {
    if output(Command::new("rustup").args(["target", "list", "--installed"]))
        .is_some_and(|t| t.lines().any(|l| l == "wasm32-unknown-unknown"))
    {
        eprintln!("   rust target wasm32-unknown-unknown already installed");
        return Ok(());
    }
    sh(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))
}

fn trunk() -> Result {
    if has_version("trunk", &format!("trunk {TRUNK_VERSION}")) {
        eprintln!("   trunk {TRUNK_VERSION} already installed");
        return Ok(());
    }
    eprintln!("   installing trunk {TRUNK_VERSION} (about 7 minutes on 2 cores)");
    sh(Command::new("cargo").args(["install", "--quiet", "--locked", "--force", "trunk", "--version", TRUNK_VERSION]))
}

/// The wasm-bindgen version in Cargo.lock; the CLI must match it exactly.
pub fn wasm_bindgen_version() -> Result<String> {
    let lock =
        std::fs::read_to_string(crate::util::root().join("Cargo.lock")).map_err(|e| format!("Cargo.lock: {e}"))?;
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l == "name = \"wasm-bindgen\"" {
            if let Some(v) = lines.next().and_then(|v| v.strip_prefix("version = \"")) {
                return Ok(v.trim_end_matches('"').to_owned());
            }
        }
    }
    Err("Cargo.lock has no wasm-bindgen".into())
}

fn wasm_bindgen() -> Result {
    let v = wasm_bindgen_version()?;
    if has_version("wasm-bindgen", &format!("wasm-bindgen {v}")) && has_version("wasm-bindgen-test-runner", &v) {
        eprintln!("   wasm-bindgen-cli {v} already installed");
        return Ok(());
    }
    eprintln!("   installing wasm-bindgen-cli {v} (about 2 minutes)");
    // --locked fails here: its lock file pins a webpki-roots the registry does not have.
    let locked = Command::new("cargo")
        .args(["install", "--quiet", "--locked", "--force", "wasm-bindgen-cli", "--version", &v])
        .status();
    if locked.is_ok_and(|s| s.success()) {
        return Ok(());
    }
    sh(Command::new("cargo").args(["install", "--quiet", "--force", "wasm-bindgen-cli", "--version", &v]))
}

fn wasm_opt() -> Result {
    let want = format!("version_{}", BINARYEN_VERSION.split('.').next().unwrap_or("132"));
    if has_version("wasm-opt", &want) {
        eprintln!("   wasm-opt {want} already installed");
        return Ok(());
    }
    // Debian's binaryen and `cargo install wasm-opt` cannot parse what rustc 1.95 emits (table.fill).
    sh(Command::new("npm").args([
        "install",
        "-g",
        "--prefix",
        "/usr/local",
        "--no-audit",
        "--no-fund",
        &format!("binaryen@{BINARYEN_VERSION}"),
    ]))?;
    if !has_version("wasm-opt", &want) {
        return Err(format!(
            "the wasm-opt first on PATH is not {want}; remove the one that shadows /usr/local/bin/wasm-opt"
        ));
    }
    Ok(())
}

/// The Python virtual environment with the official Azure IoT device SDK (for the SDK conformance check).
pub fn venv_dir() -> std::path::PathBuf {
    crate::util::root().join("target").join("pyvenv")
}

pub fn venv_python() -> std::path::PathBuf {
    venv_dir().join("bin").join("python")
}

/// Creates the venv and installs `tests/sdk/requirements.txt` unless both SDKs (device and service) import.
pub fn python_venv() -> Result {
    let py = venv_python();
    let requirements = crate::util::root().join("tests/sdk/requirements.txt");
    let stamp = venv_dir().join(".hubsim-requirements");
    if py.exists() && same_file_text(&requirements, &stamp) {
        eprintln!("   python venv up to date with tests/sdk/requirements.txt");
        return Ok(());
    }
    if !py.exists() {
        sh(Command::new("python3").args(["-m", "venv"]).arg(venv_dir()))?;
    }
    sh(Command::new(&py).args(["-m", "pip", "install", "-q", "--disable-pip-version-check", "-r"]).arg(&requirements))?;
    copy_stamp(&requirements, &stamp)
}

/// Whether `stamp` holds exactly the text of `source` (what was installed last time).
fn same_file_text(source: &std::path::Path, stamp: &std::path::Path) -> bool {
    matches!((std::fs::read(source), std::fs::read(stamp)), (Ok(a), Ok(b)) if a == b)
}

fn copy_stamp(source: &std::path::Path, stamp: &std::path::Path) -> Result {
    std::fs::copy(source, stamp).map(|_| ()).map_err(|e| format!("writing {}: {e}", stamp.display()))
}

/// `npm ci` in `dir` unless its node_modules were installed from the same package-lock.json (a stamp beside them
/// remembers which), so a changed lock file installs again and an unchanged one costs nothing.
fn npm_ci(dir: &str, marker: &str) -> Result {
    let dir = crate::util::root().join(dir);
    let lock = dir.join("package-lock.json");
    let stamp = dir.join("node_modules").join(".hubsim-package-lock.json");
    if dir.join("node_modules").join(marker).exists() && same_file_text(&lock, &stamp) {
        eprintln!("   {} node_modules up to date with package-lock.json", dir.display());
        return Ok(());
    }
    sh(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"))?;
    copy_stamp(&lock, &stamp)
}

/// terser and Lightning CSS, which the release build's post-build hook minifies the wasm's JavaScript glue, the
/// other scripts and the stylesheet with.
pub fn minify_node_modules() -> Result {
    npm_ci("xtask/minify", "terser/package.json")
}

/// The Playwright project (no browser download: the tests use Debian's Chromium).
pub fn e2e_node_modules() -> Result {
    npm_ci("tests/e2e", "@playwright/test/package.json")
}

/// The official Azure IoT Node.js device, provisioning and service SDKs, for the SDK conformance checks.
pub fn sdk_node_modules() -> Result {
    npm_ci("tests/sdk", "azure-iothub/package.json")
}
