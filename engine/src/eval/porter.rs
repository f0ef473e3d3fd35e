//! The Porter stemmer exactly as NLTK's `PorterStemmer()` runs it by default (mode
//! `NLTK_EXTENSIONS`), which is the stemmer rouge-score uses.
//!
//! This is Porter's 1980 algorithm ("An algorithm for suffix stripping", Program 14(3)) with Martin
//! Porter's later changes and NLTK's own: a table of irregular forms, `-ies`/`-ied` on four-letter
//! words, `(*c and not c) Y -> I` in step 1c, `ALLI` tried first in step 2, `FULLI` and `LOGI` in
//! step 2, a two-letter `*o`, and words of one or two letters left alone. Each step below names the
//! rule list it ports; the order of the rules matters (the first suffix that matches decides, even
//! when its condition then fails).
//!
//! Words are handled as sequences of Unicode scalar values, as Python indexes a `str`.

/// NLTK's table of irregular forms: a word found here stems to the paired stem and nothing else runs.
const IRREGULAR: [(&str, &str); 16] = [
    ("sky", "sky"),
    ("skies", "sky"),
    ("dying", "die"),
    ("lying", "lie"),
    ("tying", "tie"),
    ("news", "news"),
    ("innings", "inning"),
    ("inning", "inning"),
    ("outings", "outing"),
    ("outing", "outing"),
    ("cannings", "canning"),
    ("canning", "canning"),
    ("howe", "howe"),
    ("proceed", "proceed"),
    ("exceed", "exceed"),
    ("succeed", "succeed"),
];

/// The stem of `word`: NLTK's `PorterStemmer().stem(word)` (lower-cases first).
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some(&(_, s)) = IRREGULAR.iter().find(|(form, _)| *form == lower) {
        return s.to_string();
    }
    // NLTK tests the length of the word as given, before lower-casing.
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: Vec<char> = lower.chars().collect();
    w = step1a(w);
    w = step1b(w);
    w = step1c(w);
    w = step2(w);
    w = step3(w);
    w = step4(w);
    w = step5a(w);
    w = step5b(w);
    w.into_iter().collect()
}

fn is_vowel(c: char) -> bool {
    matches!(c, 'a' | 'e' | 'i' | 'o' | 'u')
}

/// Consonant flags of every letter: a letter other than a, e, i, o, u, and other than a `y` that
/// follows a consonant (a leading `y` is a consonant).
fn consonant_flags(w: &[char]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(w.len());
    for (i, &c) in w.iter().enumerate() {
        let consonant = if is_vowel(c) {
            false
        } else if c == 'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(consonant);
    }
    flags
}

fn is_consonant(w: &[char], i: usize) -> bool {
    consonant_flags(&w[..=i])[i]
}

/// Porter's measure m: the number of vowel-consonant boundaries in `[C](VC){m}[V]`.
fn measure(w: &[char]) -> usize {
    consonant_flags(w)
        .windows(2)
        .filter(|p| !p[0] && p[1])
        .count()
}

fn contains_vowel(w: &[char]) -> bool {
    consonant_flags(w).iter().any(|&c| !c)
}

/// `*d`: the word ends with a double consonant.
fn ends_double_consonant(w: &[char]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

/// `*o`: the word ends consonant-vowel-consonant and the last is not w, x or y; NLTK also accepts a
/// two-letter vowel-consonant word.
fn ends_cvc(w: &[char]) -> bool {
    let n = w.len();
    let flags = consonant_flags(w);
    (n >= 3
        && flags[n - 3]
        && !flags[n - 2]
        && flags[n - 1]
        && !matches!(w[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !flags[0] && flags[1])
}

fn ends_with(w: &[char], suffix: &str) -> bool {
    let n = suffix.chars().count();
    n <= w.len() && w[w.len() - n..].iter().copied().eq(suffix.chars())
}

/// `w` without its last `n` letters.
fn cut(w: &[char], n: usize) -> &[char] {
    &w[..w.len() - n]
}

fn join(stem: &[char], replacement: &str) -> Vec<char> {
    stem.iter().copied().chain(replacement.chars()).collect()
}

/// A condition on the stem left after removing a suffix.
type Cond<'a> = &'a dyn Fn(&[char]) -> bool;

/// NLTK's `_apply_rule_list` for plain suffix rules: the first rule whose suffix ends the word
/// decides; its replacement is applied when its condition holds, and otherwise the word is returned
/// unchanged without trying the later rules.
fn apply_rules(w: Vec<char>, rules: &[(&str, &str, Cond)]) -> Vec<char> {
    for &(suffix, replacement, cond) in rules {
        if ends_with(&w, suffix) {
            let stem = cut(&w, suffix.chars().count());
            return if cond(stem) {
                join(stem, replacement)
            } else {
                w
            };
        }
    }
    w
}

fn always(_: &[char]) -> bool {
    true
}

fn m_gt_0(stem: &[char]) -> bool {
    measure(stem) > 0
}

fn m_gt_1(stem: &[char]) -> bool {
    measure(stem) > 1
}

/// Step 1a: SSES -> SS, IES -> I, SS -> SS, S -> (NLTK: a four-letter `-ies` word keeps `ie`).
fn step1a(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "ies") && w.len() == 4 {
        return join(cut(&w, 3), "ie");
    }
    apply_rules(
        w,
        &[
            ("sses", "ss", &always),
            ("ies", "i", &always),
            ("ss", "ss", &always),
            ("s", "", &always),
        ],
    )
}

/// Step 1b: (m>0) EED -> EE; (*v*) ED ->; (*v*) ING ->; then AT -> ATE, BL -> BLE, IZ -> IZE,
/// (*d and not (*L or *S or *Z)) -> single letter, (m=1 and *o) -> E. NLTK first maps `-ied` to
/// `ie` (four-letter words) or `i`.
fn step1b(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "ied") {
        let replacement = if w.len() == 4 { "ie" } else { "i" };
        return join(cut(&w, 3), replacement);
    }
    if ends_with(&w, "eed") {
        let stem = cut(&w, 3);
        return if measure(stem) > 0 {
            join(stem, "ee")
        } else {
            w
        };
    }
    let mut intermediate = None;
    for suffix in ["ed", "ing"] {
        if ends_with(&w, suffix) {
            let stem = cut(&w, suffix.len());
            if contains_vowel(stem) {
                intermediate = Some(stem.to_vec());
                break;
            }
        }
    }
    let Some(stem) = intermediate else {
        return w;
    };
    for (suffix, replacement) in [("at", "ate"), ("bl", "ble"), ("iz", "ize")] {
        if ends_with(&stem, suffix) {
            return join(cut(&stem, 2), replacement);
        }
    }
    if ends_double_consonant(&stem) {
        let last = stem[stem.len() - 1];
        return if matches!(last, 'l' | 's' | 'z') {
            stem
        } else {
            let mut single = cut(&stem, 2).to_vec();
            single.push(last);
            single
        };
    }
    if measure(&stem) == 1 && ends_cvc(&stem) {
        return join(&stem, "e");
    }
    stem
}

/// Step 1c (NLTK): Y -> I when the `y` follows a consonant that is not the first letter.
fn step1c(w: Vec<char>) -> Vec<char> {
    let cond = |stem: &[char]| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply_rules(w, &[("y", "i", &cond)])
}

/// Step 2: the (m>0) double-suffix rules, with NLTK's `ALLI` first (and the result stepped again),
/// `BLI -> BLE` in place of `ABLI -> ABLE`, and `FULLI -> FUL`, `LOGI -> LOG` at the end.
fn step2(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "alli") && m_gt_0(cut(&w, 4)) {
        return step2(join(cut(&w, 4), "al"));
    }
    // The `l` of `logi` counts with the stem, so that `geo-`, `theo-` stems qualify.
    let logi_stem = w[..w.len().saturating_sub(3)].to_vec();
    let logi = move |_: &[char]| m_gt_0(&logi_stem);
    apply_rules(
        w,
        &[
            ("ational", "ate", &m_gt_0),
            ("tional", "tion", &m_gt_0),
            ("enci", "ence", &m_gt_0),
            ("anci", "ance", &m_gt_0),
            ("izer", "ize", &m_gt_0),
            ("bli", "ble", &m_gt_0),
            ("alli", "al", &m_gt_0),
            ("entli", "ent", &m_gt_0),
            ("eli", "e", &m_gt_0),
            ("ousli", "ous", &m_gt_0),
            ("ization", "ize", &m_gt_0),
            ("ation", "ate", &m_gt_0),
            ("ator", "ate", &m_gt_0),
            ("alism", "al", &m_gt_0),
            ("iveness", "ive", &m_gt_0),
            ("fulness", "ful", &m_gt_0),
            ("ousness", "ous", &m_gt_0),
            ("aliti", "al", &m_gt_0),
            ("iviti", "ive", &m_gt_0),
            ("biliti", "ble", &m_gt_0),
            ("fulli", "ful", &m_gt_0),
            ("logi", "log", &logi),
        ],
    )
}

/// Step 3: (m>0) ICATE -> IC, ATIVE ->, ALIZE -> AL, ICITI -> IC, ICAL -> IC, FUL ->, NESS ->.
fn step3(w: Vec<char>) -> Vec<char> {
    apply_rules(
        w,
        &[
            ("icate", "ic", &m_gt_0),
            ("ative", "", &m_gt_0),
            ("alize", "al", &m_gt_0),
            ("iciti", "ic", &m_gt_0),
            ("ical", "ic", &m_gt_0),
            ("ful", "", &m_gt_0),
            ("ness", "", &m_gt_0),
        ],
    )
}

/// Step 4: (m>1) removes AL, ANCE, ENCE, ER, IC, ABLE, IBLE, ANT, EMENT, MENT, ENT, ION (after S or
/// T), OU, ISM, ATE, ITI, OUS, IVE, IZE.
fn step4(w: Vec<char>) -> Vec<char> {
    let ion = |stem: &[char]| m_gt_1(stem) && matches!(stem.last(), Some('s' | 't'));
    apply_rules(
        w,
        &[
            ("al", "", &m_gt_1),
            ("ance", "", &m_gt_1),
            ("ence", "", &m_gt_1),
            ("er", "", &m_gt_1),
            ("ic", "", &m_gt_1),
            ("able", "", &m_gt_1),
            ("ible", "", &m_gt_1),
            ("ant", "", &m_gt_1),
            ("ement", "", &m_gt_1),
            ("ment", "", &m_gt_1),
            ("ent", "", &m_gt_1),
            ("ion", "", &ion),
            ("ou", "", &m_gt_1),
            ("ism", "", &m_gt_1),
            ("ate", "", &m_gt_1),
            ("iti", "", &m_gt_1),
            ("ous", "", &m_gt_1),
            ("ive", "", &m_gt_1),
            ("ize", "", &m_gt_1),
        ],
    )
}

/// Step 5a: (m>1) E ->; (m=1 and not *o) E ->. Both conditions are tried.
fn step5a(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "e") {
        let stem = cut(&w, 1);
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            return stem.to_vec();
        }
    }
    w
}

/// Step 5b: (m>1 and *d and *L) -> single letter; the measure is of the word less one `l`.
fn step5b(w: Vec<char>) -> Vec<char> {
    if ends_with(&w, "ll") && m_gt_1(cut(&w, 1)) {
        return cut(&w, 1).to_vec();
    }
    w
}

#[cfg(test)]
mod tests {
    use super::stem;

    #[test]
    fn paper_examples() {
        for (word, expected) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("cats", "cat"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("hopping", "hop"),
            ("falling", "fall"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("generalization", "gener"),
            ("controlling", "control"),
            ("dying", "die"),
            ("skies", "sky"),
            ("a", "a"),
        ] {
            assert_eq!(stem(word), expected, "{word}");
        }
    }
}
