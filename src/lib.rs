//! fovea: where a medical multimodal LLM looks, and VGRefine to fix the answer.
//!
//! Layers, bottom up: `imaging` (pixels), `model` (the MLLM runtime on candle); `cli` is the
//! command line.

pub mod cli;
pub mod imaging;
pub mod model;
