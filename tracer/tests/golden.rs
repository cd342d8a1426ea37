//! Output stays byte-identical on recorded captures: two real captures (a
//! whole run of every family, and the same run cut short so that the
//! report is rebuilt by merging its intervals) rendered in every format
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
    for capture in ["whole", "cut"] {
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
    assert_eq!(checked, 4);
}
