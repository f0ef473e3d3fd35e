//! Cache block sizes, derived once from this CPU's cache sizes.
//!
//! The blocking loops of [`super::sgemm`] keep one block of each operand in one cache level
//! (the BLIS scheme):
//!
//! | block             | size       | lives in | reused across             |
//! |-------------------|------------|----------|---------------------------|
//! | B micro-panel     | KC × NR    | L1 or L2 | every MR-row panel of A   |
//! | packed A block    | MC × KC    | L2       | every NR-column panel of B|
//! | packed B block    | KC × NC    | L3       | every MC-row block of A   |
//!
//! A product wider than NC or taller than MC is cut into equal blocks ([`Blocking::nc_for`],
//! [`Blocking::mc_for`]).
//!
//! Each block takes about half of its level, leaving the other half for the stream that passes
//! through it (the A micro-panels through L1, the B micro-panels through L2, C through L3).
//! A path whose microkernel runs as fast from L2 as from L1 sizes its B micro-panel for L2
//! instead ([`PanelCache::L2`]): a deeper KC means fewer passes over C, each of which loads and
//! stores every C tile once.

use std::sync::OnceLock;

/// Data cache sizes in bytes, per level, as Linux reports them for cpu0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheSizes {
    pub l1d: usize,
    pub l2: usize,
    pub l3: usize,
}

impl CacheSizes {
    /// Used where sysfs says nothing: a common x86-64 core (32 KiB L1d, 512 KiB L2, 8 MiB L3).
    pub const FALLBACK: CacheSizes = CacheSizes {
        l1d: 32 << 10,
        l2: 512 << 10,
        l3: 8 << 20,
    };

    /// This CPU's caches, read once from `/sys/devices/system/cpu/cpu0/cache/index*/{level,type,size}`;
    /// a level sysfs does not report keeps its [`CacheSizes::FALLBACK`] size.
    pub fn detect() -> CacheSizes {
        static DETECTED: OnceLock<CacheSizes> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let mut sizes = CacheSizes::FALLBACK;
            for index in 0..8 {
                let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
                let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).ok();
                let (Some(level), Some(kind), Some(size)) =
                    (read("level"), read("type"), read("size"))
                else {
                    continue;
                };
                let Some(bytes) = parse_size(&size) else {
                    continue;
                };
                match (level.trim(), kind.trim()) {
                    ("1", "Data" | "Unified") => sizes.l1d = bytes,
                    ("2", "Data" | "Unified") => sizes.l2 = bytes,
                    ("3", "Data" | "Unified") => sizes.l3 = bytes,
                    _ => {}
                }
            }
            sizes
        })
    }
}

/// Parse sysfs's "32K", "1024K", "8M" (or a plain byte count).
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits.parse::<usize>().ok()?.checked_mul(unit)
}

/// The cache a path sizes its KC × NR B micro-panel for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PanelCache {
    /// Half of L1d: the classic choice, for cores that feed the FMAs only from L1.
    L1,
    /// An eighth of L2 (KC at most 1024), for cores that stream both panels from L2 at full speed.
    L2,
}

impl PanelCache {
    /// Whether the path's k loops are deep (KC sized for L2): long enough that a full tile
    /// spreads the prefetch of the next tile's C over its loop instead of prefetching its own
    /// C before it (`kernel::Ahead`). Measured on the Xeon: AVX-512's 4096×768×3072 2.5–3.5 %
    /// faster with the spread, AVX2's L1-deep loops 1–3 % slower (`docs/GEMM.md`).
    pub const fn deep(self) -> bool {
        matches!(self, PanelCache::L2)
    }
}

/// Block sizes for one microkernel shape. `mc` is a multiple of `mr` and `nc` of `nr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    /// Rows of the microkernel tile (A panel height).
    pub mr: usize,
    /// Columns of the microkernel tile (B panel width).
    pub nr: usize,
    /// Rows of A packed at once (the L2 block).
    pub mc: usize,
    /// Depth of one packed block (the B micro-panel's depth, sized for L1 or L2).
    pub kc: usize,
    /// Columns of B packed at once (the L3 block).
    pub nc: usize,
}

impl Blocking {
    /// Block sizes for an `mr × nr` microkernel whose B micro-panel is sized for `panel`, on
    /// caches of `sizes` (f32 elements, 4 bytes).
    pub fn for_caches(mr: usize, nr: usize, panel: PanelCache, sizes: CacheSizes) -> Blocking {
        const F32: usize = 4;
        // KC: a KC × NR B micro-panel fills half of L1d (32 KiB, NR = 16 gives KC = 256), or an
        // eighth of L2 (2 MiB, NR = 48 gives 1365, capped to 1024).
        let panel_bytes = match panel {
            PanelCache::L1 => sizes.l1d / 2,
            PanelCache::L2 => sizes.l2 / 8,
        };
        let kc = (panel_bytes / (nr * F32)).clamp(64, 1024) / 4 * 4;
        // MC: an MC × KC packed A block fills half of L2.
        let mc = round_down((sizes.l2 / 2 / (kc * F32)).clamp(mr, 1024), mr);
        // NC: a KC × NC packed B block fills half of L3, and at most 8 MiB: an L3 is shared
        // by every core, and a larger block bought nothing (on a 2 MiB-L2 Xeon with a large L3,
        // 8 MiB instead of 33 took the LM head's GEMM from 143–146 to 158–162 GFLOP/s on one
        // core, the other shapes level).
        let l3_bytes = (sizes.l3 / 2).min(8 << 20);
        let nc = round_down((l3_bytes / (kc * F32)).clamp(nr, 8192), nr);
        Blocking { mr, nr, mc, kc, nc }
    }

    /// The width of the NC-column blocks that a product `n` columns wide is cut into: as many
    /// blocks as cutting at NC gives (and so every cost that goes with their number), equally
    /// wide up to the rounding to whole NR panels, the last taking the rest. Cut at NC, a width
    /// a little above it left a sliver (2304 = 2016 + 288 columns) whose rows of A were packed
    /// for a few B panels only; `docs/GEMM.md` has the measurements.
    pub fn nc_for(&self, n: usize) -> usize {
        balanced(n, self.nc, self.nr)
    }

    /// The height of the MC-row blocks that `m` rows are cut into, as [`Self::nc_for`] cuts
    /// columns. On the AVX-512 tile (MR = 9, MC = 252) 1024 rows make four blocks of 207 and one
    /// of 196, not four of 252 and a sliver of 16 whose B panels each served two tiles after
    /// their wait on L3.
    pub fn mc_for(&self, m: usize) -> usize {
        balanced(m, self.mc, self.mr)
    }

    /// Explicit block sizes (for tests and tuning), rounded to the tile: `mc` up to a multiple of
    /// `mr`, `nc` of `nr`, `kc` at least 1.
    pub fn custom(mr: usize, nr: usize, mc: usize, kc: usize, nc: usize) -> Blocking {
        Blocking {
            mr,
            nr,
            mc: mc.max(1).div_ceil(mr) * mr,
            kc: kc.max(1),
            nc: nc.max(1).div_ceil(nr) * nr,
        }
    }
}

/// The size of the equal parts, rounded up to whole `unit`s, that cut `len` into as few parts as
/// parts of at most `most` (a multiple of `unit`) would: never more than `most`, at least `unit`.
fn balanced(len: usize, most: usize, unit: usize) -> usize {
    let parts = len.div_ceil(most).max(1);
    (len.div_ceil(parts).div_ceil(unit) * unit).max(unit)
}

fn round_down(x: usize, m: usize) -> usize {
    (x / m).max(1) * m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sysfs_sizes() {
        assert_eq!(parse_size("32K\n"), Some(32 << 10));
        assert_eq!(parse_size("8M"), Some(8 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn blocks_respect_the_tile_and_the_caches() {
        let b = Blocking::for_caches(6, 16, PanelCache::L1, CacheSizes::FALLBACK);
        assert_eq!(b.kc, 256);
        assert_eq!(b.mc % 6, 0);
        assert_eq!(b.nc % 16, 0);
        assert!(b.mc * b.kc * 4 <= CacheSizes::FALLBACK.l2);
        let tiny = Blocking::for_caches(
            6,
            16,
            PanelCache::L1,
            CacheSizes {
                l1d: 1,
                l2: 1,
                l3: 1,
            },
        );
        assert!(tiny.mc >= 6 && tiny.kc >= 64 && tiny.nc >= 16);
    }

    #[test]
    fn an_l2_panel_is_deeper() {
        // The AVX-512 tile on a core with 48 KiB L1d, 2 MiB L2 and a large L3.
        let sizes = CacheSizes {
            l1d: 48 << 10,
            l2: 2 << 20,
            l3: 480 << 20,
        };
        let l1 = Blocking::for_caches(9, 48, PanelCache::L1, sizes);
        let l2 = Blocking::for_caches(9, 48, PanelCache::L2, sizes);
        assert_eq!((l1.kc, l2.kc), (128, 1024));
        // The A block still fills half of L2: 252 rows of 1024 floats; the B block 8 MiB at most.
        assert_eq!(l2.mc, 252);
        assert!(l2.mc * l2.kc * 4 <= sizes.l2 / 2);
        assert_eq!(l2.nc, 2016);
    }

    #[test]
    fn blocks_are_balanced() {
        let b = Blocking::custom(9, 48, 252, 1024, 2016);
        // One block where NC suffices, the width rounded up to whole panels.
        assert_eq!(b.nc_for(1), 48);
        assert_eq!(b.nc_for(768), 768);
        assert_eq!(b.nc_for(2000), 2016);
        assert_eq!(b.nc_for(2016), 2016);
        // Two blocks of 1152, not 2016 + 288; two of 1536, not 2016 + 1056.
        assert_eq!(b.nc_for(2304), 1152);
        assert_eq!(b.nc_for(3072), 1536);
        // Four blocks of 207 rows and one of 196, not four of 252 and one of 16.
        assert_eq!(
            (b.mc_for(1024), b.mc_for(252), b.mc_for(253)),
            (207, 252, 135)
        );
        // Every length, on this tile and on one whose blocks `custom` rounds (MC 20 → 24,
        // NC 40 → 48): as many blocks as cutting at the block size gives, none larger than it,
        // whole panels, and balanced: one panel less each would not cover the length.
        let small = Blocking::custom(6, 16, 20, 64, 40);
        let lens: usize = if cfg!(miri) { 300 } else { 20_000 };
        for blocking in [b, small] {
            let cuts = [
                (
                    Blocking::nc_for as fn(&Blocking, usize) -> usize,
                    blocking.nc,
                    blocking.nr,
                ),
                (Blocking::mc_for, blocking.mc, blocking.mr),
            ];
            for (cut, most, unit) in cuts {
                for len in 1..lens {
                    let size = cut(&blocking, len);
                    let parts = len.div_ceil(most);
                    assert!(size <= most && size.is_multiple_of(unit), "{len}: {size}");
                    assert_eq!(len.div_ceil(size), parts, "{len}: {size}");
                    assert!(size == unit || (size - unit) * parts < len, "{len}: {size}");
                }
            }
        }
    }
}
