//! `cllm-bench compare BASE.json NEW.json`: entry by entry, whether the new suite run is slower
//! than the base beyond a tolerance (docs/REGRESSIONS.md explains the method).
//!
//! The rule, per entry, on the ratio (the median per CPU-second over the reference probe's median
//! in the same run) by default, or `--by value` on the wall-clock medians themselves,
//! with every figure turned so that higher is better:
//! - REGRESSED: the new median is worse than the base median by more than the tolerance AND even
//!   the new run's best sample is worse than the base's worst (the two runs' samples do not
//!   overlap);
//! - faster: better by more than the tolerance AND the new run's worst sample better than the
//!   base's best;
//! - ok: anything else;
//! - missing: in the base, not in the new run (added: the other way round).

use crate::suite::SCHEMA;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fmt::Write as _;

/// What an entry is judged on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The median over the reference measured in the same run (the default).
    Ratio,
    /// The median itself.
    Value,
}

impl By {
    pub fn parse(s: &str) -> Result<By> {
        match s {
            "ratio" => Ok(By::Ratio),
            "value" => Ok(By::Value),
            _ => bail!("--by {s:?}: expected ratio or value"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            By::Ratio => "ratio",
            By::Value => "value",
        }
    }
}

/// A tolerance as a fraction: "5%", "5" (both 5 %) or "2.5%".
pub fn parse_tolerance(s: &str) -> Result<f64> {
    let pct: f64 = s
        .trim()
        .trim_end_matches('%')
        .trim()
        .parse()
        .with_context(|| format!("--tolerance {s:?}: expected a percentage such as 5%"))?;
    if !(0.0..100.0).contains(&pct) {
        bail!("--tolerance {s:?}: expected a percentage in [0, 100)");
    }
    Ok(pct / 100.0)
}

/// The read-bandwidth probe's key. Entries normalised by it are judged on their value even
/// `--by ratio`: on a VM the probe differs by up to 15 % from one process to the next (other
/// guests share the host's memory) while the entries move by 1-3 %, so their ratios showed false
/// regressions between idle runs of the same binary (docs/REGRESSIONS.md).
pub const READ_REFERENCE: &str = "read_bw_gbs";

/// One entry as read from a suite document.
#[derive(Debug, Clone, PartialEq)]
pub struct DocEntry {
    pub name: String,
    pub unit: String,
    pub value: f64,
    pub samples: Vec<f64>,
    /// The samples per CPU-second, which the ratio is made of (empty where not recorded).
    pub cpu_samples: Vec<f64>,
    pub higher_is_better: bool,
    /// The reference's key and the run's median of it, and the ratio, where recorded.
    pub reference: Option<String>,
    pub ref_value: Option<f64>,
    pub ratio: Option<f64>,
}

/// The parts of a suite document that `compare` uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc {
    /// Where it was read from (for messages).
    pub path: String,
    pub quick: bool,
    pub threads: Option<u64>,
    pub commit: Option<String>,
    pub dirty: Option<bool>,
    pub cpu: Option<String>,
    pub isa: Option<String>,
    pub load_avg: Option<String>,
    pub entries: Vec<DocEntry>,
}

/// Read and check a suite document; every error names the file and the field.
pub fn load(path: &str) -> Result<Doc> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{path}: cannot read"))?;
    parse(path, &text)
}

/// Check a suite document held in `text` (read from `path`).
pub fn parse(path: &str, text: &str) -> Result<Doc> {
    let doc: Value =
        serde_json::from_str(text).with_context(|| format!("{path}: not valid JSON"))?;
    if !doc.is_object() {
        bail!("{path}: expected a JSON object (a `cllm-bench suite --json` document)");
    }
    match doc.get("schema").map(Value::as_u64) {
        None => bail!("{path}: field `schema` is missing (not a `cllm-bench suite` document?)"),
        Some(Some(SCHEMA)) => {}
        Some(_) => bail!(
            "{path}: field `schema` is {}, this cllm-bench reads schema {SCHEMA}",
            doc["schema"]
        ),
    }
    let entries = doc
        .get("entries")
        .and_then(Value::as_array)
        .with_context(|| format!("{path}: field `entries`: missing or not an array"))?;
    let mut out: Vec<DocEntry> = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let field = |f: &str| format!("{path}: field `entries[{i}].{f}`");
        let str_of = |f: &str| {
            e.get(f)
                .and_then(Value::as_str)
                .map(str::to_string)
                .with_context(|| format!("{}: missing or not a string", field(f)))
        };
        let positive = |f: &str, v: Option<&Value>| -> Result<f64> {
            match v.and_then(Value::as_f64) {
                Some(x) if x.is_finite() && x > 0.0 => Ok(x),
                _ => bail!("{}: missing or not a positive number", field(f)),
            }
        };
        let optional = |f: &str| -> Result<Option<f64>> {
            match e.get(f) {
                None | Some(Value::Null) => Ok(None),
                v => positive(f, v).map(Some),
            }
        };
        let name = str_of("name")?;
        if out.iter().any(|o| o.name == name) {
            bail!("{}: {name:?} appears twice", field("name"));
        }
        let list = |f: &str| -> Result<Vec<f64>> {
            match e.get(f) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(xs)) => xs
                    .iter()
                    .enumerate()
                    .map(|(j, x)| positive(&format!("{f}[{j}]"), Some(x)))
                    .collect(),
                Some(_) => bail!("{}: not an array", field(f)),
            }
        };
        let higher_is_better = match e.get("higher_is_better") {
            None => true,
            Some(v) => v
                .as_bool()
                .with_context(|| format!("{}: not a boolean", field("higher_is_better")))?,
        };
        let reference = match e.get("ref") {
            None | Some(Value::Null) => None,
            Some(_) => Some(str_of("ref")?),
        };
        out.push(DocEntry {
            unit: str_of("unit")?,
            value: positive("value", e.get("value"))?,
            samples: list("samples")?,
            cpu_samples: list("cpu_samples")?,
            higher_is_better,
            reference,
            ref_value: optional("ref_value")?,
            ratio: optional("ratio")?,
            name,
        });
    }
    let text_at = |p: &str| doc.pointer(p).and_then(Value::as_str).map(str::to_string);
    Ok(Doc {
        path: path.to_string(),
        quick: doc.get("quick").and_then(Value::as_bool).unwrap_or(false),
        threads: doc.get("threads").and_then(Value::as_u64),
        commit: text_at("/git/commit"),
        dirty: doc.pointer("/git/dirty").and_then(Value::as_bool),
        cpu: text_at("/machine/cpu"),
        isa: text_at("/machine/isa"),
        load_avg: text_at("/machine/load_avg_start"),
        entries: out,
    })
}

/// An entry's figures on the judged scale, turned so that higher is better.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    /// The worst and best sample (the median where there are no samples).
    pub worst: f64,
    pub best: f64,
}

impl Spread {
    /// `entry` judged `by`, and which scale was used: the value where the entry has no ratio and
    /// reference, or where its reference is the read-bandwidth probe (see [`READ_REFERENCE`]).
    fn of(entry: &DocEntry, by: By) -> (Spread, By) {
        let (median, samples, used) = match (by, entry.ratio, entry.ref_value) {
            (By::Ratio, Some(ratio), Some(r))
                if entry.reference.as_deref() != Some(READ_REFERENCE) =>
            {
                // The ratio is made of the per-CPU-second samples where the run recorded them:
                // each over (or, for times, times) the same reference.
                let raw = if entry.cpu_samples.is_empty() {
                    &entry.samples
                } else {
                    &entry.cpu_samples
                };
                let scaled = raw
                    .iter()
                    .map(|&x| if entry.higher_is_better { x / r } else { x * r })
                    .collect();
                (ratio, scaled, By::Ratio)
            }
            _ => (entry.value, entry.samples.clone(), By::Value),
        };
        let up = |x: f64| if entry.higher_is_better { x } else { 1.0 / x };
        let mut worst = up(median);
        let mut best = up(median);
        for &s in &samples {
            let g = up(s);
            worst = worst.min(g);
            best = best.max(g);
        }
        (
            Spread {
                median: up(median),
                worst,
                best,
            },
            used,
        )
    }
}

/// An entry's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Faster,
    Regressed,
    /// In the base, not in the new run.
    Missing,
    /// In the new run, not in the base.
    Added,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Faster => "faster",
            Verdict::Regressed => "REGRESSED",
            Verdict::Missing => "missing",
            Verdict::Added => "added",
        }
    }
}

/// The rule of the module documentation: `change` is new / base − 1 of the medians on the
/// higher-is-better scale.
pub fn judge(base: Spread, new: Spread, tolerance: f64) -> Verdict {
    let change = new.median / base.median - 1.0;
    if change < -tolerance && new.best < base.worst {
        Verdict::Regressed
    } else if change > tolerance && new.worst > base.best {
        Verdict::Faster
    } else {
        Verdict::Ok
    }
}

/// One line of the comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub unit: String,
    /// The medians, in the entry's unit.
    pub base: Option<f64>,
    pub new: Option<f64>,
    /// Change of the median and of the ratio, as a fraction, positive when faster.
    pub value_change: Option<f64>,
    pub ratio_change: Option<f64>,
    /// The scale the verdict was judged on (the value where an entry has no ratio).
    pub judged: By,
    pub verdict: Verdict,
}

/// Compare every entry of `base` with the entry of the same name in `new`.
pub fn compare(base: &Doc, new: &Doc, tolerance: f64, by: By) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for b in &base.entries {
        let Some(n) = new.entries.iter().find(|n| n.name == b.name) else {
            rows.push(Row {
                name: b.name.clone(),
                unit: b.unit.clone(),
                base: Some(b.value),
                new: None,
                value_change: None,
                ratio_change: None,
                judged: by,
                verdict: Verdict::Missing,
            });
            continue;
        };
        if n.unit != b.unit || n.higher_is_better != b.higher_is_better {
            bail!(
                "entry {:?}: {} in {} but {} in {}",
                b.name,
                describe(b),
                base.path,
                describe(n),
                new.path
            );
        }
        let up = |x: f64| if b.higher_is_better { x } else { 1.0 / x };
        let value_change = Some(up(n.value) / up(b.value) - 1.0);
        let ratio_change = match (b.ratio, n.ratio) {
            (Some(rb), Some(rn)) => Some(up(rn) / up(rb) - 1.0),
            _ => None,
        };
        let (bs, used_b) = Spread::of(b, by);
        let (ns, used_n) = Spread::of(n, by);
        let (bs, ns, judged) = if used_b == used_n {
            (bs, ns, used_b)
        } else {
            (
                Spread::of(b, By::Value).0,
                Spread::of(n, By::Value).0,
                By::Value,
            )
        };
        rows.push(Row {
            name: b.name.clone(),
            unit: b.unit.clone(),
            base: Some(b.value),
            new: Some(n.value),
            value_change,
            ratio_change,
            judged,
            verdict: judge(bs, ns, tolerance),
        });
    }
    for n in &new.entries {
        if !base.entries.iter().any(|b| b.name == n.name) {
            rows.push(Row {
                name: n.name.clone(),
                unit: n.unit.clone(),
                base: None,
                new: Some(n.value),
                value_change: None,
                ratio_change: None,
                judged: by,
                verdict: Verdict::Added,
            });
        }
    }
    Ok(rows)
}

fn describe(e: &DocEntry) -> String {
    format!(
        "unit {} ({} is better)",
        e.unit,
        if e.higher_is_better {
            "higher"
        } else {
            "lower"
        }
    )
}

/// What differs between the two runs' conditions, one sentence each.
pub fn warnings(base: &Doc, new: &Doc) -> Vec<String> {
    let mut w = Vec::new();
    let show = |x: &Option<String>| x.clone().unwrap_or_else(|| "unknown".into());
    if base.cpu != new.cpu {
        w.push(format!(
            "the machines differ: {} ran on {:?}, {} on {:?}; ratios carry over better than values",
            base.path,
            show(&base.cpu),
            new.path,
            show(&new.cpu)
        ));
    }
    if base.isa != new.isa {
        w.push(format!(
            "the kernel paths differ: {} in {}, {} in {}; the FMA reference runs on the path in \
             use, so the ratios hide part of the difference (--by value shows it)",
            show(&base.isa),
            base.path,
            show(&new.isa),
            new.path
        ));
    }
    if base.threads != new.threads {
        w.push(format!(
            "the thread counts differ: {:?} in {}, {:?} in {}",
            base.threads, base.path, new.threads, new.path
        ));
    }
    if base.quick != new.quick {
        w.push(format!(
            "one run is --quick and the other is not ({}: quick {}, {}: quick {}): their entries \
             have different names",
            base.path, base.quick, new.path, new.quick
        ));
    }
    for d in [base, new] {
        if d.dirty == Some(true) {
            w.push(format!(
                "{} was measured on a checkout with uncommitted changes",
                d.path
            ));
        }
    }
    w
}

/// The comparison as a table, with a header saying what was judged and a count of verdicts.
pub fn render(base: &Doc, new: &Doc, rows: &[Row], tolerance: f64, by: By) -> String {
    let mut out = String::new();
    let describe = |d: &Doc| {
        format!(
            "{} (commit {}{}, {}, {} thread(s), load {})",
            d.path,
            d.commit
                .as_deref()
                .map_or("unknown", |c| &c[..c.len().min(12)]),
            if d.dirty == Some(true) { " dirty" } else { "" },
            if d.quick { "quick" } else { "full" },
            d.threads.map_or("?".to_string(), |t| t.to_string()),
            d.load_avg.as_deref().unwrap_or("?")
        )
    };
    let _ = writeln!(out, "base: {}", describe(base));
    let _ = writeln!(out, "new:  {}", describe(new));
    let _ = writeln!(
        out,
        "judged on the {} (marked *), tolerance {:.1}%: REGRESSED = the median worse by more \
         than the tolerance and every new sample below every base sample",
        match by {
            By::Ratio => "ratio to the reference measured in the same run",
            By::Value => "median value",
        },
        tolerance * 100.0
    );
    let star = |b: By| if b == by { "*" } else { "" };
    let _ = writeln!(
        out,
        "{:<40} {:>9} {:>10} {:>10} {:>9} {:>9} {:>10}",
        "entry",
        "unit",
        "base",
        "new",
        format!("value{}", star(By::Value)),
        format!("ratio{}", star(By::Ratio)),
        "verdict"
    );
    let num = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{:+.1}%", 100.0 * x));
    for r in rows {
        let note = if r.judged != by && r.base.is_some() && r.new.is_some() {
            format!(" (on {})", r.judged.name())
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<40} {:>9} {:>10} {:>10} {:>9} {:>9} {:>10}{note}",
            r.name,
            r.unit,
            num(r.base),
            num(r.new),
            pct(r.value_change),
            pct(r.ratio_change),
            r.verdict.label()
        );
    }
    let count = |v: Verdict| rows.iter().filter(|r| r.verdict == v).count();
    let _ = writeln!(
        out,
        "{} entries: {} ok, {} faster, {} REGRESSED, {} missing, {} added",
        rows.len(),
        count(Verdict::Ok),
        count(Verdict::Faster),
        count(Verdict::Regressed),
        count(Verdict::Missing),
        count(Verdict::Added)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(entries: &str) -> String {
        format!(
            r#"{{"schema": 1, "quick": true, "threads": 1,
                "machine": {{"cpu": "Test CPU", "isa": "avx2"}},
                "git": {{"commit": "abc", "dirty": false}},
                "entries": [{entries}]}}"#
        )
    }

    fn entry(name: &str, samples: &[f64], ref_value: f64) -> String {
        let mut s = samples.to_vec();
        let value = crate::median(&mut s);
        format!(
            r#"{{"name": "{name}", "unit": "GFLOP/s", "value": {value}, "samples": {samples:?},
                "higher_is_better": true, "ref": "fma_peak_gflops", "ref_value": {ref_value},
                "ratio": {}}}"#,
            value / ref_value
        )
    }

    fn rows(base: &str, new: &str, tol: f64, by: By) -> Vec<Row> {
        let b = parse("base.json", &doc(base)).unwrap();
        let n = parse("new.json", &doc(new)).unwrap();
        compare(&b, &n, tol, by).unwrap()
    }

    #[test]
    fn judge_needs_both_the_tolerance_and_separate_samples() {
        let spread = |median: f64, worst: f64, best: f64| Spread {
            median,
            worst,
            best,
        };
        let base = spread(100.0, 90.0, 105.0);
        // 8 % slower but inside the base's spread: noise, not a regression.
        assert_eq!(judge(base, spread(92.0, 91.0, 93.0), 0.05), Verdict::Ok);
        // Every new sample below every base sample, and beyond the tolerance.
        assert_eq!(
            judge(base, spread(85.0, 84.0, 86.0), 0.05),
            Verdict::Regressed
        );
        // A median beyond the tolerance, but one new sample reaches the base's range.
        assert_eq!(judge(base, spread(85.0, 80.0, 95.0), 0.05), Verdict::Ok);
        // Separate samples but within the tolerance of the median.
        let tight = spread(100.0, 99.0, 101.0);
        assert_eq!(judge(tight, spread(97.0, 96.5, 97.5), 0.05), Verdict::Ok);
        assert_eq!(
            judge(tight, spread(94.0, 93.0, 95.0), 0.05),
            Verdict::Regressed
        );
        assert_eq!(
            judge(tight, spread(110.0, 109.0, 111.0), 0.05),
            Verdict::Faster
        );
        assert_eq!(
            judge(base, spread(108.0, 106.0, 110.0), 0.05),
            Verdict::Faster
        );
        assert_eq!(judge(base, spread(108.0, 104.0, 110.0), 0.05), Verdict::Ok);
    }

    #[test]
    fn a_slower_ratio_is_caught_even_when_the_machine_got_faster() {
        // The new run's machine was 10 % faster (reference 44 vs 40) but the entry only 2 %
        // faster: its ratio fell 7 %, a regression of the code.
        let base = entry("gemm/nn/1", &[39.0, 40.0, 41.0], 40.0);
        let new = entry("gemm/nn/1", &[40.5, 40.8, 41.0], 44.0);
        let r = rows(&base, &new, 0.05, By::Ratio);
        assert_eq!(r[0].verdict, Verdict::Regressed);
        assert_eq!(r[0].judged, By::Ratio);
        // On the values alone it looks fine.
        assert_eq!(rows(&base, &new, 0.05, By::Value)[0].verdict, Verdict::Ok);
    }

    #[test]
    fn a_busy_moment_that_slowed_the_reference_too_is_ok() {
        // Everything 20 % slower, the reference included: the ratio has not moved.
        let base = entry("train/x", &[100.0, 101.0, 102.0], 40.0);
        let new = entry("train/x", &[80.0, 80.8, 81.6], 32.0);
        assert_eq!(rows(&base, &new, 0.05, By::Ratio)[0].verdict, Verdict::Ok);
        assert_eq!(
            rows(&base, &new, 0.05, By::Value)[0].verdict,
            Verdict::Regressed
        );
    }

    #[test]
    fn missing_and_added_entries_are_listed() {
        let base = [entry("a", &[1.0], 1.0), entry("b", &[1.0], 1.0)].join(",");
        let new = [entry("a", &[1.0], 1.0), entry("c", &[1.0], 1.0)].join(",");
        let r = rows(&base, &new, 0.05, By::Ratio);
        let verdicts: Vec<(&str, Verdict)> =
            r.iter().map(|r| (r.name.as_str(), r.verdict)).collect();
        assert_eq!(
            verdicts,
            [
                ("a", Verdict::Ok),
                ("b", Verdict::Missing),
                ("c", Verdict::Added)
            ]
        );
    }

    #[test]
    fn read_bandwidth_entries_are_judged_on_their_value() {
        let e = |v: f64, bw: f64| {
            format!(
                r#"{{"name": "decode", "unit": "tokens/s", "value": {v}, "samples": [{v}],
                    "higher_is_better": true, "ref": "read_bw_gbs", "ref_value": {bw},
                    "ratio": {}}}"#,
                v / bw
            )
        };
        // The probe read 15 % more in the new run, the entry the same: ok, on the value.
        let r = rows(&e(23.4, 12.0), &e(23.5, 13.8), 0.05, By::Ratio);
        assert_eq!((r[0].verdict, r[0].judged), (Verdict::Ok, By::Value));
        // A real slowdown is still caught.
        let r = rows(&e(23.4, 12.0), &e(20.0, 12.0), 0.05, By::Ratio);
        assert_eq!(r[0].verdict, Verdict::Regressed);
    }

    #[test]
    fn lower_is_better_entries_are_turned_around() {
        let e = |v: f64| {
            format!(
                r#"{{"name": "t", "unit": "ms", "value": {v}, "samples": [{v}],
                    "higher_is_better": false}}"#
            )
        };
        // No ratio recorded: judged on the value, and a longer time is a regression.
        let r = rows(&e(10.0), &e(12.0), 0.05, By::Ratio);
        assert_eq!(r[0].verdict, Verdict::Regressed);
        assert_eq!(r[0].judged, By::Value);
        assert!((r[0].value_change.unwrap() + 1.0 / 6.0).abs() < 1e-12);
        assert_eq!(
            rows(&e(10.0), &e(8.0), 0.05, By::Ratio)[0].verdict,
            Verdict::Faster
        );
    }

    #[test]
    fn bad_documents_name_the_file_and_field() {
        let err = |text: &str| format!("{:#}", parse("x.json", text).unwrap_err());
        assert!(err("{").contains("x.json: not valid JSON"));
        assert!(err("[]").contains("x.json: expected a JSON object"));
        assert!(err(r#"{"entries": []}"#).contains("field `schema` is missing"));
        assert!(err(r#"{"schema": 2, "entries": []}"#)
            .contains("x.json: field `schema` is 2, this cllm-bench reads schema 1"));
        assert!(err(r#"{"schema": 1}"#).contains("x.json: field `entries`"));
        let no_value = doc(r#"{"name": "a", "unit": "GB/s"}"#);
        assert!(err(&no_value).contains("x.json: field `entries[0].value`"));
        let bad_sample =
            doc(r#"{"name": "a", "unit": "GB/s", "value": 1, "samples": [1, "fast"]}"#);
        assert!(err(&bad_sample).contains("field `entries[0].samples[1]`"));
        let twice = doc(&[entry("a", &[1.0], 1.0), entry("a", &[1.0], 1.0)].join(","));
        assert!(err(&twice).contains("field `entries[1].name`: \"a\" appears twice"));
    }

    #[test]
    fn mismatched_units_are_an_error() {
        let b = parse("b.json", &doc(&entry("a", &[1.0], 1.0))).unwrap();
        let n = parse(
            "n.json",
            &doc(r#"{"name": "a", "unit": "MB/s", "value": 1}"#),
        )
        .unwrap();
        let e = compare(&b, &n, 0.05, By::Ratio).unwrap_err().to_string();
        assert!(e.contains("b.json") && e.contains("n.json") && e.contains("MB/s"));
    }

    #[test]
    fn tolerances_parse_as_percentages() {
        assert_eq!(parse_tolerance("5%").unwrap(), 0.05);
        assert_eq!(parse_tolerance("5").unwrap(), 0.05);
        assert_eq!(parse_tolerance("2.5 %").unwrap(), 0.025);
        assert!(parse_tolerance("fast").is_err());
        assert!(parse_tolerance("-1%").is_err());
    }

    #[test]
    fn different_machines_are_warned_about() {
        let b = parse("b.json", &doc("")).unwrap();
        let mut n = parse("n.json", &doc("")).unwrap();
        assert!(warnings(&b, &n).is_empty());
        n.cpu = Some("Other CPU".into());
        n.threads = Some(2);
        let w = warnings(&b, &n).join("\n");
        assert!(w.contains("machines differ") && w.contains("thread counts differ"));
    }
}
