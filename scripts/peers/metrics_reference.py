#!/usr/bin/env python3
"""Expected values for cllm's BLEU, ROUGE and Porter stemmer tests, from the reference packages.

    pip install sacrebleu==2.6.0 rouge-score==0.1.2 nltk
    python3 scripts/peers/metrics_reference.py [--corpus DIR]
    python3 scripts/peers/metrics_reference.py --check-cli target/release/cllm-eval [--pairs N] [--seed S]

Writes, deterministically (fixed seed, sorted inputs):
  engine/tests/fixtures/porter_nltk.txt      word<TAB>stem for ~2,000 words of the corpus plus edge
                                             cases, stems from nltk's PorterStemmer() (NLTK_EXTENSIONS)
  engine/tests/fixtures/metrics_reference.json
                                             hand-written tricky pairs and edited corpus sentences
                                             scored by sacrebleu (corpus_bleu / sentence_bleu
                                             defaults, one and three references) and rouge-score
                                             (RougeScorer(score(target=ref, prediction=hyp)),
                                             with and without the stemmer), plus small corpora
                                             that reach BLEU's edge cases.
--corpus defaults to ../shared/corpora/shakespeare beside the repository.

With --check-cli it writes nothing: it makes N random pairs (edited corpus lines and character soup:
punctuation, digits, entities, Unicode letters and spaces), runs `cllm-eval bleu` (one and two
references) and `cllm-eval rouge` (with and without --stem) with --json --per-line on them, compares
every value with sacrebleu's and rouge-score's, prints the largest difference and exits 1 above 1e-9.
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile

import nltk
import rouge_score
import sacrebleu
from nltk.stem import PorterStemmer
from rouge_score import rouge_scorer, tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "engine", "tests", "fixtures")
SEED = 20240607
ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]

# Pairs (hypothesis, reference) that reach the corners of both tokenizers.
TRICKY = [
    ("Hello, world.", "Hello, world."),
    ("It costs 3.14 dollars, or 1,000 cents.", "It costs 3.14 dollars or 1,000 cents."),
    ("The years 1990-1999 were good.", "The years 1990 - 1999 were good."),
    ("a.b.c,d", "a . b . c , d"),
    ("..., ,,. .5 5. 5.5 ,5 5,", "..., ,,. .5 5. 5.5 ,5 5,"),
    ("&quot;Quoted&quot; &amp; &lt;tag&gt; &apos;", "\"Quoted\" & <tag> &apos;"),
    ("cut <skipped> here", "cut here"),
    ("hyphen-\nated line", "hyphenated line"),
    ("trailing spaces   \t", "trailing spaces"),
    ("non\u00a0breaking\u3000space\u2009thin", "non breaking space thin"),
    ("sep\x1carator\x1dchars\x1e\x1f", "sep arator chars"),
    ("Caf\u00e9 na\u00efve r\u00e9sum\u00e9", "Cafe naive resume"),
    ("\u0130stanbul \u212aelvin STRASSE stra\u00dfe", "istanbul kelvin strasse"),
    ("\u4f60\u597d\uff0c\u4e16\u754c\u3002", "\u4f60\u597d \u4e16\u754c"),
    ("emoji \U0001f600 here!", "emoji here!"),
    ("{braces} [brackets] (parens) |pipe| ~tilde^ `tick` _under_", "braces brackets parens pipe tilde tick under"),
    ("path/to/file.txt @user #tag $5 %d *star* +plus =eq ?q !e ;s :c", "path to file.txt user tag 5 d star plus eq q e s c"),
    ("don't won't it's o'clock", "do not will not it is of the clock"),
    ("", "Something was said."),
    ("Something was said.", ""),
    ("", ""),
    ("   ", "   "),
    ("word", "word"),
    ("two words", "two words"),
    ("three words here", "three words here"),
    ("the the the the the the", "the cat sat on the mat"),
    ("completely unrelated output text", "the reference says something else"),
    ("Running runners ran; the generalizations generalized generally.", "run runner running general generalization"),
    ("Skies dying lying tying news innings outings cannings howe proceed exceed succeed",
     "sky die lie tie news inning outing canning howe proceeding exceeding succeeding"),
    ("He said:\n\"Yes.\"\nShe said:\n\"No.\"", "She said \"No.\"\nHe said \"Yes.\""),
    ("first line\n\nsecond line\nthird", "second line\nfirst line\nthird line"),
    ("a b a b a b\nb a b a", "a b\nb a\na a b b"),
    ("The CAT sat.", "the cat sat."),
    ("x1 2y 3.0-4 5-6-7 e.g. i.e. U.S.A.", "x1 2y 3.0 - 4 5 - 6 - 7 e.g. i.e. U.S.A."),
    ("caf\u00e9s ab\u00e7d", "cafes abcd"),
]

TWEAKS = ["s", "es", "ed", "ing", "ly", "ness", "ation", "ful", "ize", "ment"]


def corpus_lines(corpus):
    lines = []
    for name in sorted(os.listdir(corpus)):
        with open(os.path.join(corpus, name), encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if len(line.split()) >= 4:
                    lines.append(line)
    return lines


def edit(rng, words, vocab):
    out = []
    for w in words:
        r = rng.random()
        if r < 0.08:
            continue
        if r < 0.16:
            out.append(rng.choice(vocab))
        elif r < 0.21:
            out.extend([w, w])
        elif r < 0.31:
            out.append(w.rstrip(".,;:!?") + rng.choice(TWEAKS))
        elif r < 0.35:
            out.append(w.upper())
        else:
            out.append(w)
    if len(out) > 2 and rng.random() < 0.3:
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(out)


def pairs_from_corpus(rng, lines, count):
    vocab = sorted({w for line in lines[:5000] for w in line.split()})
    hyps, refs, refs2, refs3 = [], [], [], []
    for k in range(count):
        n = 1 + (k % 4 == 0) * rng.randrange(1, 4)  # every fourth pair spans several lines
        start = rng.randrange(len(lines) - n)
        ref = "\n".join(lines[start:start + n]) if k % 8 == 0 else " ".join(lines[start:start + n])
        hyp = edit(rng, ref.split(" "), vocab) if rng.random() < 0.9 else rng.choice(lines)
        if k % 8 == 0:
            hyp = hyp.replace(" ", "\n", 1)
        hyps.append(hyp)
        refs.append(ref)
        refs2.append(edit(rng, ref.split(), vocab))
        refs3.append(rng.choice(lines) if rng.random() < 0.3 else edit(rng, ref.split(), vocab))
    return hyps, refs, refs2, refs3


def bleu_dict(b):
    return {
        "score": b.score, "bp": b.bp, "precisions": list(b.precisions),
        "counts": list(b.counts), "totals": list(b.totals),
        "sys_len": b.sys_len, "ref_len": b.ref_len,
    }


def rouge_lists(hyps, refs, stem):
    scorer = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=stem)
    out = {t: [] for t in ROUGE_TYPES}
    for h, r in zip(hyps, refs):
        s = scorer.score(target=r, prediction=h)
        for t in ROUGE_TYPES:
            out[t].append([s[t].precision, s[t].recall, s[t].fmeasure])
    return out


def small_corpora():
    cases = [
        ("short hypotheses: no 4-grams at all", ["a b c", "d e"], [["a b c d", "d e f"]]),
        ("empty hypotheses", ["", ""], [["some words", "more words here"]]),
        ("no matches", ["x y z w", "q r s t u"], [["a b c d", "e f g h"]]),
        ("length ties between references", ["one two three four five"],
         [["one two three four five six seven"], ["one two three"]]),
        ("hypothesis longer than every reference", ["a b c d e f g h i j"], [["a b c"], ["a b c d"]]),
        ("unigram matches only", ["a x b y c z"], [["a b c"]]),
    ]
    out = []
    for about, hyps, streams in cases:
        out.append({"about": about, "hyps": hyps, "refs": streams,
                    "bleu": bleu_dict(sacrebleu.corpus_bleu(hyps, streams))})
    return out


def porter_words(lines):
    words = set()
    for line in lines:
        words.update(t for t in tokenize.tokenize(line, None) if len(t) > 3)
    words = sorted(words)
    # Round-robin over word endings so that every suffix rule is reached.
    by_end = {}
    for w in words:
        by_end.setdefault(w[-3:], []).append(w)
    picked, ends = [], sorted(by_end)
    while len(picked) < 1950 and any(by_end.values()):
        for e in ends:
            if by_end[e] and len(picked) < 1950:
                picked.append(by_end[e].pop(0))
    extra = [
        "sky", "skies", "dying", "lying", "tying", "news", "innings", "inning", "outings", "outing",
        "cannings", "canning", "howe", "proceed", "exceed", "succeed", "ties", "dies", "died",
        "spied", "flies", "feed", "agreed", "bled", "sing", "conflated", "troubled", "sized",
        "hopping", "tanned", "falling", "hissing", "fizzed", "failing", "filing", "happy", "enjoy",
        "relational", "conditional", "rational", "valenci", "hesitanci", "digitizer", "conformabli",
        "radicalli", "differentli", "vileli", "analogousli", "vietnamization", "predication",
        "operator", "feudalism", "decisiveness", "hopefulness", "callousness", "formaliti",
        "sensitiviti", "sensibiliti", "hopefulli", "geologi", "theologi", "triplicate", "formative",
        "formalize", "electriciti", "electrical", "hopeful", "goodness", "revival", "allowance",
        "inference", "airliner", "gyroscopic", "adjustable", "defensible", "irritant",
        "replacement", "adjustment", "dependent", "adoption", "homologou", "communism",
        "activate", "angulariti", "homologous", "effective", "bowdlerize", "probate", "rate",
        "cease", "controll", "roll", "yyyy", "yyyyy", "syzygy", "toying", "abc123ing", "1234",
        "12345s", "generalizations", "oed", "eed", "ying", "aing", "aies", "sses", "ational",
    ]
    stemmer = PorterStemmer()
    return [(w, stemmer.stem(w)) for w in sorted(set(picked) | set(extra))]


SOUP = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") * 4
        + list(" " * 30) + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") * 2
        + ["&amp;", "&quot;", "&lt;", "&gt;", "<skipped>", "\t", "\u00a0", "\u3000", "\x1c", "\x85",
           "\u00e9", "\u00df", "\u0130", "\u212a", "\u4e16", "\u00c9", "\u2019", "\U0001f600", "-", "."])


def soup(rng, vocab):
    parts = []
    for _ in range(rng.randrange(0, 30)):
        parts.append(rng.choice(vocab) + " " if rng.random() < 0.5 else rng.choice(SOUP))
    return "".join(parts)


def check_cli(binary, corpus, count, seed):
    rng = random.Random(seed)
    lines = corpus_lines(corpus)
    vocab = sorted({w for line in lines[:5000] for w in line.split()})
    hyps, refs, refs2 = [], [], []
    for _ in range(count):
        ref = rng.choice(lines) if rng.random() < 0.7 else soup(rng, vocab)
        hyp = edit(rng, ref.split(" "), vocab) if rng.random() < 0.7 else soup(rng, vocab)
        hyps.append(hyp)
        refs.append(ref)
        refs2.append(edit(rng, ref.split(), vocab) if rng.random() < 0.8 else soup(rng, vocab))
    worst = 0.0

    def compare(got, want, what):
        nonlocal worst
        diff = abs(got - want)
        worst = max(worst, diff)
        if diff > 1e-9:
            print(f"MISMATCH {what}: cllm {got} reference {want}")

    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name, seg in (("hyp", hyps), ("ref", refs), ("ref2", refs2)):
            paths[name] = os.path.join(tmp, name + ".txt")
            with open(paths[name], "w", encoding="utf-8", newline="\n") as f:
                f.write("\n".join(seg) + "\n")

        def run(*args):
            out = subprocess.run([binary, *args, "--json", "--per-line"], check=True, capture_output=True)
            return json.loads(out.stdout)

        for streams in ([refs], [refs, refs2]):
            ref_args = ["--ref", paths["ref"]] + (["--ref", paths["ref2"]] if len(streams) == 2 else [])
            got = run("bleu", "--hyp", paths["hyp"], *ref_args)
            want = sacrebleu.corpus_bleu(hyps, streams)
            compare(got["score"], want.score, f"corpus BLEU, {len(streams)} refs")
            compare(got["bp"], want.bp, "bp")
            for n in range(4):
                compare(got["precisions"][n], want.precisions[n], f"precision {n + 1}")
            for i, h in enumerate(hyps):
                want_line = sacrebleu.sentence_bleu(h, [s[i] for s in streams]).score
                compare(got["lines"][i], want_line, f"sentence BLEU line {i + 1} {h!r}")
        for stem in (False, True):
            got = run("rouge", "--hyp", paths["hyp"], "--ref", paths["ref"], *(["--stem"] if stem else []))
            scorer = rouge_scorer.RougeScorer(ROUGE_TYPES, use_stemmer=stem)
            scores = [scorer.score(target=r, prediction=h) for h, r in zip(hyps, refs)]
            for t in ROUGE_TYPES:
                for key, attr in (("p", "precision"), ("r", "recall"), ("f", "fmeasure")):
                    vals = [getattr(s[t], attr) for s in scores]
                    compare(got[t][key], sum(vals) / len(vals), f"{t} mean {key} stem={stem}")
                    for i, v in enumerate(vals):
                        compare(got[t]["lines"][i][key], v, f"{t} {key} line {i + 1} stem={stem}")
    print(f"{count} pairs: largest difference {worst:.3g}")
    return worst <= 1e-9


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default=os.path.join(os.path.dirname(ROOT), "shared", "corpora", "shakespeare"))
    ap.add_argument("--check-cli", metavar="BIN", help="compare this cllm-eval binary instead of writing fixtures")
    ap.add_argument("--pairs", type=int, default=500)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if sacrebleu.__version__ != "2.6.0":
        sys.exit(f"need sacrebleu 2.6.0, found {sacrebleu.__version__}")
    if args.check_cli:
        sys.exit(0 if check_cli(args.check_cli, args.corpus, args.pairs, args.seed) else 1)

    lines = corpus_lines(args.corpus)
    rng = random.Random(SEED)
    hyps, refs, refs2, refs3 = pairs_from_corpus(rng, lines, 64)
    for h, r in TRICKY:
        hyps.append(h)
        refs.append(r)
        refs2.append(r.upper())
        refs3.append(h if rng.random() < 0.5 else r + " and more")

    doc = {
        "about": "hyps[i] against refs[i] (and refs2[i], refs3[i] as second and third references); "
                 "sacrebleu corpus_bleu/sentence_bleu defaults; rouge-score RougeScorer.score(target=ref, "
                 "prediction=hyp) as [precision, recall, fmeasure]; made by scripts/peers/metrics_reference.py",
        "versions": {"sacrebleu": sacrebleu.__version__, "nltk": nltk.__version__,
                     "rouge_score": getattr(rouge_score, "__version__", "0.1.2")},
        "hyps": hyps, "refs": refs, "refs2": refs2, "refs3": refs3,
        "tokenized_13a": [sacrebleu.BLEU().tokenizer(h.rstrip()) for h in hyps],
        "corpus_bleu": bleu_dict(sacrebleu.corpus_bleu(hyps, [refs])),
        "corpus_bleu_three_refs": bleu_dict(sacrebleu.corpus_bleu(hyps, [refs, refs2, refs3])),
        "sentence_bleu": [bleu_dict(sacrebleu.sentence_bleu(h, [r])) for h, r in zip(hyps, refs)],
        "sentence_bleu_three_refs": [sacrebleu.sentence_bleu(h, [a, b, c]).score
                                     for h, a, b, c in zip(hyps, refs, refs2, refs3)],
        "rouge": rouge_lists(hyps, refs, False),
        "rouge_stem": rouge_lists(hyps, refs, True),
        "small_corpora": small_corpora(),
    }
    with open(os.path.join(FIXTURES, "metrics_reference.json"), "w", encoding="utf-8") as f:
        # One top-level key a line: small, and diffs stay readable.
        f.write("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}"
                                    for k, v in doc.items()) + "\n}\n")
    with open(os.path.join(FIXTURES, "porter_nltk.txt"), "w", encoding="utf-8") as f:
        f.write(f"# word<TAB>stem from nltk {nltk.__version__} PorterStemmer() (NLTK_EXTENSIONS)\n")
        for w, s in porter_words(lines):
            f.write(f"{w}\t{s}\n")


if __name__ == "__main__":
    main()
