//! `hubsim`: run the emulator, and talk to a running one (registry, C2D, methods, twins, events, connection log).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
