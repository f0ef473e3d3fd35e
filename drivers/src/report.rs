//! The report cllm-train writes at the end of a run: `report.json` for scripts and `report.md` for
//! people, each written atomically. It holds the configuration, every evaluation point, a training
//! curve thinned to at most [`MAX_CURVE_POINTS`] points, the best validation loss and perplexity,
//! throughput and memory.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cllm_engine::atomic_file::write_atomic;
use cllm_engine::train::MemoryPlan;
use serde_json::{json, Map, Value};

/// The JSON report's file name.
pub const REPORT_JSON: &str = "report.json";
/// The Markdown report's file name.
pub const REPORT_MD: &str = "report.md";
/// Most points the training curve keeps (the last step is always one of them).
pub const MAX_CURVE_POINTS: usize = 200;

/// One optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepPoint {
    /// 1-based: the step just finished.
    pub step: usize,
    pub train_loss: f32,
    pub lr: f32,
    pub tokens_per_s: f64,
    /// Seconds since the run started.
    pub elapsed_s: f64,
}

/// A step at which validation loss was measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalPoint {
    pub at: StepPoint,
    /// Mean cross-entropy (nats per token) over the validation batches.
    pub val_loss: f32,
}

impl EvalPoint {
    /// Validation perplexity: exp of the mean loss.
    pub fn val_ppl(&self) -> f64 {
        (self.val_loss as f64).exp()
    }
}

/// The training curve, thinned as it grows so it never holds more than [`MAX_CURVE_POINTS`]
/// points: it keeps every `stride`-th step and doubles the stride (dropping every other point kept)
/// when full. The last step pushed is always reported.
#[derive(Debug, Clone)]
pub struct Curve {
    kept: Vec<StepPoint>,
    stride: usize,
    pushed: usize,
    last: Option<StepPoint>,
}

impl Default for Curve {
    fn default() -> Self {
        Curve {
            kept: Vec::with_capacity(MAX_CURVE_POINTS),
            stride: 1,
            pushed: 0,
            last: None,
        }
    }
}

impl Curve {
    pub fn push(&mut self, point: StepPoint) {
        if self.pushed.is_multiple_of(self.stride) {
            if self.kept.len() == MAX_CURVE_POINTS - 1 {
                let mut i = 0;
                self.kept.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.stride *= 2;
            }
            if self.pushed.is_multiple_of(self.stride) {
                self.kept.push(point);
            }
        }
        self.pushed += 1;
        self.last = Some(point);
    }

    /// The kept points in step order, ending with the last step pushed.
    pub fn points(&self) -> Vec<StepPoint> {
        let mut points = self.kept.clone();
        if let Some(last) = self.last {
            if points.last() != Some(&last) {
                points.push(last);
            }
        }
        points
    }
}

/// Everything the report says about a finished run.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Settings as (name, value), in the order the Markdown lists them.
    pub config: Vec<(String, Value)>,
    /// The step the run started from (0, or the step of the checkpoint it resumed).
    pub first_step: usize,
    pub curve: Curve,
    pub evals: Vec<EvalPoint>,
    /// Tokens trained on in this run.
    pub tokens: u64,
    pub wall_s: f64,
    /// Mean of the steps' tokens/s, the first step (warm-up) left out.
    pub mean_tokens_per_s: f64,
    pub memory: MemoryPlan,
    pub peak_rss_bytes: Option<u64>,
}

/// `x` as a JSON number with the f32's shortest decimal form (0.002, not 0.0020000000949949026).
pub fn f32_value(x: f32) -> Value {
    format!("{x}")
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1u64 << 20) as f64)
}

/// A config value as a table cell: strings bare, objects as `key=value` pairs.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", cell(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

impl TrainReport {
    /// The evaluation of lowest validation loss (the earliest on a tie).
    pub fn best(&self) -> Option<&EvalPoint> {
        self.evals
            .iter()
            .fold(None, |best: Option<&EvalPoint>, e| match best {
                Some(b) if b.val_loss <= e.val_loss => Some(b),
                _ => Some(e),
            })
    }

    /// The last step trained.
    pub fn last_step(&self) -> usize {
        self.curve.last.map_or(self.first_step, |p| p.step)
    }

    pub fn to_json(&self) -> Value {
        let step = |p: &StepPoint| {
            json!({
                "step": p.step, "train_loss": f32_value(p.train_loss), "lr": f32_value(p.lr),
                "tokens_per_s": p.tokens_per_s, "elapsed_s": p.elapsed_s,
            })
        };
        let eval = |e: &EvalPoint| {
            let mut v = step(&e.at);
            v["val_loss"] = f32_value(e.val_loss);
            v["val_ppl"] = json!(e.val_ppl());
            v
        };
        let config: Map<String, Value> = self.config.iter().cloned().collect();
        json!({
            "config": config,
            "steps": { "first": self.first_step, "last": self.last_step() },
            "best": self.best().map(|b| json!({
                "step": b.at.step, "val_loss": f32_value(b.val_loss), "val_ppl": b.val_ppl(),
            })),
            "final": self.evals.last().filter(|e| e.at.step == self.last_step()).map(eval),
            "throughput": {
                "mean_tokens_per_s": self.mean_tokens_per_s,
                "wall_s": self.wall_s,
                "tokens": self.tokens,
            },
            "memory": {
                "planned_bytes": self.memory.total,
                "params_bytes": self.memory.params,
                "grads_bytes": self.memory.grads,
                "optimizer_bytes": self.memory.optimizer,
                "activations_per_worker_bytes": self.memory.activations_per_worker,
                "workers": self.memory.workers,
                "peak_rss_bytes": self.peak_rss_bytes,
            },
            "eval_points": self.evals.iter().map(eval).collect::<Vec<_>>(),
            "train_curve": self.curve.points().iter().map(step).collect::<Vec<_>>(),
        })
    }

    pub fn to_markdown(&self) -> String {
        let mut md = String::new();
        let mut w = |s: String| md.push_str(&s);
        w("# Training report\n\n".into());
        w(format!(
            "Steps {} to {} ({} tokens) in {:.1} s: {:.0} tokens/s on average (first step left out).\n",
            self.first_step + 1,
            self.last_step(),
            self.tokens,
            self.wall_s,
            self.mean_tokens_per_s
        ));
        match self.best() {
            Some(b) => w(format!(
                "Best validation loss {:.4} (perplexity {:.2}) at step {}.\n",
                b.val_loss,
                b.val_ppl(),
                b.at.step
            )),
            None => w("No validation data: no validation loss was measured.\n".into()),
        }
        w(format!(
            "Memory: {} planned ({} params, {} grads, {} optimizer, {} activations x {} workers), peak RSS {}.\n",
            mib(self.memory.total as f64),
            mib(self.memory.params as f64),
            mib(self.memory.grads as f64),
            mib(self.memory.optimizer as f64),
            mib(self.memory.activations_per_worker as f64),
            self.memory.workers,
            self.peak_rss_bytes
                .map_or("unknown".into(), |b| mib(b as f64)),
        ));

        w("\n## Configuration\n\n| setting | value |\n|---|---|\n".into());
        for (k, v) in &self.config {
            w(format!("| {k} | {} |\n", cell(v)));
        }

        w("\n## Validation\n\n".into());
        if self.evals.is_empty() {
            w("None measured.\n".into());
        } else {
            w("| step | train loss | val loss | val ppl | lr | tokens/s |\n|---:|---:|---:|---:|---:|---:|\n".into());
            for e in &self.evals {
                w(format!(
                    "| {} | {:.4} | {:.4} | {:.2} | {:.3e} | {:.0} |\n",
                    e.at.step,
                    e.at.train_loss,
                    e.val_loss,
                    e.val_ppl(),
                    e.at.lr,
                    e.at.tokens_per_s
                ));
            }
        }
        let points = self.curve.points();
        w(format!(
            "\nThe training curve ({} points of step, train loss, lr, tokens/s) is in {REPORT_JSON} under `train_curve`.\n",
            points.len()
        ));
        md
    }

    /// Renames the report in `dir` of an earlier part of a resumed run, if there is one, to
    /// `report.steps-FIRST-LAST.json` / `.md` (its own steps; `report.earlier` when it does not
    /// say them; `-2`, `-3` ... appended when the name is taken), so writing this part's report
    /// loses nothing. Returns the new name of the JSON file.
    pub fn keep_earlier(dir: &Path) -> Result<Option<PathBuf>> {
        let json_path = dir.join(REPORT_JSON);
        if !json_path.is_file() {
            return Ok(None);
        }
        let steps = std::fs::read_to_string(&json_path)
            .ok()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|v| Some((v["steps"]["first"].as_u64()?, v["steps"]["last"].as_u64()?)));
        let base = match steps {
            Some((first, last)) => format!("report.steps-{first}-{last}"),
            None => "report.earlier".to_string(),
        };
        let stem = (1..)
            .map(|n| {
                if n == 1 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                }
            })
            .find(|s| {
                !dir.join(format!("{s}.json")).exists() && !dir.join(format!("{s}.md")).exists()
            })
            .expect("some suffix is free");
        let kept = dir.join(format!("{stem}.json"));
        for (from, to) in [
            (json_path, kept.clone()),
            (dir.join(REPORT_MD), dir.join(format!("{stem}.md"))),
        ] {
            if from.is_file() {
                std::fs::rename(&from, &to)
                    .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
            }
        }
        Ok(Some(kept))
    }

    /// Writes `report.json` and `report.md` into `dir` (created if missing), each atomically.
    pub fn write(&self, dir: &Path) -> Result<[PathBuf; 2]> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json_path = dir.join(REPORT_JSON);
        let md_path = dir.join(REPORT_MD);
        let mut text = serde_json::to_string_pretty(&self.to_json())?;
        text.push('\n');
        let md = self.to_markdown();
        for (path, bytes) in [(&json_path, text.as_bytes()), (&md_path, md.as_bytes())] {
            write_atomic(path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok([json_path, md_path])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(step: usize) -> StepPoint {
        StepPoint {
            step,
            train_loss: 5.0 - step as f32 * 0.001,
            lr: 1e-3,
            tokens_per_s: 1000.0,
            elapsed_s: step as f64 * 0.5,
        }
    }

    #[test]
    fn f32_values_print_short() {
        assert_eq!(f32_value(2e-3).to_string(), "0.002");
        assert_eq!(f32_value(5.6974206).to_string(), "5.6974206");
        assert!(f32_value(f32::NAN).is_null());
    }

    #[test]
    fn curve_keeps_at_most_max_points_evenly_and_the_last() {
        for n in [0, 1, 2, 199, 200, 201, 450, 1000, 12_345] {
            let mut c = Curve::default();
            for s in 1..=n {
                c.push(point(s));
            }
            let p = c.points();
            assert!(p.len() <= MAX_CURVE_POINTS, "{n}: {}", p.len());
            if n > 0 {
                assert_eq!(p[0].step, 1);
                assert_eq!(p.last().unwrap().step, n);
            }
            if n < MAX_CURVE_POINTS {
                assert_eq!(p.len(), n, "short runs keep every step");
            } else {
                assert!(p.len() >= MAX_CURVE_POINTS / 2, "{n}: {}", p.len());
                // Evenly spaced but for the last point.
                let gaps: Vec<usize> = p[..p.len() - 1]
                    .windows(2)
                    .map(|w| w[1].step - w[0].step)
                    .collect();
                assert!(gaps.windows(2).all(|g| g[0] == g[1]), "{n}: {gaps:?}");
            }
            assert!(p.windows(2).all(|w| w[0].step < w[1].step));
        }
    }

    fn report() -> TrainReport {
        let mut curve = Curve::default();
        for s in 1..=6 {
            curve.push(point(s));
        }
        let eval = |step, val_loss| EvalPoint {
            at: point(step),
            val_loss,
        };
        TrainReport {
            config: vec![
                ("layers".into(), json!(1)),
                ("optimizer".into(), json!({"name": "adamw", "beta1": 0.9})),
                ("data".into(), json!("embedded corpus")),
            ],
            first_step: 0,
            curve,
            evals: vec![eval(2, 4.5), eval(4, 4.25), eval(6, 4.25)],
            tokens: 6 * 64,
            wall_s: 3.0,
            mean_tokens_per_s: 1000.0,
            memory: MemoryPlan {
                params: 1 << 20,
                grads: 2 << 20,
                optimizer: 2 << 20,
                activations_per_worker: 1 << 20,
                workers: 2,
                total: 7 << 20,
            },
            peak_rss_bytes: Some(20 << 20),
        }
    }

    #[test]
    fn json_has_the_best_point_every_eval_and_the_curve() {
        let r = report();
        let v = r.to_json();
        assert_eq!(v["best"]["step"], 4, "the earliest of equal losses");
        assert!((v["best"]["val_ppl"].as_f64().unwrap() - 4.25f64.exp()).abs() < 1e-9);
        assert_eq!(v["final"]["step"], 6);
        assert_eq!(v["eval_points"].as_array().unwrap().len(), 3);
        assert_eq!(v["eval_points"][0]["val_loss"], 4.5);
        assert_eq!(v["train_curve"].as_array().unwrap().len(), 6);
        assert_eq!(v["steps"]["last"], 6);
        assert_eq!(v["config"]["optimizer"]["name"], "adamw");
        assert_eq!(v["memory"]["planned_bytes"], 7 << 20);
        assert_eq!(v["memory"]["peak_rss_bytes"], 20 << 20);
        assert_eq!(v["throughput"]["tokens"], 384);
    }

    #[test]
    fn markdown_summarises_and_tables_the_evals() {
        let md = report().to_markdown();
        for needle in [
            "# Training report",
            "Best validation loss 4.2500 (perplexity 70.11) at step 4.",
            "| optimizer | beta1=0.9, name=adamw |",
            "| data | embedded corpus |",
            "| 2 | 4.9980 | 4.5000 | 90.02 |",
            "7.0 MiB planned",
            "peak RSS 20.0 MiB",
        ] {
            assert!(md.contains(needle), "{needle} missing from\n{md}");
        }
        let mut none = report();
        none.evals.clear();
        assert!(none.to_markdown().contains("No validation data"));
        assert!(none.to_json()["best"].is_null());
    }

    #[test]
    fn write_puts_both_files_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested/report");
        let [j, m] = report().write(&out).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(j).unwrap()).unwrap();
        assert_eq!(v["best"]["step"], 4);
        assert!(std::fs::read_to_string(m)
            .unwrap()
            .starts_with("# Training report"));
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert_eq!(left.len(), 2, "no temporary files left behind");
    }
}
