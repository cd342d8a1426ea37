//! Renderers: each turns a [`crate::model::Report`] into one output format.

pub mod flame;
pub mod folded;
pub mod heatmap;
pub mod json;
pub mod parts;
pub mod perfetto;
pub mod status;
pub mod text;

/// A report as `trace` prints it: text, or JSON (one object per line
/// when the run printed intervals).
pub fn report(report: &crate::model::Report, json: bool, json_lines: bool) -> anyhow::Result<String> {
    Ok(match (json, json_lines) {
        (true, true) => json::render_line(report)?,
        (true, false) => json::render(report)?,
        (false, _) => text::render(report),
    })
}
