//! Builds the XDP programs (director-ebpf) for bpfel-unknown-none with the nightly
//! toolchain and bpf-linker, and puts the object in OUT_DIR. `cargo xtask setup`
//! installs both; AYA_BUILD_SKIP=1 skips this (for tools that only need the host code).
use anyhow::anyhow;

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("no workspace root"))?
        .join("director-ebpf");
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        // The library embeds the object: an empty one keeps host-only builds (check,
        // clippy, doc) compiling; loading it then fails with a parse error.
        let out = std::path::PathBuf::from(
            std::env::var_os("OUT_DIR").ok_or_else(|| anyhow!("no OUT_DIR"))?,
        )
        .join("director-xdp");
        if !out.exists() {
            std::fs::write(&out, [])?;
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    if which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker not found on PATH: the XDP programs cannot be linked. \
             Fix: run `cargo xtask setup` (it installs bpf-linker and the nightly rust-src)"
        ));
    }
    let root = root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "director-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("bpf-linker"))
        .find(|p| p.is_file())
}
