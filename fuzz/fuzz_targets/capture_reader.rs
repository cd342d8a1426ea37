//! Any bytes given to `tracer report`: the capture reader must answer with
//! a capture or an error, never panic, and so must what `report` does with
//! the capture: the whole-run report (merged from the intervals when its
//! own chunk is missing or corrupt) and every renderer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tracer::render;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(capture) = tracer::capture::read(bytes) {
        let _ = capture.cut_short_notice();
        let _ = capture.damage_notices();
        assert!(capture.complete_bytes <= bytes.len());
        let whole = capture.whole_report();
        let _ = render::text::render(&whole);
        let _ = render::json::render(&whole);
        let _ = render::folded::render(&whole);
        let _ = render::flame::render(&whole, render::flame::FlameUnit::Time);
        let _ = render::flame::render(&whole, render::flame::FlameUnit::Events);
        let mut heatmap = render::heatmap::Heatmap::default();
        capture.intervals.iter().for_each(|r| heatmap.add(r));
        let _ = heatmap.render("fuzz");
        let _ = render::perfetto::render(&whole);
        if let Some(first) = capture.intervals.first() {
            let _ = render::text::render(first);
        }
    }
});
