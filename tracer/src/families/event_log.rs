//! The rare events a family streams (slow I/Os, stalls), kept between
//! reports with a bound.

use std::cmp::Reverse;

use super::Scope;

/// Events in arrival order, with how far interval reports have covered
/// them. Bounded: past twice `cap`, only the `cap` most severe of those not
/// yet reported stay (in time order), and the rest are counted as dropped.
pub struct EventLog<T> {
    events: Vec<T>,
    reported: usize,
    dropped: u64,
    cap: usize,
}

impl<T> EventLog<T> {
    pub fn new(cap: usize) -> Self {
        Self { events: Vec::new(), reported: 0, dropped: 0, cap }
    }

    /// Adds a batch, then applies the bound, keeping what is most severe.
    pub fn extend(
        &mut self,
        batch: impl IntoIterator<Item = T>,
        severity: impl Fn(&T) -> u64,
        time: impl Fn(&T) -> u64,
    ) {
        self.events.extend(batch);
        if self.events.len() <= 2 * self.cap {
            return;
        }
        let mut pending = self.events.split_off(self.reported);
        pending.sort_by_key(|e| Reverse(severity(e)));
        self.dropped += pending.len().saturating_sub(self.cap) as u64;
        pending.truncate(self.cap);
        pending.sort_by_key(time);
        self.events.extend(pending);
    }

    /// The events a report of `scope` covers: those since the previous
    /// interval report, or all. An interval report marks them reported.
    pub fn for_report(&mut self, scope: Scope) -> &[T] {
        let first = match scope {
            Scope::Interval => std::mem::replace(&mut self.reported, self.events.len()),
            Scope::Whole => 0,
        };
        &self.events[first.min(self.events.len())..]
    }

    /// Events the bound has dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
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
        let mut log = EventLog::new(10);
        add(&mut log, &[(1, 9), (2, 9)]);
        assert_eq!(log.for_report(Scope::Interval), [(1, 9), (2, 9)]);
        add(&mut log, &[(3, 9)]);
        assert_eq!(log.for_report(Scope::Interval), [(3, 9)]);
        assert_eq!(log.for_report(Scope::Interval), [] as [Event; 0]);
        assert_eq!(log.for_report(Scope::Whole), [(1, 9), (2, 9), (3, 9)]);
        assert_eq!(log.dropped(), 0);
    }

    #[test]
    fn past_twice_the_cap_only_the_most_severe_unreported_stay() {
        let mut log = EventLog::new(2);
        add(&mut log, &[(1, 100), (2, 1)]);
        assert_eq!(log.for_report(Scope::Interval), [(1, 100), (2, 1)]);
        // Six events, four unreported: the two most severe of those stay,
        // in time order.
        add(&mut log, &[(6, 5), (4, 50), (5, 7), (3, 3)]);
        assert_eq!(log.dropped(), 2);
        assert_eq!(log.for_report(Scope::Interval), [(4, 50), (5, 7)]);
        assert_eq!(log.for_report(Scope::Whole), [(1, 100), (2, 1), (4, 50), (5, 7)]);
    }
}
