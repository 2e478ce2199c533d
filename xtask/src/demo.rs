//! `cargo xtask demo` (filled in with the emulator).
use crate::util::Result;

pub fn run(_args: &[String]) -> Result {
    Err("the demo needs the emulator".into())
}
