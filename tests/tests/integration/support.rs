//! What several areas' tests share and the library has no business holding.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The `director` binary of this workspace, built once per test process (cargo builds
/// bins only for their own package's integration tests, not for this package's).
pub fn director_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(&cargo)
            .args(["build", "-p", "director", "--bin", "director"])
            .current_dir(&root)
            .output()
            .expect("running cargo build -p director");
        assert!(
            out.status.success(),
            "`cargo build -p director` failed; the CLI tests drive that binary:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // target/debug/deps/integration-HASH -> target/debug/director
        let exe = std::env::current_exe().expect("test executable path");
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps")
            .join("director");
        assert!(bin.exists(), "{} is missing after the build", bin.display());
        bin
    })
}
