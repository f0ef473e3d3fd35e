//! The GPT-2 model: Hugging Face `GPT2LMHeadModel`'s architecture on cllm's kernels.

mod config;

pub use config::{GptConfig, VOCAB_PAD};
