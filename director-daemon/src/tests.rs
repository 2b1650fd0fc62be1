//! The controller end to end against the in-memory maps: rise/fall, intervals,
//! quiescence and removal, fallback and quorum, slowstart, dynamic weights, reloads,
//! restarts and ownership. Checks are scripted (the network is not what is tested
//! here; each check type has its own tests against loopback servers) and time is
//! tokio's paused clock, so every timing below is exact and nothing sleeps for real.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::oneshot, task::JoinHandle, time::Instant};

use super::{
    ConfigSource, DaemonHandle, DaemonOptions, channel,
    check::{Outcome, Subject},
    config::{Capacity, CheckConfig},
    controller::Prober,
    maps::{MapStore, MemoryMaps},
    serve_with,
};
use director_control::{
    model::{Protocol, RealSpec, ServiceAddr, ServiceSpec},
    state::StateOptions,
};

/// What a scripted real answers.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Up,
    Down,
    Weight(u32),
}

#[derive(Default)]
struct Scripted {
    answers: Mutex<HashMap<SocketAddr, Answer>>,
    /// Every check made: (when, target).
    log: Mutex<Vec<(Instant, SocketAddr)>>,
}

impl Scripted {
    fn set(&self, target: &str, a: Answer) {
        self.answers
            .lock()
            .unwrap()
            .insert(target.parse().unwrap(), a);
    }
    fn checks_of(&self, target: &str) -> Vec<Instant> {
        let t: SocketAddr = target.parse().unwrap();
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, x)| *x == t)
            .map(|(i, _)| *i)
            .collect()
    }
}

impl Prober for Scripted {
    fn probe<'a>(
        &'a self,
        _check: &'a CheckConfig,
        subject: &'a Subject,
    ) -> Pin<Box<dyn std::future::Future<Output = Outcome> + Send + 'a>> {
        self.log
            .lock()
            .unwrap()
            .push((Instant::now(), subject.target));
        let a = self
            .answers
            .lock()
            .unwrap()
            .get(&subject.target)
            .copied()
            .unwrap_or(Answer::Up);
        Box::pin(async move {
            match a {
                Answer::Up => Outcome::up("scripted up"),
                Answer::Down => Outcome::down("scripted down"),
                Answer::Weight(w) => Outcome {
                    weight: Some(w),
                    ..Outcome::up(format!("scripted weight {w}"))
                },
            }
        })
    }
}

/// A running daemon over in-memory maps, with its config file in a private directory.
struct Daemon {
    mem: MemoryMaps,
    script: Arc<Scripted>,
    handle: DaemonHandle,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    dir: PathBuf,
    t0: Instant,
}

static DIRS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn temp_dir() -> PathBuf {
    let n = DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("director-daemon-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

const HEAD: &str =
    "[daemon]\njitter = 0\n[check]\ninterval = \"2s\"\ntimeout = \"1s\"\nrise = 2\nfall = 3\n";

impl Daemon {
    async fn start(config: &str) -> Self {
        Self::start_with(config, MemoryMaps::new(), temp_dir(), false, &[]).await
    }

    /// Start with these reals answering so from the first check on.
    async fn start_answering(config: &str, answers: &[(&str, Answer)]) -> Self {
        Self::start_with(config, MemoryMaps::new(), temp_dir(), false, answers).await
    }

    async fn start_with(
        config: &str,
        mem: MemoryMaps,
        dir: PathBuf,
        flush: bool,
        answers: &[(&str, Answer)],
    ) -> Self {
        let path = dir.join("d.toml");
        std::fs::write(&path, config).unwrap();
        let script = Arc::new(Scripted::default());
        for (t, a) in answers {
            script.set(t, *a);
        }
        let (handle, requests) = channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let mut opts = DaemonOptions::new(
            ConfigSource::Native(path),
            StateOptions {
                bpffs: Some(PathBuf::from(format!("/sys/fs/bpf/test-{}", dir.display()))),
            },
        );
        opts.requests = Some(requests);
        opts.run_dir = Some(dir.join("run"));
        opts.lock_dir = Some(dir.join("locks"));
        opts.flush_on_exit = flush;
        let t0 = Instant::now();
        let task = tokio::spawn(serve_with(
            opts,
            Box::new(mem.clone()),
            script.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        let d = Self {
            mem,
            script,
            handle,
            stop: Some(stop),
            task: Some(task),
            dir,
            t0,
        };
        // The start has applied once the daemon answers.
        d.handle.status().await.expect("the daemon started");
        d
    }

    /// Advance the paused clock to t0 + secs.
    async fn at(&self, secs: f64) {
        tokio::time::sleep_until(self.t0 + Duration::from_secs_f64(secs)).await;
        // Let the controller take what the checks reported at that instant.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn weight(&self, svc: &str, real: &str) -> Option<u32> {
        let a: SocketAddr = real.parse().unwrap();
        self.mem.weight(&svc_addr(svc), a.ip(), a.port())
    }

    fn rewrite(&self, config: &str) {
        std::fs::write(self.dir.join("d.toml"), config).unwrap();
    }

    async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn svc_addr(label: &str) -> ServiceAddr {
    super::runfiles::parse_label(label).unwrap()
}

fn two_reals(extra: &str) -> String {
    format!(
        "{HEAD}[[service]]\naddress = \"10.0.0.100:80\"\n{extra}\n\
         [[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\n"
    )
}

const WEB: &str = "tcp/10.0.0.100:80";
const R1: &str = "10.1.0.11:80";
const R2: &str = "10.1.0.12:80";

#[tokio::test(start_paused = true)]
async fn a_failing_real_goes_down_after_fall_checks_and_up_after_rise() {
    let mut d = Daemon::start(&two_reals("")).await;
    assert_eq!(d.weight(WEB, R1), Some(1));
    assert_eq!(d.weight(WEB, R2), Some(1));
    // Checks run at 0, 2, 4, ... (jitter 0). Failing from 5 s: the checks at 6, 8 and 10
    // fail, and the third one takes the real out (fall 3 x interval 2 s).
    d.at(5.0).await;
    d.script.set(R1, Answer::Down);
    d.at(9.9).await;
    assert_eq!(d.weight(WEB, R1), Some(1), "two failures are not enough");
    d.at(10.0).await;
    assert_eq!(
        d.weight(WEB, R1),
        Some(0),
        "quiescent: in the service with weight 0"
    );
    assert_eq!(d.weight(WEB, R2), Some(1), "the other real is untouched");
    let st = d.handle.status().await.unwrap();
    assert!(!st[0].reals[0].up);
    assert_eq!(st[0].reals[0].reason, "scripted down");
    // Good again from 11 s: the checks at 12 and 14 bring it back (rise 2).
    d.at(11.0).await;
    d.script.set(R1, Answer::Up);
    d.at(13.9).await;
    assert_eq!(d.weight(WEB, R1), Some(0));
    d.at(14.0).await;
    assert_eq!(d.weight(WEB, R1), Some(1));
    let t: Vec<f64> = d
        .script
        .checks_of(R1)
        .iter()
        .map(|i| (*i - d.t0).as_secs_f64())
        .collect();
    assert_eq!(t, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]);
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn fastinter_while_changing_and_downinter_while_down() {
    let mut d = Daemon::start(&two_reals(
        "check = { type = \"tcp\", interval = \"10s\", fastinter = \"1s\", downinter = \"30s\", init_state = \"fully-up\" }",
    ))
    .await;
    d.at(15.0).await;
    d.script.set(R1, Answer::Down);
    // 20 fails (fastinter from now), 21 fails, 22 fails: DOWN.
    d.at(21.9).await;
    assert_eq!(d.weight(WEB, R1), Some(1));
    d.at(22.0).await;
    assert_eq!(d.weight(WEB, R1), Some(0));
    d.script.set(R1, Answer::Up);
    // DOWN: next check after downinter, at 52; then fastinter: 53 brings it up.
    d.at(52.9).await;
    assert_eq!(d.weight(WEB, R1), Some(0));
    d.at(53.0).await;
    assert_eq!(d.weight(WEB, R1), Some(1));
    let t: Vec<f64> = d
        .script
        .checks_of(R1)
        .iter()
        .map(|i| (*i - d.t0).as_secs_f64())
        .collect();
    assert_eq!(t, [0.0, 10.0, 20.0, 21.0, 22.0, 52.0, 53.0]);
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn remove_mode_takes_a_down_real_out_and_puts_it_back() {
    let mut d =
        Daemon::start_answering(&two_reals("on_down = \"remove\""), &[(R2, Answer::Down)]).await;
    d.at(0.0).await;
    // init_state "up": the first failure takes it down.
    assert_eq!(d.weight(WEB, R2), None, "removed");
    assert_eq!(d.weight(WEB, R1), Some(1));
    d.script.set(R2, Answer::Up);
    d.at(4.0).await;
    assert_eq!(d.weight(WEB, R2), Some(1), "back after two good checks");
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_fallback_takes_over_when_no_real_is_up_and_hands_back() {
    let mut d = Daemon::start(&two_reals("fallback = { address = \"10.1.0.99\" }")).await;
    assert_eq!(
        d.weight(WEB, "10.1.0.99:80"),
        None,
        "not needed while reals are up"
    );
    d.script.set(R1, Answer::Down);
    d.script.set(R2, Answer::Down);
    d.at(4.0).await;
    assert_eq!(d.weight(WEB, R1), Some(0));
    assert_eq!(d.weight(WEB, R2), Some(0));
    assert_eq!(
        d.weight(WEB, "10.1.0.99:80"),
        Some(1),
        "the fallback has the traffic"
    );
    assert!(d.handle.status().await.unwrap()[0].fallback_active);
    d.script.set(R2, Answer::Up);
    d.at(8.0).await;
    assert_eq!(d.weight(WEB, R2), Some(1));
    assert_eq!(
        d.weight(WEB, "10.1.0.99:80"),
        Some(0),
        "handed back; quiescent, so its connections finish"
    );
    assert!(!d.handle.status().await.unwrap()[0].fallback_active);
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn below_the_quorum_the_fallback_takes_everything() {
    let cfg = format!(
        "{HEAD}[[service]]\naddress = \"10.0.0.100:80\"\nquorum = 2\nfallback = {{ address = \"10.1.0.99\", weight = 5 }}\n\
         [[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\n[[service.real]]\naddress = \"10.1.0.13\"\n"
    );
    let mut d = Daemon::start_answering(&cfg, &[(R1, Answer::Down)]).await;
    d.at(0.0).await;
    assert_eq!(
        d.weight(WEB, "10.1.0.99:80"),
        None,
        "two of three up: quorum met"
    );
    // R2 passed its check at 0 s: the failures at 2 and 4 s take it down.
    d.script.set(R2, Answer::Down);
    d.at(3.0).await;
    assert_eq!(d.weight(WEB, "10.1.0.99:80"), None);
    d.at(4.0).await;
    assert_eq!(d.weight(WEB, "10.1.0.99:80"), Some(5));
    assert_eq!(
        d.weight(WEB, "10.1.0.13:80"),
        Some(0),
        "UP but drained: the fallback has the traffic"
    );
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn slowstart_ramps_a_recovered_real_up() {
    let cfg = format!(
        "{HEAD}[[service]]\naddress = \"10.0.0.100:80\"\nslowstart = \"20s\"\n\
         [[service.real]]\naddress = \"10.1.0.11\"\nweight = 100\n[[service.real]]\naddress = \"10.1.0.12\"\n"
    );
    let mut d = Daemon::start(&cfg).await;
    assert_eq!(d.weight(WEB, R1), Some(100), "no ramp at start");
    d.at(1.0).await;
    d.script.set(R1, Answer::Down);
    d.at(4.0).await;
    assert_eq!(d.weight(WEB, R1), Some(0));
    d.script.set(R1, Answer::Up);
    d.at(8.0).await;
    // UP at 8 s: the ramp starts near zero and grows with each step (1 s).
    let w4 = d.weight(WEB, R1).unwrap();
    assert!((1..=5).contains(&w4), "{w4}");
    d.at(18.0).await;
    let w18 = d.weight(WEB, R1).unwrap();
    assert!((45..=55).contains(&w18), "half way: {w18}");
    d.at(28.5).await;
    assert_eq!(d.weight(WEB, R1), Some(100));
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_external_check_sets_the_weight() {
    let mut d = Daemon::start_answering(&two_reals(""), &[(R1, Answer::Weight(7))]).await;
    d.at(0.0).await;
    assert_eq!(d.weight(WEB, R1), Some(7));
    d.script.set(R1, Answer::Weight(0));
    d.at(2.0).await;
    assert_eq!(d.weight(WEB, R1), Some(0), "up with weight 0");
    assert!(d.handle.status().await.unwrap()[0].reals[0].up);
    d.script.set(R1, Answer::Up);
    d.at(4.0).await;
    assert_eq!(
        d.weight(WEB, R1),
        Some(1),
        "no dynamic weight: the configured one"
    );
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn check_types_on_and_off_are_not_checked() {
    let cfg = format!(
        "{HEAD}[[service]]\naddress = \"10.0.0.100:80\"\ncheck = {{ type = \"off\" }}\n[[service.real]]\naddress = \"10.1.0.11\"\n\
         [[service]]\naddress = \"10.0.0.100:81\"\ncheck = {{ type = \"on\" }}\n[[service.real]]\naddress = \"10.1.0.11\"\nmethod = \"nat\"\n"
    );
    let mut d = Daemon::start(&cfg).await;
    d.at(10.0).await;
    assert_eq!(d.weight(WEB, R1), Some(0), "off: always down");
    assert_eq!(
        d.weight("tcp/10.0.0.100:81", "10.1.0.11:81"),
        Some(1),
        "on: always up"
    );
    assert!(
        d.script.log.lock().unwrap().is_empty(),
        "nothing was checked"
    );
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn reload_writes_only_what_changed() {
    let a = format!(
        "{HEAD}[[service]]\naddress = \"10.0.0.100:80\"\n[[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\n\
         [[service]]\naddress = \"10.0.0.100:443\"\n[[service.real]]\naddress = \"10.1.0.11\"\n\
         [[service]]\naddress = \"10.0.0.100:22\"\n[[service.real]]\naddress = \"10.1.0.11\"\n"
    );
    let mut d = Daemon::start(&a).await;
    d.mem.clear_writes();
    // A weight changed, a real added, a service removed; :22 as it was.
    let b = format!(
        "{HEAD}[[service]]\naddress = \"10.0.0.100:80\"\n[[service.real]]\naddress = \"10.1.0.11\"\n[[service.real]]\naddress = \"10.1.0.12\"\nweight = 2\n\
         [[service.real]]\naddress = \"10.1.0.13\"\n\
         [[service]]\naddress = \"10.0.0.100:22\"\n[[service.real]]\naddress = \"10.1.0.11\"\n"
    );
    d.rewrite(&b);
    let report = d.handle.reload().await.unwrap();
    let mut writes = d.mem.writes();
    writes.sort();
    assert_eq!(
        writes,
        [
            "add_real tcp/10.0.0.100:80 10.1.0.13:80 w1",
            "delete_service tcp/10.0.0.100:443",
            "edit_real tcp/10.0.0.100:80 10.1.0.12:80 w2",
        ]
    );
    let mut changes = report.changes.clone();
    changes.sort();
    assert_eq!(
        changes,
        [
            "tcp/10.0.0.100:443: service removed",
            "tcp/10.0.0.100:80: real 10.1.0.12:80 weight 1 -> 2",
            "tcp/10.0.0.100:80: real 10.1.0.13:80 added with weight 1",
        ]
    );
    // The new real is checked from now on.
    d.at(3.0).await;
    assert!(!d.script.checks_of("10.1.0.13:80").is_empty());
    // The same file again: nothing to write.
    d.mem.clear_writes();
    assert_eq!(
        d.handle.reload().await.unwrap().changes,
        Vec::<String>::new()
    );
    assert!(d.mem.writes().is_empty());
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_broken_reload_is_rejected_and_the_running_state_kept() {
    let mut d = Daemon::start_answering(&two_reals(""), &[(R1, Answer::Down)]).await;
    d.at(0.0).await;
    assert_eq!(d.weight(WEB, R1), Some(0));
    d.mem.clear_writes();
    d.rewrite(&format!(
        "{HEAD}[[service]]\naddress = \"10.0.0.100:80\"\nscheduler = \"fastest\"\n"
    ));
    let e = d.handle.reload().await.unwrap_err().to_string();
    assert!(
        e.contains("d.toml:10:13: service[0].scheduler: expected one of"),
        "{e}"
    );
    assert!(d.mem.writes().is_empty());
    // Still checking and acting on the old file.
    d.script.set(R1, Answer::Up);
    d.at(4.0).await;
    assert_eq!(d.weight(WEB, R1), Some(1));
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_config_larger_than_the_attached_director_is_refused_whole() {
    let three = format!(
        "{HEAD}[[service]]\naddress = \"10.0.0.100:80\"\n[[service.real]]\naddress = \"10.1.0.11\"\n\
         [[service]]\naddress = \"10.0.0.100:443\"\n[[service.real]]\naddress = \"10.1.0.11\"\n\
         [[service]]\naddress = \"10.0.0.100:22\"\n[[service.real]]\naddress = \"10.1.0.11\"\n"
    );
    // The attached director's slots are what counts (not the default 256): a config
    // that fits them is applied...
    let mem = MemoryMaps::new();
    mem.set_capacity(Capacity {
        services: 3,
        reals: 3,
    });
    let mut d = Daemon::start_with(&three, mem.clone(), temp_dir(), false, &[]).await;
    d.at(0.0).await;
    assert_eq!(MapStore::read(&mut mem.clone()).unwrap().len(), 3);
    // ...and a reload that needs more than it has is refused whole.
    mem.clear_writes();
    d.rewrite(&format!(
        "{three}[[service]]\naddress = \"10.0.0.100:25\"\n[[service.real]]\naddress = \"10.1.0.11\"\n"
    ));
    let e = d.handle.reload().await.unwrap_err().to_string();
    assert!(
        e.contains("4 virtual services declared; the attached director holds at most 3 (director attach --max-services)")
            && e.contains("4 real servers (with fallbacks) declared; the attached director holds at most 3 in all"),
        "{e}"
    );
    assert!(mem.writes().is_empty());
    d.stop().await;

    // Starting with it fails, before anything is written.
    let small = MemoryMaps::new();
    small.set_capacity(Capacity {
        services: 2,
        reals: 16,
    });
    let dir = temp_dir();
    let path = dir.join("d.toml");
    std::fs::write(&path, &three).unwrap();
    let opts = DaemonOptions::new(
        ConfigSource::Native(path),
        StateOptions {
            bpffs: Some(PathBuf::from(format!("/sys/fs/bpf/test-{}", dir.display()))),
        },
    );
    let e = serve_with(
        opts,
        Box::new(small.clone()),
        Arc::new(Scripted::default()),
        async {},
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("3 virtual services declared; the attached director holds at most 2"),
        "{e}"
    );
    assert!(small.writes().is_empty());
}

/// `n` services on ports 1.. of 10.0.0.100, each with `reals` reals.
fn services(n: u16, reals: u8) -> String {
    let mut s = HEAD.to_owned();
    for port in 1..=n {
        s.push_str(&format!("[[service]]\naddress = \"10.0.0.100:{port}\"\n"));
        for r in 0..reals {
            s.push_str(&format!(
                "[[service.real]]\naddress = \"10.1.0.{}\"\n",
                11 + r
            ));
        }
    }
    s
}

/// A service made by hand (with the command line), with `reals` reals.
fn hand_made(mem: &MemoryMaps, port: u16, reals: u8) -> ServiceAddr {
    let spec = ServiceSpec::new(Protocol::Tcp, "10.0.0.200".parse().unwrap(), port);
    MapStore::batch(&mut mem.clone(), &mut |w| {
        w.add_service(&spec)?;
        for n in 0..reals {
            let addr = IpAddr::from([10, 1, 0, 100 + n]);
            w.add_real(
                &spec.addr,
                &RealSpec::new(addr, port, director_common::real::Method::Route, 1),
            )?;
        }
        Ok(())
    })
    .unwrap();
    spec.addr
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_fits_only_without_the_hand_made_services_is_refused_whole() {
    let mem = MemoryMaps::new();
    mem.set_capacity(Capacity {
        services: 4,
        reals: 6,
    });
    let by_hand = hand_made(&mem, 8080, 2);
    let mut d = Daemon::start_with(&services(2, 1), mem.clone(), temp_dir(), false, &[]).await;
    d.at(0.0).await;
    assert_eq!(mem.service_addrs().len(), 3);

    // 4 services fit the 4 slots, but the hand-made one holds one of them.
    mem.clear_writes();
    d.rewrite(&services(4, 1));
    let e = d.handle.reload().await.unwrap_err().to_string();
    assert!(
        e.contains(
            "4 virtual services declared and 1 service slots held by services the daemon does not manage"
        ) && e.contains("holds at most 4 (director attach --max-services)"),
        "{e}"
    );
    assert!(mem.writes().is_empty(), "{:?}", mem.writes());
    assert_eq!(mem.service_addrs().len(), 3);

    // Real slots the same way: 3 services of 2 reals are 6, and 2 are taken.
    let six = services(3, 2);
    d.rewrite(&six);
    let e = d.handle.reload().await.unwrap_err().to_string();
    assert!(
        e.contains(
            "6 real servers (with fallbacks) declared and 2 real slots held by services the daemon does not manage"
        ),
        "{e}"
    );
    assert!(mem.writes().is_empty(), "{:?}", mem.writes());

    // What fits beside them is applied, and the hand-made service is left alone.
    d.rewrite(&services(3, 1));
    d.handle.reload().await.unwrap();
    assert_eq!(mem.service_addrs().len(), 4);
    assert_eq!(mem.reals(&by_hand).unwrap().len(), 2);
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_fits_only_once_done_is_refused_whole() {
    let mem = MemoryMaps::new();
    mem.set_capacity(Capacity {
        services: 4,
        reals: 3,
    });
    let with = |reals: &[u8]| {
        let mut s = format!("{HEAD}[[service]]\naddress = \"10.0.0.100:80\"\n");
        for n in reals {
            s.push_str(&format!("[[service.real]]\naddress = \"10.1.0.{n}\"\n"));
        }
        s
    };
    let mut d = Daemon::start_with(&with(&[11, 12]), mem.clone(), temp_dir(), false, &[]).await;
    d.at(0.0).await;
    mem.clear_writes();
    // Two reals replaced by two others: 2 slots at the end, but the new ones come in
    // before the old ones go (the service keeps somewhere to send traffic): 4 at once.
    d.rewrite(&with(&[13, 14]));
    let e = d.handle.reload().await.unwrap_err().to_string();
    assert!(
        e.contains("applying it needs 4 real slots at once")
            && e.contains("holds at most 3 in all (director attach --max-reals)"),
        "{e}"
    );
    assert!(mem.writes().is_empty(), "{:?}", mem.writes());
    // One at a time fits.
    d.rewrite(&with(&[12, 13]));
    d.handle.reload().await.unwrap();
    assert_eq!(d.weight(WEB, "10.1.0.13:80"), Some(1));
    assert_eq!(d.weight(WEB, R1), None);
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_empty_file_removes_nothing_unless_it_says_so() {
    let mem = MemoryMaps::new();
    let by_hand = hand_made(&mem, 8080, 1);
    let dir = temp_dir();
    let mut d = Daemon::start_with(&services(2, 1), mem.clone(), dir.clone(), false, &[]).await;
    d.at(0.0).await;
    mem.clear_writes();
    // A file truncated to nothing, or cut before its first service.
    for text in ["", "[daemon]\njitter = 0\n"] {
        d.rewrite(text);
        let e = d.handle.reload().await.unwrap_err().to_string();
        assert!(
            e.contains("no service declared: applying this would remove all 2 services the daemon manages; if that is intended, put `allow_empty = true` at the top of the file"),
            "{e}"
        );
        assert!(mem.writes().is_empty(), "{:?}", mem.writes());
    }
    assert_eq!(mem.service_addrs().len(), 3);
    d.stop().await;

    // Starting with it after a run that declared services is refused the same way.
    let path = dir.join("d.toml");
    std::fs::write(&path, "").unwrap();
    let mut opts = DaemonOptions::new(
        ConfigSource::Native(path.clone()),
        StateOptions {
            bpffs: Some(PathBuf::from(format!("/sys/fs/bpf/test-{}", dir.display()))),
        },
    );
    opts.run_dir = Some(dir.join("run"));
    let e = serve_with(
        opts,
        Box::new(mem.clone()),
        Arc::new(Scripted::default()),
        async {},
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("no service declared"), "{e}");
    assert!(mem.writes().is_empty(), "{:?}", mem.writes());

    // Said explicitly, it removes every service the daemon declared, and only those,
    // each removal logged as a warning (their traffic stops).
    let mut d = Daemon::start_with(&services(2, 1), mem.clone(), dir, false, &[]).await;
    d.rewrite("allow_empty = true\n");
    let logged = logs_of_this_thread(|| async { d.handle.reload().await.unwrap() }).await;
    assert_eq!(mem.service_addrs(), [by_hand]);
    for port in [1, 2] {
        for what in ["no longer declared; removing it", "service removed"] {
            let line = format!("tcp/10.0.0.100:{port}: {what}");
            assert!(
                logged.contains(&(log::Level::Warn, line.clone())),
                "{line} not logged as a warning: {logged:?}"
            );
        }
    }
    d.stop().await;
}

/// The log records of the current thread (the daemon's, on a current-thread runtime).
static LOGGED: Mutex<Vec<(std::thread::ThreadId, log::Level, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        LOGGED.lock().unwrap_or_else(|e| e.into_inner()).push((
            std::thread::current().id(),
            r.level(),
            r.args().to_string(),
        ));
    }
    fn flush(&self) {}
}

/// What this thread logged while `f`'s future ran.
async fn logs_of_this_thread<F: std::future::Future>(
    f: impl FnOnce() -> F,
) -> Vec<(log::Level, String)> {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let _ = log::set_logger(&Capture);
        log::set_max_level(log::LevelFilter::Info);
    });
    let me = std::thread::current().id();
    let start = LOGGED.lock().unwrap().len();
    let _ = f().await;
    LOGGED.lock().unwrap()[start..]
        .iter()
        .filter(|(t, _, _)| *t == me)
        .map(|(_, l, m)| (*l, m.clone()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_restart_writes_nothing_and_keeps_states() {
    let mem = MemoryMaps::new();
    let dir = temp_dir();
    let mut d = Daemon::start_with(
        &two_reals(""),
        mem.clone(),
        dir.clone(),
        false,
        &[(R2, Answer::Down)],
    )
    .await;
    d.at(0.0).await;
    assert_eq!(d.weight(WEB, R2), Some(0));
    d.stop().await;
    std::mem::forget(d); // keep the directory for the second run
    mem.clear_writes();
    let mut d = Daemon::start_with(
        &two_reals(""),
        mem.clone(),
        dir,
        false,
        &[(R2, Answer::Down)],
    )
    .await;
    d.at(1.0).await;
    assert!(
        mem.writes().is_empty(),
        "a restart writes nothing: {:?}",
        mem.writes()
    );
    assert_eq!(d.weight(WEB, R1), Some(1));
    assert_eq!(d.weight(WEB, R2), Some(0));
    // R2 was quiescent, and failed again at 0 s: it needs rise (2) good checks.
    d.script.set(R2, Answer::Up);
    d.at(2.0).await;
    assert_eq!(d.weight(WEB, R2), Some(0));
    d.at(4.0).await;
    assert_eq!(d.weight(WEB, R2), Some(1));
    d.stop().await;
}

#[tokio::test(start_paused = true)]
async fn services_the_daemon_does_not_declare_are_left_alone() {
    let mem = MemoryMaps::new();
    let by_hand = ServiceSpec::new(Protocol::Tcp, "10.0.0.200".parse().unwrap(), 80);
    {
        let mut m = mem.clone();
        crate::maps::MapStore::batch(&mut m, &mut |w| {
            w.add_service(&by_hand)?;
            w.add_real(
                &by_hand.addr,
                &RealSpec::new(
                    "10.1.0.50".parse().unwrap(),
                    80,
                    director_common::real::Method::Route,
                    3,
                ),
            )?;
            Ok(())
        })
        .unwrap();
    }
    mem.clear_writes();
    let dir = temp_dir();
    let cfg_both = format!(
        "{}[[service]]\naddress = \"10.0.0.100:443\"\n[[service.real]]\naddress = \"10.1.0.11\"\n",
        two_reals("")
    );
    let mut d = Daemon::start_with(&cfg_both, mem.clone(), dir.clone(), false, &[]).await;
    d.stop().await;
    std::mem::forget(d);
    // The file no longer declares :443: a new run removes it (it was ours), and never
    // the service made by hand.
    let mut d = Daemon::start_with(&two_reals(""), mem.clone(), dir.clone(), false, &[]).await;
    assert_eq!(
        mem.service_addrs(),
        [svc_addr("tcp/10.0.0.100:80"), svc_addr("tcp/10.0.0.200:80")]
    );
    d.stop().await;
    std::mem::forget(d);
    // Flush on exit: ours go, the hand-made one stays.
    let mut d = Daemon::start_with(&two_reals(""), mem.clone(), dir, true, &[]).await;
    d.stop().await;
    assert_eq!(mem.service_addrs(), [svc_addr("tcp/10.0.0.200:80")]);
    assert_eq!(
        mem.weight(&by_hand.addr, "10.1.0.50".parse::<IpAddr>().unwrap(), 80),
        Some(3)
    );
    assert!(!mem.writes().iter().any(|w| w.contains("10.0.0.200")));
}

#[tokio::test(start_paused = true)]
async fn every_real_has_its_own_spread_timer() {
    let mut cfg = String::from(
        "[daemon]\njitter = 0.2\n[check]\ninterval = \"2s\"\n[[service]]\naddress = \"10.0.0.100:80\"\n",
    );
    for i in 1..=20 {
        cfg.push_str(&format!("[[service.real]]\naddress = \"10.1.0.{i}\"\n"));
    }
    let mut d = Daemon::start(&cfg).await;
    d.at(20.0).await;
    let firsts: Vec<Instant> = (1..=20)
        .map(|i| d.script.checks_of(&format!("10.1.0.{i}:80"))[0])
        .collect();
    let distinct: std::collections::BTreeSet<Instant> = firsts.iter().copied().collect();
    assert!(
        distinct.len() > 15,
        "first checks spread over the interval: {}",
        distinct.len()
    );
    assert!(firsts.iter().all(|t| *t - d.t0 < Duration::from_secs(2)));
    for i in 1..=20 {
        let c = d.script.checks_of(&format!("10.1.0.{i}:80"));
        for w in c.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                gap <= Duration::from_secs(2) && gap >= Duration::from_millis(1600),
                "waits are the interval shortened by at most 20%: {gap:?}"
            );
        }
        assert!(c.len() >= 10, "{}", c.len());
    }
    d.stop().await;
}

#[tokio::test]
async fn metrics_endpoint_serves_states_weights_and_datapath_counters() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = two_reals("check = { type = \"tcp\", interval = \"60s\" }").replacen(
        "[daemon]\n",
        &format!("[daemon]\nmetrics = \"127.0.0.1:{port}\"\n"),
        1,
    );
    let mut d = Daemon::start(&cfg).await;
    d.script.set(R2, Answer::Down);
    // Real time here: wait (bounded) until R2's first check has taken it down.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.weight(WEB, R2) != Some(0) {
        assert!(std::time::Instant::now() < deadline, "R2 never went down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    for line in [
        "director_real_up{service=\"tcp/10.0.0.100:80\",real=\"10.1.0.11:80\"} 1",
        "director_real_up{service=\"tcp/10.0.0.100:80\",real=\"10.1.0.12:80\"} 0",
        "director_real_weight{service=\"tcp/10.0.0.100:80\",real=\"10.1.0.12:80\"} 0",
        "director_real_check_failures_total{service=\"tcp/10.0.0.100:80\",real=\"10.1.0.12:80\"} 1",
        "director_service_reals_up{service=\"tcp/10.0.0.100:80\"} 1",
        "director_datapath_packets_total{outcome=\"drop_no_real\"} 0",
        "director_real_connections_total{service=\"tcp/10.0.0.100:80\",real=\"10.1.0.11:80\"} 0",
        "director_config_last_reload_successful 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    d.stop().await;
}

/// IPv6 services and reals keep their addresses in metrics labels as written
/// everywhere else (`tcp/[2001:db8::100]:80`, `[2001:db8::12]:80`), also an IPv4 tunnel
/// real of an IPv6 service.
#[tokio::test]
async fn metrics_label_ipv6_services_and_reals_by_their_addresses() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = format!(
        "{}[[service]]\naddress = \"[2001:db8::100]:80\"\ncheck = {{ type = \"tcp\", interval = \"60s\" }}\n\
         [[service.real]]\naddress = \"2001:db8::11\"\n[[service.real]]\naddress = \"[2001:db8::12]:80\"\n\
         [[service.real]]\naddress = \"10.1.0.13\"\nmethod = \"tunnel\"\n",
        HEAD.replacen(
            "[daemon]\n",
            &format!("[daemon]\nmetrics = \"127.0.0.1:{port}\"\n"),
            1
        )
    );
    let web6 = "tcp/[2001:db8::100]:80";
    let mut d = Daemon::start(&cfg).await;
    d.script.set("[2001:db8::12]:80", Answer::Down);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while d.weight(web6, "[2001:db8::12]:80") != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the real never went down"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(d.weight(web6, "[2001:db8::11]:80"), Some(1));
    assert_eq!(d.weight(web6, "10.1.0.13:80"), Some(1));
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    for line in [
        "director_real_up{service=\"tcp/[2001:db8::100]:80\",real=\"[2001:db8::11]:80\"} 1",
        "director_real_up{service=\"tcp/[2001:db8::100]:80\",real=\"[2001:db8::12]:80\"} 0",
        "director_real_weight{service=\"tcp/[2001:db8::100]:80\",real=\"10.1.0.13:80\"} 1",
        "director_service_reals_up{service=\"tcp/[2001:db8::100]:80\"} 2",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    d.stop().await;
}

#[tokio::test]
async fn hooks_run_on_transitions_with_the_reason() {
    let dir = temp_dir();
    let out = dir.join("events");
    let cfg = two_reals(&format!(
        "fallback = {{ address = \"10.1.0.99\" }}\nnotify = \"echo $DIRECTOR_EVENT $DIRECTOR_SERVICE $DIRECTOR_REAL $DIRECTOR_REASON >> {}\"",
        out.display()
    ));
    let mut d = Daemon::start_with(
        &cfg,
        MemoryMaps::new(),
        dir,
        false,
        &[(R1, Answer::Down), (R2, Answer::Down)],
    )
    .await;
    // Real time: the hooks are processes; wait (bounded) for their three lines.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= 3 || std::time::Instant::now() > deadline {
            lines.sort();
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        lines,
        [
            "down tcp/10.0.0.100:80 10.1.0.11:80 scripted down",
            "down tcp/10.0.0.100:80 10.1.0.12:80 scripted down",
            "fallback-on tcp/10.0.0.100:80 10.1.0.99:80",
        ]
    );
    d.stop().await;
}
