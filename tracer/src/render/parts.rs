//! Pieces of the text report that every family's section uses: log2
//! latency bars as biolatency draws them, stacks, and numbers for people.

use std::fmt::Write as _;

use crate::{
    model::{Bucket, Frame, Percentiles},
    symbolize::frame_label,
};

const BAR_WIDTH: usize = 40;

/// Collapses fine buckets into biolatency's log2 microsecond slots (slot 0
/// is "0 -> 1", slot k is 2^k -> 2^(k+1)-1), by each bucket's midpoint.
pub fn log2_slots(buckets: &[Bucket]) -> Vec<(u64, u64, u64)> {
    let mut slots = [0u64; 64];
    let mut top = None;
    let mut bottom = None;
    for b in buckets {
        let mid_us = ((b.low_us + b.high_us) / 2.0).floor() as u64;
        let slot = if mid_us < 2 { 0 } else { 63 - mid_us.leading_zeros() as usize };
        slots[slot] += b.count;
        top = top.max(Some(slot));
        bottom = Some(bottom.map_or(slot, |s: usize| s.min(slot)));
    }
    let (Some(bottom), Some(top)) = (bottom, top) else {
        return Vec::new();
    };
    (bottom..=top)
        .map(|slot| {
            let (low, high) = if slot == 0 { (0, 1) } else { (1u64 << slot, (1u64 << (slot + 1)) - 1) };
            (low, high, slots[slot])
        })
        .collect()
}

pub fn render_log2(out: &mut String, buckets: &[Bucket]) {
    let slots = log2_slots(buckets);
    if slots.is_empty() {
        let _ = writeln!(out, "     (no timed requests)");
        return;
    }
    let peak = slots.iter().map(|s| s.2).max().unwrap_or(1).max(1);
    // Rows are "     {8} -> {8}": the header's columns line up with them.
    let _ = writeln!(out, "     {:>8}{:12} : {:<8} distribution", "usecs", "", "count");
    for (low, high, count) in slots {
        let stars = ((count as u128 * BAR_WIDTH as u128).div_ceil(peak as u128)) as usize;
        let stars = if count == 0 { 0 } else { stars.min(BAR_WIDTH) };
        let _ = writeln!(
            out,
            "     {:>8} -> {:<8} : {:<8} |{:<width$}|",
            low,
            high,
            count,
            "*".repeat(stars),
            width = BAR_WIDTH
        );
    }
}

pub fn render_stack(out: &mut String, title: &str, frames: &[Frame]) {
    if frames.is_empty() {
        return;
    }
    let bare = title.contains("user") && frames.iter().all(|f| f.module.is_none() && f.symbol.is_none());
    if bare {
        // Its memory map is read when the event arrives; a process killed
        // at once (an OOM victim that triggered its own kill) is gone.
        let _ = writeln!(out, "     {title} (the process exited before its memory map could be read):");
    } else {
        let _ = writeln!(out, "     {title}:");
    }
    for frame in frames {
        let _ = writeln!(out, "       {}", frame_label(frame));
    }
}

/// `p50 …  p90 …  p99 …  p99.9 …  max … usecs`, as every latency row
/// states its percentiles.
pub fn percentiles_line(l: &Percentiles) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {} usecs",
        us(l.p50),
        us(l.p90),
        us(l.p99),
        us(l.p999),
        us(l.max)
    )
}

/// `word` for one, `words` otherwise.
pub fn plural(n: u64, word: &str) -> String {
    if n == 1 { word.to_string() } else { format!("{word}s") }
}

/// A cgroup path, or what to say when it is unknown.
pub fn or_root(cgroup: &str) -> &str {
    if cgroup.is_empty() { "(unknown cgroup)" } else { cgroup }
}

/// Microseconds with as many decimals as help.
pub fn us(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(low_us: f64, high_us: f64, count: u64) -> Bucket {
        Bucket { low_us, high_us, count, index: None }
    }

    #[test]
    fn log2_slots_follow_biolatency() {
        let slots = log2_slots(&[b(0.5, 0.53, 3), b(2.0, 2.1, 1), b(5.0, 5.3, 2), b(40.0, 42.0, 7)]);
        assert_eq!(slots.first(), Some(&(0, 1, 3)));
        assert_eq!(slots[1], (2, 3, 1));
        assert_eq!(slots[2], (4, 7, 2));
        assert_eq!(slots.last(), Some(&(32, 63, 7)));
        assert_eq!(slots.iter().map(|s| s.2).sum::<u64>(), 13);
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
