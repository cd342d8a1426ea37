//! JSON: the model as it is (schema in docs/json.md).

use anyhow::Result;

use crate::model::Report;

/// Whole-run report: one pretty-printed object.
pub fn render(report: &Report) -> Result<String> {
    Ok(serde_json::to_string_pretty(report)? + "\n")
}

/// One interval: one object on one line (JSON Lines).
pub fn render_line(report: &Report) -> Result<String> {
    Ok(serde_json::to_string(report)? + "\n")
}
