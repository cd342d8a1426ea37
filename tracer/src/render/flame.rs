//! An SVG flame graph of the folded stacks ([`super::folded`]), drawn by
//! inferno: allocation failures, OOM kill triggers, reclaim and compaction
//! stalls and THP splits, each under its own root frame.

use anyhow::{Context as _, Result};
use inferno::flamegraph::{
    self, Options,
    color::{BasicPalette, Palette},
};

use super::folded;
use crate::model::Report;

const TITLE: &str = "tracer: allocation failures and memory stalls";

/// What a flame graph's widths measure: never both in one graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlameUnit {
    /// Time stalled, in microseconds: reclaim, compaction, throttling.
    Time,
    /// Events: allocation failures, OOM kills, THP splits.
    Events,
}

/// The folded roots whose weights are microseconds stalled.
const TIME_ROOTS: [&str; 4] = ["direct_reclaim", "memcg_reclaim", "compaction", "dirty_throttle"];

impl FlameUnit {
    fn takes(self, folded_line: &str) -> bool {
        let root = folded_line.split([';', ' ']).next().unwrap_or_default();
        TIME_ROOTS.contains(&root) == (self == FlameUnit::Time)
    }

    fn count_name(self) -> &'static str {
        match self {
            FlameUnit::Time => "µs stalled",
            FlameUnit::Events => "events",
        }
    }

    fn subtitle(self) -> &'static str {
        match self {
            FlameUnit::Time => {
                "width: microseconds stalled in reclaim, compaction and dirty throttling \
                                (--flame events for failures, OOM kills and THP splits)"
            }
            FlameUnit::Events => {
                "width: allocation failures, OOM kills and THP splits by count \
                                  (--flame time for where stalls spent their time)"
            }
        }
    }
}

/// The flame graph of one unit as an SVG document. A report without such
/// stacks gives a small SVG that says so (inferno refuses empty input).
pub fn render(report: &Report, unit: FlameUnit) -> Result<String> {
    let folded = folded::render(report);
    let lines: Vec<&str> = folded.lines().filter(|l| unit.takes(l)).collect();
    if lines.is_empty() {
        return Ok(empty_svg(unit));
    }
    let mut options = Options::default();
    options.title = TITLE.into();
    options.subtitle = Some(unit.subtitle().into());
    options.count_name = unit.count_name().into();
    options.colors = Palette::Basic(BasicPalette::Mem);
    // Colour by function name, so the same function has the same colour in
    // every graph, and the output is reproducible.
    options.hash = true;
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, lines, &mut svg).context("drawing the flame graph")?;
    String::from_utf8(svg).context("inferno wrote invalid UTF-8")
}

/// A valid SVG with the title and "no stacks".
fn empty_svg(unit: FlameUnit) -> String {
    let what = match unit {
        FlameUnit::Time => {
            "no stall stacks: no reclaim, compaction or throttling stalls with stacks were recorded"
        }
        FlameUnit::Events => {
            "no event stacks: no allocation failures, OOM kills or THP splits with stacks were recorded"
        }
    };
    format!(
        r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="1200" height="90" viewBox="0 0 1200 90" xmlns="http://www.w3.org/2000/svg">
<text x="600" y="30" text-anchor="middle" font-family="Verdana" font-size="17">{TITLE}</text>
<text x="600" y="60" text-anchor="middle" font-family="Verdana" font-size="12">{what}</text>
</svg>
"#
    )
}

#[cfg(test)]
mod tests {
    use quick_xml::{Reader, events::Event};

    use super::*;
    use crate::model::{AllocFailure, Frame, StallRow, StallStack};

    /// Parses `svg` as XML; returns the root element's name and all text.
    fn parse(svg: &str) -> (String, String) {
        let mut reader = Reader::from_str(svg);
        let mut root = None;
        let mut depth = 0usize;
        let mut text = String::new();
        loop {
            match reader
                .read_event()
                .unwrap_or_else(|e| panic!("invalid XML at {}: {e}", reader.buffer_position()))
            {
                Event::Start(e) => {
                    root.get_or_insert_with(|| String::from_utf8(e.name().as_ref().to_vec()).unwrap());
                    depth += 1;
                }
                Event::Empty(e) => {
                    root.get_or_insert_with(|| String::from_utf8(e.name().as_ref().to_vec()).unwrap());
                }
                Event::End(_) => depth = depth.checked_sub(1).expect("unbalanced end tag"),
                Event::Text(t) => text.push_str(&t.decode().unwrap()),
                Event::GeneralRef(r) => match r.resolve_char_ref().expect("bad character reference") {
                    Some(c) => text.push(c),
                    None => text.push_str(match &*r.decode().unwrap() {
                        "lt" => "<",
                        "gt" => ">",
                        "amp" => "&",
                        "quot" => "\"",
                        "apos" => "'",
                        other => panic!("undeclared entity &{other};"),
                    }),
                },
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(depth, 0, "unclosed elements");
        (root.expect("no root element"), text)
    }

    fn frame(symbol: &str, offset: u64) -> Frame {
        Frame { symbol: Some(symbol.into()), offset: Some(offset), ..Frame::default() }
    }

    #[test]
    fn flame_graph_is_xml_with_title_and_frames() {
        let report = Report {
            alloc_failures: vec![AllocFailure {
                count: 4,
                order: 2,
                kernel_stack: vec![frame("__alloc_pages_noprof", 0x1f2), frame("drv_<refill>", 0x40)],
                ..AllocFailure::default()
            }],
            reclaim: vec![StallRow {
                kind: "direct".into(),
                stacks: vec![StallStack {
                    count: 1,
                    total_ms: 3.0,
                    kernel_stack: vec![frame("shrink_node", 0x8)],
                    ..StallStack::default()
                }],
                ..StallRow::default()
            }],
            ..Report::default()
        };
        let (root, events) = parse(&render(&report, FlameUnit::Events).unwrap());
        assert_eq!(root, "svg");
        assert!(events.contains(TITLE), "{events}");
        for name in ["alloc_failure:order2", "__alloc_pages_noprof", "drv_<refill>"] {
            assert!(events.contains(name), "{name} missing from {events}");
        }
        assert!(!events.contains("direct_reclaim"), "stall time in an events graph: {events}");
        let (_, time) = parse(&render(&report, FlameUnit::Time).unwrap());
        // Weights reach the tooltips: 3 ms of stalls are 3,000 µs.
        assert!(time.contains("direct_reclaim (3,000 µs stalled"), "{time}");
        assert!(!time.contains("alloc_failure"), "events in a time graph: {time}");
    }

    #[test]
    fn empty_report_gives_valid_svg() {
        for unit in [FlameUnit::Time, FlameUnit::Events] {
            let (root, text) = parse(&render(&Report::default(), unit).unwrap());
            assert_eq!(root, "svg");
            assert!(text.contains(TITLE));
            assert!(text.contains("no ") && text.contains(" stacks"), "{text}");
        }
    }
}
