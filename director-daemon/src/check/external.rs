//! External checks with keepalived's MISC_CHECK semantics: exit 0 UP, 1 DOWN, 2..=255
//! UP with weight = code - 2 (when `dynamic`, else DOWN). The command runs in its own
//! process group, which is killed when the check's timeout ends it.

use std::{process::Stdio, time::Duration};

use super::{Outcome, Subject};
use director_control::model::Protocol;

use crate::config::ExternalCheck;

/// Kills a process group unless disarmed (the child was reaped normally).
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: plain syscall on the group made for this child (process_group(0)).
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

/// The environment a check or hook command gets about its real.
pub fn subject_env(s: &Subject) -> Vec<(&'static str, String)> {
    vec![
        ("DIRECTOR_SERVICE", s.service_label.clone()),
        ("DIRECTOR_VIP", s.service.addr.to_string()),
        ("DIRECTOR_VPORT", s.service.port.to_string()),
        (
            "DIRECTOR_PROTOCOL",
            match s.service.proto {
                Protocol::Tcp => "tcp".into(),
                Protocol::Udp => "udp".into(),
            },
        ),
        ("DIRECTOR_REAL_ADDR", s.real.addr.to_string()),
        ("DIRECTOR_REAL_PORT", s.real.port.to_string()),
        ("DIRECTOR_CHECK_ADDR", s.target.ip().to_string()),
        ("DIRECTOR_CHECK_PORT", s.target.port().to_string()),
    ]
}

fn first_line(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let line = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(200).collect()
}

pub async fn check(e: &ExternalCheck, s: &Subject, timeout: Duration) -> Outcome {
    let mut cmd = e.command.to_tokio();
    cmd.envs(subject_env(s))
        .env("DIRECTOR_TIMEOUT_MS", timeout.as_millis().to_string())
        .env("DIRECTOR_WEIGHT", s.real.weight.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(err) => return Outcome::down(format!("cannot run {}: {err}", e.command)),
    };
    let mut guard = GroupGuard(child.id().and_then(|p| i32::try_from(p).ok()));
    let out = child.wait_with_output().await;
    // It ended on its own: what it left running is none of the check's business.
    guard.0 = None;
    let out = match out {
        Ok(o) => o,
        Err(err) => return Outcome::down(format!("waiting for {}: {err}", e.command)),
    };
    let said = {
        let l = first_line(&out.stdout);
        if l.is_empty() {
            first_line(&out.stderr)
        } else {
            l
        }
    };
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    match out.status.code() {
        Some(0) => Outcome::up(format!("exit 0{said}")),
        Some(code @ 2..=255) if e.dynamic => {
            let mut o = Outcome::up(format!("exit {code}, weight {}{said}", code - 2));
            o.weight = Some(code as u32 - 2);
            o
        }
        Some(code) => Outcome::down(format!("exit {code}{said}")),
        None => {
            use std::os::unix::process::ExitStatusExt as _;
            Outcome::down(format!(
                "killed by signal {}{said}",
                out.status.signal().unwrap_or(0)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Instant};

    use super::*;
    use crate::{
        check::{
            run,
            tests::{subject, with},
        },
        config::{CheckConfig, CheckKind, Command},
    };

    fn ext(script: &str, dynamic: bool) -> CheckKind {
        CheckKind::External(ExternalCheck {
            command: Command::Shell(script.into()),
            dynamic,
        })
    }

    #[tokio::test]
    async fn exit_codes_with_dynamic_weight() {
        let s = subject("10.1.0.11:80".parse().unwrap());
        let o = run(&with(ext("echo fine; exit 0", true)), &s).await;
        assert!(o.ok);
        assert_eq!(o.detail, "exit 0: fine");
        assert_eq!(o.weight, None);
        let o = run(&with(ext("echo broken >&2; exit 1", true)), &s).await;
        assert!(!o.ok);
        assert_eq!(o.detail, "exit 1: broken");
        let o = run(&with(ext("exit 7", true)), &s).await;
        assert!(o.ok);
        assert_eq!(o.weight, Some(5));
        assert_eq!(o.detail, "exit 7, weight 5");
        let o = run(&with(ext("exit 2", true)), &s).await;
        assert!(o.ok, "2 is UP with weight 0");
        assert_eq!(o.weight, Some(0));
        let o = run(&with(ext("exit 7", false)), &s).await;
        assert!(!o.ok, "without dynamic every non-zero code is DOWN");
    }

    #[tokio::test]
    async fn the_command_sees_its_real() {
        let s = subject("10.1.0.11:8080".parse().unwrap());
        let o = run(
            &with(ext(
                "echo $DIRECTOR_SERVICE $DIRECTOR_REAL_ADDR $DIRECTOR_CHECK_PORT $DIRECTOR_TIMEOUT_MS",
                true,
            )),
            &s,
        )
        .await;
        assert_eq!(o.detail, "exit 0: tcp/10.0.0.100:80 10.1.0.11 8080 2000");
    }

    #[tokio::test]
    async fn a_hanging_command_and_its_children_are_killed_at_the_timeout() {
        let dir = std::env::temp_dir().join(format!("director-ext-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("child.pid");
        let mut c = CheckConfig::new(ext(
            &format!("sleep 30 & echo $! > {}; wait", pidfile.display()),
            true,
        ));
        c.timeout = Duration::from_millis(300);
        let o = run(&Arc::new(c), &subject("10.1.0.11:80".parse().unwrap())).await;
        assert!(!o.ok);
        assert_eq!(o.detail, "timed out after 300ms");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild got SIGKILL with its group; wait (bounded) until it is gone.
        let deadline = Instant::now() + Duration::from_secs(5);
        let gone = loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for init to reap it.
            if stat.is_empty()
                || stat
                    .rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(gone, "the command's child {pid} survived the timeout");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_missing_program_is_down() {
        let k = CheckKind::External(ExternalCheck {
            command: Command::Argv(vec!["/nonexistent/check".into()]),
            dynamic: true,
        });
        let o = run(&with(k), &subject("10.1.0.11:80".parse().unwrap())).await;
        assert!(!o.ok);
        assert!(
            o.detail.starts_with("cannot run /nonexistent/check"),
            "{}",
            o.detail
        );
    }
}
