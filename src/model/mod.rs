//! The MLLM runtime on candle: a LLaVA-family or Qwen2.5-VL model that answers questions about
//! an image and reports, per layer and head, where its answer token looked. No UI here.
//!
//! [`Model`] loads a checkpoint folder ([`detect::detect`] says what it holds); an
//! [`ImageSession`] encodes one image once and keeps the KV cache of the shared prefix (the
//! template text before the image plus the image tokens), so every prompt about that image
//! (the question, the general-description prompt, the knockout pass, later questions) runs
//! only its own suffix.

pub mod attention;
pub mod bench;
pub mod cache;
pub mod config;
pub mod decoder;
pub mod detect;
pub mod device;
pub mod embedding;
pub mod gemm;
pub mod gemma3;
pub mod linear;
pub mod loaded;
pub mod memory;
pub mod preprocess;
pub mod prompt;
pub mod qwen_vl;
pub mod rope;
pub mod session;
pub mod shapes;
pub mod softmax;
pub mod unsupported;
pub mod vision;
pub mod weights;

pub use config::Checkpoint;
pub use decoder::{AttentionProbe, Cache, Decoder, EdgeMask, Hooks, ImageRows, QueryRows};
pub use loaded::{ImageEncoder, ImageFeatures, Model, PixelInput};
pub use preprocess::{ImageProcessor, PixelMapping, Preprocess};
pub use prompt::{PromptFormat, TokenisedPrompt};
pub use session::{image_key_positions, Answer, ImageSession, RunOptions, Timings};
pub use vision::{Projector, VisionTower};
