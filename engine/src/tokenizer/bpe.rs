//! Byte-pair merging of one pre-token piece.
//!
//! tiktoken's rule: start from the piece's bytes, then repeatedly merge the adjacent pair whose
//! concatenation is the token of lowest rank, the leftmost one on ties, until no adjacent pair
//! concatenates to a token. Ranks here are token ids (merge `i` creates id `256 + i`), and the
//! pair table maps every split `(a, b)` of every merged token `t` (bytes(a) ++ bytes(b) ==
//! bytes(t)) to `t`, so looking up a pair of ids is the same as looking up the concatenated
//! bytes.
//!
//! Pieces of up to [`SHORT`] bytes merge in stack arrays (the rank of each adjacent pair is
//! kept and only the two pairs next to a merge are looked up again); longer ones use a heap
//! over a linked list, O(n log n), so that a megabyte of digits or punctuation (one piece) does
//! not take quadratic time.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

/// Pieces up to this many bytes merge on the stack.
const SHORT: usize = 64;

/// No pair (or no token) here.
const NONE: u32 = u32::MAX;

#[inline(always)]
pub(crate) fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

/// The pair table: `(a, b)` to the token (= rank) their concatenation is.
pub(crate) type Pairs = FxHashMap<u64, u32>;

#[inline(always)]
fn rank(pairs: &Pairs, a: u32, b: u32) -> u32 {
    pairs.get(&pair_key(a, b)).copied().unwrap_or(NONE)
}

/// Appends the tokens of `piece` to `out`. `byte_ids[b]` is the token of byte `b`.
pub(crate) fn merge_piece(pairs: &Pairs, byte_ids: &[u32; 256], piece: &[u8], out: &mut Vec<u32>) {
    if piece.len() <= SHORT {
        merge_short(pairs, byte_ids, piece, out)
    } else {
        merge_long(pairs, byte_ids, piece, out)
    }
}

fn merge_short(pairs: &Pairs, byte_ids: &[u32; 256], piece: &[u8], out: &mut Vec<u32>) {
    let mut n = piece.len();
    // ids[i]: the i-th current token; ranks[i]: the rank of (ids[i], ids[i + 1]).
    let mut ids = [0u32; SHORT];
    let mut ranks = [NONE; SHORT];
    for (id, &b) in ids.iter_mut().zip(piece) {
        *id = byte_ids[b as usize];
    }
    for i in 0..n.saturating_sub(1) {
        ranks[i] = rank(pairs, ids[i], ids[i + 1]);
    }
    while n > 1 {
        let mut best = NONE;
        let mut at = 0;
        for (i, &r) in ranks[..n - 1].iter().enumerate() {
            if r < best {
                best = r;
                at = i;
            }
        }
        if best == NONE {
            break;
        }
        ids[at] = best;
        ids.copy_within(at + 2..n, at + 1);
        ranks.copy_within(at + 2..n, at + 1);
        n -= 1;
        if at + 1 < n {
            ranks[at] = rank(pairs, ids[at], ids[at + 1]);
        } else {
            ranks[at] = NONE;
        }
        if at > 0 {
            ranks[at - 1] = rank(pairs, ids[at - 1], ids[at]);
        }
    }
    out.extend_from_slice(&ids[..n]);
}

fn merge_long(pairs: &Pairs, byte_ids: &[u32; 256], piece: &[u8], out: &mut Vec<u32>) {
    let n = piece.len();
    // Nodes are the piece's byte positions; a merge keeps the left node and unlinks the right.
    let mut ids: Vec<u32> = piece.iter().map(|&b| byte_ids[b as usize]).collect();
    let mut next: Vec<u32> = (1..=n as u32).collect(); // n means "none"
    let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect(); // MAX: none
    let mut alive = vec![true; n];
    // (rank, left node): the minimum is the lowest rank, leftmost on ties.
    let mut heap: BinaryHeap<Reverse<(u32, u32)>> = (0..n - 1)
        .filter_map(|i| {
            let r = rank(pairs, ids[i], ids[i + 1]);
            (r != NONE).then_some(Reverse((r, i as u32)))
        })
        .collect();
    while let Some(Reverse((r, left))) = heap.pop() {
        let l = left as usize;
        if !alive[l] {
            continue;
        }
        let rn = next[l] as usize;
        // A stale entry: the pair at `l` changed since it was pushed.
        if rn >= n || rank(pairs, ids[l], ids[rn]) != r {
            continue;
        }
        ids[l] = r;
        alive[rn] = false;
        let after = next[rn];
        next[l] = after;
        if (after as usize) < n {
            prev[after as usize] = left;
            let nr = rank(pairs, ids[l], ids[after as usize]);
            if nr != NONE {
                heap.push(Reverse((nr, left)));
            }
        }
        let before = prev[l];
        if before != u32::MAX {
            let pr = rank(pairs, ids[before as usize], ids[l]);
            if pr != NONE {
                heap.push(Reverse((pr, before)));
            }
        }
    }
    let mut i = 0usize;
    while i < n {
        out.push(ids[i]);
        i = next[i] as usize;
    }
}
