//! cllm-kernels: the compute kernels every part of cllm stands on.
//!
//! Each kernel is written once against the [`simd::Simd`] trait and runs on four paths (scalar,
//! portable `wide`, AVX2+FMA, AVX-512F), chosen at run time by [`isa::active`] (`CLLM_ISA` forces
//! one). Each has a clear reference in its module's `oracle`, which the tests compare every path to.
//! Checked entry points return [`ShapeError`] when slices disagree with the declared dimensions;
//! `*_unchecked` variants skip the checks. No kernel allocates: outputs and scratch are the caller's.

pub mod adamw;
pub mod attention;
pub mod bias;
mod dispatch;
pub mod embedding;
pub mod error;
pub mod gelu;
pub mod gemm;
pub mod gemv;
pub mod isa;
pub mod kv_attention;
pub mod layernorm;
pub mod loss;
pub mod math;
pub mod probe;
pub mod residual;
pub mod simd;

pub use error::ShapeError;
pub use isa::Isa;
