//! cllm-engine: topology, sphere workers, model, training, data, generation and evaluation.
//!
//! The engine never prints; it reports through return values and typed errors.

pub use cllm_kernels as kernels;

pub mod atomic_file;
pub mod checkpoint;
pub mod clean;
pub mod data;
pub mod eval;
pub mod generate;
pub mod huge_pages;
pub mod model;
pub mod par_gemm;
pub mod rng;
pub mod sphere_tree;
pub mod spheres;
pub mod tokenizer;
pub mod topology;
pub mod train;
