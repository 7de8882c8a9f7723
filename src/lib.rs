//! fovea: where a medical multimodal LLM looks, and VGRefine to fix the answer.
//!
//! Layers, bottom up (imports point down only; tests/architecture.rs checks it): `io` (writing
//! files) and `platform` (what differs between Linux, Windows and macOS), `imaging` (pixels) and `demo` (phantoms, bundled assets), `model` (the MLLM runtime
//! on candle), `grounding` (the paper's method as plain math), `case` (one case end to end),
//! `eval` (datasets and batch runs) and `app` (the desktop app), and `cli` on top.

pub mod app;
pub mod case;
pub mod cli;
pub mod demo;
pub mod eval;
pub mod exchange;
pub mod grounding;
pub mod imaging;
pub mod io;
pub mod model;
pub mod platform;
