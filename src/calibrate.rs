//! Calibration of scored mode for the model in use ("Calibrate Before Use", Zhao et al. 2021):
//! contextual calibration (divide out the label distribution the model gives for a content-free
//! answer) and per-label log-biases chosen for macro-F1 on a labeled file. Saved as a small JSON
//! file keyed by the model file's fingerprint and applied by verify, eval and serve.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::aggregate::{HiddenRead, LabelProbs, RawScore};
use crate::error::{Error, Result};
use crate::head::{HeadCandidate, HeadData};
use crate::label::{Grades, Label};
use crate::metrics::agreement;
use crate::record::{fold_of, part_of, Part, Task};
use crate::stack::{CurvePoint, FeatureInput, FeatureSet, Selection, Stack};

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
    pub stack: Option<Stack>,
    /// The stacked judge of short-form verdicts (answers with gold answers), fitted apart:
    /// a different task from judging a nugget against a passage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_stack: Option<Stack>,
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
    let pairs: Vec<(Label, Label)> =
        items.iter().map(|&(p, g)| (g, LabelProbs::from_array(apply(p, cf, bias)).argmax())).collect();
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
        serde_json::from_str::<Option<Calibrator>>(include_str!("../calibration/default.json"))
            .ok()
            .flatten()
            .filter(|c| c.validate("calibration/default.json").is_ok())
    }

    /// Where the calibration of a model fingerprint is kept.
    pub fn path_for(fingerprint: &str) -> PathBuf {
        crate::model_store::gavel_home().join("calibration").join(format!("{fingerprint}.json"))
    }

    /// Load from a file, checked (see [`Calibrator::validate`]).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        // A byte-order mark, as an editor may write: read as records and rubrics are.
        let c: Calibrator = serde_json::from_str(text.strip_prefix('\u{feff}').unwrap_or(&text))
            .map_err(|e| Error::Parse { location: path.display().to_string(), reason: e.to_string() })?;
        c.validate(&path.display().to_string())?;
        Ok(c)
    }

    /// Check what a file may get wrong: finite, positive priors and biases, and stacks whose
    /// arrays fit together. `location` names the file in the error.
    pub fn validate(&self, location: &str) -> Result<()> {
        if self.content_free.iter().any(|p| !(p.is_finite() && *p >= 0.0)) {
            return Err(Error::field(location, "content_free", "needs three finite probabilities"));
        }
        if self.bias.iter().any(|b| !b.is_finite()) {
            return Err(Error::field(location, "bias", "needs three finite numbers"));
        }
        for (name, stack) in [("stack", &self.stack), ("short_stack", &self.short_stack)] {
            if let Some(Err((field, why))) = stack.as_ref().map(Stack::validate) {
                return Err(Error::field(location, format!("{name}.{field}"), why));
            }
        }
        Ok(())
    }

    /// Save to a file (creating folders).
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Internal(format!("calibration: {e}")))?;
        std::fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
    }

    /// A one-line description for summaries.
    pub fn describe(&self) -> String {
        let kind = match self.stack.as_ref().or(self.short_stack.as_ref()) {
            Some(s) if s.features == FeatureSet::All => "stacked judge (model + lexical features)",
            Some(s) if s.features == FeatureSet::Aligned => "stacked judge (model + aligned lexical features)",
            Some(s) if s.features == FeatureSet::Likelihood => {
                "stacked judge (the model's nugget likelihood + lexical features)"
            }
            Some(s) if s.features == FeatureSet::AlignedHidden => {
                "stacked judge (model + aligned lexical features + hidden-state head)"
            }
            Some(s) if s.features == FeatureSet::Transfer => {
                "stacked judge (transfer: exact and soft overlap, numbers and the model's PMI, balanced cuts)"
            }
            Some(s) if s.features == FeatureSet::TransferHidden => {
                "stacked judge (transfer: exact and soft overlap, numbers, the model's PMI and a hidden-state head, balanced cuts)"
            }
            Some(_) => "stacked judge WITHOUT model features (ablation)",
            None => "contextual + thresholds",
        };
        format!("{kind}, fitted on {} ({} verdicts, {})", self.fitted_on, self.n, self.grades)
    }

    /// Whether its long-form stack reads the model's hidden states (a head).
    pub fn reads_hidden(&self) -> bool {
        self.stack.as_ref().is_some_and(|s| s.head.is_some())
    }

    /// The features its stacks read that come from the nugget's likelihood (and its PMI
    /// baseline), which a backend without prompt log-probabilities, or `--no-likelihood`, does
    /// not give: a stack then reads them as their mean. Per stack that reads any: "long-form"
    /// or "short-form", and the names. A feature that was constant in the fit (a calibration
    /// fitted without them) is not read, and not listed.
    pub fn likelihood_features(&self) -> Vec<(&'static str, Vec<&str>)> {
        [("long-form", &self.stack), ("short-form", &self.short_stack)]
            .into_iter()
            .filter_map(|(kind, s)| {
                let s = s.as_ref()?;
                let names: Vec<&str> = s
                    .names
                    .iter()
                    .zip(&s.std)
                    .filter(|(n, &sd)| {
                        sd > 1e-6 && (n.starts_with("nugget_lp") || n.starts_with("pmi_") || n.starts_with("window_"))
                    })
                    .map(|(n, _)| n.as_str())
                    .collect();
                (!names.is_empty()).then_some((kind, names))
            })
            .collect()
    }

    /// The calibrated distribution of one model verdict: the stack when present, else
    /// contextual calibration with thresholds.
    /// `grades` is the grading decisions are made on (a stack may have cuts for each).
    pub fn verdict_probs(&self, raw_probs: [f64; 3], x: &FeatureInput<'_>, grades: Grades) -> [f64; 3] {
        self.verdict(raw_probs, x, grades).0
    }

    /// [`Calibrator::verdict_probs`] and the label decided: an ordinal stack's cuts, else the
    /// most probable label.
    pub fn verdict(&self, raw_probs: [f64; 3], x: &FeatureInput<'_>, grades: Grades) -> ([f64; 3], Label) {
        let stack = if x.gold_answers.is_empty() { &self.stack } else { &self.short_stack };
        match stack {
            Some(s) if s.ordinal.is_some() => s.apply_decided(x, grades),
            Some(s) => {
                let p = s.apply_for(x, grades);
                (p, LabelProbs::from_array(p).argmax())
            }
            None => {
                let p = self.apply(raw_probs);
                (p, LabelProbs::from_array(p).argmax())
            }
        }
    }
}

/// Which calibration a run applies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CalibrationSpec {
    /// The file `gavel calibrate` fitted for this model, else the one shipped for the default
    /// model and the built-in templates, else none.
    #[default]
    Auto,
    /// Uncalibrated.
    None,
    /// This calibration file.
    File(PathBuf),
}

impl std::str::FromStr for CalibrationSpec {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s {
            "auto" => CalibrationSpec::Auto,
            "none" => CalibrationSpec::None,
            file => CalibrationSpec::File(PathBuf::from(file)),
        })
    }
}

impl Calibrator {
    /// The calibration `spec` names for the model with `fingerprint` and templates `prompts`
    /// (the `auto` policy), checked against the model.
    pub fn resolve(spec: &CalibrationSpec, fingerprint: &str, prompts: &str) -> Result<Option<Calibrator>> {
        let calibrator = match spec {
            CalibrationSpec::None => None,
            CalibrationSpec::Auto => {
                let path = Calibrator::path_for(fingerprint);
                if path.is_file() {
                    Some(Calibrator::load(&path)?)
                } else {
                    match Calibrator::shipped() {
                        Some(c) if c.model == fingerprint && c.prompts == prompts => Some(c),
                        Some(c) if c.model == fingerprint => {
                            tracing::warn!(
                                "the shipped calibration was fitted with the built-in templates {}; these are {}: \
                                 not applied (fit one with `gavel calibrate`)",
                                c.prompts,
                                prompts
                            );
                            None
                        }
                        _ => None,
                    }
                }
            }
            CalibrationSpec::File(path) => Some(Calibrator::load(path)?),
        };
        if let Some(c) = &calibrator {
            if c.model != fingerprint {
                let name = match spec {
                    CalibrationSpec::File(p) => p.display().to_string(),
                    _ => "auto".to_string(),
                };
                return Err(Error::field(name, "model", "calibration was fitted for another model file"));
            }
        }
        Ok(calibrator)
    }
}

/// One labeled verdict of the model, with everything a fit needs from it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabeledVerdict {
    /// Which labeled file it came from (each file weighs the same in a fit).
    pub file: usize,
    /// Record id, for the features CSV.
    pub id: Option<String>,
    /// Nugget index in its record.
    pub nugget: usize,
    /// The record's half of its file.
    pub part: Part,
    /// The record's cross-validation fold (by query, like the halves).
    pub fold: usize,
    /// The record's group ([`crate::record::group_of`]), for bootstrap intervals.
    pub group: u64,
    /// A short-form verdict (fitted by its own stack).
    pub short: bool,
    /// Gold label.
    pub gold: Label,
    /// The model's raw distribution.
    pub probs: [f64; 3],
    /// Every stack feature, in [`crate::stack::every_feature_name`] order.
    pub features: Vec<f64>,
    /// The model's hidden states, when the verdict was judged with `--hidden`.
    pub hidden: Option<HiddenRead>,
}

/// Fewest labeled verdicts a fit accepts.
pub const MIN_LABELED: usize = 10;

/// Folds of the cross-validation that chooses a long-form stack's head.
pub const CV_FOLDS: usize = 4;

impl LabeledVerdict {
    /// The labeled verdict of nugget `nugget` of `task` (from labeled file `file`) with the
    /// model's raw read of it against `judged` (the answer, or the block that decided); `None`
    /// when the nugget (or short-form record) has no gold label.
    pub fn new(task: &Task, nugget: usize, file: usize, raw: &RawScore, judged: &str) -> Option<Self> {
        let gold = if task.is_short_form() { task.gold } else { task.nuggets.get(nugget)?.gold }?;
        Some(LabeledVerdict {
            file,
            id: task.id.clone(),
            nugget,
            part: part_of(task),
            fold: fold_of(task, CV_FOLDS),
            group: crate::record::group_of(task),
            short: task.is_short_form(),
            gold,
            probs: raw.probs.to_array(),
            features: crate::stack::features_named(
                &crate::stack::every_feature_name(),
                &FeatureInput::of(task, nugget, raw).judging(judged),
            ),
            hidden: raw.hidden.clone(),
        })
    }

    /// One line of the features CSV (see [`features_csv_header`]); `file` names its file.
    pub fn csv_row(&self, file: &str) -> String {
        format!(
            "{},{},{},{:016x},{},{},{}",
            file,
            self.id.as_deref().unwrap_or("").replace(',', ";"),
            self.part,
            self.group,
            self.nugget,
            self.gold.as_str(),
            self.features.iter().map(|v| format!("{v}")).collect::<Vec<_>>().join(",")
        )
    }
}

/// What a fit is asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// The stacked judge's feature sets to choose among (see [`Stack::select_long_form`]; the
    /// short-form stack uses the first); empty fits contextual calibration and thresholds only.
    pub stack: Vec<FeatureSet>,
    /// Grading the thresholds optimise; `None`: 3-grade when any gold is partial support.
    pub grades: Option<Grades>,
    /// The model's mean label distribution for content-free answers.
    pub content_free: [f64; 3],
    /// Fingerprint of the model file.
    pub model: String,
    /// The model file's name.
    pub model_file: String,
    /// Template version.
    pub prompts: String,
    /// What it was fitted on, for people.
    pub fitted_on: String,
    /// Label counts of a learning curve of the long-form stack (empty: none; see
    /// [`Stack::learning_curve`]).
    pub learning_curve: Vec<usize>,
}

/// What a fit found, for people.
#[derive(Debug, Clone, PartialEq)]
pub struct FitReport {
    /// Grading the thresholds were chosen for.
    pub grades: Grades,
    /// How the long-form stack's features, penalty and head were chosen.
    pub selection: Option<Selection>,
    /// The long-form stack's learning curve, when asked for.
    pub curve: Vec<CurvePoint>,
    /// The hidden-state head's candidates (read, penalty, held-out AUC by folds), best first;
    /// empty when the verdicts have no hidden states or no set asked for a head.
    pub head: Vec<HeadCandidate>,
    /// The head's learning curve (labels asked, used, held-out AUC), when asked for.
    pub head_curve: Vec<(usize, usize, f64)>,
    /// Why the head was not tried, when a set asked for it.
    pub head_skipped: Option<String>,
}

/// Fit a calibration (contextual calibration, thresholds and, when asked, the stacked judges)
/// on labeled verdicts.
pub fn fit(items: &[LabeledVerdict], opts: &FitOptions) -> Result<(Calibrator, FitReport)> {
    if items.is_empty() {
        return Err(Error::field(opts.fitted_on.clone(), "gold", "no labeled verdict to fit on"));
    }
    // A fit on a handful of verdicts, or on one gold label, learns nothing but would be applied
    // to every later run (`--calibration auto`): refuse it.
    if items.len() < MIN_LABELED {
        return Err(Error::field(
            opts.fitted_on.clone(),
            "gold",
            format!("{} labeled verdicts; a fit needs at least {MIN_LABELED}", items.len()),
        ));
    }
    for (what, short) in [("long-form", false), ("short-form", true)] {
        let golds: std::collections::BTreeSet<Label> =
            items.iter().filter(|i| i.short == short).map(|i| Grades::Two.fold(i.gold)).collect();
        let n = items.iter().filter(|i| i.short == short).count();
        if n > 0 && golds.len() < 2 {
            return Err(Error::field(
                opts.fitted_on.clone(),
                "gold",
                format!("every {what} verdict ({n}) has the same gold label; a fit needs both supported and unsupported ones"),
            ));
        }
    }
    let golds: Vec<Label> = items.iter().map(|i| i.gold).collect();
    let grades = opts.grades.unwrap_or_else(|| Grades::of_golds(golds.iter().copied()));
    let pairs: Vec<([f64; 3], Label)> = items.iter().map(|i| (i.probs, i.gold)).collect();
    let (bias, f1) = Calibrator::fit(&pairs, opts.content_free, grades);
    let n_files = items.iter().map(|i| i.file).max().map_or(0, |m| m + 1);
    let mut selection = None;
    let mut curve = Vec::new();
    let (mut head_report, mut head_curve, mut head_skipped) = (Vec::new(), Vec::new(), None);
    // One stack for long-form verdicts, one for short-form ones, each over its own items; each
    // input file weighs the same in a fit, however many verdicts it has.
    let mut fit_stack = |sets: &[FeatureSet], short: bool| -> Option<Stack> {
        let idx: Vec<usize> = (0..items.len()).filter(|&i| items[i].short == short).collect();
        if idx.is_empty() {
            return None;
        }
        let mut per_file = vec![0usize; n_files];
        for &i in &idx {
            per_file[items[i].file] += 1;
        }
        let files = per_file.iter().filter(|&&c| c > 0).count().max(1) as f64;
        let golds: Vec<Label> = idx.iter().map(|&i| items[i].gold).collect();
        let w: Vec<f64> =
            idx.iter().map(|&i| idx.len() as f64 / (files * per_file[items[i].file].max(1) as f64)).collect();
        // A hidden-state head, when a set asks for one and every verdict has the reads: its
        // logit for each verdict comes from a head fitted without that verdict's file (or fold,
        // with one file), so the stack learns how far the head carries.
        let asked = sets;
        let mut sets = sets.to_vec();
        let mut head: Option<(HeadData<'_>, HeadCandidate)> = None;
        let mut cross = Vec::new();
        if !short && sets.iter().any(|s| s.reads_head()) {
            let reads: Option<Vec<&HiddenRead>> = idx.iter().map(|&i| items[i].hidden.as_ref()).collect();
            match reads {
                None => {
                    head_skipped = Some("the verdicts have no hidden states (judge them with --hidden)".into());
                    sets.retain(|s| !s.reads_head());
                }
                Some(reads) => {
                    let data = HeadData {
                        reads,
                        targets: golds.iter().map(|&g| crate::head::target(g)).collect(),
                        weights: balanced(&golds, &w),
                        folds: idx.iter().map(|&i| items[i].fold).collect(),
                        groups: idx.iter().map(|&i| items[i].group).collect(),
                    };
                    head_report = data.choose();
                    match head_report.first().copied() {
                        Some(best) => {
                            let units: Vec<usize> = if files > 1.0 {
                                idx.iter().map(|&i| items[i].file).collect()
                            } else {
                                data.folds.clone()
                            };
                            cross = data.cross_logits(best.pool, best.l2, &units);
                            if !opts.learning_curve.is_empty() {
                                head_curve = data.learning_curve(best.pool, best.l2, &opts.learning_curve, 3);
                            }
                            head = Some((data, best));
                        }
                        None => {
                            head_skipped = Some("no held-out fold had both supported and unsupported verdicts".into());
                            sets.retain(|s| !s.reads_head());
                        }
                    }
                }
            }
        }
        if sets.is_empty() {
            // Only a head was asked for and it cannot be fitted: the same stack without it.
            let instead = asked.first().map_or(FeatureSet::Aligned, |s| s.without_head());
            sets.push(instead);
            head_skipped = head_skipped
                .take()
                .map(|why| format!("{why}; fitted `{}` instead", format!("{instead:?}").to_lowercase()));
        }
        let xs_of = |set: FeatureSet| -> Vec<Vec<f64>> {
            idx.iter()
                .enumerate()
                .map(|(k, &i)| {
                    let mut x = crate::stack::select(set, &items[i].features);
                    if set.reads_head() {
                        if let Some(last) = x.last_mut() {
                            *last = cross.get(k).copied().unwrap_or(f64::NAN);
                        }
                    }
                    x
                })
                .collect()
        };
        Some(if short {
            // Short-form verdicts are correct or not: 2-grade, one set (the first asked for).
            let set = sets.first()?.for_short_form();
            Stack::fit_weighted(set, &xs_of(set), &golds, &w, true, 1e-3)
        } else {
            // Long-form: features, penalty and head chosen on held-out sources (or folds).
            let files: Vec<usize> = idx.iter().map(|&i| items[i].file).collect();
            let folds: Vec<usize> = idx.iter().map(|&i| items[i].fold).collect();
            let (mut stack, chosen) = Stack::select_long_form(&sets, xs_of, &golds, &w, &files, &folds);
            if let (Some(c), false) = (chosen.chosen(), opts.learning_curve.is_empty()) {
                let groups: Vec<u64> = idx.iter().map(|&i| items[i].group).collect();
                curve = Stack::learning_curve(
                    c.set,
                    &xs_of(c.set),
                    &golds,
                    &files,
                    &groups,
                    &folds,
                    (c.l2, c.ordinal),
                    &opts.learning_curve,
                );
            }
            if let (true, Some((data, best))) = (stack.features.reads_head(), &head) {
                stack.head = data.fit_all(best.pool, best.l2);
            }
            selection = Some(chosen);
            stack
        })
    };
    let stack = if opts.stack.is_empty() { None } else { fit_stack(&opts.stack, false) };
    let short_stack = if opts.stack.is_empty() { None } else { fit_stack(&opts.stack, true) };
    let c = Calibrator {
        model: opts.model.clone(),
        model_file: opts.model_file.clone(),
        prompts: opts.prompts.clone(),
        fitted_on: opts.fitted_on.clone(),
        n: items.len(),
        grades,
        content_free: opts.content_free,
        bias,
        fit_macro_f1: f1,
        stack,
        short_stack,
    };
    Ok((c, FitReport { grades, selection, curve, head: head_report, head_curve, head_skipped }))
}

/// Per-verdict weights `w` rescaled so that each gold label weighs the same in total (a head
/// aims at ranking supported above unsupported, not at the prior).
fn balanced(golds: &[Label], w: &[f64]) -> Vec<f64> {
    let total: f64 = w.iter().sum();
    let mut per = [0.0f64; 3];
    for (g, x) in golds.iter().zip(w) {
        per[g.index()] += x;
    }
    let present = per.iter().filter(|&&p| p > 0.0).count().max(1) as f64;
    golds.iter().zip(w).map(|(g, x)| x * total / (present * per[g.index()].max(1e-12))).collect()
}

/// The header of the features CSV: where each labeled verdict came from, its gold label and
/// every stack feature.
pub fn features_csv_header() -> String {
    format!("file,id,part,group,nugget,gold,{}", crate::stack::every_feature_name().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Label::{NotSupport as N, Support as S};

    #[test]
    fn the_likelihood_features_listed_are_those_the_fit_read() {
        let mut c = Calibrator::shipped().expect("shipped calibration");
        let reads = c.likelihood_features();
        assert_eq!(reads[0], ("long-form", vec!["pmi_low3", "window_pmi_mean"]), "{reads:?}");
        assert_eq!(reads[1].0, "short-form");
        assert!(reads[1].1.contains(&"nugget_lp_mean") && !reads[1].1.contains(&"overlap"), "{reads:?}");
        // Fitted where the reads were missing, a feature is constant and left out.
        for s in [c.stack.as_mut().unwrap(), c.short_stack.as_mut().unwrap()] {
            let i = s.names.iter().position(|n| n == "pmi_low3").unwrap();
            s.std[i] = 1e-6;
        }
        assert_eq!(c.likelihood_features()[0], ("long-form", vec!["window_pmi_mean"]));
        assert!(!c.likelihood_features()[1].1.contains(&"pmi_low3"));
    }

    /// What the judge and `eval --from` write: an ordinal stack's verdict takes the cuts' label
    /// even where its distribution peaks on a neighbour (a shallow slope over a partial band).
    #[test]
    fn an_ordinal_calibration_labels_verdicts_by_its_cuts() {
        let mut c = Calibrator::shipped().expect("shipped calibration");
        let x = FeatureInput {
            logprobs: None,
            nugget_lp: None,
            window_lp: None,
            nugget: "The tower is in Paris",
            answer: "The Eiffel Tower stands in Paris, France.",
            gold_answers: &[],
            hidden: None,
        };
        let stack = c.stack.as_mut().expect("a long-form stack");
        // With both cuts at 0 and slope 1, P(support) is the sigmoid of the verdict's score.
        stack.ordinal = Some(crate::stack::Ordinal {
            partial: 0.0,
            support: 0.0,
            slope: 1.0,
            support_two: None,
            partial_weights: None,
        });
        let ps = stack.apply_for(&x, Grades::Three)[0];
        let score = (ps / (1.0 - ps)).ln();
        stack.ordinal = Some(crate::stack::Ordinal {
            partial: score - 0.5,
            support: score + 1.5,
            slope: 0.1,
            support_two: None,
            partial_weights: None,
        });
        let (probs, label) = c.verdict([0.3, 0.3, 0.4], &x, Grades::Three);
        assert_eq!(label, Label::PartialSupport, "{probs:?}");
        assert_ne!(LabelProbs::from_array(probs).argmax(), Label::PartialSupport, "{probs:?}");
        assert_eq!(c.verdict_probs([0.3, 0.3, 0.4], &x, Grades::Three), probs);
        assert_eq!(c.verdict([0.3, 0.3, 0.4], &x, Grades::Two).1, Label::NotSupport);
    }

    #[test]
    fn the_shipped_calibration_describes_its_stack() {
        let c = Calibrator::shipped().expect("shipped calibration");
        let d = c.describe();
        assert!(!d.contains("WITHOUT"), "the shipped stack reads the model: {d}");
        for set in FeatureSet::ALL {
            let mut c = c.clone();
            if let Some(s) = c.stack.as_mut() {
                s.features = set;
            }
            assert_eq!(c.describe().contains("WITHOUT"), !set.uses_model(), "{set:?}: {}", c.describe());
        }
    }

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
        // With a byte-order mark, as an editor may save it.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("\u{feff}{text}")).unwrap();
        assert_eq!(Calibrator::load(&path).unwrap(), c);
    }

    #[test]
    fn a_broken_calibration_file_is_refused_naming_the_field() {
        let mut c = Calibrator::shipped().expect("the shipped calibration loads and validates");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        c.stack.as_mut().unwrap().mean.pop();
        c.save(&path).unwrap();
        let e = Calibrator::load(&path).unwrap_err().to_string();
        assert!(e.contains("stack.mean") && e.contains("values for"), "{e}");
        let mut c = Calibrator::shipped().unwrap();
        c.short_stack.as_mut().unwrap().weights[0].push(1.0);
        c.save(&path).unwrap();
        let e = Calibrator::load(&path).unwrap_err().to_string();
        assert!(e.contains("short_stack.weights"), "{e}");
    }

    #[test]
    fn a_fit_with_hidden_states_learns_a_head_that_decides_where_the_text_features_cannot() {
        // Every verdict has the same nugget and answer (the text features say nothing); the
        // middle layer's state carries the label along one direction, in two files (the final
        // layer's is noise).
        let task = crate::record::parse_record(
            r#"{"answer": "The tower is in Paris.", "nuggets": [{"text": "The tower is in Paris", "gold": "support"}]}"#,
            "t:1",
            None,
            crate::record::ShortForm::Hybrid,
        )
        .unwrap();
        let mut rng = crate::metrics::Rng::new(3);
        let d = 16;
        let mut item = |i: usize| {
            let gold = if i.is_multiple_of(2) { S } else { N };
            let last: Vec<f32> = (0..d).map(|_| rng.below(1000) as f32 / 1000.0 - 0.5).collect();
            let mut mid: Vec<f32> = (0..d).map(|_| rng.below(1000) as f32 / 1000.0 - 0.5).collect();
            mid[3] += if gold == S { 0.8 } else { -0.8 };
            let raw = RawScore {
                probs: LabelProbs::from_array([0.5, 0.0, 0.5]),
                logprobs: [-1.0, -9.0, -1.0],
                nugget_lp: None,
                window_lp: None,
                hidden: Some(HiddenRead { last, nugget_mean: None, mid: Some(mid), mid_nugget_mean: None }),
            };
            let mut v = LabeledVerdict::new(&task, 0, (i / 2) % 2, &raw, &task.answer).unwrap();
            v.gold = gold;
            v.fold = (i / 4) % CV_FOLDS;
            v.group = (i / 4) as u64;
            (v, raw)
        };
        let pairs: Vec<(LabeledVerdict, RawScore)> = (0..240).map(&mut item).collect();
        let items: Vec<LabeledVerdict> = pairs.iter().map(|(v, _)| v.clone()).collect();
        let opts = FitOptions {
            stack: vec![FeatureSet::AlignedHidden],
            grades: Some(Grades::Two),
            content_free: [0.5, 0.0, 0.5],
            model: "m".into(),
            model_file: "m.gguf".into(),
            prompts: "v".into(),
            fitted_on: "synthetic".into(),
            learning_curve: vec![40, usize::MAX],
        };
        let (c, report) = fit(&items, &opts).unwrap();
        assert!(c.reads_hidden());
        assert!(report.head[0].auc > 0.9, "{:?}", report.head);
        assert_eq!(report.head[0].pool, crate::head::HiddenPool::Mid, "the read that carries the label");
        assert_eq!(report.head_curve.len(), 2);
        // The saved file round-trips and validates; the head decides unseen verdicts.
        let dir = tempfile::tempdir().unwrap();
        c.save(&dir.path().join("c.json")).unwrap();
        let c = Calibrator::load(&dir.path().join("c.json")).unwrap();
        let correct = (1000..1100)
            .map(&mut item)
            .filter(|(v, raw)| {
                let p = c.verdict_probs(raw.probs.to_array(), &FeatureInput::of(&task, 0, raw), Grades::Two);
                (p[0] > p[2]) == (v.gold == S)
            })
            .count();
        assert!(correct >= 90, "{correct} of 100");
        // Without the reads (a run without --hidden) the head's feature reads as its mean.
        let (_, mut raw) = item(2000);
        raw.hidden = None;
        let p = c.verdict_probs(raw.probs.to_array(), &FeatureInput::of(&task, 0, &raw), Grades::Two);
        assert!(p.iter().all(|x| x.is_finite()));
        // Verdicts without hidden states: the head is not tried, and the report says why.
        let plain: Vec<LabeledVerdict> = items
            .iter()
            .cloned()
            .map(|mut v| {
                v.hidden = None;
                v
            })
            .collect();
        let mut o = opts.clone();
        o.stack = vec![FeatureSet::Aligned, FeatureSet::AlignedHidden];
        let (c, report) = fit(&plain, &o).unwrap();
        assert!(!c.reads_hidden());
        assert!(report.head_skipped.unwrap().contains("--hidden"));
        // Asked for the head alone: the stack without it, and said so.
        let (c, report) = fit(&plain, &opts).unwrap();
        assert_eq!(c.stack.as_ref().map(|s| s.features), Some(FeatureSet::Aligned));
        assert!(report.head_skipped.unwrap().contains("fitted `aligned` instead"));
        o.stack = vec![FeatureSet::TransferHidden];
        let (c, report) = fit(&plain, &o).unwrap();
        assert_eq!(c.stack.as_ref().map(|s| s.features), Some(FeatureSet::Transfer));
        assert!(report.head_skipped.unwrap().contains("fitted `transfer` instead"));
        // The transfer stack with the head: the head's logit is its last feature.
        o.stack = vec![FeatureSet::TransferHidden];
        let (c, _) = fit(&items, &o).unwrap();
        let s = c.stack.as_ref().unwrap();
        assert_eq!(s.features, FeatureSet::TransferHidden);
        assert_eq!(s.names.last().map(String::as_str), Some(crate::stack::HIDDEN_LOGIT));
        assert!(c.reads_hidden());
    }
}
