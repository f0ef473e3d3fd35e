//! The embedded default corpus: eight public-domain plays, one document each (see corpus/README.md).

/// (name, text) of every play, in a fixed order.
pub const PLAYS: [(&str, &str); 8] = [
    ("hamlet", include_str!("../corpus/hamlet.txt")),
    ("macbeth", include_str!("../corpus/macbeth.txt")),
    (
        "romeo_and_juliet",
        include_str!("../corpus/romeo_and_juliet.txt"),
    ),
    ("othello", include_str!("../corpus/othello.txt")),
    ("lear", include_str!("../corpus/lear.txt")),
    ("julius_caesar", include_str!("../corpus/julius_caesar.txt")),
    ("tempest", include_str!("../corpus/tempest.txt")),
    (
        "midsummer_nights_dream",
        include_str!("../corpus/midsummer_nights_dream.txt"),
    ),
];
