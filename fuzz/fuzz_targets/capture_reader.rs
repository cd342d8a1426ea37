//! Any bytes given to `tracer report`: the capture reader must answer with
//! a capture or an error, never panic, and so must what `report` says
//! about a capture cut short.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(capture) = tracer::capture::read(bytes) {
        let _ = capture.cut_short_notice();
        assert!(capture.complete_bytes <= bytes.len());
    }
});
