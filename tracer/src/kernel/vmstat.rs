//! /proc/vmstat: the kernel's own memory event counters.

use std::collections::BTreeMap;

pub fn parse(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

pub fn read() -> BTreeMap<String, u64> {
    std::fs::read_to_string("/proc/vmstat").map(|t| parse(&t)).unwrap_or_default()
}

/// The THP split counters this kernel has.
pub fn thp_split_counters(all: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    all.iter()
        .filter(|(k, _)| k.starts_with("thp_split") || k.contains("deferred_split"))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_selects_thp_counters() {
        let all =
            parse("nr_free_pages 123\nthp_split_pmd 4\nthp_split_page 2\nthp_deferred_split_page 1\nbogus\n");
        assert_eq!(all["nr_free_pages"], 123);
        let thp = thp_split_counters(&all);
        assert_eq!(
            thp.keys().collect::<Vec<_>>(),
            ["thp_deferred_split_page", "thp_split_page", "thp_split_pmd"]
        );
    }
}
