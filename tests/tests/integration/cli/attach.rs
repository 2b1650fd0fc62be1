//! `director attach` as an operator meets it: refused attachments leave nothing behind,
//! upgrades reach every attached interface, mode changes are explicit and said, and one
//! state directory is one state however it is spelled.
//!
//! Each test builds its own lab (uniquely named namespaces, removed on drop) and keeps the
//! director's state under the lab's bpffs directory; a guard detaches before the lab goes.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::Command,
};

use crate::support::director_bin;
use aya::programs::XdpMode;
use director_control::{Datapath, datapath::PROG_PASS};
use director_tests::{
    fixture::InNetns,
    lab::{Endpoint, Host, Lab, Topology},
};
use regex::Regex;

const VIP: &str = "10.0.0.100:80";

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A director host with eth0 and eth1 (veths to two peers), its state under the lab's
/// bpffs directory. Dropping it detaches what is left, then removes the lab.
struct Director {
    lab: Lab,
    state: PathBuf,
}

impl Director {
    fn new() -> Self {
        let topo = Topology::new()
            .host(Host::new("client"))
            .host(Host::new("peer"))
            .host(Host::new("director"))
            .veth(
                Endpoint::new("client", "eth0").addr(ip([10, 0, 0, 2]), 24),
                Endpoint::new("director", "eth0").addr(ip([10, 0, 0, 1]), 24),
            )
            .veth(
                Endpoint::new("peer", "eth0").addr(ip([10, 1, 0, 2]), 24),
                Endpoint::new("director", "eth1").addr(ip([10, 1, 0, 1]), 24),
            );
        let lab = Lab::build(&topo).expect("lab");
        let state = lab.bpffs_dir().join("state");
        Director { lab, state }
    }

    /// `director --bpffs BPFFS ARGS` in the director's network namespace.
    fn run_with(&self, bpffs: &Path, args: &[&str]) -> Run {
        let out = Command::new("nsenter")
            .arg(format!(
                "--net={}",
                self.lab.ns("director").path().display()
            ))
            .arg("--")
            .arg(director_bin())
            .arg("--bpffs")
            .arg(bpffs)
            .args(args)
            .output()
            .expect("running director");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(&self.state, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(r.code, 0, "director {args:?}: {}{}", r.stdout, r.stderr);
        r.stdout
    }

    /// A refused command: its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_ne!(r.code, 0, "director {args:?} succeeded: {}", r.stdout);
        r.stderr
    }

    /// The XDP attachment of an interface as `ip link` shows it ("xdp", "xdpgeneric"),
    /// with its program id.
    fn xdp(&self, ifname: &str) -> Option<(String, u32)> {
        let out = self
            .lab
            .ns("director")
            .exec_ok(&["ip", "link", "show", "dev", ifname])
            .unwrap();
        let re = Regex::new(r"(?s) (xdpgeneric|xdpdrv|xdp) .*?prog/xdp id (\d+)").unwrap();
        re.captures(&out)
            .map(|c| (c[1].to_owned(), c[2].parse().unwrap()))
    }

    /// `status`'s link lines: interface -> (program id, mode).
    fn links(&self) -> Vec<(String, u32, String)> {
        let re = Regex::new(r"(?m)^  (\S+)  link \d+  program (\d+)  tag \S+  (\S+)").unwrap();
        re.captures_iter(&self.ok(&["status"]))
            .map(|c| (c[1].to_owned(), c[2].parse().unwrap(), c[3].to_owned()))
            .collect()
    }

    fn nothing_left(&self, after: &str) {
        assert!(
            !self.state.exists(),
            "{after}: the state directory is left: {:?}",
            std::fs::read_dir(&self.state).map(|d| d.count())
        );
        let status = self.ok(&["status"]);
        assert!(status.contains("not attached here"), "{after}: {status}");
        for ifname in ["eth0", "eth1", "lo"] {
            assert_eq!(
                self.xdp(ifname),
                None,
                "{after}: an XDP program on {ifname}"
            );
        }
        // Nothing to configure: ipvsadm commands say so.
        let r = self.run(&["-A", "-t", VIP]);
        assert_eq!(
            r.code, 2,
            "{after}: -A on no director: {}{}",
            r.stdout, r.stderr
        );
    }
}

impl Drop for Director {
    fn drop(&mut self) {
        if self.state.exists() {
            let r = self.run(&["detach"]);
            if r.code != 0 {
                eprintln!("director detach failed: {}", r.stderr);
            }
        }
    }
}

/// A program of another tool, natively on `ifname` of the director's namespace (held
/// while the value lives).
fn other_program_on(d: &Director, ifname: &str) -> Datapath {
    let mut other = Datapath::load_helpers().expect("helper programs");
    let _in = InNetns::enter(&d.lab.ns("director").path());
    let idx = d.lab.ifindex("director", ifname);
    other.attach(PROG_PASS, idx, XdpMode::Driver).unwrap();
    other
}

#[test]
fn a_refused_attach_leaves_the_system_as_it_was() {
    director_tests::require_root();
    let d = Director::new();

    // The driver has no native XDP: named, with the way out, and nothing is left.
    let e = d.fails(&["attach", "lo", "--conn-table", "4096"]);
    assert!(e.contains(" lo "), "{e}");
    assert!(e.contains("--mode generic"), "{e}");
    assert!(e.contains("nothing was changed"), "{e}");
    assert!(!e.contains("interface 1"), "{e}");
    d.nothing_left("attach lo");

    // Sizes the loader refuses.
    let e = d.fails(&["attach", "eth0", "--conn-table", "1000"]);
    assert!(e.contains("not a power of two"), "{e}");
    d.nothing_left("attach --conn-table 1000");

    // The decapsulation program, likewise.
    let e = d.fails(&["decap", "attach", "lo", "--from", "10.0.0.1"]);
    assert!(
        e.contains("--mode generic") && e.contains("nothing was changed"),
        "{e}"
    );
    d.nothing_left("decap attach lo");

    // An interface that does not exist.
    let e = d.fails(&["attach", "eth0", "nosuch0"]);
    assert!(e.contains("nosuch0 does not exist"), "{e}");
    d.nothing_left("attach nosuch0");

    // Another program holds eth1: eth0, named first, is not left attached.
    let other = other_program_on(&d, "eth1");
    let held = d.xdp("eth1").expect("the other program");
    let e = d.fails(&["attach", "eth0", "eth1", "--conn-table", "4096"]);
    assert!(e.contains("eth1"), "{e}");
    assert!(e.contains("another XDP program is attached to eth1"), "{e}");
    assert!(!d.state.exists(), "the state directory is left");
    assert_eq!(d.xdp("eth0"), None);
    assert_eq!(d.xdp("eth1"), Some(held.clone()), "the other program stays");

    // Sizes are not fixed by the failed attempts: any sizes attach.
    d.ok(&["attach", "eth0", "--conn-table", "8192"]);
    d.ok(&["-A", "-t", VIP, "-s", "rr"]);
    d.ok(&["-a", "-t", VIP, "-r", "10.1.0.2"]);
    let saved = d.ok(&["-S", "-n"]);
    let before = d.links();
    assert_eq!(before.len(), 1, "{before:?}");

    // Attached: adding the busy interface changes nothing, not even the program eth0 runs.
    let e = d.fails(&["attach", "eth0", "eth1"]);
    assert!(e.contains("another XDP program is attached to eth1"), "{e}");
    assert_eq!(d.links(), before);
    assert_eq!(d.xdp("eth0").map(|x| x.1), Some(before[0].1));
    assert_eq!(d.xdp("eth1"), Some(held));
    assert_eq!(d.ok(&["-S", "-n"]), saved);
    drop(other);

    // Freed, it attaches; everything now runs one program.
    d.ok(&["attach", "eth0", "eth1"]);
    let after = d.links();
    assert_eq!(after.len(), 2, "{after:?}");
    assert_eq!(after[0].1, after[1].1, "{after:?}");
    d.ok(&["detach"]);
    assert!(!d.state.exists());
}

#[test]
fn attaching_again_upgrades_every_interface_and_changes_a_mode_only_when_asked() {
    director_tests::require_root();
    let d = Director::new();
    d.ok(&["attach", "eth0", "eth1", "--conn-table", "4096"]);
    let first = d.links();
    assert_eq!(
        first
            .iter()
            .map(|l| (&l.0[..], &l.2[..]))
            .collect::<Vec<_>>(),
        [("eth0", "native"), ("eth1", "native")]
    );

    // Naming one interface upgrades both: one program everywhere, and it says so.
    let out = d.ok(&["attach", "eth0"]);
    assert!(out.contains("eth0: program replaced in place"), "{out}");
    assert!(
        out.contains("eth1: program replaced in place as well"),
        "{out}"
    );
    let second = d.links();
    assert_eq!(second[0].1, second[1].1, "{second:?}");
    assert_ne!(
        second[0].1, first[0].1,
        "a new program: {first:?} -> {second:?}"
    );

    // A generic attachment keeps its mode without --mode, and says so.
    let out = d.ok(&["attach", "lo", "--mode", "generic"]);
    assert!(out.contains("lo: attached (generic mode)"), "{out}");
    let out = d.ok(&["attach", "lo"]);
    assert!(
        out.contains("lo: program replaced in place, generic mode kept"),
        "{out}"
    );
    assert_eq!(d.xdp("lo").map(|x| x.0).as_deref(), Some("xdpgeneric"));

    // An explicit other mode changes it, and says so.
    let out = d.ok(&["attach", "eth1", "--mode", "generic"]);
    assert!(
        out.contains("eth1: mode changed from native to generic"),
        "{out}"
    );
    assert_eq!(d.xdp("eth1").map(|x| x.0).as_deref(), Some("xdpgeneric"));
    let third = d.links();
    let modes: Vec<(&str, &str)> = third.iter().map(|l| (&l.0[..], &l.2[..])).collect();
    assert_eq!(
        modes,
        [("eth0", "native"), ("eth1", "generic"), ("lo", "generic")]
    );
    assert!(third.iter().all(|l| l.1 == third[0].1), "{third:?}");

    // A mode change the driver refuses leaves the previous program in the previous mode.
    let e = d.fails(&["attach", "lo", "--mode", "native"]);
    assert!(e.contains("--mode generic"), "{e}");
    assert!(e.contains("nothing was changed"), "{e}");
    assert_eq!(d.links(), third);
    assert_eq!(d.xdp("lo").map(|x| x.0).as_deref(), Some("xdpgeneric"));
}

#[test]
fn a_directory_that_is_not_a_bpffs_is_refused_and_left_as_it_was() {
    director_tests::require_root();
    let d = Director::new();
    let scratch = std::env::temp_dir().join(format!("director-not-bpffs-{}", d.lab.id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir(&scratch).unwrap();
    let inside = scratch.join("state");
    for args in [
        &["attach", "eth0"][..],
        &["decap", "attach", "eth0", "--from", "10.0.0.1"],
        &["status"],
        &["list"],
        &["debug", "on"],
    ] {
        let r = d.run_with(&inside, args);
        assert_ne!(r.code, 0, "{args:?}: {}", r.stdout);
        assert!(
            r.stderr.contains("is not on a BPF filesystem"),
            "{args:?}: {}",
            r.stderr
        );
    }
    let r = d.run_with(&inside, &["-A", "-t", VIP]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("is not on a BPF filesystem"),
        "{}",
        r.stderr
    );
    // `..` out of a bpffs is not on one either.
    let climbing = d.lab.bpffs_dir().join("new/../../../../tmp/x");
    let r = d.run_with(&climbing, &["attach", "eth0"]);
    assert!(
        r.stderr.contains("is not on a BPF filesystem"),
        "{}",
        r.stderr
    );
    // On a bpffs, missing directories above the state are made, and taken away again
    // when the attach fails.
    let deep = d.lab.bpffs_dir().join("deep");
    let e = d.run_with(&deep.join("er/state"), &["attach", "lo"]).stderr;
    assert!(e.contains("nothing was changed"), "{e}");
    assert!(!deep.exists(), "{} is left", deep.display());
    let r = d.run_with(
        &deep.join("er/state"),
        &["attach", "eth0", "--conn-table", "4096"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = d.run_with(&deep.join("er/state"), &["detach"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
    std::fs::remove_dir_all(&scratch).unwrap();
    assert!(left.is_empty(), "left in {}: {left:?}", scratch.display());
    assert_eq!(d.xdp("eth0"), None);
}

#[test]
fn every_spelling_of_the_state_directory_is_one_state() {
    director_tests::require_root();
    let d = Director::new();
    let base = d.state.to_string_lossy().into_owned();
    let slash = format!("{base}/");
    let dotted = format!("{}/./state/x/..", d.lab.bpffs_dir().display());
    d.ok(&["attach", "eth0", "--conn-table", "4096"]);
    let state_line = |bpffs: &str| -> String {
        let r = d.run_with(Path::new(bpffs), &["status"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        r.stdout.lines().nth(1).unwrap_or_default().to_owned()
    };
    let want = format!("state: {base} (attached)");
    for spelling in [&base, &slash, &dotted] {
        assert_eq!(state_line(spelling), want, "{spelling}");
    }
    // A writer interrupted under one spelling leaves its marker; a writer under another
    // finds it and completes the change (a real slot no service holds is cleared).
    let marker = |bpffs: &str| {
        director_control::state::StateOptions {
            bpffs: Some(bpffs.into()),
        }
        .writer_marker()
        .unwrap()
    };
    assert_eq!(marker(&slash), marker(&base));
    assert_eq!(marker(&dotted), marker(&base));
    // Relative to the working directory, too.
    let r = Command::new("nsenter")
        .arg(format!("--net={}", d.lab.ns("director").path().display()))
        .arg("--")
        .arg(director_bin())
        .args(["--bpffs", "state", "status"])
        .current_dir(d.lab.bpffs_dir())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).lines().nth(1),
        Some(want.as_str())
    );
}

#[test]
fn messages_cut_a_huge_argument() {
    director_tests::require_root();
    let d = Director::new();
    d.ok(&["attach", "eth0", "--conn-table", "4096"]);
    let huge = "x".repeat(100_000);
    let digits = "9".repeat(100_000);
    let option = format!("--{huge}");
    let line = format!("-A -t {huge}\n");
    for (args, input) in [
        (vec!["attach", &huge], None),
        (vec!["attach", "eth0", "--conn-table", &digits], None),
        (vec![&huge[..]], None),
        (vec!["-A", "-t", VIP, "-p", &digits], None),
        (vec!["-A", "-t", VIP, &option], None),
        (vec!["-R"], Some(line.as_str())),
    ] {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", d.lab.ns("director").path().display()))
            .arg("--")
            .arg(director_bin())
            .arg("--bpffs")
            .arg(&d.state)
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().unwrap();
            if let Some(text) = input {
                stdin.write_all(text.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        let label: Vec<&str> = args.iter().map(|a| &a[..a.len().min(20)]).collect();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{label:?}");
        assert!(
            stderr.len() < 2_000,
            "{label:?}: a {} byte message: {}...",
            stderr.len(),
            &stderr[..300]
        );
        // The message still says what it is about, with both ends of the argument.
        assert!(stderr.contains("characters cut"), "{label:?}: {stderr}");
    }
    // Nothing was applied.
    assert_eq!(d.ok(&["-S", "-n"]), "");
}

/// Two spellings of the state and two run directories are one daemon: the second is
/// refused, and `reload` from the other run directory reaches the first.
#[test]
fn one_daemon_per_state_whatever_the_spelling_and_run_directory() {
    director_tests::require_root();
    let d = Director::new();
    d.ok(&["attach", "eth0", "--conn-table", "4096"]);
    let scratch = std::env::temp_dir().join(format!("director-daemon-{}", d.lab.id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir(&scratch).unwrap();
    let config = scratch.join("director.toml");
    std::fs::write(&config, "").unwrap();
    let daemon = |bpffs: &Path, run_dir: &str, extra: &[&str]| {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", d.lab.ns("director").path().display()))
            .arg("--")
            .arg(director_bin())
            .arg("--bpffs")
            .arg(bpffs)
            .arg("daemon")
            .arg("--config")
            .arg(&config)
            .arg("--run-dir")
            .arg(scratch.join(run_dir))
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let mut first = daemon(&d.state, "a", &[]).spawn().unwrap();
    // Stops the first daemon even when an assertion fails.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            // SAFETY: plain syscall on a child we spawned.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
    let pid_file = scratch.join("a").join(format!(
        "daemon{}.pid",
        d.state
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect::<String>()
    ));
    let started = director_tests::lab::wait_until(
        std::time::Duration::from_secs(10),
        "the first daemon to start",
        || pid_file.exists() || matches!(first.try_wait(), Ok(Some(_))),
    );
    let pid = first.id();
    let first = Stop(first);
    started.unwrap();
    assert!(pid_file.exists(), "the first daemon did not start");

    let other = format!("{}/", d.state.display());
    let out = exits(daemon(Path::new(&other), "b", &[]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second daemon ran: {stderr}");
    assert!(
        stderr.contains(&format!("another director daemon (pid {pid}")),
        "{stderr}"
    );

    // `reload` with its options after it, from the other run directory and spelling.
    let out = exits(daemon(Path::new(&other), "b", &["reload"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("reload signalled to pid {pid}")),
        "{stderr}"
    );
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", d.lab.ns("director").path().display()))
        .arg("--")
        .arg(director_bin())
        .arg("--bpffs")
        .arg(&other)
        .args(["daemon", "reload", "--config"])
        .arg(&config)
        .arg("--run-dir")
        .arg(scratch.join("b"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let out = exits(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("reload signalled to pid {pid}")),
        "{stderr}"
    );
    drop(first);
    let _ = std::fs::remove_dir_all(&scratch);
}

/// Run a command that must exit by itself (a daemon that should have been refused would
/// run on): killed and reported after a bounded wait.
fn exits(mut cmd: Command) -> std::process::Output {
    let mut child = cmd.spawn().unwrap();
    let done = director_tests::lab::wait_until(
        std::time::Duration::from_secs(20),
        "the command to exit",
        || matches!(child.try_wait(), Ok(Some(_))),
    );
    if done.is_err() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        done.is_ok(),
        "{cmd:?} was still running after 20 s (killed): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A real added with `-a` gets a managed neighbour entry (made by the director, resolved
/// by the kernel), `status` shows its state, and `-d` of the last real going through it
/// removes it.
#[test]
fn a_real_s_neighbour_entry_comes_and_goes_with_the_real_and_status_shows_it() {
    director_tests::require_root();
    let d = Director::new();
    d.ok(&["attach", "eth0", "eth1", "--conn-table", "4096"]);
    let neigh = || {
        d.lab
            .ns("director")
            .exec_ok(&["ip", "-d", "neigh", "show", "to", "10.1.0.2"])
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(neigh(), "", "no entry before the real is added");

    d.ok(&["-A", "-t", VIP, "-s", "rr"]);
    d.ok(&["-A", "-t", "10.0.0.100:81", "-s", "rr"]);
    d.ok(&["-a", "-t", VIP, "-r", "10.1.0.2", "-g"]);
    d.ok(&["-a", "-t", "10.0.0.100:81", "-r", "10.1.0.2", "-g"]);
    let entry = neigh();
    let mac = d
        .lab
        .mac("peer", "eth0")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    assert!(
        entry.contains(&mac) && entry.contains("managed") && entry.contains("proto 211"),
        "{entry}"
    );

    let status = d.ok(&["status"]);
    let line = status
        .lines()
        .skip_while(|l| *l != "real server neighbours:")
        .nth(1)
        .unwrap_or_else(|| panic!("no neighbours section: {status}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols.len(), 5, "{line}");
    assert_eq!(cols[0], "10.1.0.2");
    assert_eq!(cols[1], "eth1");
    assert!(
        ["REACHABLE", "STALE", "DELAY", "PROBE"].contains(&cols[2]),
        "{line}"
    );
    assert_eq!((cols[3], cols[4]), (&mac[..], "managed"), "{line}");
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["status", "--json"])).unwrap();
    assert_eq!(json["neighbours"][0]["real"], "10.1.0.2");
    assert_eq!(json["neighbours"][0]["managed"], true);
    assert_eq!(json["neighbours"][0]["via"], serde_json::Value::Null);

    // Still a real of the other service: the entry stays.
    d.ok(&["-d", "-t", VIP, "-r", "10.1.0.2"]);
    assert!(neigh().contains("managed"), "{}", neigh());
    // The last one goes: so does the entry.
    d.ok(&["-D", "-t", "10.0.0.100:81"]);
    assert_eq!(neigh(), "", "the entry outlived the real");
    assert!(!d.ok(&["status"]).contains("real server neighbours"));
}
