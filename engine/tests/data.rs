//! engine::data: shard round trips, every malformed-shard case with its error text, the loader's
//! windows, shuffling, determinism, resume and allocation-free batches, and padding.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};

use cllm_engine::data::{
    pad_batch, shard::HEADER_BYTES, shard_set_files, write_shard, write_shard_set, DataError,
    DataPosition, Loader, LoaderConfig, Shard, ShardSetConfig, ShardWriter, TokenSource,
    TokenWidth, Tokens,
};

// ---- a counting allocator that counts only on threads that ask it to -------------------------

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc() {
    // try_with: the thread-locals may be gone while a thread shuts down.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            let _ = ALLOCATIONS.try_with(|a| a.set(a.get() + 1));
        }
    });
}

// SAFETY: forwards every call to the system allocator unchanged; only counts on the side (the
// thread-locals are const-initialised Cells, which never allocate).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn count_allocations(f: impl FnOnce()) -> usize {
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(|a| a.get())
}

// ---- helpers ---------------------------------------------------------------------------------

/// A deterministic token stream below `vocab`.
fn tokens(n: usize, vocab: u32, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(salt)) % vocab)
        .collect()
}

fn err_text(e: DataError) -> String {
    e.to_string()
}

fn open_err(path: &Path) -> String {
    err_text(Shard::open(path).expect_err("the shard must be refused"))
}

/// Writes `tokens` as a valid u16 shard, then lets `patch` damage the bytes.
fn damaged(dir: &Path, name: &str, n: usize, patch: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let path = dir.join(name);
    write_shard(&path, &tokens(n, 50257, 1), 50257).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    patch(&mut bytes);
    fs::write(&path, bytes).unwrap();
    path
}

fn cfg(batch: usize, seq: usize, seed: u64, shuffle: bool) -> LoaderConfig {
    LoaderConfig {
        batch,
        seq,
        seed,
        shuffle,
        vocab_size: None,
    }
}

fn next(loader: &mut Loader) -> (Vec<u32>, Vec<u32>) {
    let n = loader.config().batch * loader.config().seq;
    let (mut x, mut y) = (vec![0; n], vec![0; n]);
    loader.next_batch_into(&mut x, &mut y).unwrap();
    (x, y)
}

// ---- shards ----------------------------------------------------------------------------------

#[test]
fn u16_shard_round_trips_with_llm_c_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train_000000.bin");
    let toks = tokens(1000, 50257, 7);
    assert_eq!(write_shard(&path, &toks, 50257).unwrap(), TokenWidth::U16);

    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), HEADER_BYTES + 2 * 1000);
    let field = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    assert_eq!((field(0), field(1), field(2)), (20240520, 1, 1000));
    assert!(bytes[12..HEADER_BYTES].iter().all(|&b| b == 0));
    assert_eq!(
        u16::from_le_bytes([bytes[1024], bytes[1025]]) as u32,
        toks[0]
    );

    let shard = Shard::open(&path).unwrap();
    assert_eq!((shard.len(), shard.width()), (1000, TokenWidth::U16));
    match shard.tokens() {
        Tokens::U16(s) => assert!(s.iter().zip(&toks).all(|(&a, &b)| a as u32 == b)),
        Tokens::U32(_) => panic!("expected u16 tokens"),
    }
    // 65,536 is the largest vocabulary stored as u16; token 65,535 survives.
    write_shard(&path, &[65535, 0, 1], 65536).unwrap();
    let shard = Shard::open(&path).unwrap();
    assert_eq!(shard.width(), TokenWidth::U16);
    assert_eq!(shard.tokens().get(0), 65535);
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn u32_shard_round_trips_with_llm_c_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("val_000000.bin");
    let toks = tokens(777, 128_256, 3);
    assert!(toks.iter().any(|&t| t > 65535));
    assert_eq!(write_shard(&path, &toks, 128_256).unwrap(), TokenWidth::U32);

    let bytes = fs::read(&path).unwrap();
    assert_eq!(bytes.len(), HEADER_BYTES + 4 * 777);
    let field = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    assert_eq!((field(0), field(1), field(2)), (20240801, 7, 777));

    let shard = Shard::open(&path).unwrap();
    assert_eq!(shard.width(), TokenWidth::U32);
    match shard.tokens() {
        Tokens::U32(s) => assert_eq!(s, &toks[..]),
        Tokens::U16(_) => panic!("expected u32 tokens"),
    }
    shard.check_vocab(128_256).unwrap();
}

#[test]
fn streaming_writer_matches_one_shot_writer() {
    let dir = tempfile::tempdir().unwrap();
    let toks = tokens(5000, 50257, 11);
    write_shard(dir.path().join("a.bin"), &toks, 50257).unwrap();
    let mut w = ShardWriter::create(dir.path().join("b.bin"), 50257).unwrap();
    for chunk in toks.chunks(333) {
        w.push(chunk).unwrap();
    }
    assert_eq!(w.finish().unwrap(), 5000);
    assert_eq!(
        fs::read(dir.path().join("a.bin")).unwrap(),
        fs::read(dir.path().join("b.bin")).unwrap()
    );
}

#[test]
fn writer_refuses_tokens_at_or_above_vocab_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train_000000.bin");
    let mut toks = tokens(100, 1000, 0);
    toks[42] = 1000;
    let e = err_text(write_shard(&path, &toks, 1000).unwrap_err());
    assert!(e.contains("token 1000 at position 42"), "{e}");
    assert!(e.contains("vocabulary size 1000"), "{e}");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing half-written"
    );
}

#[test]
fn writer_into_a_missing_directory_names_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone").join("train_000000.bin");
    let e = err_text(write_shard(&path, &[1, 2, 3], 50257).unwrap_err());
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn writer_refuses_an_empty_shard_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train_000000.bin");
    let e = err_text(write_shard(&path, &[], 50257).unwrap_err());
    assert!(e.contains("no tokens to write"), "{e}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn writer_replaces_an_existing_shard_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.bin");
    write_shard(&path, &tokens(10, 100, 0), 100).unwrap();
    write_shard(&path, &tokens(20, 100, 1), 100).unwrap();
    assert_eq!(Shard::open(&path).unwrap().len(), 20);
}

#[test]
fn wrong_magic_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = damaged(dir.path(), "train_000001.bin", 10, |b| {
        b[0..4].copy_from_slice(&12345i32.to_le_bytes())
    });
    let e = open_err(&p);
    assert!(e.contains("train_000001.bin"), "{e}");
    assert!(e.contains("header field 0 (magic) is 12345"), "{e}");
    assert!(
        e.contains("expected 20240520 (u16 tokens) or 20240801 (u32 tokens)"),
        "{e}"
    );
}

#[test]
fn wrong_version_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = damaged(dir.path(), "train_000001.bin", 10, |b| {
        b[4..8].copy_from_slice(&7i32.to_le_bytes())
    });
    let e = open_err(&p);
    assert!(
        e.contains(
            "header field 1 (version) is 7, but magic 20240520 (u16 tokens) goes with version 1"
        ),
        "{e}"
    );
    assert!(e.contains("re-run cllm-prepare"), "{e}");
}

#[test]
fn truncated_shard_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = damaged(dir.path(), "train_000001.bin", 1000, |b| {
        b.truncate(HEADER_BYTES + 1500)
    });
    let e = open_err(&p);
    assert_eq!(
        e,
        format!(
            "{}: header says 1000 tokens (2000 bytes of u16 tokens) but the file holds 1500 \
             bytes of tokens: the file is truncated; re-run cllm-prepare to write the shard again",
            p.display()
        )
    );
}

#[test]
fn token_count_larger_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = damaged(dir.path(), "train_000001.bin", 1000, |b| {
        b[8..12].copy_from_slice(&900i32.to_le_bytes())
    });
    let e = open_err(&p);
    assert!(
        e.contains(
            "header says 900 tokens (1800 bytes of u16 tokens) but the file holds 2000 bytes"
        ),
        "{e}"
    );
    assert!(e.contains("bytes after the last token"), "{e}");
}

#[test]
fn header_shorter_than_1024_bytes_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = damaged(dir.path(), "x.bin", 10, |b| b.truncate(100));
    let e = open_err(&p);
    assert!(
        e.contains("the file is 100 bytes, shorter than the 1024-byte header"),
        "{e}"
    );
    let empty = dir.path().join("empty.bin");
    fs::write(&empty, b"").unwrap();
    assert!(open_err(&empty).contains("the file is 0 bytes"));
}

#[test]
fn zero_or_negative_token_count_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = damaged(dir.path(), "x.bin", 10, |b| {
        b[8..12].copy_from_slice(&0i32.to_le_bytes());
        b.truncate(HEADER_BYTES);
    });
    assert!(open_err(&p).contains("header field 2 (token count) is 0: the shard holds no tokens"));
    let p = damaged(dir.path(), "y.bin", 10, |b| {
        b[8..12].copy_from_slice(&(-5i32).to_le_bytes())
    });
    assert!(open_err(&p).contains("header field 2 (token count) is -5"));
}

#[test]
fn missing_shard_is_named() {
    let e = open_err(Path::new("/nonexistent/train_000000.bin"));
    assert!(
        e.starts_with("cannot open /nonexistent/train_000000.bin"),
        "{e}"
    );
}

#[test]
fn tokens_at_or_above_vocab_report_first_position_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("train_000000.bin");
    let mut toks = tokens(500, 60000, 5);
    toks[123] = 60001;
    toks[400] = 60002;
    write_shard(&path, &toks, 65536).unwrap();
    let shard = Shard::open(&path).unwrap();
    shard.check_vocab(60003).unwrap();
    let e = err_text(shard.check_vocab(60000).unwrap_err());
    assert!(
        e.contains("train_000000.bin: token 60001 at position 123"),
        "{e}"
    );

    // The loader checks too, before serving anything.
    let mut c = cfg(1, 4, 0, false);
    c.vocab_size = Some(60000);
    let e = err_text(
        Loader::new(TokenSource::Shards(vec![path]), c)
            .err()
            .unwrap(),
    );
    assert!(e.contains("token 60001 at position 123"), "{e}");
    let mut mem = tokens(50, 100, 0);
    mem[17] = 100;
    c.vocab_size = Some(100);
    let e = err_text(Loader::new(TokenSource::Memory(mem), c).err().unwrap());
    assert!(e.contains("<memory>: token 100 at position 17"), "{e}");
}

// ---- loader ----------------------------------------------------------------------------------

#[test]
fn empty_inputs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = dir
        .path()
        .join("train_*.bin")
        .to_string_lossy()
        .into_owned();
    let e = err_text(
        Loader::new(TokenSource::Glob(pattern), cfg(1, 4, 0, false))
            .err()
            .unwrap(),
    );
    assert!(e.contains("no file matches"), "{e}");
    let e = err_text(
        Loader::new(TokenSource::Shards(vec![]), cfg(1, 4, 0, false))
            .err()
            .unwrap(),
    );
    assert!(e.contains("no shard files given"), "{e}");
    // Four tokens hold no window of T + 1 = 5.
    let e = err_text(
        Loader::new(TokenSource::Memory(vec![1, 2, 3, 4]), cfg(1, 4, 0, false))
            .err()
            .unwrap(),
    );
    assert!(e.contains("not one training window"), "{e}");
    let e = err_text(
        Loader::new(TokenSource::Memory(vec![1; 10]), cfg(0, 4, 0, false))
            .err()
            .unwrap(),
    );
    assert!(e.contains("must both be at least 1"), "{e}");
}

#[test]
fn targets_are_inputs_shifted_by_one_in_file_order() {
    let toks = tokens(1000, 50257, 9);
    let (b, t) = (3, 16);
    let mut loader = Loader::new(TokenSource::Memory(toks.clone()), cfg(b, t, 0, false)).unwrap();
    assert_eq!(loader.windows(), 999 / 16);
    for batch in 0..4 {
        let (x, y) = next(&mut loader);
        for r in 0..b {
            let start = (batch * b + r) * t;
            assert_eq!(&x[r * t..(r + 1) * t], &toks[start..start + t]);
            assert_eq!(&y[r * t..(r + 1) * t], &toks[start + 1..start + t + 1]);
        }
    }
}

#[test]
fn windows_never_cross_shards_and_mixed_widths_serve_alike() {
    let dir = tempfile::tempdir().unwrap();
    let a = tokens(100, 50257, 1);
    let b = tokens(30, 200_000, 2); // u32 shard
    let c = tokens(5, 50257, 3); // shorter than one window: contributes none
    let d = tokens(41, 50257, 4);
    let paths: Vec<PathBuf> = [
        "train_000000.bin",
        "train_000001.bin",
        "train_000002.bin",
        "train_000003.bin",
    ]
    .iter()
    .map(|n| dir.path().join(n))
    .collect();
    write_shard(&paths[0], &a, 50257).unwrap();
    write_shard(&paths[1], &b, 200_000).unwrap();
    write_shard(&paths[2], &c, 50257).unwrap();
    write_shard(&paths[3], &d, 50257).unwrap();
    let t = 8;
    let pattern = dir
        .path()
        .join("train_*.bin")
        .to_string_lossy()
        .into_owned();
    let mut loader = Loader::new(TokenSource::Glob(pattern), cfg(1, t, 0, false)).unwrap();
    // Shard c (5 tokens) holds no window of T + 1 = 9.
    assert_eq!(loader.windows(), 99 / 8 + 29 / 8 + 40 / 8);
    assert_eq!(loader.tokens(), 176);
    let mut expect = Vec::new();
    for s in [&a, &b, &c, &d] {
        for w in 0..(s.len() - 1) / t {
            expect.push((
                s[w * t..w * t + t].to_vec(),
                s[w * t + 1..w * t + t + 1].to_vec(),
            ));
        }
    }
    for e in &expect {
        assert_eq!(&next(&mut loader), e);
    }
    // Then the next epoch starts over.
    assert_eq!(loader.position().epoch, 0);
    assert_eq!(&next(&mut loader), &expect[0]);
    assert_eq!(loader.position().epoch, 1);
}

#[test]
fn shuffling_serves_every_window_once_per_epoch() {
    // Row content identifies the window: token i = i, so a row's first input / T is its window.
    let (b, t) = (4, 5);
    let toks: Vec<u32> = (0..(23 * t + 1) as u32).collect();
    let mut loader = Loader::new(TokenSource::Memory(toks), cfg(b, t, 42, true)).unwrap();
    let windows = loader.windows();
    assert_eq!(windows, 23);
    let mut served = Vec::new();
    for _ in 0..(3 * windows).div_ceil(b) {
        let (x, y) = next(&mut loader);
        for r in 0..b {
            assert_eq!(y[r * t], x[r * t] + 1);
            served.push(x[r * t] as usize / t);
        }
    }
    let orders: Vec<&[usize]> = served.chunks(windows).take(3).collect();
    for order in &orders {
        let mut sorted = order.to_vec();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..windows).collect::<Vec<_>>(),
            "each window once per epoch"
        );
    }
    assert_ne!(orders[0], orders[1], "each epoch has its own order");
    assert_ne!(orders[0], &(0..windows).collect::<Vec<_>>()[..], "shuffled");
}

#[test]
fn same_seed_same_batches_other_seed_other_batches() {
    let toks = tokens(4000, 50257, 0);
    let mk = |seed| Loader::new(TokenSource::Memory(toks.clone()), cfg(4, 32, seed, true)).unwrap();
    let (mut a, mut b, mut c) = (mk(7), mk(7), mk(8));
    let mut differs = false;
    for _ in 0..100 {
        let (xa, ya) = next(&mut a);
        assert_eq!((xa.clone(), ya), next(&mut b));
        differs |= xa != next(&mut c).0;
    }
    assert!(differs);
}

#[test]
fn restored_position_gives_identical_next_batches() {
    let dir = tempfile::tempdir().unwrap();
    for (i, n) in [900usize, 650, 1200].iter().enumerate() {
        write_shard(
            dir.path().join(format!("train_{i:06}.bin")),
            &tokens(*n, 50257, i as u32),
            50257,
        )
        .unwrap();
    }
    let pattern = dir
        .path()
        .join("train_*.bin")
        .to_string_lossy()
        .into_owned();
    let c = cfg(3, 16, 1234, true);
    let mut a = Loader::new(TokenSource::Glob(pattern.clone()), c).unwrap();
    // Run past an epoch boundary, then save.
    let per_epoch = a.windows().div_ceil(3);
    for _ in 0..per_epoch + 5 {
        next(&mut a);
    }
    let saved = a.position();
    assert_eq!(saved.epoch, 1);
    let json = serde_json::to_string(&saved.to_json()).unwrap();
    let expect: Vec<_> = (0..2 * per_epoch).map(|_| next(&mut a)).collect();

    let mut b = Loader::new(TokenSource::Glob(pattern), c).unwrap();
    let pos = DataPosition::from_json(&serde_json::from_str(&json).unwrap()).unwrap();
    assert_eq!(pos, saved);
    b.restore(pos).unwrap();
    let got: Vec<_> = (0..2 * per_epoch).map(|_| next(&mut b)).collect();
    assert_eq!(got, expect);

    // A position from other data or another seed is refused.
    let mut other = Loader::new(TokenSource::Memory(tokens(5000, 100, 0)), c).unwrap();
    let e = err_text(other.restore(saved).unwrap_err());
    assert!(
        e.contains("the data, sequence length or seed changed"),
        "{e}"
    );
}

#[test]
fn next_batch_allocates_nothing_even_across_epochs() {
    let toks = tokens(3000, 50257, 0);
    let (b, t) = (4, 16);
    let mut loader = Loader::new(TokenSource::Memory(toks), cfg(b, t, 3, true)).unwrap();
    let (mut x, mut y) = (vec![0u32; b * t], vec![0u32; b * t]);
    // The counter sees this thread's allocations.
    assert_eq!(
        count_allocations(|| drop(std::hint::black_box(vec![0u8; 10]))),
        1
    );
    let rounds = 3 * loader.windows() / b + 7;
    let n = count_allocations(|| {
        for _ in 0..rounds {
            loader.next_batch_into(&mut x, &mut y).unwrap();
        }
    });
    assert!(loader.position().epoch >= 2);
    assert_eq!(n, 0, "allocations during {rounds} batches");

    let dir = tempfile::tempdir().unwrap();
    write_shard(
        dir.path().join("train_000000.bin"),
        &tokens(3000, 50257, 1),
        50257,
    )
    .unwrap();
    let mut loader = Loader::new(
        TokenSource::Shards(vec![dir.path().join("train_000000.bin")]),
        cfg(b, t, 3, true),
    )
    .unwrap();
    let n = count_allocations(|| {
        for _ in 0..rounds {
            loader.next_batch_into(&mut x, &mut y).unwrap();
        }
    });
    assert_eq!(n, 0, "allocations during {rounds} batches from a shard");
}

#[test]
fn wrong_buffer_sizes_are_refused() {
    let mut loader =
        Loader::new(TokenSource::Memory(tokens(100, 10, 0)), cfg(2, 4, 0, false)).unwrap();
    let e = err_text(
        loader
            .next_batch_into(&mut [0; 8], &mut [0; 7])
            .unwrap_err(),
    );
    assert!(e.contains("B × T = 2 × 4 = 8"), "{e}");
}

#[test]
fn train_val_split_of_memory_and_shard_dirs() {
    let toks: Vec<u32> = (0..1000).collect();
    let (train, val) = TokenSource::Memory(toks).train_val(0.1).unwrap();
    match (train, val) {
        (TokenSource::Memory(t), Some(TokenSource::Memory(v))) => {
            assert_eq!(t, (0..900).collect::<Vec<_>>());
            assert_eq!(v, (900..1000).collect::<Vec<_>>());
        }
        other => panic!("unexpected split {other:?}"),
    }
    let (_, val) = TokenSource::Memory(vec![1; 10]).train_val(0.0).unwrap();
    assert!(val.is_none());

    let dir = tempfile::tempdir().unwrap();
    write_shard(dir.path().join("train_000000.bin"), &tokens(100, 50, 0), 50).unwrap();
    write_shard(dir.path().join("val_000000.bin"), &tokens(60, 50, 1), 50).unwrap();
    let d = dir.path().to_string_lossy().into_owned();
    let (train, val) = TokenSource::Glob(d).train_val(0.0).unwrap();
    let train = Loader::new(train, cfg(1, 8, 0, false)).unwrap();
    let val = Loader::new(val.expect("val shards found"), cfg(1, 8, 0, false)).unwrap();
    assert_eq!((train.tokens(), val.tokens()), (100, 60));

    let pattern = dir
        .path()
        .join("train_*.bin")
        .to_string_lossy()
        .into_owned();
    let (_, val) = TokenSource::Glob(pattern).train_val(0.0).unwrap();
    assert!(matches!(val, Some(TokenSource::Glob(p)) if p.ends_with("val_*.bin")));

    let list = vec![
        dir.path().join("train_000000.bin"),
        dir.path().join("val_000000.bin"),
    ];
    let (train, val) = TokenSource::Shards(list).train_val(0.0).unwrap();
    assert!(matches!(train, TokenSource::Shards(ref v) if v.len() == 1));
    assert!(matches!(val, Some(TokenSource::Shards(ref v)) if v[0].ends_with("val_000000.bin")));
}

#[test]
fn rewind_restarts_a_validation_pass() {
    let mut val = Loader::new(
        TokenSource::Memory(tokens(500, 100, 0)),
        cfg(2, 8, 0, false),
    )
    .unwrap();
    let first = next(&mut val);
    next(&mut val);
    val.rewind();
    assert_eq!(next(&mut val), first);
}

// ---- padding ---------------------------------------------------------------------------------

#[test]
fn left_and_right_padding_with_masks_and_positions() {
    let seqs: [&[u32]; 3] = [&[1, 2, 3], &[4], &[5, 6]];
    let p = pad_batch(&seqs, 0, true, None);
    assert_eq!((p.batch, p.seq), (3, 3));
    assert_eq!(p.tokens, vec![1, 2, 3, 0, 0, 4, 0, 5, 6]);
    assert_eq!(p.mask, vec![1, 1, 1, 0, 0, 1, 0, 1, 1]);
    assert_eq!(p.positions, vec![0, 1, 2, 0, 0, 0, 0, 0, 1]);
    assert_eq!(p.lengths, vec![3, 1, 2]);

    let p = pad_batch(&seqs, 9, false, None);
    assert_eq!(p.tokens, vec![1, 2, 3, 4, 9, 9, 5, 6, 9]);
    assert_eq!(p.mask, vec![1, 1, 1, 1, 0, 0, 1, 1, 0]);
    assert_eq!(p.positions, vec![0, 1, 2, 0, 0, 0, 0, 1, 0]);
}

#[test]
fn truncation_keeps_the_latest_tokens_when_left_padding() {
    let seqs: [&[u32]; 2] = [&[1, 2, 3, 4, 5], &[6]];
    let p = pad_batch(&seqs, 0, true, Some(3));
    assert_eq!(p.tokens, vec![3, 4, 5, 0, 0, 6]);
    assert_eq!(p.lengths, vec![3, 1]);
    let p = pad_batch(&seqs, 0, false, Some(3));
    assert_eq!(p.tokens, vec![1, 2, 3, 6, 0, 0]);
    let p = pad_batch(&[], 0, true, None);
    assert_eq!((p.batch, p.seq, p.tokens.len()), (0, 0, 0));
}

#[test]
fn memory_tokens_view() {
    let v = [1u32, 5, 9];
    let t = Tokens::U32(&v);
    assert_eq!(t.first_out_of_range(9), Some((2, 9)));
    let mut dst = [0; 2];
    t.copy_to(1, &mut dst);
    assert_eq!(dst, [5, 9]);
}

// ---- shard sets ------------------------------------------------------------------------------

fn read_all(paths: &[(PathBuf, usize)]) -> Vec<u32> {
    let mut out = Vec::new();
    for (p, n) in paths {
        let s = Shard::open(p).unwrap();
        assert_eq!(s.len(), *n);
        out.extend((0..s.len()).map(|i| s.tokens().get(i)));
    }
    out
}

#[test]
fn shard_set_puts_eot_before_each_document_and_splits_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let docs: Vec<Vec<u32>> = vec![(1..=7).collect(), vec![], (10..=25).collect()];
    let cfg = ShardSetConfig {
        vocab_size: 50257,
        shard_tokens: 5,
        eot: 50256,
        val_fraction: 0.2,
    };
    let sum = write_shard_set(dir.path(), &docs, &cfg, &[]).unwrap();
    let mut stream = Vec::new();
    for d in &docs {
        stream.push(50256);
        stream.extend(d);
    }
    assert_eq!(stream.len(), 26);
    // round(0.2 × 26) = 5 validation tokens at the end.
    let (train, val) = (read_all(&sum.train), read_all(&sum.val));
    assert_eq!(train, stream[..21]);
    assert_eq!(val, stream[21..]);
    let names: Vec<_> = sum
        .train
        .iter()
        .map(|(p, n)| (p.file_name().unwrap().to_string_lossy().into_owned(), *n))
        .collect();
    assert_eq!(
        names,
        [
            ("train_000000.bin".to_string(), 5),
            ("train_000001.bin".to_string(), 5),
            ("train_000002.bin".to_string(), 5),
            ("train_000003.bin".to_string(), 5),
            ("train_000004.bin".to_string(), 1),
        ]
    );
    assert_eq!(sum.val.len(), 1);
    assert_eq!(sum.tokens(), 26);
}

#[test]
fn shard_set_replaces_a_larger_earlier_set_and_cleans_up_after_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = ShardSetConfig {
        vocab_size: 100,
        shard_tokens: 4,
        eot: 0,
        val_fraction: 0.0,
    };
    let big = vec![tokens(40, 100, 0)];
    assert_eq!(
        write_shard_set(dir.path(), &big, &cfg, &[])
            .unwrap()
            .train
            .len(),
        11
    );
    fs::write(dir.path().join("notes.txt"), "kept").unwrap();
    let small = vec![tokens(6, 100, 1)];
    let earlier = shard_set_files(dir.path()).unwrap();
    assert_eq!(earlier.len(), 12, "11 shards and the staging directory");
    assert_eq!(earlier[11], dir.path().join(".cllm-staging"));
    let sum = write_shard_set(dir.path(), &small, &cfg, &[]).unwrap();
    assert_eq!(sum.train.len(), 2);
    assert_eq!((sum.replaced, sum.removed), (2, 9));
    let mut names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["notes.txt", "train_000000.bin", "train_000001.bin"]);

    // A bad token in the third shard: nothing is left behind.
    let empty = tempfile::tempdir().unwrap();
    let mut bad = tokens(20, 100, 2);
    bad[10] = 100;
    let e = err_text(write_shard_set(empty.path(), &[bad], &cfg, &[]).unwrap_err());
    // Stream index 11 (after the EOT) is position 3 of the third 4-token shard.
    assert!(
        e.contains("train_000002.bin: token 100 at position 3"),
        "{e}"
    );
    assert_eq!(fs::read_dir(empty.path()).unwrap().count(), 0);

    // A failed write leaves an earlier set whole, beside its own files; a good one replaces both.
    let names_in = |d: &std::path::Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let old = [("tokenizer.json", &b"old"[..])];
    write_shard_set(empty.path(), &small, &cfg, &old).unwrap();
    let before = names_in(empty.path());
    let mut bad = tokens(20, 100, 2);
    bad[10] = 100;
    let new = [("tokenizer.json", &b"new"[..])];
    write_shard_set(empty.path(), &[bad], &cfg, &new).unwrap_err();
    assert_eq!(names_in(empty.path()), before);
    assert_eq!(
        fs::read(empty.path().join("tokenizer.json")).unwrap(),
        b"old"
    );
    write_shard_set(empty.path(), &big, &cfg, &new).unwrap();
    assert_eq!(names_in(empty.path()).len(), 12);
    assert_eq!(
        fs::read(empty.path().join("tokenizer.json")).unwrap(),
        b"new"
    );
    let empty = tempfile::tempdir().unwrap();

    let e = err_text(write_shard_set::<Vec<u32>>(empty.path(), &[], &cfg, &[]).unwrap_err());
    assert!(e.contains("no documents to write"), "{e}");
    cfg.val_fraction = 0.9;
    let e = err_text(write_shard_set(empty.path(), &[vec![1u32]], &cfg, &[]).unwrap_err());
    assert!(e.contains("leaves none for training"), "{e}");
}

#[test]
fn position_taken_at_the_end_of_an_epoch_restores() {
    // 24 windows, B = 4: after 6 batches the epoch is served exactly (cursor = windows).
    let toks: Vec<u32> = (0..24 * 8 + 1).collect();
    let c = cfg(4, 8, 5, true);
    let mut a = Loader::new(TokenSource::Memory(toks.clone()), c).unwrap();
    for _ in 0..6 {
        next(&mut a);
    }
    let saved = a.position();
    assert_eq!((saved.epoch, saved.cursor), (0, 24));
    let expect: Vec<_> = (0..7).map(|_| next(&mut a)).collect();
    let mut b = Loader::new(TokenSource::Memory(toks), c).unwrap();
    b.restore(saved).unwrap();
    let got: Vec<_> = (0..7).map(|_| next(&mut b)).collect();
    assert_eq!(got, expect);
    let past = DataPosition {
        cursor: 25,
        ..saved
    };
    let e = err_text(b.restore(past).unwrap_err());
    assert!(e.contains("cursor 25 is past the 24 windows"), "{e}");
}
