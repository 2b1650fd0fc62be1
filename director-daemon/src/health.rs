//! HAProxy's health counter (rise/fall), as a pure state machine.
//!
//! `health` runs from 0 to rise + fall - 1; a real is UP while health >= rise. A success
//! adds one (reaching rise from below makes the real UP and jumps to the top); a failure
//! takes one away while above rise, and at rise or below resets to 0 (an UP real at rise
//! goes DOWN). So an UP real goes DOWN after `fall` consecutive failures and a DOWN real
//! comes UP after `rise` consecutive successes.

use std::time::Duration;

use super::config::{CheckConfig, InitState};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    rise: u32,
    fall: u32,
    health: u32,
}

impl Health {
    pub fn new(rise: u32, fall: u32, init: InitState) -> Self {
        let (rise, fall) = (rise.max(1), fall.max(1));
        let health = match init {
            InitState::FullyUp => rise + fall - 1,
            InitState::Up => rise,
            InitState::Down => rise - 1,
            InitState::FullyDown => 0,
        };
        Self { rise, fall, health }
    }

    fn top(&self) -> u32 {
        self.rise + self.fall - 1
    }

    pub fn is_up(&self) -> bool {
        self.health >= self.rise
    }

    /// The raw counter (for status and tests).
    pub fn value(&self) -> u32 {
        self.health
    }

    /// Between the extremes: the real is going up or going down.
    pub fn is_changing(&self) -> bool {
        self.health != 0 && self.health != self.top()
    }

    /// Record one check result. Returns the new state when it changed.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        let was = self.is_up();
        if ok {
            if self.health < self.top() {
                self.health += 1;
                if !was && self.health >= self.rise {
                    self.health = self.top();
                }
            }
        } else if self.health > self.rise {
            self.health -= 1;
        } else {
            self.health = 0;
        }
        (self.is_up() != was).then_some(self.is_up())
    }

    /// Set the state outright (on/off checks). Returns the new state when it changed.
    pub fn force(&mut self, up: bool) -> Option<bool> {
        let was = self.is_up();
        self.health = if up { self.top() } else { 0 };
        (up != was).then_some(up)
    }

    /// New rise/fall (a reload): the state is kept, the counter moved into the new range
    /// at the same end it was at.
    pub fn reconfigure(&mut self, rise: u32, fall: u32) {
        let up = self.is_up();
        let full = self.health == self.top() || self.health == 0;
        let (rise, fall) = (rise.max(1), fall.max(1));
        self.rise = rise;
        self.fall = fall;
        self.health = match (up, full) {
            (true, true) => self.top(),
            (true, false) => self.health.clamp(rise, self.top()),
            (false, true) => 0,
            (false, false) => self.health.min(rise - 1),
        };
    }

    /// How long to wait before the next check: `downinter` while fully DOWN, `fastinter`
    /// while changing state, `interval` otherwise.
    pub fn next_interval(&self, c: &CheckConfig) -> Duration {
        if self.health == 0 {
            c.downinter.unwrap_or(c.interval)
        } else if self.is_changing() {
            c.fastinter.unwrap_or(c.interval)
        } else {
            c.interval
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CheckKind;

    #[test]
    fn up_real_goes_down_after_fall_failures_and_back_after_rise_successes() {
        let mut h = Health::new(2, 3, InitState::FullyUp);
        assert!(h.is_up());
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some(false), "third failure: DOWN");
        assert_eq!(h.value(), 0);
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(true), Some(true), "second success: UP");
        assert_eq!(h.value(), 4, "jumps to rise + fall - 1");
    }

    #[test]
    fn a_success_in_between_only_adds_one() {
        let mut h = Health::new(2, 3, InitState::FullyUp);
        h.record(false);
        h.record(false);
        h.record(true);
        assert_eq!(h.value(), 3);
        assert_eq!(h.record(false), None);
        assert_eq!(
            h.record(false),
            Some(false),
            "one success bought one more failure"
        );
        let mut h = Health::new(2, 3, InitState::FullyUp);
        h.record(false);
        h.record(true);
        h.record(true);
        assert_eq!(h.value(), 4, "back at the top");
    }

    #[test]
    fn a_failure_while_rising_starts_over() {
        let mut h = Health::new(3, 2, InitState::FullyDown);
        h.record(true);
        h.record(true);
        assert_eq!(h.record(false), None);
        assert_eq!(h.value(), 0);
        h.record(true);
        h.record(true);
        assert_eq!(h.record(true), Some(true));
    }

    #[test]
    fn init_states() {
        let mut up = Health::new(2, 3, InitState::Up);
        assert!(up.is_up());
        assert_eq!(
            up.record(false),
            Some(false),
            "up: the first failure takes it down"
        );
        let mut down = Health::new(2, 3, InitState::Down);
        assert!(!down.is_up());
        assert_eq!(
            down.record(true),
            Some(true),
            "down: the first success brings it up"
        );
        let mut fd = Health::new(2, 3, InitState::FullyDown);
        assert_eq!(fd.record(true), None);
        assert_eq!(fd.record(true), Some(true));
    }

    #[test]
    fn rise_and_fall_of_one() {
        let mut h = Health::new(1, 1, InitState::FullyUp);
        assert_eq!(h.record(false), Some(false));
        assert_eq!(h.record(true), Some(true));
        assert!(!h.is_changing());
    }

    #[test]
    fn intervals_follow_the_state() {
        let mut c = CheckConfig::new(CheckKind::Tcp);
        c.interval = Duration::from_secs(10);
        c.fastinter = Some(Duration::from_secs(1));
        c.downinter = Some(Duration::from_secs(30));
        let mut h = Health::new(2, 3, InitState::FullyUp);
        assert_eq!(h.next_interval(&c), Duration::from_secs(10));
        h.record(false);
        assert_eq!(
            h.next_interval(&c),
            Duration::from_secs(1),
            "going down: fastinter"
        );
        h.record(false);
        h.record(false);
        assert_eq!(
            h.next_interval(&c),
            Duration::from_secs(30),
            "down: downinter"
        );
        h.record(true);
        assert_eq!(
            h.next_interval(&c),
            Duration::from_secs(1),
            "going up: fastinter"
        );
        c.fastinter = None;
        assert_eq!(
            h.next_interval(&c),
            Duration::from_secs(10),
            "no fastinter: interval"
        );
    }

    #[test]
    fn reconfigure_keeps_the_state() {
        let mut h = Health::new(2, 3, InitState::FullyUp);
        h.reconfigure(5, 5);
        assert!(h.is_up());
        assert_eq!(h.value(), 9);
        let mut d = Health::new(2, 3, InitState::FullyDown);
        d.reconfigure(1, 1);
        assert!(!d.is_up());
        assert_eq!(d.record(true), Some(true));
    }
}
