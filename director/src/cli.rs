//! Dispatch: ipvsadm syntax (invoked as `ipvsadm`, or arguments starting with `-`) or
//! the director's own subcommands.

use std::{
    ffi::{OsStr, OsString},
    os::unix::ffi::OsStrExt as _,
    path::PathBuf,
    process::ExitCode,
};

use crate::ipvsadm;
use aya::programs::XdpMode;
use clap::{Parser, Subcommand, ValueEnum};
use director_control::state::{self, AttachOptions, StateError, StateOptions};

#[derive(Parser)]
#[command(
    name = "director",
    version,
    about = "An LVS-style layer-4 load balancer on XDP",
    long_about = "An LVS-style layer-4 load balancer on XDP.\n\n\
        It also accepts ipvsadm's command line (`director -A -t VIP:80 -s mh`, or run it through a link named ipvsadm)."
)]
struct Cli {
    /// State directory on bpffs (default: one per network namespace under /sys/fs/bpf/director).
    #[arg(long, global = true, env = state::ENV_BPFFS)]
    bpffs: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// Driver (native) XDP.
    Native,
    /// Generic (skb) XDP: works everywhere, slower.
    Generic,
}

impl From<Mode> for XdpMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Native => XdpMode::Driver,
            Mode::Generic => XdpMode::Skb,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Load the data path on interfaces (or upgrade it in place) and pin it: it keeps
    /// forwarding after this command exits.
    Attach {
        /// Interfaces: the client-facing one, and for NAT the real-server-facing one.
        #[arg(required = true, num_args = 1..=8)]
        interfaces: Vec<String>,
        /// XDP mode of the named interfaces. Default: native for a new attachment; an
        /// attached interface keeps its mode unless this asks for another.
        #[arg(long, value_enum)]
        mode: Option<Mode>,
        /// Connection table entries, a power of two (default 2097152; fixed while
        /// attached).
        #[arg(long)]
        conn_table: Option<u32>,
        /// Maglev table size per service, a prime (fixed while attached).
        #[arg(long)]
        maglev_size: Option<u32>,
        /// Virtual service slots (fixed while attached; default 256).
        #[arg(long)]
        max_services: Option<u32>,
        /// Real servers over all services (fixed while attached; default 16384).
        #[arg(long)]
        max_reals: Option<u32>,
        /// Persistence template entries (fixed while attached; default 65536).
        #[arg(long)]
        persist_table: Option<u32>,
    },
    /// Remove the data path from interfaces; with none, remove it everywhere and drop
    /// all state (connections are forgotten).
    Detach { interfaces: Vec<String> },
    /// IPIP, GRE and GUE decapsulation for real servers whose kernel lacks the ipip, gre
    /// or fou module.
    Decap {
        #[command(subcommand)]
        action: DecapAction,
    },
    /// The virtual services and real servers: weight, state (up / quiescent), method,
    /// connections and counters (ipvsadm's view: `director -L -n`).
    List {
        /// A stable JSON document instead (schema: docs/cli.md).
        #[arg(long)]
        json: bool,
    },
    /// What is attached where, versions, table sizes and fill, VIPs not announced.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the health-check daemon: declare the services of a config file, check the
    /// reals, set their weights (docs/daemon.md).
    Daemon(director_daemon::DaemonArgs),
    /// Switch the data path's debug trace (one log record per scheduled flow) on or off;
    /// off by default. Read it with `director log`.
    Debug {
        #[arg(value_enum)]
        switch: Switch,
    },
    /// Show or set the flood limit: new flows per second per CPU above which the rest of
    /// that second's new DR and TUN flows are forwarded by the consistent hash without
    /// a connection entry, and new NAT flows never displace established connections
    /// (0: no limit; default 50000; docs/datapath.md, "Floods").
    FloodLimit { limit: Option<u32> },
    /// Follow the data path's log records (misconfiguration warnings; with `director
    /// debug on`, every scheduled flow) until interrupted.
    Log,
    /// The VLANs whose tagged frames are balanced; tagged frames of other VLANs pass to
    /// the kernel untouched (untagged frames are always balanced). Without an argument,
    /// print them.
    Vlan {
        /// VLAN ids 1-4094, comma-separated (the whole set), or `none`.
        vlans: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Switch {
    On,
    Off,
}

#[derive(Subcommand)]
enum DecapAction {
    /// Decapsulate IP-in-IP (IPIP, 6in4, 4in6, IPv6-in-IPv6), GRE (and GUE with
    /// --gue-port) arriving on IFACE from the directors and pass the inner packet to the
    /// kernel.
    Attach {
        interface: String,
        /// The directors' addresses, IPv4 or IPv6 (the outer source of their tunnels,
        /// e.g. the address of their real-facing interface): tunnel packets from anyone
        /// else are dropped.
        #[arg(long, required = true, value_delimiter = ',', num_args = 1..)]
        from: Vec<std::net::IpAddr>,
        /// Also unwrap GUE arriving on this UDP port (the directors' --tun-port); other
        /// UDP is the kernel's.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        gue_port: Option<u16>,
        /// Default: native for a new attachment; an attached interface keeps its mode
        /// unless this asks for another.
        #[arg(long, value_enum)]
        mode: Option<Mode>,
    },
    /// Stop decapsulating on IFACE.
    Detach { interface: String },
}

/// The ipvsadm arguments when the command line is ipvsadm's: run through a link named
/// `ipvsadm`, or a first argument (after an optional `--bpffs DIR`) starting with `-`.
/// Returns (state directory flag, ipvsadm arguments, invoked as director).
fn ipvsadm_args(args: &[OsString]) -> Option<(Option<PathBuf>, Vec<OsString>, bool)> {
    let prog = args.first()?;
    let name = std::path::Path::new(prog).file_name()?;
    let mut rest = &args[1..];
    if name == "ipvsadm" {
        return Some((None, rest.to_vec(), false));
    }
    let mut bpffs = None;
    match rest.first().map(|a| a.as_bytes()) {
        Some(b"--bpffs") if rest.len() >= 2 => {
            bpffs = Some(PathBuf::from(&rest[1]));
            rest = &rest[2..];
        }
        Some(a) if a.starts_with(b"--bpffs=") => {
            bpffs = Some(PathBuf::from(OsStr::from_bytes(&a[b"--bpffs=".len()..])));
            rest = &rest[1..];
        }
        _ => {}
    }
    let first = rest.first()?.as_bytes();
    (first.starts_with(b"-") && first != b"-").then(|| (bpffs, rest.to_vec(), true))
}

/// ipvsadm's words are text: an argument that is not UTF-8 is a command-line error
/// (exit 2, as ipvsadm's for an argument it cannot read), named by its position on the
/// command line (`first` is the position of the first of `args`).
fn utf8_args(prog: &str, args: Vec<OsString>, first: usize) -> Result<Vec<String>, String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            a.into_string().map_err(|a| {
                format!(
                    "{prog}: argument {} is not valid UTF-8: {}",
                    first + i,
                    director_control::text::cut(&a.to_string_lossy())
                )
            })
        })
        .collect()
}

pub fn run(args: Vec<OsString>, mounts: Result<(), StateError>) -> ExitCode {
    if let Some((bpffs, ipvsadm_args, director_mode)) = ipvsadm_args(&args) {
        let prog = args[0].to_string_lossy();
        let first = args.len() - ipvsadm_args.len();
        let ipvsadm_args = match utf8_args(&prog, ipvsadm_args, first) {
            Ok(a) => a,
            Err(message) => {
                eprintln!("{message}");
                return ExitCode::from(2);
            }
        };
        let state = StateOptions::from_env(bpffs);
        let mounts = match mounts {
            Err(e) if state.bpffs.is_none() => Some(e.to_string()),
            _ => None,
        };
        let code = ipvsadm::run(&prog, &ipvsadm_args, &state, mounts, director_mode);
        return ExitCode::from(code);
    }
    // clap reports an argument that must be text and is not UTF-8 (exit 2); paths
    // (--bpffs, --config...) stay OS strings.
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // Help and short errors as clap prints them (colours included); an error that
        // echoes a huge argument, cut.
        Err(e)
            if !e.use_stderr()
                || director_control::text::cut(&e.to_string()).len() == e.to_string().len() =>
        {
            e.exit()
        }
        Err(e) => {
            eprint!("{}", director_control::text::cut(&e.to_string()));
            return ExitCode::from(e.exit_code() as u8);
        }
    };
    let state = StateOptions::from_env(cli.bpffs);
    // The daemon reports a missing bpffs itself, and `--check` needs none.
    if let Command::Daemon(args) = cli.command {
        return director_daemon::main(args, state);
    }
    if let Err(e) = mounts
        && state.bpffs.is_none()
    {
        return fail(&e.into());
    }
    let result: anyhow::Result<()> = match cli.command {
        Command::Attach {
            interfaces,
            mode,
            conn_table,
            maglev_size,
            max_services,
            max_reals,
            persist_table,
        } => state::attach(
            &state,
            &AttachOptions {
                interfaces,
                mode: mode.map(Into::into),
                conn_table,
                table_size: maglev_size,
                max_services,
                max_reals,
                persist_table,
            },
        )
        .map(print_lines)
        .map_err(Into::into),
        Command::Detach { interfaces } => state::detach(&state, &interfaces)
            .map_err(anyhow::Error::from)
            .map(|()| {
                // All state is gone: so is any interrupted writer's unfinished work.
                if interfaces.is_empty()
                    && let Ok(marker) = state.writer_marker()
                {
                    let _ = std::fs::remove_file(marker);
                }
            }),
        Command::List { json } => state
            .open_control()
            .map_err(anyhow::Error::from)
            .and_then(|c| crate::report::list(&c, json))
            .map(|text| print!("{text}")),
        Command::Status { json } => crate::report::status_doc(&state).and_then(|doc| {
            if json {
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print!("{}", crate::report::status_text(&doc));
            }
            Ok(())
        }),
        Command::Daemon(_) => unreachable!("handled above"),
        Command::Debug { switch } => {
            write_setting(&state, |c| c.set_debug(matches!(switch, Switch::On)))
        }
        Command::Vlan { vlans } => (|| {
            let Some(list) = vlans else {
                let now = state.open_control()?.vlans()?;
                let ids: Vec<String> = now.iter().map(u16::to_string).collect();
                println!(
                    "{}",
                    if ids.is_empty() {
                        "none".into()
                    } else {
                        ids.join(",")
                    }
                );
                return Ok(());
            };
            let ids = parse_vlans(&list)?;
            write_setting(&state, |c| c.set_vlans(&ids))
        })(),
        Command::FloodLimit { limit: None } => state
            .open_control()
            .map_err(anyhow::Error::from)
            .and_then(|c| Ok(c.flood_limit()?))
            .map(|n| println!("{n}")),
        Command::FloodLimit { limit: Some(n) } => write_setting(&state, |c| c.set_flood_limit(n)),
        Command::Log => {
            env_logger::Builder::new()
                .filter_level(log::LevelFilter::Trace)
                .format_timestamp_millis()
                .init();
            // Runs until interrupted (SIGINT ends the process; nothing to clean up).
            state::follow_log(&state, || false).map_err(Into::into)
        }
        Command::Decap { action } => match action {
            DecapAction::Attach {
                interface,
                from,
                gue_port,
                mode,
            } => state::decap_attach(&state, &interface, mode.map(Into::into), &from, gue_port)
                .map(print_lines)
                .map_err(Into::into),
            DecapAction::Detach { interface } => {
                state::decap_detach(&state, &interface).map_err(Into::into)
            }
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// `none`, or VLAN ids separated by commas.
fn parse_vlans(list: &str) -> anyhow::Result<Vec<u16>> {
    if list == "none" {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(|v| {
            v.trim()
                .parse::<u16>()
                .ok()
                .filter(|id| (1..=director_control::control::MAX_VLAN_ID).contains(id))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "invalid VLAN id {:?}: expected 1-4094, comma-separated, or none",
                        v.chars().take(32).collect::<String>()
                    )
                })
        })
        .collect()
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!(
        "director: {}",
        director_control::text::cut(&format!("{e:#}"))
    );
    ExitCode::FAILURE
}

/// What a command did, one line each.
fn print_lines(lines: Vec<String>) {
    for l in lines {
        println!("{l}");
    }
}

/// One setting changed in a writer's session, as ipvsadm and the daemon write: it waits
/// for other writers and completes an interrupted one's change first. A setting is one
/// map write: a failure leaves nothing half done.
fn write_setting(
    state: &StateOptions,
    change: impl FnOnce(&mut director_control::Control) -> Result<(), director_control::ControlError>,
) -> anyhow::Result<()> {
    let mut session = state.begin_write()?;
    if let Some(r) = session.repaired() {
        eprintln!(
            "director: the previous change was interrupted; completed it ({} orphaned real slots cleared, {} service tables rebuilt)",
            r.slots_cleared, r.tables_rebuilt
        );
    }
    let result = change(&mut session);
    result.and(session.finish())?;
    Ok(())
}
