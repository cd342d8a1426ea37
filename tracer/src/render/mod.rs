//! Renderers: each turns a [`crate::model::Report`] into one output format.

pub mod folded;
pub mod json;
pub mod text;
