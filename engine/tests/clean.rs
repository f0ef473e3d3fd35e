//! engine::clean: normalisation, boilerplate removal, filters, dedup, decoding and inputs, each
//! checked on hand-written cases.

use std::fs;

use cllm_engine::clean::{
    clean_documents, clean_inputs, decode, expand_inputs, normalize, CleanError, CleanOptions,
    CleanReport, Document, DropReason, InputFormat,
};

fn norm(text: &str, opts: &CleanOptions) -> (String, CleanReport) {
    let mut r = CleanReport::default();
    (normalize(text, opts, &mut r), r)
}

fn doc(text: &str) -> Document {
    Document {
        source: "t".into(),
        text: text.into(),
    }
}

fn texts(docs: &[Document]) -> Vec<&str> {
    docs.iter().map(|d| d.text.as_str()).collect()
}

#[test]
fn newlines_spaces_and_blank_lines_are_normalised() {
    let o = CleanOptions::default();
    let (s, _) = norm("\r\n\na  b\t\tc \t\r\nd\te   \r\re\n\n\n\n\nf\n\n", &o);
    assert_eq!(s, "a b c\nd\te\n\ne\n\n\nf");
    // Two blank lines survive, three are cut to two.
    assert_eq!(norm("a\n\n\nb", &o).0, "a\n\n\nb");
    assert_eq!(norm("a\n\n\n\nb", &o).0, "a\n\n\nb");
    // Whitespace-only lines count as blank.
    assert_eq!(norm("a\n \t \n\n  \n\nb", &o).0, "a\n\n\nb");
    assert_eq!(norm("   ", &o).0, "");
}

#[test]
fn control_characters_go_tabs_and_newlines_stay() {
    let (s, r) = norm(
        "a\u{0}b\u{7}c\u{1b}[0m\u{7f}d\u{85}e\tf\ng",
        &CleanOptions::default(),
    );
    assert_eq!(s, "abc[0mde\tf\ng");
    assert_eq!(r.control_chars, 5);
    // A leading byte-order mark is dropped.
    assert_eq!(norm("\u{feff}hi", &CleanOptions::default()).0, "hi");
}

#[test]
fn nfc_by_default_nfkc_by_flag_and_lowercase() {
    let o = CleanOptions::default();
    // e + combining acute composes to é under NFC.
    assert_eq!(norm("Cafe\u{301}", &o).0, "Caf\u{e9}");
    // The ligature ﬁ and full-width Ａ stay under NFC, fold under NFKC.
    assert_eq!(norm("\u{fb01} \u{ff21}", &o).0, "\u{fb01} \u{ff21}");
    let k = CleanOptions {
        nfkc: true,
        ..o.clone()
    };
    assert_eq!(norm("\u{fb01} \u{ff21}", &k).0, "fi A");
    let l = CleanOptions {
        lowercase: true,
        ..o
    };
    assert_eq!(norm("HeLLo ÄÖ", &l).0, "hello äö");
}

#[test]
fn invalid_utf8_is_replaced_and_counted_or_refused_when_strict() {
    let mut r = CleanReport::default();
    let s = decode(b"ab\xffc\xe2\x82d\xc3\xa9".to_vec(), "f.txt", false, &mut r).unwrap();
    assert_eq!(s, "ab\u{fffd}c\u{fffd}d\u{e9}");
    assert_eq!(r.invalid_utf8, 2);
    let e = decode(b"ab\xffc".to_vec(), "f.txt", true, &mut r).unwrap_err();
    let e = e.to_string();
    assert!(e.contains("f.txt: invalid UTF-8 at byte 2"), "{e}");
    assert!(e.contains("drop --strict"), "{e}");
}

#[test]
fn exact_duplicate_documents_are_dropped_after_normalisation() {
    let o = CleanOptions {
        min_chars: 0,
        ..CleanOptions::default()
    };
    let mut r = CleanReport::default();
    let docs = vec![
        doc("The quick brown fox."),
        doc("The  quick brown fox.   \r\n"),
        doc("Another document here."),
        doc("The quick brown fox."),
    ];
    let kept = clean_documents(docs, &o, &mut r);
    assert_eq!(
        texts(&kept),
        ["The quick brown fox.", "Another document here."]
    );
    assert_eq!(r.dropped(DropReason::Duplicate), 2);
    assert_eq!((r.docs_in, r.docs_out), (4, 2));
    assert_eq!(
        r.bytes_out,
        ("The quick brown fox.".len() + "Another document here.".len()) as u64
    );
}

#[test]
fn lines_in_more_than_n_documents_are_removed_as_boilerplate() {
    let o = CleanOptions {
        boilerplate_docs: Some(2),
        min_chars: 0,
        ..CleanOptions::default()
    };
    let header = "Project Gutenberg License";
    let docs: Vec<Document> = (0..4)
        .map(|i| {
            doc(&format!(
                "{header}\n\nStory number {i} begins.\n{header}\nThe end {i}."
            ))
        })
        .chain([doc(&format!("{header}\nOnly twice elsewhere?"))])
        .chain([doc("Kept line\nunique"), doc("Kept line\nalso unique")])
        .collect();
    let mut r = CleanReport::default();
    let kept = clean_documents(docs, &o, &mut r);
    assert_eq!(kept[0].text, "Story number 0 begins.\nThe end 0.");
    assert_eq!(kept[4].text, "Only twice elsewhere?");
    // "Kept line" is in exactly 2 documents: not more than N = 2, so it stays.
    assert_eq!(kept[5].text, "Kept line\nunique");
    assert_eq!(r.boilerplate_lines, 1);
    assert_eq!(r.boilerplate_removed, 9);
}

#[test]
fn short_low_letter_and_repetitive_documents_are_dropped_with_reasons() {
    let o = CleanOptions {
        min_chars: 10,
        min_letter_ratio: 0.5,
        max_repeated_line_ratio: 0.3,
        ..CleanOptions::default()
    };
    let docs = vec![
        doc("   \n\u{0}\n"),
        doc("tiny"),
        doc("1234 5678 90 !!! ?? abc"),
        doc("buy now\nbuy now\nbuy now\nreal text"),
        doc("A perfectly fine paragraph of words."),
    ];
    let mut r = CleanReport::default();
    let kept = clean_documents(docs, &o, &mut r);
    assert_eq!(texts(&kept), ["A perfectly fine paragraph of words."]);
    for reason in [
        DropReason::Empty,
        DropReason::TooShort,
        DropReason::LowLetterRatio,
        DropReason::RepeatedLines,
    ] {
        assert_eq!(r.dropped(reason), 1, "{reason:?}");
    }
    let line = r.to_string();
    assert!(line.starts_with("1 of 5 documents kept"), "{line}");
    assert!(line.contains("1 dropped (low letter ratio)"), "{line}");
}

#[test]
fn raw_mode_keeps_every_file_as_exactly_one_document() {
    let dir = tempfile::tempdir().unwrap();
    let a = "  Hello\r\n\n\n\n\nworld \u{7}\n";
    fs::write(dir.path().join("a.txt"), a).unwrap();
    fs::write(dir.path().join("b.txt"), a).unwrap();
    fs::write(dir.path().join("c.txt"), "").unwrap();
    let inputs = [dir.path().to_string_lossy().into_owned()];
    let (docs, r) = clean_inputs(&inputs, &[], &InputFormat::Text, &CleanOptions::raw()).unwrap();
    assert_eq!(texts(&docs), [a, a, ""]);
    assert_eq!((r.docs_in, r.docs_out), (3, 3));
    assert_eq!(r.bytes_in, r.bytes_out);
}

#[test]
fn inputs_expand_files_directories_and_globs_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("sub/deeper")).unwrap();
    for name in [
        "b.txt",
        "a.txt",
        "sub/z.txt",
        "sub/deeper/y.txt",
        "sub/.hidden",
        "c.md",
    ] {
        fs::write(d.join(name), name).unwrap();
    }
    let s = |p: &str| d.join(p).to_string_lossy().into_owned();
    let files = expand_inputs(&[s("sub"), s("*.txt"), s("c.md")], &[]).unwrap();
    let rel: Vec<_> = files
        .iter()
        .map(|p| p.strip_prefix(d).unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        rel,
        ["sub/deeper/y.txt", "sub/z.txt", "a.txt", "b.txt", "c.md"]
    );

    let e = expand_inputs(&[s("nothing*.txt")], &[])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("nothing*.txt") && e.contains("matches no file"),
        "{e}"
    );
    let e = expand_inputs(&[s("missing.txt")], &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("no such file or directory"), "{e}");
    fs::create_dir(d.join("empty")).unwrap();
    let e = expand_inputs(&[s("empty")], &[]).unwrap_err().to_string();
    assert!(e.contains("matches no file"), "{e}");
}

#[test]
fn skipped_paths_are_left_out_under_any_spelling() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("out/.cllm-staging")).unwrap();
    fs::create_dir(d.join("sub")).unwrap();
    for name in [
        "a.txt",
        "out/train_000000.bin",
        "out/notes.txt",
        "out/tokenizer.json",
        "out/.cllm-staging/train_000000.bin",
    ] {
        fs::write(d.join(name), name).unwrap();
    }
    let skip = [
        d.join("out/train_000000.bin"),
        d.join("sub/../out/tokenizer.json"),
        d.join("out/.cllm-staging"),
        d.join("out/missing.bin"),
    ];
    let s = |p: &str| d.join(p).to_string_lossy().into_owned();
    let rel = |files: Vec<std::path::PathBuf>| -> Vec<String> {
        files
            .iter()
            .map(|p| p.strip_prefix(d).unwrap().to_string_lossy().into_owned())
            .collect()
    };
    // A directory walk, a glob that also matches the hidden staging directory, and a file named
    // with `..` in it.
    let files = expand_inputs(&[s(""), s("out/*"), s("out/../out/notes.txt")], &skip).unwrap();
    assert_eq!(
        rel(files),
        [
            "a.txt",
            "out/notes.txt",
            "out/notes.txt",
            "out/../out/notes.txt"
        ]
    );
    let e = expand_inputs(&[s("out/train_*.bin")], &skip)
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds only files this run writes"), "{e}");
}

#[test]
fn jsonl_documents_come_from_the_named_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.jsonl");
    fs::write(
        &p,
        "{\"text\": \"First document, long enough.\", \"id\": 1}\n\n{\"text\": \"Second one is here too.\"}\n",
    )
    .unwrap();
    let fmt = InputFormat::Jsonl {
        field: "text".into(),
    };
    let inputs = [p.to_string_lossy().into_owned()];
    let (docs, r) = clean_inputs(&inputs, &[], &fmt, &CleanOptions::default()).unwrap();
    assert_eq!(
        texts(&docs),
        ["First document, long enough.", "Second one is here too."]
    );
    assert!(docs[1].source.ends_with("d.jsonl:3"));
    assert_eq!(r.docs_in, 2);

    fs::write(&p, "{\"text\": \"ok\"}\n{\"body\": \"x\"}\n").unwrap();
    let e = clean_inputs(&inputs, &[], &fmt, &CleanOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("d.jsonl:2: no field \"text\""), "{e}");
    fs::write(&p, "{\"text\": 5}\n").unwrap();
    let e = clean_inputs(&inputs, &[], &fmt, &CleanOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("d.jsonl:1: field \"text\" is not a string but a number"),
        "{e}"
    );
    fs::write(&p, "not json\n").unwrap();
    let e = clean_inputs(&inputs, &[], &fmt, &CleanOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("d.jsonl:1: not JSON"), "{e}");
}

#[test]
fn empty_inputs_are_an_error_with_the_report() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.txt"), "  \n\n").unwrap();
    fs::write(dir.path().join("b.txt"), "").unwrap();
    let inputs = [dir.path().to_string_lossy().into_owned()];
    let e = clean_inputs(&inputs, &[], &InputFormat::Text, &CleanOptions::default()).unwrap_err();
    assert!(matches!(e, CleanError::NothingLeft { .. }));
    let e = e.to_string();
    assert!(e.starts_with("no text left: 0 of 2 documents kept"), "{e}");
    assert!(e.contains("2 dropped (empty)"), "{e}");
    // Raw mode keeps empty files, but nothing to tokenize is still an error.
    let e = clean_inputs(&inputs[..], &[], &InputFormat::Text, &CleanOptions::raw());
    assert!(
        e.is_ok(),
        "the first file holds whitespace, which raw mode keeps"
    );
    fs::write(dir.path().join("a.txt"), "").unwrap();
    let e = clean_inputs(&inputs, &[], &InputFormat::Text, &CleanOptions::raw()).unwrap_err();
    assert!(e.to_string().starts_with("no text left"), "{e}");
    let e = expand_inputs(&[], &[]).unwrap_err().to_string();
    assert!(e.contains("no inputs given"), "{e}");
}

#[test]
fn strict_mode_refuses_non_utf8_files_and_lossy_mode_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("latin1.txt");
    fs::write(&p, b"Caf\xe9 au lait, a perfectly ordinary sentence.").unwrap();
    let inputs = [p.to_string_lossy().into_owned()];
    let strict = CleanOptions {
        strict: true,
        ..CleanOptions::default()
    };
    let e = clean_inputs(&inputs, &[], &InputFormat::Text, &strict)
        .unwrap_err()
        .to_string();
    assert!(e.contains("latin1.txt: invalid UTF-8 at byte 3"), "{e}");
    let (docs, r) =
        clean_inputs(&inputs, &[], &InputFormat::Text, &CleanOptions::default()).unwrap();
    assert_eq!(r.invalid_utf8, 1);
    assert!(docs[0].text.starts_with("Caf\u{fffd} au lait"));
    assert!(r.to_string().contains("1 invalid UTF-8 sequences replaced"));
}

/// An executable (or any file holding a NUL byte) among text inputs is skipped, not tokenized as
/// text, in every mode: counted and named in the report like the other dropped documents.
#[test]
fn binary_files_are_skipped_and_named_in_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let text = "A perfectly ordinary paragraph of English words.\n";
    fs::write(dir.path().join("a.txt"), text).unwrap();
    // Mostly letters, as an executable's strings can be: only the NUL bytes give it away.
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0".to_vec();
    elf.extend(text.repeat(50).bytes());
    fs::write(dir.path().join("b.out"), &elf).unwrap();
    let inputs = [dir.path().to_string_lossy().into_owned()];
    let strict = CleanOptions {
        strict: true,
        ..CleanOptions::default()
    };
    for opts in [CleanOptions::default(), CleanOptions::raw(), strict] {
        let (docs, r) = clean_inputs(&inputs, &[], &InputFormat::Text, &opts).unwrap();
        assert_eq!(
            texts(&docs),
            [if opts.raw { text } else { text.trim_end() }]
        );
        assert_eq!((r.docs_in, r.docs_out), (2, 1));
        assert_eq!(r.dropped(DropReason::Binary), 1);
        assert_eq!(r.bytes_in, (text.len() + elf.len()) as u64);
        let line = r.to_string();
        assert!(
            line.contains("1 dropped (binary, holding NUL bytes: ") && line.contains("b.out)"),
            "{line}"
        );
    }
    // JSONL inputs too; and nothing but binary files is nothing to tokenize.
    let jsonl = InputFormat::Jsonl {
        field: "text".into(),
    };
    let only = [dir.path().join("b.out").to_string_lossy().into_owned()];
    let e = clean_inputs(&only, &[], &jsonl, &CleanOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("no text left: 0 of 1 documents kept"), "{e}");
    assert!(e.contains("1 dropped (binary"), "{e}");
    // Many binary files: the first three named, the rest counted.
    for i in 0..5 {
        fs::write(dir.path().join(format!("c{i}.bin")), [0u8; 4]).unwrap();
    }
    let (_, r) = clean_inputs(&inputs, &[], &InputFormat::Text, &CleanOptions::default()).unwrap();
    assert_eq!(r.binary_files.len(), 6);
    let line = r.to_string();
    assert!(
        line.contains("6 dropped (binary, holding NUL bytes: "),
        "{line}"
    );
    assert!(line.contains(" and 3 more)"), "{line}");
}
