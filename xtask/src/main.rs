//! Contributor and CI commands: `cargo xtask setup|build|test|demo|bench`.
//! Wrappers only; no product logic lives here.

mod setup;

use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Set up, build, test, demo and benchmark the director"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and the tests need (idempotent; seconds when done).
    Setup,
    /// Build everything, including the XDP programs.
    Build,
    /// Every check and test: fmt, clippy, unit tests, packet fixtures, lab tests (root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// The lab demo: namespaces, a director and real servers, traffic through every
    /// forwarding mode, the stats table, a failover.
    Demo {
        /// Leave the lab up and print how to poke at it.
        #[arg(long)]
        keep: bool,
        /// The scale-out demo instead: three directors behind an ECMP router, announcing
        /// the VIP through BIRD; one dies and the router routes around it (BFD).
        #[arg(long)]
        scale_out: bool,
    },
    /// Benchmarks (they report; they never fail on a number).
    Bench,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    setup::run()?;
    match cli.command {
        Cmd::Setup => Ok(()),
        Cmd::Build => cargo(&["build", "--workspace", "--all-targets"]),
        Cmd::Test { args } => {
            setup::require_root("the tests load XDP programs and build network namespaces")?;
            cargo(&["fmt", "--all", "--check"])
                .context("formatting differs: run `cargo fmt --all`")?;
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            // The XDP crate's modules only exist for the BPF target: the host clippy run
            // above sees none of them.
            nightly_cargo(&[
                "clippy",
                "-p",
                "director-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--target-dir",
                "target/bpf-clippy",
                "--",
                "-D",
                "warnings",
            ])?;
            let mut test = vec!["test", "--workspace", "--"];
            test.extend(args.iter().map(String::as_str));
            cargo(&test)
        }
        Cmd::Demo { keep, scale_out } => {
            setup::require_root("the demo builds network namespaces and attaches XDP programs")?;
            // The demo drives the `director` binary, which `cargo run` of the demo does
            // not build by itself.
            cargo(&["build", "--quiet", "-p", "director", "--bins"])?;
            let mut args = vec!["run", "--quiet", "-p", "director-bench", "--bin", "demo"];
            if keep || scale_out {
                args.push("--");
            }
            if keep {
                args.push("--keep");
            }
            if scale_out {
                args.push("--scale-out");
            }
            cargo(&args)
        }
        Cmd::Bench => {
            setup::require_root("the benchmarks load XDP programs")?;
            cargo(&["run", "--release", "-p", "director-bench", "--bin", "bench"])
        }
    }
}

pub fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    run_status(
        Command::new(&cargo).args(args),
        &format!("cargo {}", args.join(" ")),
    )
}

/// `cargo` of the nightly toolchain (the one that builds the XDP programs), through
/// rustup as aya-build runs it.
fn nightly_cargo(args: &[&str]) -> Result<()> {
    eprintln!("xtask: cargo +nightly {}", args.join(" "));
    run_status(
        Command::new("rustup")
            .args(["run", "nightly", "cargo"])
            .args(args)
            .env_remove("RUSTC"),
        &format!("cargo +nightly {}", args.join(" ")),
    )
}

fn run_status(cmd: &mut Command, what: &str) -> Result<()> {
    // bpf-linker lives in cargo's bin directory, which a fresh shell may not have on PATH.
    let path = std::env::join_paths(std::iter::once(setup::cargo_home().join("bin")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))?;
    let status = cmd
        .env("PATH", path)
        .status()
        .with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("`{what}` failed ({status})");
    }
    Ok(())
}
