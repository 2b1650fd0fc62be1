//! The `director` binary: ipvsadm's command line (also when invoked as `ipvsadm`), plus
//! the director's own commands (attach, detach, status, decap, list, daemon).

mod cli;
mod ipvsadm;
mod report;

use std::process::ExitCode;

fn main() -> ExitCode {
    // OS strings: an argument that is not UTF-8 gets a message and exit 2, not a panic.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // Joining the host's mount namespace (under `ip netns exec`) needs a single-threaded
    // process: do it before anything starts a thread.
    let mounts = director_control::state::prepare_mounts();
    cli::run(args, mounts)
}
