//! The rare events a family streams (slow I/Os, stalls), kept between
//! reports with a bound.

use std::cmp::Reverse;

use super::Scope;

/// Events in arrival order, with how far interval reports have covered
/// them. Bounded: past twice `cap`, only the `cap` most severe of those not
/// yet reported stay, and only the `cap` most severe of those reported stay
/// for the whole run's report (each in time order); the rest are counted.
/// Without a whole-run report (`watch`), reported events are let go.
pub struct EventLog<T> {
    events: Vec<T>,
    reported: usize,
    /// Never in any report.
    dropped: u64,
    /// In their interval's report, not in the whole run's.
    trimmed: u64,
    cap: usize,
    keep_reported: bool,
}

impl<T> EventLog<T> {
    /// `keep_reported`: the whole run's report lists every event too.
    pub fn new(cap: usize, keep_reported: bool) -> Self {
        Self { events: Vec::new(), reported: 0, dropped: 0, trimmed: 0, cap, keep_reported }
    }

    /// Adds a batch, then applies the bound, keeping what is most severe.
    pub fn extend(
        &mut self,
        batch: impl IntoIterator<Item = T>,
        severity: impl Fn(&T) -> u64,
        time: impl Fn(&T) -> u64,
    ) {
        self.forget_reported();
        self.events.extend(batch);
        if self.events.len() <= 2 * self.cap {
            return;
        }
        let most_severe = |mut events: Vec<T>, lost: &mut u64| {
            if events.len() > self.cap {
                events.sort_by_key(|e| Reverse(severity(e)));
                *lost += (events.len() - self.cap) as u64;
                events.truncate(self.cap);
                events.sort_by_key(&time);
            }
            events
        };
        let pending = most_severe(self.events.split_off(self.reported), &mut self.dropped);
        self.events = most_severe(std::mem::take(&mut self.events), &mut self.trimmed);
        self.reported = self.events.len();
        self.events.extend(pending);
    }

    /// The events a report of `scope` covers: those since the previous
    /// interval report, or all. An interval report marks them reported.
    pub fn for_report(&mut self, scope: Scope) -> &[T] {
        let first = match scope {
            Scope::Interval => {
                self.forget_reported();
                std::mem::replace(&mut self.reported, self.events.len())
            }
            Scope::Whole => 0,
        };
        &self.events[first.min(self.events.len())..]
    }

    /// Events a report of `scope` lacks because of the bound, so far.
    pub fn dropped(&self, scope: Scope) -> u64 {
        match scope {
            Scope::Interval => self.dropped,
            Scope::Whole => self.dropped + self.trimmed,
        }
    }

    fn forget_reported(&mut self) {
        if !self.keep_reported {
            self.events.drain(..self.reported);
            self.reported = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (time, severity)
    type Event = (u64, u64);
    fn add(log: &mut EventLog<Event>, batch: &[Event]) {
        log.extend(batch.iter().copied(), |e| e.1, |e| e.0);
    }

    #[test]
    fn intervals_see_each_event_once_and_the_whole_run_sees_all() {
        let mut log = EventLog::new(10, true);
        add(&mut log, &[(1, 9), (2, 9)]);
        assert_eq!(log.for_report(Scope::Interval), [(1, 9), (2, 9)]);
        add(&mut log, &[(3, 9)]);
        assert_eq!(log.for_report(Scope::Interval), [(3, 9)]);
        assert_eq!(log.for_report(Scope::Interval), [] as [Event; 0]);
        assert_eq!(log.for_report(Scope::Whole), [(1, 9), (2, 9), (3, 9)]);
        assert_eq!(log.dropped(Scope::Whole), 0);
    }

    #[test]
    fn past_twice_the_cap_only_the_most_severe_unreported_stay() {
        let mut log = EventLog::new(2, true);
        add(&mut log, &[(1, 100), (2, 1)]);
        assert_eq!(log.for_report(Scope::Interval), [(1, 100), (2, 1)]);
        // Six events, four unreported: the two most severe of those stay,
        // in time order.
        add(&mut log, &[(6, 5), (4, 50), (5, 7), (3, 3)]);
        assert_eq!(log.dropped(Scope::Interval), 2);
        assert_eq!(log.for_report(Scope::Interval), [(4, 50), (5, 7)]);
        assert_eq!(log.for_report(Scope::Whole), [(1, 100), (2, 1), (4, 50), (5, 7)]);
    }

    /// A long run with intervals: every interval sees its events, and what
    /// is kept for the whole run stays within the bound.
    #[test]
    fn a_long_run_keeps_at_most_the_bound() {
        let mut log = EventLog::new(3, true);
        for t in 0..1000u64 {
            add(&mut log, &[(t, t % 10)]);
            assert_eq!(log.for_report(Scope::Interval), [(t, t % 10)]);
            assert!(log.events.len() <= 2 * 3 + 1, "{} kept", log.events.len());
        }
        assert_eq!(log.dropped(Scope::Interval), 0, "every event was in its interval");
        let whole = log.for_report(Scope::Whole).to_vec();
        assert!(whole.len() <= 2 * 3, "{whole:?}");
        assert!(whole.iter().filter(|e| e.1 == 9).count() >= 3, "the most severe stay: {whole:?}");
        assert_eq!(log.dropped(Scope::Whole), 1000 - whole.len() as u64);
    }

    #[test]
    fn without_a_whole_run_report_reported_events_go() {
        let mut log = EventLog::new(10, false);
        add(&mut log, &[(1, 1), (2, 2)]);
        assert_eq!(log.for_report(Scope::Interval), [(1, 1), (2, 2)]);
        add(&mut log, &[(3, 3)]);
        assert_eq!(log.events.len(), 1, "the reported two are let go");
        assert_eq!(log.for_report(Scope::Interval), [(3, 3)]);
        assert_eq!(log.for_report(Scope::Interval), [] as [Event; 0]);
        assert!(log.events.is_empty());
    }
}
