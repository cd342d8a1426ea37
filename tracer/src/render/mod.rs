//! Renderers: each turns a [`crate::model::Report`] into one output format.

pub mod flame;
pub mod folded;
pub mod json;
pub mod perfetto;
pub mod status;
pub mod text;
