//! fovea: where a medical multimodal LLM looks, and VGRefine to fix the answer.
//!
//! Layers, bottom up: `imaging` (pixels), `model` (the MLLM runtime on candle), `grounding`
//! (the paper's method as plain math); `cli` is the command line.

pub mod app;
pub mod cli;
pub mod demo;
pub mod eval;
pub mod grounding;
pub mod imaging;
pub mod inspect;
pub mod model;
pub mod render;
