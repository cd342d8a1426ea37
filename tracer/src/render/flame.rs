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

/// Weights differ by root (see [`super::folded`]); the tooltip says so.
const COUNT_NAME: &str = "events or µs stalled";

const SUBTITLE: &str = "width: failures, OOM kills and THP splits by count; reclaim and compaction stalls \
                        by microseconds stalled. Compare widths within one root only.";

/// The flame graph as an SVG document. A report without stacks gives a
/// small SVG that says so (inferno refuses empty input).
pub fn render(report: &Report) -> Result<String> {
    let folded = folded::render(report);
    if folded.is_empty() {
        return Ok(empty_svg());
    }
    let mut options = Options::default();
    options.title = TITLE.into();
    options.subtitle = Some(SUBTITLE.into());
    options.count_name = COUNT_NAME.into();
    options.colors = Palette::Basic(BasicPalette::Mem);
    // Colour by function name, so the same function has the same colour in
    // every graph, and the output is reproducible.
    options.hash = true;
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, folded.lines(), &mut svg).context("drawing the flame graph")?;
    String::from_utf8(svg).context("inferno wrote invalid UTF-8")
}

/// A valid SVG with the title and "no stacks".
fn empty_svg() -> String {
    format!(
        r#"<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="1200" height="90" viewBox="0 0 1200 90" xmlns="http://www.w3.org/2000/svg">
<text x="600" y="30" text-anchor="middle" font-family="Verdana" font-size="17">{TITLE}</text>
<text x="600" y="60" text-anchor="middle" font-family="Verdana" font-size="12">no stacks: no allocation failures, OOM kills, stalls or THP splits with stacks were recorded</text>
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
        let svg = render(&report).unwrap();
        let (root, text) = parse(&svg);
        assert_eq!(root, "svg");
        assert!(text.contains(TITLE), "{text}");
        for name in
            ["alloc_failure:order2", "__alloc_pages_noprof+0x1f2", "drv_<refill>+0x40", "direct_reclaim"]
        {
            assert!(text.contains(name), "{name} missing from {text}");
        }
        // Weights reach the tooltips: 3 ms of stalls are 3,000 µs.
        assert!(text.contains("direct_reclaim (3,000 events or µs stalled"), "{text}");
    }

    #[test]
    fn empty_report_gives_valid_svg() {
        let svg = render(&Report::default()).unwrap();
        let (root, text) = parse(&svg);
        assert_eq!(root, "svg");
        assert!(text.contains(TITLE));
        assert!(text.contains("no stacks"));
    }
}
