//! One case end to end (image -> model -> VGRefine -> record -> picture): what `fovea
//! inspect`, the app's worker and `eval` all call. Above `grounding`, `model` and `imaging`,
//! below `app`, `eval` and `cli`.

pub mod compose;
pub mod defaults;
pub mod font;
pub mod measure;
pub mod picture;
pub mod pipeline;
pub mod record;

pub use compose::Colormap;
pub use defaults::{model_defaults, parse_heads_arg, ModelDefaults, HUATUOGPT_VISION_7B_HEADS};
pub use picture::overlay_picture;
pub use pipeline::{causal_map, inspect, CausalRequest, FaithfulnessRequest, Inspection, Request};
pub use record::{case_record, metrics_record, CaseParts};
