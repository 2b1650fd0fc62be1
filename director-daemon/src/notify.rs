//! Notify hooks: commands run on events (a real UP or DOWN, a fallback taking over or
//! handing back). They run in the background, a few at a time, each killed after the
//! configured timeout; events beyond a bounded queue are dropped with a warning, so a
//! slow hook never holds up the checks.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Semaphore, mpsc};

use super::{
    Guard,
    config::{Command, Hooks},
};

/// Hooks running at once.
const PARALLEL: usize = 4;
/// Events waiting for a hook slot.
const QUEUE: usize = 1024;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Up,
    Down,
    FallbackOn,
    FallbackOff,
}

impl EventKind {
    pub fn name(self) -> &'static str {
        match self {
            EventKind::Up => "up",
            EventKind::Down => "down",
            EventKind::FallbackOn => "fallback-on",
            EventKind::FallbackOff => "fallback-off",
        }
    }
}

/// One event, with the environment its hooks get.
#[derive(Clone, Debug)]
pub struct HookEvent {
    pub kind: EventKind,
    pub env: Vec<(&'static str, String)>,
}

struct Job {
    command: Command,
    event: HookEvent,
}

#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Job>,
    /// Milliseconds a hook may run (changed by a reload).
    timeout_ms: Arc<AtomicU64>,
}

impl Notifier {
    /// Start the hook runner; it stops when the guard is dropped (running hooks are
    /// killed then).
    pub fn start(timeout: Duration) -> (Self, Guard) {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        let timeout_ms = Arc::new(AtomicU64::new(timeout.as_millis() as u64));
        let limit = timeout_ms.clone();
        let task = tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(PARALLEL));
            let mut running = tokio::task::JoinSet::new();
            while let Some(job) = rx.recv().await {
                while running.try_join_next().is_some() {}
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let timeout = Duration::from_millis(limit.load(Ordering::Relaxed));
                running.spawn(async move {
                    let _permit = permit;
                    run_hook(job, timeout).await;
                });
            }
        });
        (Self { tx, timeout_ms }, Guard::new(task))
    }

    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// Queue the hooks of `hooks` that match the event.
    pub fn notify(&self, hooks: &Hooks, event: HookEvent) {
        let specific = match event.kind {
            EventKind::Up => hooks.up.as_ref(),
            EventKind::Down => hooks.down.as_ref(),
            _ => None,
        };
        for command in specific.into_iter().chain(hooks.any.as_ref()) {
            let job = Job {
                command: command.clone(),
                event: event.clone(),
            };
            if self.tx.try_send(job).is_err() {
                log::warn!(
                    "notify: too many hooks pending; the {} hook ({command}) was not run",
                    event.kind.name()
                );
            }
        }
    }
}

async fn run_hook(job: Job, timeout: Duration) {
    let mut cmd = job.command.to_tokio();
    cmd.envs(job.event.env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("DIRECTOR_EVENT", job.event.kind.name())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            log::warn!("notify: cannot run {}: {e}", job.command);
            return;
        }
    };
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) if out.status.success() => {}
        Ok(Ok(out)) => log::warn!(
            "notify: {} ({} hook) failed with {}: {}",
            job.command,
            job.event.kind.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(Err(e)) => log::warn!("notify: waiting for {}: {e}", job.command),
        Err(_) => log::warn!(
            "notify: {} ({} hook) killed after {:?}",
            job.command,
            job.event.kind.name(),
            timeout
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn hooks_get_the_event_and_its_environment() {
        let dir = std::env::temp_dir().join(format!("director-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("events");
        let hooks = Hooks {
            any: Some(Command::Shell(format!(
                "echo any $DIRECTOR_EVENT $DIRECTOR_REAL >> {}",
                out.display()
            ))),
            up: None,
            down: Some(Command::Argv(vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("echo down $DIRECTOR_REASON >> {}", out.display()),
            ])),
        };
        let (n, guard) = Notifier::start(Duration::from_secs(5));
        n.notify(
            &hooks,
            HookEvent {
                kind: EventKind::Down,
                env: vec![
                    ("DIRECTOR_REAL", "10.1.0.11:80".into()),
                    ("DIRECTOR_REASON", "refused".into()),
                ],
            },
        );
        // Bounded wait for both lines (the hooks run in the background).
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            let t = std::fs::read_to_string(&out).unwrap_or_default();
            if t.lines().count() >= 2 || Instant::now() > deadline {
                break t;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        assert_eq!(lines, ["any down 10.1.0.11:80", "down refused"]);
        drop(guard);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
