//! ipvsadm's command line over the director.
//!
//! `director -A -t 10.0.0.1:80 -s wrr` (any first argument starting with `-`), or the
//! binary run through a link named `ipvsadm`, behaves as ipvsadm 1.31: same options,
//! same output layouts byte for byte, same messages and exit codes (2 for command-line
//! errors, 255 for refused operations, 1 for listing a missing service), so scripts and
//! tools that drive ipvsadm (ldirectord) work unchanged. docs/cli.md lists every
//! difference.
//!
//! The pipeline, as in ripgrep's flags: [`lowargs`] records what was typed (popt's
//! splitting rules), [`hiargs`] turns it into one validated [`hiargs::Command`] with
//! ipvsadm's checks in ipvsadm's order, [`exec`] applies it through the control library,
//! [`format`] prints. `-R` feeds each line of its input through the same pipeline.

mod error;
mod exec;
pub mod format;
mod hiargs;
mod lowargs;
mod portnames;
pub mod snapshot;
#[cfg(test)]
mod tests;
mod usage;
mod values;

use std::io::Write as _;

use director_control::state::StateOptions;

#[cfg(test)]
use error::IpvsadmError;
use hiargs::{Command, Format, ListWhat};

/// The scheduler when `-s` is not given (ipvsadm's is wlc, which the director lacks):
/// Maglev over the whole connection (shown as `mh (mh-port)`).
pub const DEFAULT_SCHEDULER: &str = "mh";

/// Run one ipvsadm command line (`args` without the program name) and return the exit
/// code. `mounts` says why the state cannot be reached, if so; `director_mode` is false
/// when invoked as `ipvsadm` (no arguments then list the table, as ipvsadm does).
pub fn run(
    prog: &str,
    args: &[String],
    state: &StateOptions,
    mounts: Option<String>,
    director_mode: bool,
) -> u8 {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut session = exec::Session::new(prog, state, mounts, &mut out);
    session.director_mode = director_mode;
    let parsed = if args.is_empty() && !director_mode {
        Ok(Command::List {
            what: ListWhat::All,
            format: Format::default(),
        })
    } else {
        hiargs::parse(prog, &lowargs::split(args), session.names())
    };
    let result = parsed.and_then(|cmd| {
        // 64 KiB at a time (stdin's own buffer is bypassed for reads that large): `-R`
        // knows when the next line is at hand.
        let mut input = std::io::BufReader::with_capacity(1 << 16, std::io::stdin());
        session.execute(cmd, &mut input)
    });
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}", director_control::text::cut(&e.to_string()));
            e.exit_code()
        }
    };
    // After the error: the warnings of finishing (unresolved reals) concern lines that
    // were applied.
    session.finish();
    drop(session);
    let _ = out.flush();
    code
}

/// Parse one command line the way `run` does (tests), with a fixed port-name table.
#[cfg(test)]
pub fn parse_line(line: &str) -> Result<Command, IpvsadmError> {
    let names = portnames::PortNames::parse(
        "http 80/tcp www\nhttps 443/tcp\ndomain 53/udp\ndomain 53/tcp\n",
    );
    let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    hiargs::parse("ipvsadm", &lowargs::split(&args), &names)
}
