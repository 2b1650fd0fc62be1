//! `cargo xtask setup`: everything the build, tests and demo need, installed when
//! missing, skipped in seconds when present. Each step says what it did; a step that
//! cannot be done says what, why and how to fix it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Debian packages the tests and the demo run.
const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "iputils-ping",
    "tcpdump",
    "curl",
    "procps",
    "keepalived",
    // cargo xtask bench: the kernel's own NAT (DNAT with conntrack) as a baseline, and
    // the font the report's plots are drawn with
    "nftables",
    "fonts-dejavu-core",
    // the scale-out lab and demo: a BGP speaker (with BFD) per director and on the router
    "bird2",
];

pub fn run() -> Result<()> {
    nightly_rust_src()?;
    bpf_linker()?;
    debian_packages()?;
    bpffs()?;
    Ok(())
}

pub fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("must run as root: {why}. Fix: run it again with sudo or as root");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn status(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed ({st})");
    }
    Ok(())
}

/// The nightly toolchain builds the XDP crate with -Z build-std=core, which needs
/// rust-src, and lints it for its own target (`cargo xtask test`), which needs clippy.
fn nightly_rust_src() -> Result<()> {
    let installed = output(Command::new("rustup").args(["component", "list", "--toolchain", "nightly", "--installed"]))
        .context("the nightly toolchain is needed to build the XDP programs (bpfel-unknown-none). Fix: `rustup toolchain install nightly --component rust-src,clippy`")?;
    for component in ["rust-src", "clippy"] {
        if installed.lines().any(|l| l.starts_with(component)) {
            continue;
        }
        eprintln!("setup: installing {component} for the nightly toolchain");
        status(Command::new("rustup").args(["component", "add", component, "--toolchain", "nightly"]))
            .with_context(|| format!("could not add {component} to the nightly toolchain. Fix: `rustup component add {component} --toolchain nightly`"))?;
    }
    Ok(())
}

/// The LLVM shared library inside the nightly toolchain: the LLVM that produced the
/// bitcode bpf-linker links, so the two always agree.
fn nightly_llvm() -> Result<(PathBuf, u32)> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let lib_dir = Path::new(sysroot.trim()).join("lib");
    let lib = std::fs::read_dir(&lib_dir)
        .with_context(|| format!("reading {}", lib_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .with_context(|| {
            format!(
                "no libLLVM.so.*-rust-* in {}: this nightly does not ship LLVM as a shared library",
                lib_dir.display()
            )
        })?;
    let vv = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .context("`rustc +nightly -vV` does not name its LLVM version")?;
    Ok((lib, major))
}

pub fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        })
}

/// bpf-linker, linked against the nightly's own libLLVM (crates.io's default wants a
/// system LLVM newer than Debian has).
fn bpf_linker() -> Result<()> {
    let (lib, major) = nightly_llvm()?;
    let lib_name = lib
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let linker = cargo_home().join("bin").join("bpf-linker");
    if linker.exists() {
        let works = Command::new(&linker)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        let ldd = output(Command::new("ldd").arg(&linker)).unwrap_or_default();
        if works && ldd.contains(&lib_name) {
            return Ok(());
        }
        eprintln!("setup: bpf-linker does not use this nightly's LLVM ({lib_name}); rebuilding it");
    }
    // A stable prefix (not /tmp): the binary finds libLLVM through an rpath into it.
    let prefix = cargo_home().join("director-llvm").join(&lib_name);
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in ["libLLVM.so", lib_name.as_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&lib, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!(
        "setup: building bpf-linker against {} (LLVM {major}; takes a few minutes)",
        lib.display()
    );
    status(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--locked", "--force", "--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )
    .context("building bpf-linker failed. It needs a C/C++ compiler (gcc, g++) and network access to crates.io")
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    require_root(&format!("installing Debian packages {}", missing.join(" ")))?;
    eprintln!("setup: installing Debian packages: {}", missing.join(" "));
    status(Command::new("apt-get").args(["update", "-q"]))
        .context("apt-get update failed: Debian's package servers must be reachable")?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("apt-get install {} failed", missing.join(" ")))
}

/// Pinned maps live on bpffs; mount it where the system did not.
fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return Ok(());
    }
    require_root("mounting bpffs on /sys/fs/bpf")?;
    eprintln!("setup: mounting bpffs on /sys/fs/bpf");
    status(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("mounting bpffs failed: the kernel needs CONFIG_BPF_SYSCALL")
}
