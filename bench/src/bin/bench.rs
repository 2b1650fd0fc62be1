//! `cargo xtask bench`: the benchmark suite (see `director_bench` and
//! docs/benchmarks.md). Writes target/bench/report.md and PNG plots, prints the report.
//! Benchmarks report; they never fail on a number. The run fails only when a part could
//! not measure what it was meant to (the report says which and why).
//!
//! Usage: bench [--quick] [--only testrun,scaling,e2e,control] [--calls EST,NEW] [--out DIR]
//!        bench --profile CASE   (loop part 1's cases matching CASE, for perf)

use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::{Context as _, Result, bail};
use director_bench::{
    Options, control, e2e,
    report::{self, Results},
    testrun,
};

struct Args {
    opts: Options,
    parts: Vec<String>,
    out: PathBuf,
}

const PARTS: [&str; 4] = ["testrun", "scaling", "e2e", "control"];

fn args() -> Result<Args> {
    let mut a = Args {
        opts: Options::default(),
        parts: PARTS.iter().map(|s| s.to_string()).collect(),
        out: default_out(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.opts.quick = true,
            "--profile" => {
                a.opts.profile = Some(it.next().context("--profile needs a case name")?);
                a.parts = vec!["testrun".into()];
            }
            "--only" => {
                let v = it.next().context("--only needs a list of parts")?;
                a.parts = v.split(',').map(str::to_owned).collect();
                for p in &a.parts {
                    if !PARTS.contains(&p.as_str()) {
                        bail!("unknown part {p:?} (parts: {})", PARTS.join(", "));
                    }
                }
            }
            "--calls" => {
                let v = it.next().context("--calls needs EST,NEW")?;
                let (est, new) = v
                    .split_once(',')
                    .and_then(|(e, n)| Some((e.parse().ok()?, n.parse().ok()?)))
                    .filter(|&(e, n): &(u32, u32)| e > 0 && n > 0)
                    .with_context(|| {
                        format!("--calls takes two positive counts, EST,NEW (got {v:?})")
                    })?;
                a.opts.calls = Some((est, new));
            }
            "--out" => a.out = PathBuf::from(it.next().context("--out needs a directory")?),
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [--only {}] [--calls EST,NEW] [--out DIR]\n       bench --profile CASE",
                    PARTS.join(",")
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(a)
}

/// target/bench of the workspace (this binary lives in target/<profile>/).
fn default_out() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("bench")))
        .unwrap_or_else(|| PathBuf::from("target/bench"))
}

fn command_line(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

fn run() -> Result<bool> {
    let a = args()?;
    let start = Instant::now();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut r = Results {
        opts: a.opts.clone(),
        started: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        seconds: 0.0,
        machine: format!(
            "Linux {}, {} CPUs, load {} at the start",
            command_line("uname", &["-r"]),
            director_bench::online_cpus(),
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        commit: command_line("git", &["describe", "--always", "--dirty"]),
        matrix: None,
        scaling: None,
        e2e: None,
        control: None,
        errors: Vec::new(),
    };
    let want = |p: &str| a.parts.iter().any(|x| x == p);
    let step = |name: &str, f: &mut dyn FnMut(&mut Results) -> Result<()>, r: &mut Results| {
        eprintln!("bench: {name}...");
        let t = Instant::now();
        if let Err(e) = f(r) {
            eprintln!("bench: {name} failed: {e:#}");
            r.errors.push((name.to_owned(), format!("{e:#}")));
        }
        eprintln!("bench: {name} took {:.0} s", t.elapsed().as_secs_f64());
    };
    if want("testrun") {
        step(
            "1. cost per packet",
            &mut |r| {
                r.matrix = testrun::matrix(&a.opts)?;
                Ok(())
            },
            &mut r,
        );
    }
    if want("scaling") {
        step(
            "2. scaling",
            &mut |r| {
                r.scaling = Some(testrun::scaling(&a.opts)?);
                Ok(())
            },
            &mut r,
        );
    }
    if want("e2e") {
        step(
            "3. end to end",
            &mut |r| {
                r.e2e = Some(e2e::run(&a.opts)?);
                Ok(())
            },
            &mut r,
        );
    }
    if want("control") {
        step(
            "4. control plane",
            &mut |r| {
                r.control = Some(control::run(&a.opts)?);
                Ok(())
            },
            &mut r,
        );
    }
    r.seconds = start.elapsed().as_secs_f64();
    if a.opts.profile.is_some() {
        return Ok(r.errors.is_empty());
    }
    let md = report::write(&r, &a.out)?;
    println!("{md}");
    eprintln!(
        "bench: report written to {}",
        a.out.join("report.md").display()
    );
    Ok(r.errors.is_empty())
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
