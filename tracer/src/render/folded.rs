//! Folded stacks, the input of Brendan Gregg's `flamegraph.pl`, inferno and
//! speedscope: one line per distinct stack, `frame;frame;...;frame WEIGHT`,
//! root first.
//!
//! Every line starts with a synthetic root frame that names what the stack
//! is, so that one flame graph keeps the kinds apart:
//!
//! | root                  | from                                  | weight                         |
//! |-----------------------|---------------------------------------|--------------------------------|
//! | `alloc_failure:orderN`| `alloc_failures`                      | failures (`count`)             |
//! | `oom_kill`            | `oom_kills`, the trigger's stacks     | 1 per kill                     |
//! | `direct_reclaim`      | `reclaim` rows' `stacks`              | stall time in µs               |
//! | `memcg_reclaim`       | `reclaim` rows' `stacks`              | stall time in µs               |
//! | `compaction`          | `compaction.stalls.stacks`            | stall time in µs               |
//! | `dirty_throttle`      | `dirty.rows`' `stacks`                | pause time in µs               |
//! | `thp_split`           | `thp.processes`                       | PMD splits + page splits       |
//!
//! Stall stacks weigh their total time in microseconds, rounded, and at
//! least 1 so that a stack that stalled for less than half a microsecond
//! is not dropped: a flame graph of stalls shows where the time went, not
//! how many stalls there were. Everything else weighs events. Widths are
//! therefore comparable within one root, not across roots; the SVG flame
//! graph draws one unit at a time (`--flame time|events`).
//!
//! After the root comes the process's name, then the user stack, root
//! (outermost caller) first, then the kernel stack, root first, so the
//! kernel leaf (where the allocation failed or the task stalled) is the
//! innermost frame. Frames are function names alone, without offsets or
//! lines, so that one function is one box; a frame with inlined functions
//! gives one frame per function, caller first ([`flame_labels`]). An entry
//! without stacks gives a line with the root and process frames alone, so
//! its weight still counts.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::{
    model::{Frame, Report, StallRow},
    symbolize::flame_labels,
};

/// The folded lines of `report`, sorted, identical stacks merged (weights
/// added), each ending in a newline; empty when there are no stacks.
pub fn render(report: &Report) -> String {
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    let mut add = |root: &str, process: &str, user: &[Frame], kernel: &[Frame], weight: u64| {
        if weight == 0 {
            return;
        }
        let stack = fold(root, process, user, kernel);
        let total = stacks.entry(stack).or_default();
        *total = total.saturating_add(weight);
    };

    for failure in &report.alloc_failures {
        let root = format!("alloc_failure:order{}", failure.order);
        add(&root, &failure.comm, &failure.user_stack, &failure.kernel_stack, failure.count);
    }
    for kill in &report.oom_kills {
        add("oom_kill", &kill.trigger_comm, &kill.trigger_user_stack, &kill.trigger_kernel_stack, 1);
    }
    for row in report.stall_rows() {
        let root = stall_root(row);
        for stack in &row.stacks {
            let process = row.processes.iter().find(|p| p.pid == stack.pid).map(|p| p.comm.as_str());
            let process = process.map_or_else(|| format!("pid {}", stack.pid), str::to_string);
            add(&root, &process, &stack.user_stack, &stack.kernel_stack, stall_weight_us(stack.total_ms));
        }
    }
    for row in report.dirty.iter().flat_map(|d| &d.rows) {
        for stack in &row.stacks {
            let weight = stall_weight_us(stack.total_ms);
            add("dirty_throttle", &row.comm, &stack.user_stack, &stack.kernel_stack, weight);
        }
    }
    if let Some(thp) = &report.thp {
        for process in &thp.processes {
            let weight = process.pmd_splits.saturating_add(process.page_splits);
            add("thp_split", &process.comm, &[], &process.kernel_stack, weight);
        }
    }

    let mut out = String::new();
    for (stack, weight) in &stacks {
        let _ = writeln!(out, "{stack} {weight}");
    }
    out
}

/// The root frame of a stall row's stacks: `direct_reclaim`,
/// `memcg_reclaim`, `compaction`.
fn stall_root(row: &StallRow) -> String {
    match row.kind.as_str() {
        "direct" => "direct_reclaim".into(),
        "memcg" => "memcg_reclaim".into(),
        "compaction" => "compaction".into(),
        other => sanitize(other),
    }
}

/// Stall time in whole microseconds, at least 1.
fn stall_weight_us(total_ms: f64) -> u64 {
    // `as` saturates, and turns NaN into 0.
    ((total_ms * 1000.0).round() as u64).max(1)
}

/// `root;user root;...;user leaf;kernel root;...;kernel leaf`, from
/// leaf-first stacks.
fn fold(root: &str, process: &str, user: &[Frame], kernel: &[Frame]) -> String {
    let mut line = sanitize(root);
    line.push(';');
    line.push_str(&sanitize(if process.is_empty() { "?" } else { process }));
    for frame in user.iter().rev().chain(kernel.iter().rev()) {
        for label in flame_labels(frame) {
            line.push(';');
            line.push_str(&sanitize(&label));
        }
    }
    line
}

/// Frame text without the characters that delimit folded stacks: `;`
/// (between frames) becomes `:`, line breaks become spaces.
fn sanitize(text: &str) -> String {
    text.replace(';', ":").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AllocFailure, Compaction, InlinedFrame, OomKill, StallStack, Thp, ThpProcess};

    fn kernel_frame(symbol: &str, offset: u64) -> Frame {
        Frame {
            addr: 0xffff_ffff_8100_0000 + offset,
            symbol: Some(symbol.into()),
            offset: Some(offset),
            module: Some("kernel".into()),
            ..Frame::default()
        }
    }

    /// `main+0x10 (app.c:12)` with `fill_buffer` inlined into it.
    fn user_frame_with_inlined() -> Frame {
        Frame {
            addr: 0x5555_0000_1010,
            symbol: Some("main".into()),
            offset: Some(0x10),
            module: Some("/usr/bin/app".into()),
            file: Some("/src/app.c".into()),
            line: Some(12),
            inlined: vec![InlinedFrame {
                symbol: "fill_buffer".into(),
                file: Some("/src/app.c".into()),
                line: Some(7),
            }],
            ..Frame::default()
        }
    }

    fn stall_row(kind: &str, stacks: Vec<StallStack>) -> StallRow {
        StallRow { kind: kind.into(), stacks, ..StallRow::default() }
    }

    #[test]
    fn empty_report_gives_nothing() {
        assert_eq!(render(&Report::default()), "");
    }

    #[test]
    fn alloc_failure_is_root_then_user_then_kernel() {
        let report = Report {
            alloc_failures: vec![AllocFailure {
                count: 5,
                order: 3,
                // Leaf first, as captured.
                kernel_stack: vec![
                    kernel_frame("__alloc_pages_noprof", 0x1f2),
                    kernel_frame("driver_refill", 0x40),
                ],
                user_stack: vec![user_frame_with_inlined()],
                comm: "app".into(),
                ..AllocFailure::default()
            }],
            ..Report::default()
        };
        // Names alone: offsets and lines would split one function's box.
        assert_eq!(
            render(&report),
            "alloc_failure:order3;app;main;fill_buffer [inlined];driver_refill;__alloc_pages_noprof 5\n"
        );
    }

    #[test]
    fn stalls_weigh_microseconds_rounded_and_at_least_one() {
        let stack = |total_ms: f64, leaf: &str| StallStack {
            count: 3,
            total_ms,
            pid: 7,
            kernel_stack: vec![kernel_frame(leaf, 0x8), kernel_frame("__alloc_pages_slowpath", 0x100)],
            user_stack: vec![],
            user_stack_unwind: None,
        };
        let report = Report {
            reclaim: vec![
                stall_row("direct", vec![stack(12.3456, "shrink_node")]),
                stall_row("memcg", vec![stack(0.0002, "shrink_lruvec")]),
            ],
            compaction: Some(Compaction {
                stalls: stall_row("compaction", vec![stack(2.0, "compact_zone")]),
                ..Compaction::default()
            }),
            ..Report::default()
        };
        assert_eq!(
            render(&report),
            "compaction;pid 7;__alloc_pages_slowpath;compact_zone 2000\n\
             direct_reclaim;pid 7;__alloc_pages_slowpath;shrink_node 12346\n\
             memcg_reclaim;pid 7;__alloc_pages_slowpath;shrink_lruvec 1\n"
        );
    }

    #[test]
    fn identical_stacks_merge_and_kinds_stay_apart() {
        let kill = |pid| OomKill {
            victim_pid: pid,
            trigger_kernel_stack: vec![kernel_frame("out_of_memory", 0x2a)],
            ..OomKill::default()
        };
        let failure = |count, order| AllocFailure {
            count,
            order,
            kernel_stack: vec![kernel_frame("__alloc_pages_noprof", 0x1f2)],
            ..AllocFailure::default()
        };
        let report = Report {
            // Same stack and order, different processes: one line.
            alloc_failures: vec![failure(2, 2), failure(3, 2), failure(4, 0)],
            oom_kills: vec![kill(10), kill(11)],
            thp: Some(Thp {
                processes: vec![
                    ThpProcess {
                        pid: 1,
                        pmd_splits: 4,
                        page_splits: 1,
                        kernel_stack: vec![kernel_frame("__split_huge_pmd", 0x10)],
                        ..ThpProcess::default()
                    },
                    // No stack: the root alone carries the weight.
                    ThpProcess { pid: 2, pmd_splits: 6, ..ThpProcess::default() },
                    // Nothing in this window: no line.
                    ThpProcess { pid: 3, kernel_stack: vec![kernel_frame("x", 0)], ..ThpProcess::default() },
                ],
                ..Thp::default()
            }),
            ..Report::default()
        };
        assert_eq!(
            render(&report),
            "alloc_failure:order0;?;__alloc_pages_noprof 4\n\
             alloc_failure:order2;?;__alloc_pages_noprof 5\n\
             oom_kill;?;out_of_memory 2\n\
             thp_split;? 6\n\
             thp_split;?;__split_huge_pmd 5\n"
        );
    }

    #[test]
    fn delimiters_in_frame_text_are_replaced() {
        let report = Report {
            alloc_failures: vec![AllocFailure {
                count: 1,
                user_stack: vec![Frame {
                    symbol: Some("odd;name\nwith\rbreaks".into()),
                    offset: Some(0),
                    ..Frame::default()
                }],
                ..AllocFailure::default()
            }],
            ..Report::default()
        };
        let out = render(&report);
        assert_eq!(out, "alloc_failure:order0;?;odd:name with breaks 1\n");
        assert_eq!(out.lines().count(), 1);
    }
}
