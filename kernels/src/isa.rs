//! Instruction-set selection: detect once, cache, and let `CLLM_ISA` force a path.
//!
//! Every kernel dispatches on [`active`]. The first call reads `CLLM_ISA`
//! (`scalar|portable|avx2|avx512`); without it the best path this CPU has is chosen.
//! An unknown value or a path this CPU lacks is an error, never a silent fallback:
//! binaries call [`init`] at start to report it cleanly, and kernels called without
//! `init` panic with the same message.

use std::fmt;
use std::sync::OnceLock;

/// The environment variable that forces one kernel path.
pub const ENV_VAR: &str = "CLLM_ISA";

/// A kernel path. Ordered from least to most capable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Plain Rust, one lane at a time (the compiler may still use baseline SSE2).
    Scalar,
    /// The `wide` crate's 8-lane vectors: SSE2 pairs on x86-64, NEON on aarch64.
    Portable,
    /// AVX2 with FMA3, 8 lanes.
    Avx2,
    /// AVX-512F, 16 lanes.
    Avx512,
}

/// Why `CLLM_ISA` could not be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsaError {
    #[error("{ENV_VAR}={value:?} is not a kernel path; use one of scalar, portable, avx2, avx512 (or unset it to pick the best)")]
    Unknown { value: String },
    #[error("{ENV_VAR}={value} asks for a path this CPU lacks; it has: {available}")]
    Unsupported { value: String, available: String },
}

impl Isa {
    /// Every path, least capable first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The name `CLLM_ISA` accepts.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Parse a `CLLM_ISA` value.
    pub fn parse(value: &str) -> Result<Isa, IsaError> {
        Isa::ALL
            .into_iter()
            .find(|isa| isa.name() == value.trim().to_ascii_lowercase())
            .ok_or_else(|| IsaError::Unknown {
                value: value.to_string(),
            })
    }

    /// Whether this CPU can run the path (always, for AVX-512 in builds with the test feature
    /// `emulate-avx512`, which emulates it where the CPU lacks it).
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar | Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 => false,
            Isa::Avx512 => cfg!(feature = "emulate-avx512") || avx512_native(),
        }
    }

    /// The paths this CPU can run, least capable first.
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|isa| isa.is_supported())
            .collect()
    }

    /// The most capable path this CPU can run natively (never the emulated AVX-512 of the
    /// test feature, which only `CLLM_ISA=avx512` selects).
    pub fn best() -> Isa {
        Isa::ALL
            .into_iter()
            .rev()
            .find(|&isa| isa.is_supported() && (isa != Isa::Avx512 || avx512_native()))
            .unwrap_or(Isa::Scalar)
    }

    /// The path `CLLM_ISA` asks for, or the best one when it is unset or empty.
    pub fn from_env() -> Result<Isa, IsaError> {
        match std::env::var(ENV_VAR) {
            Ok(value) if !value.trim().is_empty() => {
                let isa = Isa::parse(&value)?;
                if isa.is_supported() {
                    Ok(isa)
                } else {
                    let available: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
                    Err(IsaError::Unsupported {
                        value: isa.name().to_string(),
                        available: available.join(", "),
                    })
                }
            }
            _ => Ok(Isa::best()),
        }
    }
}

/// Whether the CPU itself can run the AVX-512 path: AVX-512F, and the AVX2 and FMA its entry
/// points also enable (every such CPU has them, but a hypervisor may hide some); cached by the
/// standard library after the first call.
#[inline]
pub fn avx512_native() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

static ACTIVE: OnceLock<Result<Isa, IsaError>> = OnceLock::new();

/// Select the kernel path once (reading `CLLM_ISA`) and return it, or the reason it failed.
pub fn init() -> Result<Isa, IsaError> {
    ACTIVE.get_or_init(Isa::from_env).clone()
}

/// The kernel path every dispatching kernel uses.
///
/// # Panics
/// When `CLLM_ISA` is invalid for this CPU; call [`init`] first to get the error instead.
#[inline]
pub fn active() -> Isa {
    match ACTIVE.get_or_init(Isa::from_env) {
        Ok(isa) => *isa,
        Err(e) => panic!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_every_name_and_rejects_others() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Ok(isa));
        }
        assert_eq!(Isa::parse("AVX2"), Ok(Isa::Avx2));
        assert!(matches!(Isa::parse("sse9"), Err(IsaError::Unknown { .. })));
    }

    #[test]
    fn scalar_and_portable_are_always_available() {
        let available = Isa::available();
        assert!(available.contains(&Isa::Scalar) && available.contains(&Isa::Portable));
        assert!(Isa::best() >= Isa::Portable);
    }
}
