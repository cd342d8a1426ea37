//! Output stays byte-identical on recorded captures: three real captures (a
//! whole run of every family; the same run cut short so that the report is
//! rebuilt by merging its intervals; and four OOM kills of one command in
//! one memory cgroup, which the report groups, with their stalls grouped
//! too) rendered in every format
//! and compared with what an earlier build printed: the text and folded
//! outputs verbatim, JSON and Perfetto by SHA-256 (`outputs.sha256`).
//!
//! After an intended change of output, regenerate them: `tracer report
//! --format F golden/C.cap > golden/C.F` and `sha256sum` for json and
//! perfetto.

use std::{path::Path, process::Command};

use sha2::{Digest as _, Sha256};

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden");

fn report(capture: &str, format: &str) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["report", "--format", format, &format!("{GOLDEN}/{capture}.cap")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Keeps what was printed for a look when it differs.
fn keep(name: &str, bytes: &[u8]) -> String {
    let path = std::env::temp_dir().join(format!("tracer-golden-{name}"));
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

#[test]
fn text_and_folded_are_unchanged() {
    for capture in ["whole", "cut", "grouped"] {
        for format in ["text", "folded"] {
            let name = format!("{capture}.{format}");
            let expected = std::fs::read(Path::new(GOLDEN).join(&name)).unwrap();
            let actual = report(capture, format);
            assert!(actual == expected, "{name} differs: `diff {GOLDEN}/{name} {}`", keep(&name, &actual));
        }
    }
}

#[test]
fn json_and_perfetto_are_unchanged() {
    let sums = std::fs::read_to_string(Path::new(GOLDEN).join("outputs.sha256")).unwrap();
    let mut checked = 0;
    for line in sums.lines() {
        let (sum, name) = line.split_once("  ").unwrap();
        let (capture, format) = name.split_once('.').unwrap();
        if !["json", "perfetto"].contains(&format) {
            continue;
        }
        let actual = report(capture, format);
        let digest: String = Sha256::digest(&actual).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(digest, sum, "{name} differs; what was printed: {}", keep(name, &actual));
        checked += 1;
    }
    assert_eq!(checked, 6);
}

/// The heat map of a real capture: one panel per disk, well-formed SVG,
/// every interval's requests in it.
#[test]
fn the_heatmap_of_a_capture_has_a_panel_per_disk() {
    let svg = String::from_utf8(report("whole", "heatmap")).unwrap();
    let mut reader = quick_xml::Reader::from_str(&svg);
    let mut requests = 0u64;
    loop {
        match reader.read_event().unwrap() {
            quick_xml::events::Event::Eof => break,
            quick_xml::events::Event::Text(t) => {
                let text = t.decode().unwrap();
                if let Some(n) = text.split(": ").nth(1).and_then(|r| r.strip_suffix(" requests")) {
                    requests += n.parse::<u64>().unwrap_or_else(|e| panic!("{text}: {e}"));
                }
            }
            _ => {}
        }
    }
    assert!(svg.contains(">loop0</text>") && svg.contains(">vda</text>"), "a panel per disk");
    // JSON lines: the intervals, then the whole run.
    let lines = String::from_utf8(report("whole", "json")).unwrap();
    let intervals: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["window"]["interval"].is_u64())
        .collect();
    assert!(intervals.len() > 1);
    let total: u64 = intervals
        .iter()
        .flat_map(|r| r["block"].as_array().unwrap())
        .flat_map(|row| row["histogram"].as_array().unwrap())
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, total, "the cells add up to the intervals' histograms");
}

/// The report leads with the summary, and repeated kills and stalls of one
/// command in one cgroup are one entry each.
#[test]
fn the_grouped_capture_leads_with_the_summary_and_groups_repeats() {
    let text = String::from_utf8(report("grouped", "text")).unwrap();
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("no `{needle}` in:\n{text}"));
    assert!(at("Summary") < at("\nOOM kills: 4"), "{text}");
    at("oom      4 OOM kills: tracer-test-hel x4 in /tracer-golden-oom");
    at("4 kills of tracer-test-hel in /tracer-golden-oom from 2.01s to 5.00s, pids ");
    assert_eq!(text.matches(": killed ").count(), 1, "one stanza for the group: {text}");
    at("4 x tracer-test-hel  in /tracer-golden-oom: 144 stalls");
}
