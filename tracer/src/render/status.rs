//! The one-line live status of a run (stderr, on terminals): elapsed,
//! events, lost, and the most alarming finding so far. Built from the
//! interval reports, so it needs nothing from the kernel side.

use crate::{model::Report, render::parts::plural};

/// What a run has seen so far, summed over its intervals.
#[derive(Debug, Default, Clone)]
pub struct Status {
    pub block_requests: u64,
    pub block_max_us: f64,
    pub slow_ios: u64,
    pub alloc_failures: u64,
    /// The largest failure group: (count, order, gfp, comm).
    top_alloc: Option<(u64, u32, String, String)>,
    pub oom_kills: u64,
    last_kill: Option<String>,
    pub reclaim_stalls: u64,
    pub reclaim_ms: f64,
    pub worst_stall: Option<(f64, String, String)>,
    pub thp_splits: u64,
    pub lost: u64,
}

impl Status {
    pub fn add(&mut self, report: &Report) {
        self.block_requests += report.block.iter().map(|r| r.count).sum::<u64>();
        self.block_max_us = report.block.iter().map(|r| r.latency_us.max).fold(self.block_max_us, f64::max);
        self.slow_ios += report.slow_ios.len() as u64;
        for a in &report.alloc_failures {
            self.alloc_failures += a.count;
            if self.top_alloc.as_ref().is_none_or(|t| a.count > t.0) {
                self.top_alloc = Some((a.count, a.order, a.gfp.clone(), a.comm.clone()));
            }
        }
        for k in &report.oom_kills {
            self.oom_kills += 1;
            self.last_kill = Some(format!(
                "OOM killed {} ({}){}",
                k.victim_pid,
                k.victim_comm,
                if k.cgroup.is_empty() { String::new() } else { format!(" in {}", k.cgroup) }
            ));
        }
        for row in report.stall_rows() {
            self.reclaim_stalls += row.count;
            self.reclaim_ms += row.total_ms;
            let max_ms = row.latency_us.max / 1000.0;
            if row.count > 0 && self.worst_stall.as_ref().is_none_or(|w| max_ms > w.0) {
                let who = row.processes.first().map(|p| p.comm.clone()).unwrap_or_default();
                self.worst_stall = Some((max_ms, row.kind.clone(), who));
            }
        }
        self.thp_splits += report.thp.as_ref().map_or(0, |t| t.splits);
        self.lost += report.lost_events;
    }

    /// The most alarming thing so far, in words.
    pub fn top_finding(&self) -> Option<String> {
        if let Some(kill) = &self.last_kill {
            return Some(if self.oom_kills > 1 {
                format!("{kill} (+{} more)", self.oom_kills - 1)
            } else {
                kill.clone()
            });
        }
        if let Some((count, order, gfp, comm)) = &self.top_alloc {
            return Some(format!("{count} order-{order} allocation failures in {comm} ({gfp})"));
        }
        if let Some((ms, kind, who)) = &self.worst_stall
            && *ms >= 1.0
        {
            return Some(format!("{kind} stall of {ms:.1} ms in {who}"));
        }
        if self.slow_ios > 0 {
            return Some(format!(
                "{} slow block requests, slowest {:.1} ms",
                self.slow_ios,
                self.block_max_us / 1000.0
            ));
        }
        None
    }

    pub fn line(&self) -> String {
        let mut parts = vec![format!("{} io", si(self.block_requests))];
        if self.alloc_failures > 0 {
            parts.push(format!("{} alloc failures", si(self.alloc_failures)));
        }
        if self.oom_kills > 0 {
            parts.push(format!("{} {}", self.oom_kills, plural(self.oom_kills, "OOM kill")));
        }
        if self.reclaim_stalls > 0 {
            parts.push(format!("{} stalls {:.0} ms", si(self.reclaim_stalls), self.reclaim_ms));
        }
        if self.thp_splits > 0 {
            parts.push(format!("{} THP splits", si(self.thp_splits)));
        }
        parts.push(format!("lost {}", self.lost));
        match self.top_finding() {
            Some(top) => format!("{} | {top}", parts.join(", ")),
            None => parts.join(", "),
        }
    }
}

fn si(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AllocFailure, BlockRow, OomKill, Percentiles};

    fn block(count: u64, max_us: f64) -> BlockRow {
        BlockRow {
            device: "vda".into(),
            dev: "254:0".into(),
            op: "read".into(),
            count,
            bytes: 0,
            errors: 0,
            untimed: 0,
            latency_us: Percentiles { max: max_us, ..Percentiles::default() },
            histogram: Vec::new(),
        }
    }

    #[test]
    fn sums_intervals_and_ranks_findings() {
        let mut status = Status::default();
        status.add(&Report { block: vec![block(1500, 80.0)], lost_events: 2, ..Report::default() });
        assert_eq!(status.line(), "1.5k io, lost 2");
        let failure = AllocFailure {
            count: 7,
            order: 3,
            gfp: "GFP_KERNEL".into(),
            comm: "db".into(),
            ..AllocFailure::default()
        };
        status.add(&Report {
            block: vec![block(500, 120.0)],
            alloc_failures: vec![failure],
            ..Report::default()
        });
        assert_eq!(status.block_requests, 2000);
        assert_eq!(status.top_finding().as_deref(), Some("7 order-3 allocation failures in db (GFP_KERNEL)"));
        let kill = OomKill {
            victim_pid: 42,
            victim_comm: "apache2".into(),
            cgroup: "/web".into(),
            ..OomKill::default()
        };
        status.add(&Report { oom_kills: vec![kill], ..Report::default() });
        assert_eq!(
            status.line(),
            "2.0k io, 7 alloc failures, 1 OOM kill, lost 2 | OOM killed 42 (apache2) in /web"
        );
    }
}
