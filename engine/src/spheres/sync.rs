//! Small synchronisation pieces: cache padding and the spin-then-park back-off.

use std::hint;
use std::ops::{Deref, DerefMut};
use std::thread;
use std::time::{Duration, Instant};

/// Pads and aligns a value to 128 bytes, so two workers' hot fields never share a cache line
/// (128 rather than 64 because adjacent-line prefetchers pull lines in pairs).
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct CachePadded<T>(pub T);

impl<T> Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for CachePadded<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// Doubling spin steps before yielding: 1 + 2 + ... + 64 = 127 `spin_loop` hints, a few µs.
const SPIN_STEPS: u32 = 7;

/// How long a waiter stays awake (spinning, then yielding) before it parks.
pub(crate) const AWAKE_BUDGET: Duration = Duration::from_micros(50);

/// The waiting policy of every wait in the pool: spin briefly (the common case, where the other
/// side is a few hundred nanoseconds away), then yield the CPU so oversubscribed workers let the
/// others run, and after [`AWAKE_BUDGET`] report that the waiter should park.
pub(crate) struct Backoff {
    step: u32,
    spin_steps: u32,
    yield_until: Option<Instant>,
}

impl Backoff {
    /// Spin first, then yield, then park.
    pub(crate) fn new() -> Backoff {
        Backoff {
            step: 0,
            spin_steps: SPIN_STEPS,
            yield_until: None,
        }
    }

    /// A back-off that spins only `spin_steps` doubling steps (0: none) before yielding.
    pub(crate) fn with_spin_steps(spin_steps: u32) -> Backoff {
        Backoff {
            step: 0,
            spin_steps,
            yield_until: None,
        }
    }

    /// Waits a little. Returns false once the awake budget is spent: time to park.
    pub(crate) fn snooze(&mut self) -> bool {
        if self.step < self.spin_steps {
            for _ in 0..1u32 << self.step {
                hint::spin_loop();
            }
            self.step += 1;
            return true;
        }
        let now = Instant::now();
        let until = *self.yield_until.get_or_insert(now + AWAKE_BUDGET);
        if now >= until {
            return false;
        }
        thread::yield_now();
        true
    }
}
