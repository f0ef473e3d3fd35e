//! Padding and truncation of variable-length sequences into a (B, T) batch with an attention
//! mask. Left padding (real tokens flush right) is what batched generation uses: every row's
//! next token is then at column T − 1.

use super::DataError;

/// A padded batch. Row `b` of every (B, T) array describes sequence `b`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaddedBatch {
    /// B: rows.
    pub batch: usize,
    /// T: columns.
    pub seq: usize,
    /// (B, T) token ids, `pad_id` where the mask is 0.
    pub tokens: Vec<u32>,
    /// (B, T) 1 for a real token, 0 for padding.
    pub mask: Vec<u8>,
    /// (B, T) position of each real token within its sequence (0, 1, ...), 0 on padding.
    pub positions: Vec<u32>,
    /// (B) real tokens kept per row (after truncation).
    pub lengths: Vec<usize>,
}

/// Pads `sequences` to a common length T = the longest (capped at `max_len` when given) with
/// `pad_id`, on the left when `left`, else on the right. A longer sequence is truncated to T:
/// with left padding its last T tokens are kept (the context nearest to what comes next), with
/// right padding its first T.
pub fn pad_batch(
    sequences: &[&[u32]],
    pad_id: u32,
    left: bool,
    max_len: Option<usize>,
) -> PaddedBatch {
    let longest = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
    let t = max_len.map_or(longest, |m| longest.min(m));
    let b = sequences.len();
    let mut out = PaddedBatch {
        batch: b,
        seq: t,
        tokens: vec![0; b * t],
        mask: vec![0; b * t],
        positions: vec![0; b * t],
        lengths: vec![0; b],
    };
    pad_batch_into(
        sequences,
        pad_id,
        left,
        t,
        &mut out.tokens,
        &mut out.mask,
        &mut out.positions,
        &mut out.lengths,
    )
    .expect("buffers sized for (B, T)");
    out
}

/// [`pad_batch`] into caller buffers for a fixed T = `seq`: `tokens`, `mask` and `positions` are
/// (B, T), `lengths` is (B). Allocates nothing.
#[allow(clippy::too_many_arguments)]
pub fn pad_batch_into(
    sequences: &[&[u32]],
    pad_id: u32,
    left: bool,
    seq: usize,
    tokens: &mut [u32],
    mask: &mut [u8],
    positions: &mut [u32],
    lengths: &mut [usize],
) -> Result<(), DataError> {
    let (b, t) = (sequences.len(), seq);
    if tokens.len() != b * t
        || mask.len() != b * t
        || positions.len() != b * t
        || lengths.len() != b
    {
        return Err(DataError::Invalid(format!(
            "padding buffers hold {}, {}, {} and {} entries, but B = {b}, T = {t} needs \
             B × T = {} and B",
            tokens.len(),
            mask.len(),
            positions.len(),
            lengths.len(),
            b * t
        )));
    }
    if t == 0 {
        lengths.fill(0);
        return Ok(());
    }
    for (r, s) in sequences.iter().enumerate() {
        let n = s.len().min(t);
        let kept = if left { &s[s.len() - n..] } else { &s[..n] };
        let row = r * t..(r + 1) * t;
        let (tok, msk, pos) = (
            &mut tokens[row.clone()],
            &mut mask[row.clone()],
            &mut positions[row],
        );
        let real = if left { t - n..t } else { 0..n };
        tok.fill(pad_id);
        msk.fill(0);
        pos.fill(0);
        tok[real.clone()].copy_from_slice(kept);
        msk[real.clone()].fill(1);
        for (p, i) in pos[real].iter_mut().zip(0u32..) {
            *p = i;
        }
        lengths[r] = n;
    }
    Ok(())
}
