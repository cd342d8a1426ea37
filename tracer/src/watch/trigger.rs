//! `tracer watch --trigger SPEC`: what makes a capture, parsed and checked
//! against each interval's report. Pure, but for PSI, whose trigger file
//! the kernel watches (see [`super::psi`]).

use std::time::Duration;

use crate::{model::Report, units::parse_duration};

/// What `--trigger` accepts, for the error of a malformed one.
pub const ACCEPTED: &str = "oom | alloc-fail[:ORDER] | p99[:DISK]>DURATION | io[:DISK]>DURATION | \
     stall>DURATION | stall-total>DURATION | psi:some|full>STALL/WINDOW[@CGROUP] | signal";

#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Any OOM kill.
    Oom,
    /// An allocation failure of at least this order.
    AllocFail { min_order: u32 },
    /// A disk's (or any disk's) p99 in one interval above the threshold.
    P99 { disk: Option<String>, over: Duration },
    /// A single block request slower than the threshold.
    Io { disk: Option<String>, over: Duration },
    /// One reclaim, compaction or throttling stall longer than this.
    Stall { over: Duration },
    /// All stalls of one interval together longer than this.
    StallTotal { over: Duration },
    /// The kernel's PSI trigger: "some" or "full" memory stall of `stall`
    /// within `window`, system-wide or in a cgroup (v2).
    Psi { full: bool, stall: Duration, window: Duration, cgroup: Option<String> },
    /// SIGUSR1: a capture on demand.
    Signal,
}

/// Parses one `--trigger`.
pub fn parse(spec: &str) -> Result<Trigger, String> {
    let bad = |why: &str| format!("--trigger `{spec}`: {why}; accepted: {ACCEPTED}");
    let spec_trimmed = spec.trim();
    let threshold = |rest: &str| -> Result<(Option<String>, Duration), String> {
        let (disk, over) = rest.split_once('>').ok_or_else(|| bad("expected `>DURATION`"))?;
        let disk = match disk {
            "" => None,
            d => Some(
                d.strip_prefix(':')
                    .filter(|disk| !disk.is_empty())
                    .ok_or_else(|| bad("expected `:DISK` before `>`"))?
                    .to_string(),
            ),
        };
        let over = parse_duration(over).map_err(|e| bad(&e))?;
        Ok((disk, over))
    };
    let no_disk = |rest: &str| -> Result<Duration, String> {
        match threshold(rest)? {
            (None, over) => Ok(over),
            (Some(_), _) => Err(bad("stall triggers take no disk")),
        }
    };
    if spec_trimmed == "oom" {
        return Ok(Trigger::Oom);
    }
    if spec_trimmed == "signal" {
        return Ok(Trigger::Signal);
    }
    if let Some(rest) = spec_trimmed.strip_prefix("alloc-fail") {
        let min_order = match rest {
            "" => 0,
            r => r
                .strip_prefix(':')
                .and_then(|o| o.parse().ok())
                .filter(|o| *o <= 10)
                .ok_or_else(|| bad("the order is a number from 0 to 10"))?,
        };
        return Ok(Trigger::AllocFail { min_order });
    }
    if let Some(rest) = spec_trimmed.strip_prefix("p99") {
        let (disk, over) = threshold(rest)?;
        return Ok(Trigger::P99 { disk, over });
    }
    if let Some(rest) = spec_trimmed.strip_prefix("io") {
        let (disk, over) = threshold(rest)?;
        return Ok(Trigger::Io { disk, over });
    }
    if let Some(rest) = spec_trimmed.strip_prefix("stall-total") {
        return Ok(Trigger::StallTotal { over: no_disk(rest)? });
    }
    if let Some(rest) = spec_trimmed.strip_prefix("stall") {
        return Ok(Trigger::Stall { over: no_disk(rest)? });
    }
    if let Some(rest) = spec_trimmed.strip_prefix("psi:") {
        let (rest, cgroup) = match rest.split_once('@') {
            Some((r, c)) if !c.is_empty() => (r, Some(c.to_string())),
            Some(_) => return Err(bad("expected a cgroup path after `@`")),
            None => (rest, None),
        };
        let (kind, amounts) = rest.split_once('>').ok_or_else(|| bad("expected `>STALL/WINDOW`"))?;
        let full = match kind {
            "some" => false,
            "full" => true,
            _ => return Err(bad("PSI is `some` or `full`")),
        };
        let (stall, window) = amounts.split_once('/').ok_or_else(|| bad("expected STALL/WINDOW"))?;
        let stall = parse_duration(stall).map_err(|e| bad(&e))?;
        let window = parse_duration(window).map_err(|e| bad(&e))?;
        // The kernel's own bounds for PSI triggers (500 ms to 10 s windows;
        // unprivileged users only multiples of 2 s).
        if !(Duration::from_millis(500)..=Duration::from_secs(10)).contains(&window) || stall > window {
            return Err(bad("the window is 500ms to 10s and the stall at most the window"));
        }
        return Ok(Trigger::Psi { full, stall, window, cgroup });
    }
    Err(bad("unknown trigger"))
}

impl Trigger {
    /// The trigger as a short name for file names and logs.
    pub fn name(&self) -> String {
        match self {
            Trigger::Oom => "oom".into(),
            Trigger::AllocFail { .. } => "alloc-fail".into(),
            Trigger::P99 { .. } => "p99".into(),
            Trigger::Io { .. } => "slow-io".into(),
            Trigger::Stall { .. } => "stall".into(),
            Trigger::StallTotal { .. } => "stall-total".into(),
            Trigger::Psi { full, .. } => if *full { "psi-full" } else { "psi-some" }.into(),
            Trigger::Signal => "signal".into(),
        }
    }

    /// The slowest `--slow-io` this trigger needs to see single requests.
    pub fn slow_io_needed(&self) -> Option<Duration> {
        match self {
            Trigger::Io { over, .. } => Some(*over),
            _ => None,
        }
    }

    /// Whether one interval's report fires it, and what it saw.
    pub fn fired_by(&self, report: &Report) -> Option<String> {
        let disk_matches = |disk: &Option<String>, device: &str| disk.as_deref().is_none_or(|d| d == device);
        match self {
            Trigger::Oom => report
                .oom_kills
                .first()
                .map(|k| format!("OOM kill of {} ({}) in {}", k.victim_pid, k.victim_comm, k.cgroup)),
            Trigger::AllocFail { min_order } => report
                .alloc_failures
                .iter()
                .find(|f| f.order >= *min_order)
                .map(|f| format!("order-{} allocation failure in {} ({})", f.order, f.pid, f.comm)),
            Trigger::P99 { disk, over } => report
                .block
                .iter()
                .filter(|r| disk_matches(disk, &r.device) && r.count > 0)
                .find(|r| r.latency_us.p99 > over.as_secs_f64() * 1e6)
                .map(|r| format!("{} {} p99 {:.0} us", r.device, r.op, r.latency_us.p99)),
            Trigger::Io { disk, over } => report
                .slow_ios
                .iter()
                .find(|io| disk_matches(disk, &io.device) && io.latency_us > over.as_secs_f64() * 1e6)
                .map(|io| format!("a {} {} of {:.0} us on {}", io.op, io.bytes, io.latency_us, io.device)),
            Trigger::Stall { over } => {
                let ended = report.stall_rows().map(|r| (r.kind.as_str(), r.latency_us.max, ""));
                // A stall that has not ended yet may never end: it fires
                // as soon as it is over the line.
                let in_progress = report.stall_rows().filter(|r| r.in_flight > 0).map(|r| {
                    (r.kind.as_str(), r.in_flight_longest_ms * 1000.0, " so far, still in progress")
                });
                let dirty =
                    report.dirty.iter().flat_map(|d| &d.rows).map(|r| ("throttling", r.latency_us.max, ""));
                ended
                    .chain(in_progress)
                    .chain(dirty)
                    .find(|(_, max_us, _)| *max_us > over.as_secs_f64() * 1e6)
                    .map(|(kind, max_us, note)| format!("a {kind} stall of {:.1} ms{note}", max_us / 1000.0))
            }
            Trigger::StallTotal { over } => {
                let total_ms: f64 = report.stall_rows().map(|r| r.total_ms).sum::<f64>()
                    + report.dirty.iter().flat_map(|d| &d.rows).map(|r| r.total_ms).sum::<f64>();
                (total_ms > over.as_secs_f64() * 1e3)
                    .then(|| format!("{total_ms:.1} ms of stalls in one interval"))
            }
            // Fired by the kernel or by a signal, not by a report.
            Trigger::Psi { .. } | Trigger::Signal => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BlockRow, OomKill, Percentiles, StallRow};

    #[test]
    fn specs_parse() {
        assert_eq!(parse("oom"), Ok(Trigger::Oom));
        assert_eq!(parse("alloc-fail:3"), Ok(Trigger::AllocFail { min_order: 3 }));
        assert_eq!(
            parse("p99:loop0>5ms"),
            Ok(Trigger::P99 { disk: Some("loop0".into()), over: Duration::from_millis(5) })
        );
        assert_eq!(parse("p99>1s"), Ok(Trigger::P99 { disk: None, over: Duration::from_secs(1) }));
        assert_eq!(parse("stall-total>200ms"), Ok(Trigger::StallTotal { over: Duration::from_millis(200) }));
        assert_eq!(
            parse("psi:full>100ms/1s@/db"),
            Ok(Trigger::Psi {
                full: true,
                stall: Duration::from_millis(100),
                window: Duration::from_secs(1),
                cgroup: Some("/db".into())
            })
        );
        for bad in [
            "",
            "oops",
            "p99",
            "p99:>5ms",
            "stall:sda>1ms",
            "alloc-fail:x",
            "psi:most>1s/2s",
            "psi:some>3s/2s",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("accepted: oom"), "{bad}: {err}");
        }
    }

    #[test]
    fn reports_fire_what_they_show() {
        let mut report = Report::default();
        assert!(Trigger::Oom.fired_by(&report).is_none());
        report.oom_kills.push(OomKill { victim_pid: 42, victim_comm: "hog".into(), ..OomKill::default() });
        assert!(Trigger::Oom.fired_by(&report).unwrap().contains("42 (hog)"));
        report.block.push(BlockRow {
            device: "loop0".into(),
            dev: "7:0".into(),
            op: "read".into(),
            count: 10,
            bytes: 0,
            errors: 0,
            untimed: 0,
            latency_us: Percentiles { p99: 9000.0, ..Percentiles::default() },
            histogram: Vec::new(),
        });
        let p99 = |disk: Option<&str>, ms| Trigger::P99 {
            disk: disk.map(String::from),
            over: Duration::from_millis(ms),
        };
        assert!(p99(Some("loop0"), 5).fired_by(&report).is_some());
        assert!(p99(Some("loop0"), 10).fired_by(&report).is_none());
        assert!(p99(Some("sda"), 5).fired_by(&report).is_none());
        report.reclaim.push(StallRow {
            kind: "memcg".into(),
            total_ms: 300.0,
            latency_us: Percentiles { max: 50_000.0, ..Percentiles::default() },
            ..StallRow::default()
        });
        assert!(Trigger::Stall { over: Duration::from_millis(40) }.fired_by(&report).is_some());
        assert!(Trigger::Stall { over: Duration::from_millis(60) }.fired_by(&report).is_none());
        assert!(Trigger::StallTotal { over: Duration::from_millis(250) }.fired_by(&report).is_some());
        report.reclaim.push(StallRow {
            kind: "direct".into(),
            in_flight: 1,
            in_flight_longest_ms: 2_000.0,
            ..StallRow::default()
        });
        assert_eq!(
            Trigger::Stall { over: Duration::from_secs(1) }.fired_by(&report).as_deref(),
            Some("a direct stall of 2000.0 ms so far, still in progress")
        );
    }
}
