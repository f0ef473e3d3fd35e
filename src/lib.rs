//! cllm: a CPU-native engine for training, running and evaluating GPT-style language models.
//!
//! This crate is a thin facade over the workspace crates: [`kernels`] holds the SIMD compute
//! kernels with runtime ISA dispatch, [`engine`] the topology, workers, model and training.

pub use cllm_engine as engine;
pub use cllm_kernels as kernels;
