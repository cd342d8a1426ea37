//! JSON: the model as it is (schema in docs/json.md).

use anyhow::Result;

use crate::model::Report;

/// Whole-run report: one pretty-printed object.
pub fn render(report: &Report) -> Result<String> {
    let mut out = TokenBuffer::default();
    serde_json::to_writer_pretty(&mut out, report)?;
    out.finish()
}

/// One interval: one object on one line (JSON Lines).
pub fn render_line(report: &Report) -> Result<String> {
    let mut out = TokenBuffer::default();
    serde_json::to_writer(&mut out, report)?;
    out.finish()
}

/// serde_json writes token by token, most a few bytes long. In the static
/// (musl) build those are copied here byte by byte: musl's `memcpy` starts
/// too slowly for them, which made JSON rendering twice as slow as with
/// glibc (half of the time was in `memcpy`). glibc's is faster than the
/// loop.
#[derive(Default)]
struct TokenBuffer(Vec<u8>);

impl std::io::Write for TokenBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if cfg!(target_env = "musl") && bytes.len() <= 16 {
            self.0.reserve(bytes.len());
            for &b in bytes {
                self.0.push(b);
            }
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl TokenBuffer {
    fn finish(mut self) -> Result<String> {
        self.0.push(b'\n');
        // serde_json writes UTF-8 only.
        Ok(String::from_utf8(self.0)?)
    }
}
