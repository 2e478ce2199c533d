//! `cargo xtask tidy`: the invariants of ARCHITECTURE.md, checked against the tree (rust-analyzer's
//! `xtask/src/tidy.rs` does the same). Each rule names the invariant it guards; a violation prints the file and
//! line and fails the test command.
//!
//! Source files are read up to their first `#[cfg(test)]` (test modules sit at the end of a file by the house
//! style), and files under `tests/` or named `tests.rs` are test code: tests may build wrong topics on purpose.

use crate::util::{cargo, root, Result};
use std::path::{Path, PathBuf};

/// A text rule: in `files`, none of `forbidden` may appear outside `except`.
struct Rule {
    invariant: &'static str,
    /// Folders (relative to the root) whose non-test `.rs` files are checked.
    scope: &'static [&'static str],
    /// Files or folders (relative to the root) where the patterns are allowed.
    except: &'static [&'static str],
    forbidden: &'static [&'static str],
}

const RULES: &[Rule] = &[
    Rule {
        invariant: "the sans-IO crates do no I/O, spawn nothing and never read a clock (time is an argument)",
        scope: &["crates/hubsim-proto/src", "crates/hubsim-template/src", "crates/hubsim-dtdl/src"],
        except: &[],
        forbidden: &[
            "SystemTime",
            "Instant::now",
            "std::time::Instant",
            "std::fs",
            "std::net",
            "std::thread",
            "std::process",
            "std::env",
            "tokio",
            "println!",
            "eprintln!",
        ],
    },
    Rule {
        invariant: "topics, property bags, user names and SAS strings are built and parsed only in hubsim-proto",
        scope: &["crates/hubsim-hub/src", "crates/hubsim-device/src", "crates/hubsim-cli/src", "src"],
        except: &[],
        forbidden: &["\"devices/", "\"$iothub/", "\"$dps/", "\"SharedAccessSignature", "/$iothub/websocket\""],
    },
    Rule {
        invariant: "in the emulator only the store touches the database",
        scope: &["crates"],
        except: &["crates/hubsim-hub/src/store.rs", "crates/hubsim-hub/src/store"],
        forbidden: &["redb::", "use redb"],
    },
    Rule {
        invariant: "in the web app only driver.rs touches the WebSocket",
        scope: &["src"],
        except: &["src/driver.rs"],
        forbidden: &["web_sys::WebSocket", "WebSocket::new", "use web_sys::{WebSocket"],
    },
    Rule {
        invariant: "the web app and the crates it links read and write floats with hubsim_proto::num, not with core's \
                    float parser and printers (their tables and code are a tenth of the bundle budget)",
        scope: &["src", "crates/hubsim-proto/src", "crates/hubsim-template/src", "crates/hubsim-dtdl/src"],
        except: &["crates/hubsim-proto/src/num.rs"],
        forbidden: &["parse::<f64>", "parse::<f32>", "{:.*}", "f64::from_str"],
    },
    Rule {
        invariant: "mqttbytes (v4) is the only MQTT codec",
        scope: &["crates", "src"],
        except: &[],
        forbidden: &["rumqttc", "mqttrs", "mqtt_protocol", "paho_mqtt", "ntex_mqtt", "mqttbytes::v5"],
    },
];

/// Dependency arrows: a crate must not (normally) depend on these packages.
const ARROWS: &[(&str, &[&str], &str)] = &[
    ("hubsim-proto", &["tokio", "serde", "serde_json", "redb", "rand"], "the core is sans-IO and small"),
    ("hubsim-template", &["tokio", "serde", "serde_json", "rand"], "the template engine is sans-IO and small"),
    ("hubsim-dtdl", &["tokio", "serde", "serde_json"], "the DTDL crate is sans-IO and small"),
    (
        "hubsim-hub",
        &["clap", "ureq", "tracing-subscriber", "tokio-tungstenite", "webpki-roots", "hubsim-device", "hubsim-cli"],
        "the hub library pulls in no CLI, client or device runtime",
    ),
    ("hubsim-device", &["redb", "axum", "hubsim-hub", "clap"], "the device runtime compiles no server"),
    ("hubsim-web", &["tokio", "redb", "hubsim-hub", "hubsim-device"], "the web app holds no native runtime"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_dir() {
            if name != "tests" && name != "target" && name != "node_modules" {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            out.push(p);
        }
    }
}

/// The non-test part of a source file.
fn non_test(text: &str) -> &str {
    match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    }
}

fn check_rules(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for rule in RULES {
        let mut files = Vec::new();
        for s in rule.scope {
            rust_files(&root.join(s), &mut files);
        }
        for f in files {
            let rel = f.strip_prefix(root).unwrap_or(&f).to_string_lossy().replace('\\', "/");
            if rule.except.iter().any(|e| rel == *e || rel.starts_with(&format!("{e}/"))) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&f) else { continue };
            for (n, line) in non_test(&text).lines().enumerate() {
                let code = line.trim_start();
                if code.starts_with("//") {
                    continue;
                }
                for pat in rule.forbidden {
                    if line.contains(pat) {
                        problems.push(format!("{rel}:{}: `{pat}` breaks: {}", n + 1, rule.invariant));
                    }
                }
            }
        }
    }
    problems
}

fn check_arrows() -> Result<Vec<String>> {
    let out = crate::util::output(cargo().args(["metadata", "--format-version", "1", "--no-deps", "--offline"]))
        .ok_or("cargo metadata failed")?;
    let meta: serde_json::Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        let name = pkg["name"].as_str().unwrap_or("");
        let Some((_, banned, why)) = ARROWS.iter().find(|(n, _, _)| *n == name) else { continue };
        for dep in pkg["dependencies"].as_array().into_iter().flatten() {
            let normal = dep["kind"].is_null();
            let dep_name = dep["name"].as_str().unwrap_or("");
            if normal && banned.contains(&dep_name) {
                problems.push(format!("{name} depends on {dep_name}: {why}"));
            }
        }
    }
    Ok(problems)
}

pub fn run() -> Result {
    let root = root();
    let mut problems = check_rules(&root);
    problems.extend(check_arrows()?);
    if problems.is_empty() {
        eprintln!("tidy: every invariant holds ({} text rules, {} dependency rules)", RULES.len(), ARROWS.len());
        Ok(())
    } else {
        for p in &problems {
            eprintln!("tidy: {p}");
        }
        Err(format!("{} invariant violation(s); see ARCHITECTURE.md, section Invariants", problems.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_literal_in_the_emulator_is_caught() {
        let dir = std::env::temp_dir().join(format!("tidy-{}", std::process::id()));
        let src = dir.join("crates/hubsim-hub/src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("x.rs"), "fn t() -> String { format!(\"devices/{}/messages/events/\", 1) }\n").unwrap();
        std::fs::write(src.join("y.rs"), "fn ok() {}\n#[cfg(test)]\nmod tests { const T: &str = \"$iothub/x\"; }\n")
            .unwrap();
        let problems = check_rules(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("x.rs:1") && problems[0].contains("only in hubsim-proto"), "{problems:?}");
    }
}
