//! The oom family's part of a report: its text section and how its rows
//! of interval reports add up to the whole run. Pure.

use std::fmt::Write as _;

use crate::{
    model::{OomKill, OomRetries, Report},
    render::parts::{human_bytes, or_root, plural, render_stack},
};

/// The summary line: kills, grouped.
pub fn summary(report: &Report) -> String {
    let kills = &report.oom_kills;
    let Some(first) = kills.first() else {
        return "no OOM kills".into();
    };
    let groups = group_kills(kills);
    let shown: Vec<String> = groups
        .iter()
        .take(3)
        .map(|g| format!("{} x{} in {}", g[0].victim_comm, g.len(), or_root(&g[0].cgroup)))
        .collect();
    format!(
        "{} OOM {}: {}{}, first at {:.1}s",
        kills.len(),
        plural(kills.len() as u64, "kill"),
        shown.join(", "),
        if groups.len() > 3 { ", ..." } else { "" },
        first.at_s
    )
}

/// Kills of the same command in the same cgroup from the same trigger
/// stack, together, in the order of their first kill.
pub fn group_kills(kills: &[OomKill]) -> Vec<Vec<&OomKill>> {
    let mut groups: Vec<Vec<&OomKill>> = Vec::new();
    for kill in kills {
        let same = |g: &&mut Vec<&OomKill>| {
            let k = g[0];
            (&k.victim_comm, &k.cgroup, &k.trigger_comm, &k.trigger_kernel_stack, &k.scope)
                == (
                    &kill.victim_comm,
                    &kill.cgroup,
                    &kill.trigger_comm,
                    &kill.trigger_kernel_stack,
                    &kill.scope,
                )
        };
        match groups.iter_mut().find(|g| same(g)) {
            Some(group) => group.push(kill),
            None => groups.push(vec![kill]),
        }
    }
    groups
}

/// Its section of the text report.
pub fn render_text(out: &mut String, report: &Report) {
    render_oom(out, report);
}

fn render_oom(out: &mut String, report: &Report) {
    let _ = writeln!(out, "\nOOM kills: {}", report.oom_kills.len());
    // Repeated kills (same command, cgroup and trigger stack) once, with
    // a count, their time range and pids; the first in full.
    for group in group_kills(&report.oom_kills) {
        if let [first, .., last] = group.as_slice() {
            let pids: Vec<String> = group.iter().map(|k| k.victim_pid.to_string()).collect();
            let _ = writeln!(
                out,
                "\n  {} kills of {} in {} from {:.2}s to {:.2}s, pids {} (the first below)",
                group.len(),
                first.victim_comm,
                or_root(&first.cgroup),
                first.at_s,
                last.at_s,
                pids.join(", ")
            );
        }
        render_kill(out, group[0]);
    }
    if let Some(r) = &report.oom_retries {
        let _ = writeln!(
            out,
            "  retries before killing: reclaim_retry_zone {}, compact_retry {}",
            r.reclaim_retry_zone, r.compact_retry
        );
    }
}

fn render_kill(out: &mut String, kill: &OomKill) {
    let kb = |v: u64| human_bytes(v * 1024);
    let limit = match (&kill.limit_cgroup, kill.limit_bytes) {
        (Some(cgroup), Some(limit)) => format!(
            ", limit {} in {cgroup} (usage {})",
            human_bytes(limit),
            human_bytes(kill.usage_bytes.unwrap_or(0))
        ),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "\n  at {:.2}s: killed {} ({}) uid {} in {}: {} OOM{limit}",
        kill.at_s,
        kill.victim_pid,
        kill.victim_comm,
        kill.victim_uid,
        or_root(&kill.cgroup),
        kill.scope
    );
    let _ = writeln!(
        out,
        "     victim: total-vm {}, anon-rss {}, file-rss {}, shmem-rss {}, page tables {}, oom_score_adj {}",
        kb(kill.total_vm_kb),
        kb(kill.anon_rss_kb),
        kb(kill.file_rss_kb),
        kb(kill.shmem_rss_kb),
        kb(kill.pgtables_kb),
        kill.oom_score_adj
    );
    let _ = writeln!(
        out,
        "     trigger: {} ({}) in {}",
        kill.trigger_pid,
        kill.trigger_comm,
        or_root(&kill.trigger_cgroup)
    );
    let reaped = match (kill.reap_start_ms, kill.reap_ms) {
        (Some(start), Some(done)) => {
            format!("OOM reaper started after {start:.1} ms, done after {done:.1} ms")
        }
        (Some(start), None) => {
            format!("OOM reaper started after {start:.1} ms, not finished when tracing ended")
        }
        _ => "OOM reaper not seen (the victim freed its memory by exiting, or tracing ended first)".into(),
    };
    let _ = writeln!(out, "     {reaped}");
    render_stack(out, "trigger kernel stack", &kill.trigger_kernel_stack);
    let title = super::super::alloc::report::user_stack_title(
        "trigger user stack",
        kill.trigger_user_stack_unwind.as_deref(),
    );
    render_stack(out, &title, &kill.trigger_user_stack);
}

/// Adds one interval's rows into the whole run's (replaying a capture).
pub fn merge(whole: &mut Report, report: &Report) {
    whole.oom_kills.extend(report.oom_kills.iter().cloned());
    if let Some(retries) = &report.oom_retries {
        let into = whole.oom_retries.get_or_insert_with(OomRetries::default);
        into.reclaim_retry_zone += retries.reclaim_retry_zone;
        into.compact_retry += retries.compact_retry;
    }
}

/// Kills stay in the order they happened.
pub fn finish_merge(_whole: &mut Report) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(pid: u32, comm: &str, cgroup: &str, at_s: f64) -> OomKill {
        OomKill {
            victim_pid: pid,
            victim_comm: comm.into(),
            cgroup: cgroup.into(),
            at_s,
            ..OomKill::default()
        }
    }

    #[test]
    fn repeated_kills_are_one_entry_with_count_range_and_pids() {
        let report = Report {
            oom_kills: vec![
                kill(10, "hog", "/db", 1.0),
                kill(11, "java", "/app", 1.5),
                kill(12, "hog", "/db", 2.0),
                kill(13, "hog", "/db", 3.25),
            ],
            ..Report::default()
        };
        let groups = group_kills(&report.oom_kills);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [3, 1]);
        let mut text = String::new();
        render_text(&mut text, &report);
        assert!(text.contains("3 kills of hog in /db from 1.00s to 3.25s, pids 10, 12, 13"), "{text}");
        assert_eq!(text.matches("killed").count(), 2, "one stanza per group: {text}");
        assert_eq!(summary(&report), "4 OOM kills: hog x3 in /db, java x1 in /app, first at 1.0s");
    }
}
