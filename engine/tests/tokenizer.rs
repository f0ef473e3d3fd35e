//! engine::tokenizer: GPT-2 ids against tiktoken-rs (r50k_base) on the whole Shakespeare corpus
//! and a stress text, round trips on random text and bytes, training checked by hand, the file
//! format and its errors.
//!
//! The corpus is read from `$CLLM_SHARED/corpora/shakespeare`, or `../shared` beside the
//! workspace (`CARGO_MANIFEST_DIR/../../shared`); the tests fail when it is missing.

use std::path::PathBuf;
use std::sync::OnceLock;

use cllm_engine::tokenizer::{gpt2_pieces, AllowedSpecial, BpeTrainer, Tokenizer, TokenizerError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use tiktoken_rs::CoreBPE;

fn shared_dir() -> PathBuf {
    match std::env::var_os("CLLM_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"),
    }
}

/// Every file of the Shakespeare corpus, sorted by name.
fn corpus() -> &'static [(String, String)] {
    static CORPUS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = shared_dir().join("corpora/shakespeare");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot read the corpus at {}: {e}; set CLLM_SHARED to the shared directory",
                dir.display()
            )
        });
        let mut files: Vec<(String, String)> = entries
            .map(|e| {
                let path = e.expect("directory entry").path();
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    text,
                )
            })
            .collect();
        files.sort();
        assert!(
            files.len() >= 40,
            "expected the 42 Shakespeare files in {}",
            dir.display()
        );
        files
    })
}

fn gpt2() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(Tokenizer::gpt2_builtin)
}

fn tiktoken() -> &'static CoreBPE {
    tiktoken_rs::r50k_base_singleton()
}

/// Hand-written text in many scripts and with every whitespace shape the pattern cares about.
const STRESS: &str = concat!(
    "Hello, world! DON'T WON'T I'M YOU'LL SHE'D WE'VE THEY'RE he's she'd we've they're it'll I'm\n",
    "'s 's' ''' 're 'RE 'Ll 'll' x'sy ?'s  's \"'t\" rock'n'roll ''s\n",
    "日本語のテキスト、中文测试。한국어 텍스트 ｆｕｌｌｗｉｄｔｈ ＡＢＣ１２３\n",
    "👨‍👩‍👧‍👦 👍🏽👍🏿 🏳️‍🌈 👩🏿‍💻 ❤️‍🔥🫠 🇫🇷🇯🇵\n",
    "e\u{301}te\u{301} a\u{308}\u{304} Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇ ñ n\u{303} ǅ ǈ\n",
    "مرحبا بالعالم! السلام عليكم ١٢٣٤ שָׁלוֹם עוֹלָם\n",
    "line1\r\nline2\r\n\r\nline3\r\n",
    "\tindented\t\tx\t \t y \t\n",
    "a     b      c \n  \n\n   leading and trailing   \n",
    "end with spaces   ",
    "\n12345678901234567890123456789012345678901234567890 3.14159 1,000,000 0x1F 1e-9\n",
    "\u{a0}nbsp\u{2003}em\u{3000}ideographic \u{85}nel\u{2028}ls\u{2029}ps \x0b\x0c\u{1c}\u{1f}\n",
    "٣٤٥ ⅷ ½ ² ³ ⑴ 𝟙𝟚𝟛 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈\n",
    "<|endoftext|> <|endoftext|>x<|endoftext|>\n",
    "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
    "---------------------------------------------------------------------------------------- \n",
    "supercalifragilisticexpialidocioussupercalifragilisticexpialidocioussupercalifragilistic\n",
    "99999999999999999999999999999999999999999999999999999999999999999999999999999999999999\n",
    "    \n\n\n\t\t\t   \r\n   ",
);

#[test]
fn gpt2_ids_equal_tiktoken_on_the_stress_text() {
    let ours = gpt2().encode_ordinary(STRESS);
    let theirs = tiktoken().encode_ordinary(STRESS);
    assert_eq!(ours, theirs);
    assert_eq!(gpt2().decode(&ours).unwrap(), STRESS.as_bytes());
    // Line by line too: each line starts its own whitespace context.
    for line in STRESS.split_inclusive('\n') {
        assert_eq!(
            gpt2().encode_ordinary(line),
            tiktoken().encode_ordinary(line),
            "{line:?}"
        );
    }
}

/// SHA-256 of the little-endian u32 ids of `ids`, in hex.
fn digest(ids: &[u32]) -> String {
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// tiktoken-rs's r50k_base ids for every corpus file, as `name tokens sha256` lines.
const R50K_DIGESTS: &str = include_str!("fixtures/tokenizer/r50k_shakespeare.txt");

/// Runs `f` on every corpus file, the files split between two threads.
fn for_each_file_in_parallel(f: impl Fn(&str, &str) + Sync) {
    let files = corpus();
    std::thread::scope(|s| {
        let halves: Vec<_> = files
            .chunks(files.len().div_ceil(2))
            .map(|half| {
                let f = &f;
                s.spawn(move || half.iter().for_each(|(name, text)| f(name, text)))
            })
            .collect();
        for h in halves {
            h.join().expect("a thread panicked");
        }
    });
}

/// The whole corpus against tiktoken's ids. tiktoken's regex engine is slow in a debug build
/// (about a minute for the corpus), so debug builds compare our ids with the digests of
/// tiktoken's ids recorded in `fixtures/tokenizer/r50k_shakespeare.txt` and run tiktoken live on
/// four files; release builds (`cargo test --release`) run tiktoken live on every file and check
/// the recorded digests against it too. `CLLM_BLESS=1` rewrites the digests from tiktoken.
#[test]
fn gpt2_ids_equal_tiktoken_on_the_whole_corpus() {
    if std::env::var_os("CLLM_BLESS").is_some() {
        let lines = std::sync::Mutex::new(Vec::new());
        for_each_file_in_parallel(|name, text| {
            let ids = tiktoken().encode_ordinary(text);
            lines
                .lock()
                .unwrap()
                .push(format!("{name} {} {}\n", ids.len(), digest(&ids)));
        });
        let mut lines = lines.into_inner().unwrap();
        lines.sort();
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tokenizer/r50k_shakespeare.txt");
        std::fs::write(&path, lines.concat()).unwrap();
    }
    let recorded: std::collections::HashMap<&str, (usize, &str)> = R50K_DIGESTS
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0], (f[1].parse().unwrap(), f[2]))
        })
        .collect();
    assert_eq!(
        recorded.len(),
        corpus().len(),
        "one recorded digest per corpus file"
    );
    let live_all = !cfg!(debug_assertions);
    let live = [
        "phoenix_and_the_turtle_gut.txt",
        "passionate_pilgrim_gut.txt",
        "lovers_complaint_gut.txt",
        "macbeth_gut.txt",
    ];
    for_each_file_in_parallel(|name, text| {
        let ours = gpt2().encode_ordinary(text);
        let &(len, sha) = recorded
            .get(name)
            .unwrap_or_else(|| panic!("{name}: no recorded digest"));
        assert_eq!(
            (ours.len(), digest(&ours).as_str()),
            (len, sha),
            "{name}: ids differ from tiktoken's"
        );
        assert_eq!(gpt2().decode(&ours).unwrap(), text.as_bytes(), "{name}");
        if live_all || live.contains(&name) {
            let theirs = tiktoken().encode_ordinary(text);
            if ours != theirs {
                let at = ours.iter().zip(&theirs).position(|(a, b)| a != b);
                panic!("{name}: ids differ from tiktoken's (first at {at:?})");
            }
        }
    });
}

#[test]
fn pre_tokenizer_pieces_follow_the_pattern() {
    assert_eq!(gpt2_pieces("Hello world"), ["Hello", " world"]);
    assert_eq!(gpt2_pieces("a   b"), ["a", "  ", " b"]);
    assert_eq!(gpt2_pieces("a \n b"), ["a", " \n", " b"]);
    assert_eq!(gpt2_pieces("a\n\nb"), ["a", "\n", "\n", "b"]);
    assert_eq!(gpt2_pieces("x   "), ["x", "   "]);
    assert_eq!(gpt2_pieces("don't DON'T"), ["don", "'t", " DON", "'", "T"]);
    assert_eq!(gpt2_pieces("?'s 're"), ["?'", "s", " '", "re"]);
    assert_eq!(gpt2_pieces("abc123 45!?"), ["abc", "123", " 45", "!?"]);
    assert_eq!(gpt2_pieces("e\u{301}"), ["e", "\u{301}"]);
    assert_eq!(gpt2_pieces(""), Vec::<&str>::new());
}

#[test]
fn special_tokens_only_where_allowed() {
    let t = gpt2();
    let text = "a<|endoftext|>b";
    let ordinary = t.encode_ordinary(text);
    assert!(!ordinary.contains(&t.eot_token()));
    assert_eq!(ordinary, tiktoken().encode_ordinary(text));
    assert_eq!(
        t.encode_with_special(text, AllowedSpecial::None).unwrap(),
        ordinary
    );
    let with = t.encode_with_special(text, AllowedSpecial::All).unwrap();
    assert_eq!(with, [64, 50256, 65]);
    assert_eq!(
        t.encode_with_special(text, AllowedSpecial::Only(&["<|endoftext|>"]))
            .unwrap(),
        with
    );
    let allowed = std::collections::HashSet::from(["<|endoftext|>"]);
    assert_eq!(tiktoken().encode(text, &allowed).0, with);
    match t.encode_with_special(text, AllowedSpecial::Only(&["<pad>"])) {
        Err(TokenizerError::UnknownSpecial { name, .. }) => assert_eq!(name, "<pad>"),
        other => panic!("expected UnknownSpecial, got {other:?}"),
    }
    assert_eq!(t.eot_token(), 50256);
    assert_eq!(t.vocab_size(), 50257);
    assert_eq!(t.decode(&[50256]).unwrap(), b"<|endoftext|>");
    assert!(matches!(
        t.decode(&[50257]),
        Err(TokenizerError::UnknownToken { id: 50257, .. })
    ));
}

/// Random text from pools of characters that exercise every class and boundary.
fn random_text(rng: &mut StdRng) -> String {
    const POOLS: &[&str] = &[
        "abcXYZ",
        "0123456789",
        " ",
        "  \t\n\r",
        "'sStTdDmMreRvlL",
        "!?.,-<|>",
        "日本語中文한",
        "\u{301}\u{308}\u{200d}\u{fe0f}",
        "👍🏽👨🌈",
        "مرحباשלום",
        "\u{a0}\u{3000}\u{85}\u{2028}",
        "٣½²𝟙𝔘",
    ];
    let len = rng.gen_range(0..120);
    let mut s = String::new();
    for _ in 0..len {
        let pool: Vec<char> = POOLS[rng.gen_range(0..POOLS.len())].chars().collect();
        s.push(pool[rng.gen_range(0..pool.len())]);
    }
    s
}

#[test]
fn gpt2_random_text_matches_tiktoken_and_round_trips() {
    let mut rng = StdRng::seed_from_u64(5);
    for _ in 0..1000 {
        let s = random_text(&mut rng);
        let ids = gpt2().encode_ordinary(&s);
        assert_eq!(ids, tiktoken().encode_ordinary(&s), "{s:?}");
        assert_eq!(gpt2().decode(&ids).unwrap(), s.as_bytes(), "{s:?}");
    }
}

#[test]
fn arbitrary_bytes_round_trip_through_byte_tokens() {
    let mut rng = StdRng::seed_from_u64(6);
    for t in [gpt2(), trained()] {
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
            let ids: Vec<u32> = bytes.iter().map(|&b| t.byte_ids()[b as usize]).collect();
            assert_eq!(t.decode(&ids).unwrap(), bytes);
        }
        // A character cut between tokens decodes lossily, not as an error.
        let ids: Vec<u32> = "é"
            .bytes()
            .take(1)
            .map(|b| t.byte_ids()[b as usize])
            .collect();
        assert_eq!(t.decode_to_string_lossy(&ids).unwrap(), "\u{fffd}");
    }
}

/// A small tokenizer trained on five plays, shared by the tests below.
fn trained() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let texts = corpus().iter().take(5).map(|(_, t)| t.as_str());
        Tokenizer::train(texts, 1000, &["<pad>", "<unk>", "<bos>", "<eos>"]).expect("trains")
    })
}

#[test]
fn trained_tokenizer_round_trips_and_has_its_specials() {
    let t = trained();
    assert_eq!(t.vocab_size(), 1000);
    assert_eq!(t.eot_token(), 995);
    let names: Vec<(&str, u32)> = t.special_tokens().collect();
    assert_eq!(
        names,
        [
            ("<|endoftext|>", 995),
            ("<pad>", 996),
            ("<unk>", 997),
            ("<bos>", 998),
            ("<eos>", 999)
        ]
    );
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..500 {
        let s = random_text(&mut rng);
        let ids = t.encode_ordinary(&s);
        assert!(ids.iter().all(|&id| id < 995), "{s:?}");
        assert_eq!(t.decode(&ids).unwrap(), s.as_bytes(), "{s:?}");
    }
    let text = &corpus()[6].1[..20_000];
    let ids = t.encode_ordinary(text);
    assert_eq!(t.decode(&ids).unwrap(), text.as_bytes());
    assert!(
        ids.len() < text.len() / 2,
        "{} tokens for {} bytes",
        ids.len(),
        text.len()
    );
    let with = t.encode_with_special(
        "<bos>hi<pad><eos>",
        AllowedSpecial::Only(&["<bos>", "<eos>"]),
    );
    let with = with.unwrap();
    assert_eq!(with[0], 998);
    assert_eq!(*with.last().unwrap(), 999);
    assert!(!with.contains(&996));
}

#[test]
fn trainer_merges_by_hand() {
    // Words: "ab" ×1, " ab" ×2, " abc" ×1. Pairs: (a,b) 4, (' ',a) 3, (b,c) 1.
    // 1: (a,b) → 256; then (' ',256) 3, (256,c) 1. 2: (' ',256) → 257; then (257,c) 1.
    // 3: (257,c) → 258; no pairs are left, so the vocabulary stops at 256 + 3 + 1.
    let t = Tokenizer::train(["ab ab ab abc"], 300, &[]).unwrap();
    assert_eq!(t.merges(), [(97, 98), (32, 256), (257, 99)]);
    assert_eq!(t.vocab_size(), 260);
    assert_eq!(t.eot_token(), 259);
    assert_eq!(t.encode_ordinary(" abc ab"), [258, 257]);
    assert_eq!(t.token_bytes(258).unwrap(), b" abc");

    // Equal counts: the smallest (left, right) pair first.
    // "xy" and " zw": (' ',z) < (x,y) < (z,w); after (' ',z) → 256, (x,y) < (256,w).
    let t = Tokenizer::train(["xy zw"], 300, &[]).unwrap();
    assert_eq!(t.merges(), [(32, 122), (120, 121), (256, 119)]);

    // Overlapping pairs merge left to right: "aaaa" → (aa)(aa) → (aaaa); "aaa" → (aa)a.
    let t = Tokenizer::train(["aaaa"], 300, &[]).unwrap();
    assert_eq!(t.merges(), [(97, 97), (256, 256)]);
    assert_eq!(t.encode_ordinary("aaa"), [256, 97]);

    // Documents are pre-tokenized separately and counts add up across trainers.
    let mut a = BpeTrainer::new();
    a.add_text("ab ab");
    let mut b = BpeTrainer::new();
    b.add_text(" abc");
    a.absorb(b);
    let mut whole = BpeTrainer::new();
    whole.add_text("ab ab abc");
    assert_eq!(a.distinct_words(), 3);
    let (ta, tw) = (a.train(300, &[]).unwrap(), whole.train(300, &[]).unwrap());
    assert_eq!(ta.merges(), tw.merges());

    // The vocabulary must hold the bytes and the specials.
    assert!(matches!(
        Tokenizer::train(["x"], 257, &["<pad>"]),
        Err(TokenizerError::Train(_))
    ));
}

#[test]
fn training_is_deterministic() {
    let texts: Vec<&str> = corpus()
        .iter()
        .skip(10)
        .take(2)
        .map(|(_, t)| t.as_str())
        .collect();
    let one = Tokenizer::train(texts.iter().copied(), 600, &[]).unwrap();
    let mut halves = BpeTrainer::new();
    let mut other = BpeTrainer::new();
    halves.add_text(texts[1]);
    other.add_text(texts[0]);
    halves.absorb(other);
    assert_eq!(one.merges(), halves.train(600, &[]).unwrap().merges());
}

#[test]
fn file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    for t in [trained(), gpt2()] {
        let path = dir.path().join("tokenizer.json");
        t.save(&path).unwrap();
        let back = Tokenizer::load(&path).unwrap();
        assert_eq!(back.merges(), t.merges());
        assert_eq!(back.byte_ids(), t.byte_ids());
        assert_eq!(back.vocab_size(), t.vocab_size());
        assert_eq!(
            back.special_tokens().collect::<Vec<_>>(),
            t.special_tokens().collect::<Vec<_>>()
        );
        assert_eq!(back.encode_ordinary(STRESS), t.encode_ordinary(STRESS));
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["tokenizer.json"],
        "no temporary file is left behind"
    );
}

#[test]
fn save_into_a_missing_directory_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone").join("tokenizer.json");
    let e = trained().save(&path).unwrap_err();
    assert!(matches!(e, TokenizerError::Io { .. }), "{e:?}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn gpt2_import_by_path_equals_builtin() {
    let dir = shared_dir().join("gpt2");
    let t = Tokenizer::gpt2(&dir.join("encoder.json"), &dir.join("vocab.bpe")).unwrap();
    assert_eq!(t.merges(), gpt2().merges());
    assert_eq!(t.encode_ordinary(STRESS), gpt2().encode_ordinary(STRESS));
    let err = Tokenizer::gpt2(&dir.join("missing.json"), &dir.join("vocab.bpe")).unwrap_err();
    assert!(err.to_string().contains("missing.json"), "{err}");
}

/// Loads `json` from a file and returns the error's text.
fn load_error(json: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, json).unwrap();
    let err = Tokenizer::load(&path).expect_err(json);
    let msg = err.to_string();
    assert!(msg.contains("bad.json"), "the error names the file: {msg}");
    msg
}

#[test]
fn file_errors_name_the_field_and_the_fix() {
    let good = Tokenizer::train(["ab ab ab abc"], 300, &["<pad>"])
        .unwrap()
        .to_json();
    assert!(Tokenizer::from_json(good.as_bytes(), "x".as_ref()).is_ok());
    let msg = load_error(&good.replace("cllm-bpe-tokenizer", "other"));
    assert!(
        msg.contains("`format`") && msg.contains("not a cllm tokenizer"),
        "{msg}"
    );
    let msg = load_error(&good.replace("\"version\": 1", "\"version\": 2"));
    assert!(
        msg.contains("`version`") && msg.contains("newer cllm"),
        "{msg}"
    );
    let msg = load_error(&good.replace("[257, 99]", "[259, 99]"));
    assert!(
        msg.contains("`merges[2]`") && msg.contains("made before it"),
        "{msg}"
    );
    let msg = load_error(&good.replace("[32, 256]", "[97, 98]"));
    assert!(
        msg.contains("`merges[1]`") && msg.contains("same bytes as token 256"),
        "{msg}"
    );
    let msg = load_error(&good.replace("\"<|endoftext|>\",", ""));
    assert!(
        msg.contains("`specials`") && msg.contains("endoftext"),
        "{msg}"
    );
    let msg = load_error(&good.replace("\"<pad>\"", "\"<|endoftext|>\""));
    assert!(
        msg.contains("`specials[1]`") && msg.contains("distinct"),
        "{msg}"
    );
    let msg = load_error(&good.replace("[0, 1, 2,", "[1, 1, 2,"));
    assert!(msg.contains("`byte_ids[1]`"), "{msg}");
    let msg = load_error(&good.replace("\"merges\"", "\"merged\""));
    assert!(msg.contains("`merges` is missing"), "{msg}");
    // The fix names what a command-line user has, not only the Rust API.
    assert!(
        msg.contains("cllm-prepare writes beside its shards") && msg.contains("checkpoint"),
        "{msg}"
    );
    let msg = load_error(&good[..good.len() / 2]);
    assert!(msg.contains("not valid JSON"), "{msg}");
}

#[test]
fn merges_that_double_token_lengths_are_refused_before_they_allocate() {
    // Each merge joins the previous token with itself: 40 short lines would spell 2^41 bytes.
    // Refused once the tokens pass the limit, naming the merge, instead of allocating until
    // the process aborts.
    let ids: Vec<String> = (0..256).map(|i| i.to_string()).collect();
    let mut merges = vec!["[97, 97]".to_string()];
    merges.extend((0..40).map(|i| format!("[{}, {}]", 256 + i, 256 + i)));
    let json = format!(
        r#"{{"format": "cllm-bpe-tokenizer", "version": 1, "pre_tokenizer": "gpt2",
            "byte_ids": [{}], "specials": ["<|endoftext|>"], "merges": [{}]}}"#,
        ids.join(", "),
        merges.join(", ")
    );
    let msg = load_error(&json);
    assert!(
        msg.contains("`merges[26]`") && msg.contains("past 256 MiB"),
        "{msg}"
    );
}

#[test]
fn tokenizer_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
}

#[test]
fn time_encode_counts_what_it_encodes() {
    let docs = [STRESS, "hello world"];
    let timing = cllm_engine::tokenizer::time_encode(gpt2(), &docs, 3);
    assert_eq!(timing.bytes, STRESS.len() + 11);
    let tokens = gpt2().encode_ordinary(STRESS).len() + gpt2().encode_ordinary("hello world").len();
    assert_eq!(timing.tokens, tokens);
    assert!(timing.median_s > 0.0 && timing.mb_per_s() > 0.0);
}
