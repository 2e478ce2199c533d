//! Entry point of the browser app; everything lives in the library so the wasm tests can mount it.

#[cfg(target_arch = "wasm32")]
fn main() {
    hubsim_web::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("hubsim-web is a browser app: build it with `trunk build --release` (or run `cargo xtask demo`).");
    std::process::exit(2);
}
