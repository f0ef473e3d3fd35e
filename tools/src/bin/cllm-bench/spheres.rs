//! `cllm-bench reduce` and `cllm-bench barrier`: the sphere pool's tree reduction and barrier.

use std::time::Instant;

use anyhow::{bail, Result};

use crate::pool::{groups, Pool};

/// One reduction measurement.
pub struct ReduceResult {
    /// Bytes moved by one `reduce_sum` (see [`reduce_bytes`]).
    pub bytes: u64,
    pub median_s: f64,
    /// Whether every repeat gave the same output bits.
    pub bit_identical: bool,
}

/// Bytes one `reduce_sum` reads and writes for buffers of `floats` floats: each group of `c`
/// children reads its `c` children's sums (its first child's buffer is the destination, read
/// once) and writes the destination once, in L1-sized blocks, so per group `(c + 1) · floats · 4`.
/// A flat tree of P workers: `(P + 1) · floats · 4`.
pub fn reduce_bytes(pool: &Pool, floats: usize) -> u64 {
    let per_float: usize = groups(&pool.tree.root).iter().map(|c| c + 1).sum();
    (per_float * floats * 4) as u64
}

/// Fill every worker's buffer (on its worker), then time `reduce_sum`, `reps` times; the
/// output's bits are compared across repeats.
pub fn measure_reduce(pool: &Pool, floats: usize, reps: usize) -> Result<ReduceResult> {
    let spheres = &pool.spheres;
    let mut bufs = spheres.reduce_buffers(floats)?;
    let mut times = Vec::with_capacity(reps);
    let mut first: Option<u64> = None;
    let mut identical = true;
    for _ in 0..reps + 1 {
        // Values with full mantissas, different per worker, so the order of additions shows.
        spheres.run_with_buffers(&mut bufs, |ctx, buf| {
            let w = ctx.index() as u32;
            for (i, x) in buf.iter_mut().enumerate() {
                let h = (i as u32 ^ w.wrapping_mul(0x9E37_79B9)).wrapping_mul(0x85EB_CA6B);
                *x = (h >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0;
            }
        })?;
        let t = Instant::now();
        spheres.reduce_sum(&mut bufs)?;
        let elapsed = t.elapsed().as_secs_f64();
        let hash = bufs.output().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
            (h ^ u64::from(x.to_bits())).wrapping_mul(0x0100_0000_01b3)
        });
        match first {
            // The first run warms up (page faults of the partial sums); it is not timed.
            None => first = Some(hash),
            Some(h) => {
                identical &= h == hash;
                times.push(elapsed);
            }
        }
    }
    Ok(ReduceResult {
        bytes: reduce_bytes(pool, floats),
        median_s: crate::median(&mut times),
        bit_identical: identical,
    })
}

/// The median over `reps` runs of the mean barrier round trip over `iters` barriers, in ns.
pub fn measure_barrier(pool: &Pool, iters: u32, reps: usize) -> Result<f64> {
    if iters == 0 {
        bail!("--iters 0: at least one barrier is needed");
    }
    pool.spheres.time_barrier(iters.min(1000))?; // warm up: wake every worker
    let mut runs = Vec::with_capacity(reps);
    for _ in 0..reps {
        runs.push(pool.spheres.time_barrier(iters)?.as_secs_f64() * 1e9);
    }
    Ok(crate::median(&mut runs))
}
