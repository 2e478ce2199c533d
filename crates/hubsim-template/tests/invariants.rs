//! The crate's invariants, checked like `xtask tidy` checks the workspace's: it stays sans-IO (no clock,
//! no files, no sockets, so it runs the same in the browser and natively) and small (no dependency but
//! thiserror and hubsim-proto, the sans-IO core the app already carries, for its JSON module: the browser
//! bundle has a 150 KB gzipped budget).

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

#[test]
fn only_the_core_and_thiserror_as_dependencies() {
    let manifest = read("Cargo.toml");
    let deps = manifest.split("[dependencies]").nth(1).unwrap().split("\n[").next().unwrap();
    let names: Vec<&str> = deps
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(['=', ' ']).next().unwrap())
        .collect();
    assert_eq!(names, ["hubsim-proto", "thiserror"], "new dependencies cost bundle size; see the crate docs");
}

#[test]
fn no_io_and_no_clock_in_the_sources() {
    let forbidden = [
        "std::time",
        "SystemTime",
        "Instant::now",
        "std::fs",
        "std::net",
        "std::io",
        "std::env",
        "std::thread",
        "println!",
        "eprintln!",
        "dbg!",
    ];
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for pattern in forbidden {
            assert!(!text.contains(pattern), "{} uses {pattern}", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 7, "expected the crate's modules, found {checked}");
}
