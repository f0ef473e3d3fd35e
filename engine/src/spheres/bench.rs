//! Measurements for benchmark tools (the engine returns them; tools print them).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Spheres, SpheresError};

impl Spheres {
    /// The mean time of one barrier round trip (every worker arrives, every worker is
    /// released), over `iters` consecutive barriers timed by worker 0 after one warm-up barrier.
    /// With a single worker the barrier is a no-op and this measures the loop.
    pub fn time_barrier(&self, iters: u32) -> Result<Duration, SpheresError> {
        let nanos = AtomicU64::new(0);
        self.run(|ctx| {
            ctx.barrier();
            let start = Instant::now();
            for _ in 0..iters {
                ctx.barrier();
            }
            if ctx.index() == 0 {
                let elapsed = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
                // Relaxed: read by the caller after the job's completion (Release/Acquire).
                nanos.store(elapsed, Ordering::Relaxed);
            }
        })?;
        Ok(Duration::from_nanos(
            nanos.load(Ordering::Relaxed) / u64::from(iters.max(1)),
        ))
    }
}
