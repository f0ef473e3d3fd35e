//! Tokenizing many documents on the sphere workers. Each document is encoded by one worker into
//! its own slot, so the output is the same whatever the thread count.

use crate::spheres::{PerWorker, Schedule, Spheres, SpheresError};
use crate::tokenizer::{BpeTrainer, Tokenizer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Encode every document with `tokenizer` (special tokens are text here), in parallel.
/// `progress(done_bytes)` is called from the workers as documents finish.
pub fn encode_documents(
    spheres: &Spheres,
    tokenizer: &Tokenizer,
    docs: &[&str],
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<Vec<u32>>, SpheresError> {
    let slots: Vec<OnceLock<Vec<u32>>> = (0..docs.len()).map(|_| OnceLock::new()).collect();
    // Relaxed: a running total for display only; `par_for` returning is what publishes `slots`.
    let done = AtomicUsize::new(0);
    spheres.par_for(0..docs.len(), Schedule::Stealing { chunk: 1 }, |range| {
        for i in range {
            let mut ids = Vec::with_capacity(docs[i].len() / 3);
            tokenizer.encode_ordinary_into(docs[i], &mut ids);
            slots[i].set(ids).expect("each document is encoded once");
            progress(done.fetch_add(docs[i].len(), Ordering::Relaxed) + docs[i].len());
        }
    })?;
    Ok(slots
        .into_iter()
        .map(|s| s.into_inner().expect("every document was encoded"))
        .collect())
}

/// Count the pre-token words of every document for BPE training, one counter per worker, then
/// merged in worker order (counts are integers, so the result does not depend on the split).
pub fn count_words(spheres: &Spheres, docs: &[&str]) -> Result<BpeTrainer, SpheresError> {
    let mut counters: PerWorker<BpeTrainer> = spheres.per_worker(|_| BpeTrainer::new())?;
    spheres.par_for_with(
        &mut counters,
        0..docs.len(),
        Schedule::Stealing { chunk: 1 },
        |counter, range| {
            for i in range {
                counter.add_text(docs[i]);
            }
        },
    )?;
    let mut total = BpeTrainer::new();
    for w in 0..counters.len() {
        total.absorb(std::mem::take(counters.get_mut(w)));
    }
    Ok(total)
}
