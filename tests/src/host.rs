//! What tests and benchmarks need from the host outside any lab: a bpffs directory of
//! their own for pinned maps, and pinning a thread to one CPU (per-CPU maps, one CPU's
//! cost).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// A directory on bpffs for pinned maps, removed on drop. Named like a lab's
/// (`dlab<pid>-bench-<n>`), so the labs' housekeeping removes it if this process dies
/// before it can.
pub struct BpffsDir {
    path: PathBuf,
}

impl BpffsDir {
    pub fn new(tag: &str) -> Result<Self> {
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/dlab{}-bench-{tag}",
            std::process::id()
        ));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing the old {}", path.display()))?;
        }
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BpffsDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("could not remove {}: {e}", self.path.display());
        }
    }
}

/// Pins the calling thread to one CPU.
pub fn pin_thread(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET only writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("pinning a thread to CPU {cpu}"));
        }
    }
    Ok(())
}

/// Lets the calling thread run on every online CPU again.
pub fn unpin_thread() -> Result<()> {
    // SAFETY: as in pin_thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..online_cpus() {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).context("unpinning a thread");
        }
    }
    Ok(())
}

/// The calling thread kept on one CPU until this is dropped (then on every CPU again):
/// for a test whose packets must meet the same per-CPU map value (the flood limit's
/// count), which a thread moved between CPUs by the scheduler would not.
pub struct PinnedThread(());

impl PinnedThread {
    pub fn to(cpu: usize) -> Result<Self> {
        pin_thread(cpu)?;
        Ok(Self(()))
    }
}

impl Drop for PinnedThread {
    fn drop(&mut self) {
        if let Err(e) = unpin_thread() {
            eprintln!("{e:#}");
        }
    }
}

/// Online CPUs of the machine (not of this thread's affinity mask, which
/// `available_parallelism` would report once a thread is pinned).
pub fn online_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n < 1 { 1 } else { n as usize }
}
