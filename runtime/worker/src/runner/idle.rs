//! The idle countdown after a turn ends.

use crate::proto::SessionEvent;
use tokio::time::Instant;

/// The idle countdown (SDK `_IdleClock`).
#[derive(Debug, Default)]
pub(super) struct IdleClock {
    pub(super) turn_ended_at: Option<Instant>,
    holds: u32,
    arm_deferred: bool,
}

impl IdleClock {
    pub(super) fn note_event(&mut self, ev: &SessionEvent) {
        if ev.is_idle_neutral() {
            return;
        }
        if ev.ends_turn() {
            self.arm();
        } else {
            self.disarm();
        }
    }

    pub(super) fn arm(&mut self) {
        if self.holds > 0 {
            self.arm_deferred = true;
            return;
        }
        self.arm_deferred = false;
        self.turn_ended_at = Some(Instant::now());
    }

    pub(super) fn disarm(&mut self) {
        self.arm_deferred = false;
        self.turn_ended_at = None;
    }

    pub(super) fn hold(&mut self) {
        self.holds += 1;
        if self.turn_ended_at.take().is_some() {
            self.arm_deferred = true;
        }
    }

    pub(super) fn release(&mut self) {
        self.holds = self.holds.saturating_sub(1);
        if self.holds == 0 && self.arm_deferred {
            self.arm();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_clock_defers_while_held() {
        let mut c = IdleClock::default();
        c.hold();
        c.arm();
        assert!(c.turn_ended_at.is_none());
        c.release();
        assert!(c.turn_ended_at.is_some());
        c.hold();
        assert!(c.turn_ended_at.is_none());
        c.release();
        assert!(c.turn_ended_at.is_some());
        c.disarm();
        c.hold();
        c.release();
        assert!(c.turn_ended_at.is_none());
    }
}
