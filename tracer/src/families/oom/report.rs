//! The oom family's part of a report: its text section and how its rows
//! of interval reports add up to the whole run. Pure.

use std::fmt::Write as _;

use crate::{
    model::{OomKill, OomRetries, Report},
    render::parts::{human_bytes, or_root, render_stack},
};

/// Its section of the text report.
pub fn render_text(out: &mut String, report: &Report) {
    render_oom(out, report);
}

fn render_oom(out: &mut String, report: &Report) {
    let _ = writeln!(out, "\nOOM kills: {}", report.oom_kills.len());
    for kill in &report.oom_kills {
        render_kill(out, kill);
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
    render_stack(out, "trigger user stack", &kill.trigger_user_stack);
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
