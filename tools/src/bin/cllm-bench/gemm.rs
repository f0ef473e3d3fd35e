//! `cllm-bench gemm`: sgemm GFLOP/s per shape and layout, against this core's measured FMA peak.

use crate::pool::Pool;
use anyhow::{bail, Context, Result};
use cllm_engine::huge_pages;
use cllm_engine::par_gemm::{par_sgemm, ParGemmScratch};
use cllm_kernels::gemm::{self, GemmScratch, Layout};

/// The GPT shapes M×K×N of a GPT-2-small training step (B·T = 4096 rows), a square reference, and
/// the LM head (V = 50304, padded to a multiple of 128).
pub const DEFAULT_SHAPES: &[(usize, usize, usize)] = &[
    (1024, 1024, 1024),
    (4096, 768, 768),
    (4096, 768, 2304),
    (4096, 768, 3072),
    (4096, 3072, 768),
    (4096, 768, 50304),
];

pub fn parse_shape(s: &str) -> Result<(usize, usize, usize)> {
    let dims: Vec<&str> = s.split(['x', 'X', '×']).collect();
    if dims.len() != 3 {
        bail!("shape {s:?}: expected MxKxN, e.g. 4096x768x3072");
    }
    let num = |d: &str| {
        d.trim()
            .parse::<usize>()
            .with_context(|| format!("shape {s:?}: {d:?} is not a size"))
    };
    let (m, k, n) = (num(dims[0])?, num(dims[1])?, num(dims[2])?);
    if m == 0 || k == 0 || n == 0 {
        bail!("shape {s:?}: every size must be at least 1 (a product of nothing measures nothing)");
    }
    // A, B and C are allocated whole: a shape that cannot fit is refused here, not by an abort
    // on the allocation.
    let floats = [m.checked_mul(k), k.checked_mul(n), m.checked_mul(n)]
        .into_iter()
        .try_fold(0usize, |t, x| t.checked_add(x?));
    let bytes = floats.and_then(|f| f.checked_mul(4)).map(|b| b as u64);
    crate::machine::check_memory(
        &format!("shape {s:?}: its three matrices"),
        bytes,
        "use a smaller shape",
    )?;
    Ok((m, k, n))
}

pub fn parse_layout(s: &str) -> Result<Layout> {
    match s.to_ascii_lowercase().as_str() {
        "nn" => Ok(Layout::NN),
        "nt" => Ok(Layout::NT),
        "tn" => Ok(Layout::TN),
        _ => bail!("layout {s:?}: expected nn (A·B), nt (A·Bᵀ) or tn (Aᵀ·B)"),
    }
}

pub fn layout_name(l: Layout) -> &'static str {
    match l {
        Layout::NN => "nn",
        Layout::NT => "nt",
        Layout::TN => "tn",
    }
}

/// One measurement.
pub struct GemmResult {
    pub shape: (usize, usize, usize),
    pub threads: usize,
    pub median_s: f64,
    /// Seconds of every timed run, in order.
    pub run_s: Vec<f64>,
    /// CPU seconds the process used in every timed run (empty where the clock is unavailable).
    pub run_cpu_s: Vec<f64>,
    pub gflops: f64,
    /// GFLOP per second of CPU time used by the whole process over the timed runs (every
    /// thread's user + system time): what the run did with the CPU it got, which
    /// shows the parallel overhead even when a busy machine hands out less than whole cores.
    pub gflops_per_cpu_s: Option<f64>,
}

/// What runs the GEMM: the single-threaded sgemm on this thread, or the parallel one on a pool.
pub enum Runner<'p> {
    Single(GemmScratch),
    Pool(&'p Pool, ParGemmScratch),
}

impl Runner<'_> {
    fn threads(&self) -> usize {
        match self {
            Runner::Single(_) => 1,
            Runner::Pool(pool, _) => pool.count(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        layout: Layout,
        (m, k, n): (usize, usize, usize),
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
    ) -> Result<()> {
        match self {
            Runner::Single(ws) => gemm::sgemm(ws, layout, m, k, n, a, lda, b, ldb, c, n, false)?,
            Runner::Pool(pool, ws) => par_sgemm(
                &pool.spheres,
                ws,
                layout,
                m,
                k,
                n,
                a,
                lda,
                b,
                ldb,
                c,
                n,
                false,
            )?,
        }
        Ok(())
    }
}

/// Time `C = op(A)·op(B)` (overwrite) for `reps` runs after one warm-up; GFLOP/s from the median.
pub fn measure(
    runner: &mut Runner<'_>,
    (m, k, n): (usize, usize, usize),
    layout: Layout,
    reps: usize,
) -> Result<GemmResult> {
    // Row strides as stored: A is M×K (or K×M for tn), B is K×N (or N×K for nt).
    let (lda, ldb) = match layout {
        Layout::NN => (k, n),
        Layout::NT => (k, k),
        Layout::TN => (m, n),
    };
    // On huge pages, as the engine's arenas are (numpy asks for them too).
    let mut a = huge_pages::zeroed(m * k);
    a.iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = ((i * 7 % 13) as f32 - 6.0) / 8.0);
    let mut b = huge_pages::zeroed(k * n);
    b.iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = ((i * 5 % 11) as f32 - 5.0) / 8.0);
    let mut c = huge_pages::zeroed(m * n);
    runner.run(layout, (m, k, n), &a, lda, &b, ldb, &mut c)?;
    let mut times: Vec<f64> = Vec::with_capacity(reps);
    let mut run_cpu_s: Vec<f64> = Vec::with_capacity(reps);
    for _ in 0..reps {
        let (ran, t) = crate::timed(|| runner.run(layout, (m, k, n), &a, lda, &b, ldb, &mut c));
        ran?;
        times.push(t.wall_s);
        run_cpu_s.extend(t.cpu_s);
    }
    let flops = 2.0 * (m * k * n) as f64;
    let cpu_total: f64 = run_cpu_s.iter().sum();
    let gflops_per_cpu_s =
        (run_cpu_s.len() == reps && cpu_total > 0.0).then(|| flops * reps as f64 / cpu_total / 1e9);
    let run_s = times.clone();
    let median_s = crate::median(&mut times);
    Ok(GemmResult {
        shape: (m, k, n),
        threads: runner.threads(),
        median_s,
        run_s,
        run_cpu_s,
        gflops: flops / median_s / 1e9,
        gflops_per_cpu_s,
    })
}
