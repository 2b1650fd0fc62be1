//! The `director` binary: ipvsadm's command line (also when invoked as `ipvsadm`), plus
//! the director's own commands (attach, detach, status, decap, list, daemon).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // Joining the host's mount namespace (under `ip netns exec`) needs a single-threaded
    // process: do it before anything starts a thread.
    let mounts = director::state::prepare_mounts();
    cli::run(args, mounts)
}
