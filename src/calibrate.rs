//! Calibration of scored mode for the model in use ("Calibrate Before Use", Zhao et al. 2021):
//! contextual calibration (divide out the label distribution the model gives for a content-free
//! answer) and per-label log-biases chosen for macro-F1 on a labeled file. Saved as a small JSON
//! file keyed by the model file's fingerprint and applied by verify, eval and serve.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::{agreement, Grades};
use crate::rubric::Label;

/// Answers with no content, used to measure the model's label prior.
pub const CONTENT_FREE_ANSWERS: &[&str] = &["N/A", "", "[MASK]"];

/// A fitted calibration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibrator {
    /// Fingerprint of the model file it was fitted for.
    pub model: String,
    /// The model file's name, for people.
    pub model_file: String,
    /// Template version it was fitted with.
    pub prompts: String,
    /// The labeled file it was fitted on.
    pub fitted_on: String,
    /// Labeled verdicts used.
    pub n: usize,
    /// Grading the thresholds were chosen for.
    pub grades: Grades,
    /// Mean label distribution for content-free answers (support, partial, not).
    pub content_free: [f64; 3],
    /// Log-bias added per label after contextual calibration.
    pub bias: [f64; 3],
    /// Macro-F1 on the fitting file: raw, after contextual calibration, after thresholds.
    pub fit_macro_f1: [f64; 3],
    /// The stacked judge, when fitted: replaces the two steps above for model verdicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<crate::stack::Stack>,
    /// The stacked judge of short-form verdicts (answers with gold answers), fitted apart:
    /// a different task from judging a nugget against a passage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_stack: Option<crate::stack::Stack>,
}

fn normalise(p: [f64; 3]) -> [f64; 3] {
    let s: f64 = p.iter().sum();
    if s > 0.0 && s.is_finite() {
        [p[0] / s, p[1] / s, p[2] / s]
    } else {
        [1.0 / 3.0; 3]
    }
}

/// Contextual calibration then log-biases: q_k ∝ p_k / cf_k · exp(b_k).
pub fn apply(p: [f64; 3], content_free: [f64; 3], bias: [f64; 3]) -> [f64; 3] {
    let mut q = [0.0; 3];
    for k in 0..3 {
        let cf = content_free[k].max(1e-9);
        q[k] = (p[k].max(1e-300) / cf).ln() + bias[k];
    }
    let m = q.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    normalise([(q[0] - m).exp(), (q[1] - m).exp(), (q[2] - m).exp()])
}

fn macro_f1(items: &[([f64; 3], Label)], cf: [f64; 3], bias: [f64; 3], grades: Grades) -> f64 {
    let pairs: Vec<(Label, Label)> = items
        .iter()
        .map(|&(p, g)| (g, crate::aggregate::LabelProbs::from_array(apply(p, cf, bias)).argmax()))
        .collect();
    agreement(&pairs, grades).macro_f1
}

impl Calibrator {
    /// Fit log-biases for macro-F1 after contextual calibration with `content_free`.
    /// `items` are raw model distributions with gold labels.
    pub fn fit(items: &[([f64; 3], Label)], content_free: [f64; 3], grades: Grades) -> ([f64; 3], [f64; 3]) {
        let cf = normalise(content_free);
        let raw = macro_f1(items, [1.0; 3], [0.0; 3], grades);
        let cc = macro_f1(items, cf, [0.0; 3], grades);
        let grid: Vec<f64> = (-40..=40).map(|i| i as f64 * 0.15).collect();
        let partial_grid: Vec<f64> = match grades {
            Grades::Three => grid.clone(),
            Grades::Two => vec![-50.0],
        };
        let mut best: (f64, [f64; 3]) = (f64::NEG_INFINITY, [0.0; 3]);
        for &bs in &grid {
            for &bp in &partial_grid {
                let bias = [bs, bp, 0.0];
                let f = macro_f1(items, cf, bias, grades);
                // Prefer the smaller correction on ties.
                let better = f > best.0 + 1e-12
                    || ((f - best.0).abs() <= 1e-12 && bs.abs() + bp.abs() < best.1[0].abs() + best.1[1].abs());
                if better {
                    best = (f, bias);
                }
            }
        }
        (best.1, [raw, cc, best.0])
    }

    /// Calibrate one distribution.
    pub fn apply(&self, p: [f64; 3]) -> [f64; 3] {
        apply(p, self.content_free, self.bias)
    }

    /// The calibration shipped with gavel for the embedded default model and the built-in
    /// templates (`calibration/default.json`), if any.
    pub fn shipped() -> Option<Calibrator> {
        serde_json::from_str::<Option<Calibrator>>(include_str!("../calibration/default.json")).ok().flatten()
    }

    /// Where the calibration of a model fingerprint is kept.
    pub fn path_for(fingerprint: &str) -> PathBuf {
        crate::model_store::gavel_home().join("calibration").join(format!("{fingerprint}.json"))
    }

    /// Load from a file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Parse { location: path.display().to_string(), reason: e.to_string() })
    }

    /// Save to a file (creating folders).
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Backend(e.to_string()))?;
        std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
    }

    /// A one-line description for summaries.
    pub fn describe(&self) -> String {
        let kind = match self.stack.as_ref().or(self.short_stack.as_ref()) {
            Some(s) if s.features == crate::stack::FeatureSet::All => "stacked judge (model + lexical features)",
            Some(s) if s.features == crate::stack::FeatureSet::Likelihood => {
                "stacked judge (the model's nugget likelihood + lexical features)"
            }
            Some(_) => "stacked judge WITHOUT model features (ablation)",
            None => "contextual + thresholds",
        };
        format!("{kind}, fitted on {} ({} verdicts, {:?}-grade)", self.fitted_on, self.n, self.grades)
    }

    /// The calibrated distribution of one model verdict: the stack when present, else
    /// contextual calibration with thresholds.
    pub fn verdict_probs(&self, raw_probs: [f64; 3], x: &crate::stack::FeatureInput<'_>) -> [f64; 3] {
        let stack = if x.gold_answers.is_empty() { &self.stack } else { &self.short_stack };
        match stack {
            Some(s) => s.apply(x),
            None => self.apply(raw_probs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Label::{NotSupport as N, Support as S};

    #[test]
    fn apply_divides_out_the_prior() {
        let q = apply([0.6, 0.1, 0.3], [0.6, 0.1, 0.3], [0.0; 3]);
        for x in q {
            assert!((x - 1.0 / 3.0).abs() < 1e-9);
        }
        let q = apply([0.5, 0.0, 0.5], [1.0, 1.0, 1.0], [0.0, 0.0, 2f64.ln()]);
        assert!((q[2] / q[0] - 2.0).abs() < 1e-9);
        assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn fit_repairs_a_biased_model() {
        // The model always leans to support, but ranks correctly: p_s is higher for true support.
        let items: Vec<([f64; 3], Label)> = (0..40)
            .map(|i| {
                let gold = if i % 2 == 0 { S } else { N };
                let ps = if gold == S { 0.8 + 0.001 * i as f64 } else { 0.65 + 0.001 * i as f64 };
                ([ps, 0.0, 1.0 - ps], gold)
            })
            .collect();
        let (bias, f1) = Calibrator::fit(&items, [0.7, 0.0, 0.3], Grades::Two);
        assert!(f1[0] < 0.5, "raw macro-F1 {}", f1[0]);
        assert!((f1[2] - 1.0).abs() < 1e-12, "fitted macro-F1 {}", f1[2]);
        let c = Calibrator {
            model: "m".into(),
            model_file: "m.gguf".into(),
            prompts: "v".into(),
            fitted_on: "x".into(),
            n: 40,
            grades: Grades::Two,
            content_free: [0.7, 0.0, 0.3],
            bias,
            fit_macro_f1: f1,
            stack: None,
            short_stack: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        c.save(&path).unwrap();
        assert_eq!(Calibrator::load(&path).unwrap(), c);
    }
}
