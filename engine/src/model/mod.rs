//! The GPT-2 model: Hugging Face `GPT2LMHeadModel`'s architecture on cllm's kernels.

mod acts;
mod config;
mod gpt;
mod init;
mod io;
mod params;

pub use acts::{ActLayout, LayerActs};
pub use config::{GptConfig, VOCAB_PAD};
pub use gpt::{Gpt, ModelError, Workspace, LN_EPS, LOGIT_CHUNK};
pub use init::INIT_STD;
pub use params::{LayerRanges, ParamLayout, TensorSpec};
