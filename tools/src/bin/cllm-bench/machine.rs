//! What the machine can do, measured in the same run as the benchmark it is compared to.

use crate::{timed, Timing};
use anyhow::{bail, Result};
use cllm_engine::huge_pages;
use cllm_engine::spheres::Spheres;
use cllm_kernels::gemm::{self, blocking::Blocking, AlignedBuf};
use cllm_kernels::probe;

/// One core's f32 FMA peak on the active kernel path, in GFLOP/s, on the calling thread.
pub fn fma_peak_gflops() -> f64 {
    let Ok(peak) = best_fma_gflops::<std::convert::Infallible>(1, |iters| {
        std::hint::black_box(probe::fma_loop(iters));
        Ok(())
    });
    peak
}

/// The FMA peak of every worker of `pool` running [`probe::fma_loop`] at once, in GFLOP/s summed
/// over the workers, each run timed from its start to the last worker's end.
pub fn fma_peak_gflops_on(pool: &Spheres) -> Result<f64> {
    best_fma_gflops(pool.count(), |iters| {
        pool.run(|_| {
            std::hint::black_box(probe::fma_loop(iters));
        })?;
        Ok(())
    })
}

/// The best GFLOP/s of five timed `run(iters)`, each `workers` independent-FMA loops of `iters`
/// iterations, after a short one that warms the clocks (the best, not the median, since a peak is
/// what no run can exceed).
fn best_fma_gflops<E>(
    workers: usize,
    mut run: impl FnMut(usize) -> Result<(), E>,
) -> Result<f64, E> {
    let iters = 20_000_000;
    run(iters / 10)?;
    let flops = (probe::fma_loop_flops(iters) * workers as u64) as f64;
    let mut best = 0.0f64;
    for _ in 0..5 {
        let (done, t) = timed(|| run(iters));
        done?;
        best = best.max(flops / t.wall_s / 1e9);
    }
    Ok(best)
}

/// The active path's GEMM microkernel alone ([`gemm::microkernel_sweeps`]) on the calling
/// thread, in GFLOP/s: `panels` packed A panels against one B panel, both `kc` deep; the best of
/// five runs of ~0.1 s each (a ceiling, like [`fma_peak_gflops`]).
pub fn microkernel_gflops(kc: usize, panels: usize) -> f64 {
    let Blocking { mr, nr, .. } = gemm::active_blocking();
    // Each buffer starts on a cache line and the A panels lie as far apart as the GEMM's
    // packing puts them; small values, so that thousands of sweeps sum to nothing near overflow
    // or denormals.
    let (mut a, mut b, mut c) = (
        AlignedBuf::new(panels * gemm::a_panel_stride(kc, mr)),
        AlignedBuf::new(kc * nr),
        AlignedBuf::new(mr * nr),
    );
    let (a, b, c) = (a.as_mut_slice(), b.as_mut_slice(), c.as_mut_slice());
    a.fill(1e-3);
    b.fill(1e-3);
    // Sweeps doubled until a run takes 10 ms (which also warms the caches and faults in the
    // pages), then scaled to ~0.1 s a run.
    let mut rounds = 1usize;
    let rounds = loop {
        let (_, t) = timed(|| gemm::microkernel_sweeps(a, b, c, kc, rounds));
        if t.wall_s >= 0.01 || rounds >= 1 << 30 {
            break ((rounds as f64 * 0.1 / t.wall_s.max(1e-9)) as usize).max(1);
        }
        rounds *= 2;
    };
    let mut best = 0.0f64;
    for _ in 0..5 {
        let (flops, t) = timed(|| gemm::microkernel_sweeps(a, b, c, kc, rounds));
        best = best.max(flops as f64 / t.wall_s / 1e9);
    }
    std::hint::black_box(c);
    best
}

/// The read bandwidth of every worker of `pool` summing its share of a 256 MiB buffer at once,
/// in GB/s (the best of three passes, as the decode benchmark measures it).
pub fn read_bandwidth_gbs_on(pool: &Spheres) -> Result<f64> {
    Ok(cllm_engine::generate::bench::read_bandwidth(Some(pool), 256 << 20, 3)? / 1e9)
}

/// `runs` timed runs of [`probe::fma_loop`] with `iters` iterations on the calling thread
/// ([`probe::fma_loop_flops`] FLOPs each).
pub fn fma_runs(iters: usize, runs: usize) -> Vec<Timing> {
    (0..runs)
        .map(|_| timed(|| std::hint::black_box(probe::fma_loop(iters))).1)
        .collect()
}

/// Single-thread read bandwidth in GB/s: the median of timed vector sums over a 256 MiB buffer,
/// far larger than any cache here, on huge pages like the engine's arenas.
pub fn read_bandwidth_gbs() -> f64 {
    let mut data = huge_pages::zeroed(64 << 20);
    data.fill(1.0);
    probe::stream_sum(&data);
    let bytes = std::mem::size_of_val(&data[..]) as f64;
    let mut gbs: Vec<f64> = read_runs(&data, 7)
        .iter()
        .map(|t| bytes / t.wall_s / 1e9)
        .collect();
    crate::median(&mut gbs)
}

/// `runs` timed vector sums over `data` on the calling thread.
pub fn read_runs(data: &[f32], runs: usize) -> Vec<Timing> {
    (0..runs)
        .map(|_| timed(|| std::hint::black_box(probe::stream_sum(data))).1)
        .collect()
}

/// Refuses a run whose buffers cannot fit: `bytes` (`None`: more than a `u64` holds) more than
/// this machine's memory, when that is known. The error reads "{what} need{s} N GB, more than
/// this machine's M GB of memory; {fix}", so the allocation is refused with the flag to change
/// instead of aborting (or swapping) on it.
pub fn check_memory(what: &str, bytes: Option<u64>, fix: &str) -> Result<()> {
    let memory = cllm_engine::topology::memory_bytes();
    let too_big = match (bytes, memory) {
        (None, _) => true,
        (Some(b), Some(m)) => b > m,
        (Some(_), None) => false,
    };
    if too_big {
        bail!(
            "{what} need {} GB, more than this machine's {} GB of memory; {fix}",
            bytes.map_or("over 10^10".to_string(), |b| format!(
                "{:.1}",
                b as f64 / 1e9
            )),
            memory.map_or("?".to_string(), |b| format!("{:.1}", b as f64 / 1e9)),
        );
    }
    Ok(())
}

/// The product of `factors`, `None` when it overflows a `u64`.
pub fn product(factors: &[usize]) -> Option<u64> {
    factors
        .iter()
        .try_fold(1u64, |p, &f| p.checked_mul(u64::try_from(f).ok()?))
}
