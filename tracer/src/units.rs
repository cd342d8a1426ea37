//! Durations and sizes as people type them on the command line: parsed
//! with errors that say what is wrong (usage errors, never panics).

use std::time::Duration;

/// A duration, or none ("off").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threshold(pub Option<Duration>);

pub fn parse_threshold(text: &str) -> Result<Threshold, String> {
    if text.trim() == "off" { Ok(Threshold(None)) } else { parse_duration(text).map(|d| Threshold(Some(d))) }
}

/// The longest duration accepted: past it a value is a typo, and timers
/// and clocks would overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
/// The shortest `--interval`: shorter ones spend the run printing reports.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// "10s", "250ms", "2m", "1h", "1.5s"; a bare number is seconds. Between
/// 1 us and [`MAX_DURATION`]; never panics.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Some(positive) = text.strip_prefix('-') {
        return Err(format!(
            "`{text}` is negative: give how long, e.g. {}",
            if positive.is_empty() { "10s" } else { positive }
        ));
    }
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("`{text}` is not a duration such as 10s or 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" => value,
        "ms" => value / 1000.0,
        "us" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit `{other}` in `{text}`; use ms, s, m or h")),
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!("`{text}` must be a positive duration"));
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(d) if d <= MAX_DURATION && !d.is_zero() => Ok(d),
        Ok(d) if d.is_zero() => Err(format!("`{text}` is shorter than a nanosecond")),
        _ => Err(format!("`{text}` is too long: at most {} days", MAX_DURATION.as_secs() / 86400)),
    }
}

/// `--interval`: a duration of at least [`MIN_INTERVAL`].
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = parse_duration(text)?;
    if interval < MIN_INTERVAL {
        return Err(format!(
            "`{text}` is shorter than {} ms: a report that often would be all the run does",
            MIN_INTERVAL.as_millis()
        ));
    }
    Ok(interval)
}

/// "0" or a duration.
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" { Ok(Duration::ZERO) } else { parse_duration(text) }
}

/// A size: bytes, or with K, M, G or T (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        Some((i, 'T' | 't')) => (&t[..i], 40),
        _ => (t, 0),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("`{text}` is not a size (e.g. 500M, 2G)"))
}
