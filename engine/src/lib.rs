//! cllm-engine: topology, sphere workers, model, training, data, generation and evaluation.
//!
//! The engine never prints; it reports through return values and typed errors. Where a
//! metrics or event callback was planned, each call returns its figures instead (a training step
//! its [`train::StepStats`], a pass over validation data its loss), and the driver renders them:
//! the caller already runs between steps, so a callback would only move its code into a
//! closure.

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
mod shared_slice;
pub mod sphere_tree;
pub mod spheres;
pub mod tokenizer;
pub mod topology;
pub mod train;
