//! The stacked judge: a small multinomial logistic regression over the model's label
//! log-probabilities and cheap deterministic signals (lexical overlap of nugget and judged text,
//! exact match / containment of gold answers, lengths), fitted on labeled data.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::aggregate::{HiddenRead, NuggetLp, RawScore};
use crate::head::Head;
use crate::label::{Grades, Label};
use crate::lexical::{align, contains_answer, content_words, normalize_answer, share_found};
use crate::metrics::agreement;
use crate::record::Task;

/// Which features a stack uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureSet {
    /// Model log-probabilities and the deterministic signals.
    All,
    /// Only the deterministic signals (the ablation: what the model adds).
    NoModel,
    /// The model's likelihood of the nugget (and its PMI) with the deterministic signals, without
    /// the label-token votes.
    Likelihood,
    /// Few features, each monotone in support: whole-text and best-window overlap, bigrams,
    /// numbers, negation and names against the best window, the nugget's length, the votes'
    /// difference, the nugget's likelihood and PMI. Built to carry to unseen sources.
    Aligned,
    /// [`FeatureSet::Aligned`] without the model's reads (the ablation).
    AlignedNoModel,
    /// [`FeatureSet::Aligned`] plus the support logit of a head fitted on the model's hidden
    /// states ([`crate::head::Head`]); needs verdicts judged with `--hidden`.
    AlignedHidden,
    /// Seven monotone features chosen by leaving each long-form dev source out (whole-text and
    /// best-window overlap, each exact and soft ([`crate::lexical::soft_key`]), numbers missing,
    /// the nugget's PMI at its three least expected tokens and after the best window), an
    /// ordinal head only with a partial score of its own ([`FeatureSet::two_scores`]), its cuts
    /// placed for class-balanced macro-F1 ([`FeatureSet::balanced_cuts`]). Built for sources no
    /// fit saw.
    Transfer,
    /// [`FeatureSet::Transfer`] plus the support logit of a head fitted on the model's hidden
    /// states ([`crate::head::Head`]; a middle layer's read more than the final one's); needs
    /// verdicts judged with `--hidden`.
    TransferHidden,
}

impl FeatureSet {
    /// Every set, in the order `auto` tries them.
    pub const ALL: [FeatureSet; 8] = [
        FeatureSet::All,
        FeatureSet::Likelihood,
        FeatureSet::NoModel,
        FeatureSet::Aligned,
        FeatureSet::AlignedNoModel,
        FeatureSet::AlignedHidden,
        FeatureSet::Transfer,
        FeatureSet::TransferHidden,
    ];

    /// Whether the set reads the model.
    pub fn uses_model(self) -> bool {
        !matches!(self, FeatureSet::NoModel | FeatureSet::AlignedNoModel)
    }

    /// Whether the set's fit keeps each feature's effect in its known direction ([`direction`]).
    pub fn is_monotone(self) -> bool {
        matches!(
            self,
            FeatureSet::Aligned
                | FeatureSet::AlignedNoModel
                | FeatureSet::AlignedHidden
                | FeatureSet::Transfer
                | FeatureSet::TransferHidden
        )
    }

    /// The same set without the hidden-state head.
    pub fn without_head(self) -> FeatureSet {
        match self {
            FeatureSet::AlignedHidden => FeatureSet::Aligned,
            FeatureSet::TransferHidden => FeatureSet::Transfer,
            s => s,
        }
    }

    /// Whether the set reads the logit of a hidden-state head (its last feature,
    /// [`HIDDEN_LOGIT`]).
    pub fn reads_head(self) -> bool {
        matches!(self, FeatureSet::AlignedHidden | FeatureSet::TransferHidden)
    }

    /// Whether the set's stack is ordinal only, with its cuts placed for class-balanced
    /// macro-F1: each gold label of each file weighs the same, so the cuts do not learn the
    /// fitting sources' label shares, which another source does not share (Factcheck is mostly
    /// not-support, WiCE mostly partial).
    pub fn balanced_cuts(self) -> bool {
        matches!(self, FeatureSet::Transfer | FeatureSet::TransferHidden)
    }

    /// Whether the set's ordinal stack reads its partial cut from a score of its own
    /// ([`Ordinal::partial_weights`]).
    pub fn two_scores(self) -> bool {
        matches!(self, FeatureSet::Transfer | FeatureSet::TransferHidden)
    }

    /// The set a short-form stack uses for this choice: the aligned sets lack the gold-answer
    /// features short-form answers are decided by, so they map to their full counterparts.
    pub fn for_short_form(self) -> FeatureSet {
        match self {
            FeatureSet::Aligned | FeatureSet::AlignedHidden | FeatureSet::Transfer | FeatureSet::TransferHidden => {
                FeatureSet::All
            }
            FeatureSet::AlignedNoModel => FeatureSet::NoModel,
            s => s,
        }
    }
}

/// The features of [`crate::lexical::align`]: the nugget against its best-matching sentences.
const ALIGNMENT: [&str; 6] =
    ["best_overlap", "best_bigram", "numbers_missing", "number_conflict", "negation_mismatch", "names_missing"];

/// The feature a stack with a hidden-state head reads its logit from.
pub const HIDDEN_LOGIT: &str = "hidden_logit";

/// Which way a feature speaks: +1 for support (more overlap, a more expected nugget), -1
/// against (a number missing or changed, a negation, a missing name), 0 either way.
pub fn direction(name: &str) -> f64 {
    match name {
        "overlap" | "best_overlap" | "soft_overlap" | "best_soft_overlap" | "best_bigram" | "bigram_overlap"
        | "overlap_all" | "yes_minus_no" | "nugget_lp_mean" | "pmi_mean" | "pmi_low3" | "window_lp_mean"
        | "window_pmi_mean" | HIDDEN_LOGIT => 1.0,
        "numbers_missing" | "number_conflict" | "negation_mismatch" | "names_missing" | "missing_words" => -1.0,
        _ => 0.0,
    }
}

/// The features of [`FeatureSet::Transfer`].
const TRANSFER: [&str; 7] =
    ["overlap", "best_overlap", "soft_overlap", "best_soft_overlap", "numbers_missing", "pmi_low3", "window_pmi_mean"];

/// Features computed for every verdict but read only by sets that name them (after the
/// [`FeatureSet::All`] ones, so that set and its stored fits keep their inputs).
const EXTRA: [&str; 2] = ["soft_overlap", "best_soft_overlap"];

/// Every feature gavel computes, in the order of the vectors [`select`] reads from:
/// [`FeatureSet::All`]'s, then the others.
pub fn every_feature_name() -> Vec<&'static str> {
    let mut v = feature_names(FeatureSet::All);
    v.extend(EXTRA);
    v
}

/// The model part of [`FeatureSet::Aligned`].
const ALIGNED_MODEL: [&str; 6] =
    ["yes_minus_no", "nugget_lp_mean", "pmi_mean", "pmi_low3", "window_lp_mean", "window_pmi_mean"];

/// What the features are computed from.
#[derive(Debug, Clone, Copy)]
pub struct FeatureInput<'a> {
    /// log P(support words), log P(partial words), log P(not words) over the vocabulary.
    pub logprobs: Option<[f64; 3]>,
    /// The nugget's token log-probabilities after the passage, when the backend read them.
    pub nugget_lp: Option<NuggetLp>,
    /// The same after the passage's best window, read for long passages (else the whole-passage
    /// read stands for it).
    pub window_lp: Option<NuggetLp>,
    /// Nugget text.
    pub nugget: &'a str,
    /// Judged text.
    pub answer: &'a str,
    /// Gold answers (short-form), else empty.
    pub gold_answers: &'a [String],
    /// The model's hidden states, when read (`--hidden`).
    pub hidden: Option<&'a HiddenRead>,
}

impl<'a> FeatureInput<'a> {
    /// The features of nugget `nugget` of `task` with the model's raw read of it: the one place
    /// that decides what a stack sees, whether the verdict was just judged or read back from a
    /// verdicts file.
    pub fn of(task: &'a Task, nugget: usize, raw: &'a RawScore) -> Self {
        FeatureInput {
            logprobs: Some(raw.logprobs),
            nugget_lp: raw.nugget_lp,
            window_lp: raw.window_lp,
            hidden: raw.hidden.as_ref(),
            nugget: &task.nuggets[nugget].text,
            answer: &task.answer,
            gold_answers: &task.gold_answers,
        }
    }
}

impl<'a> FeatureInput<'a> {
    /// The same verdict, judged against `text` (one block of the answer) rather than the whole
    /// answer; an empty `text` keeps the answer.
    pub fn judging(mut self, text: &'a str) -> Self {
        if !text.is_empty() {
            self.answer = text;
        }
        self
    }
}

/// Feature names, in order, for a feature set.
pub fn feature_names(set: FeatureSet) -> Vec<&'static str> {
    if set == FeatureSet::Transfer {
        return TRANSFER.to_vec();
    }
    if set == FeatureSet::TransferHidden {
        let mut v = TRANSFER.to_vec();
        v.push(HIDDEN_LOGIT);
        return v;
    }
    if matches!(set, FeatureSet::Aligned | FeatureSet::AlignedNoModel | FeatureSet::AlignedHidden) {
        // Whole-text overlap, the alignment, the nugget's length; then the model's reads.
        let mut v = vec!["overlap"];
        v.extend(ALIGNMENT);
        v.push("log_nugget_words");
        if set != FeatureSet::AlignedNoModel {
            v.extend(ALIGNED_MODEL);
        }
        if set == FeatureSet::AlignedHidden {
            v.push(HIDDEN_LOGIT);
        }
        return v;
    }
    let mut v = vec![
        "overlap",
        "bigram_overlap",
        "overlap_all",
        "missing_words",
        "log_nugget_words",
        "log_answer_words",
        "em",
        "contains",
        "short_form",
        "gold_overlap",
    ];
    v.extend(ALIGNMENT);
    if set == FeatureSet::All {
        v.extend(["lp_support", "lp_partial", "lp_not", "yes_minus_no", "partial_minus_no"]);
    }
    if set.uses_model() {
        v.extend([
            "nugget_lp_mean",
            "nugget_lp_min",
            "nugget_lp_low3",
            "pmi_mean",
            "pmi_low3",
            "window_lp_mean",
            "window_pmi_mean",
        ]);
    }
    v
}

/// Every feature, by name. Model features are NaN (read as the fitted mean) when absent.
pub fn named_features(x: &FeatureInput<'_>) -> Vec<(&'static str, f64)> {
    let nug = content_words(x.nugget);
    let ans_norm = normalize_answer(x.answer);
    let ans: Vec<&str> = ans_norm.split(' ').filter(|w| !w.is_empty()).collect();
    let ans_set: HashSet<&str> = ans.iter().copied().collect();
    let (present, overlap) = share_found(&nug, &ans_set);
    let ans_bigrams: HashSet<(&str, &str)> = ans.windows(2).map(|w| (w[0], w[1])).collect();
    let all_nug_norm = normalize_answer(x.nugget);
    let all_nug: Vec<&str> = all_nug_norm.split(' ').filter(|w| !w.is_empty()).collect();
    let nb: Vec<(&str, &str)> = all_nug.windows(2).map(|w| (w[0], w[1])).collect();
    let bigram = if nb.is_empty() {
        overlap
    } else {
        nb.iter().filter(|b| ans_bigrams.contains(b)).count() as f64 / nb.len() as f64
    };
    let overlap_all = share_found(&all_nug, &ans_set).1;
    let soft_overlap = crate::lexical::soft_share(&nug, &crate::lexical::soft_keys(ans.iter().copied()));
    let (em, contains, gold_overlap) = if x.gold_answers.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        let golds: Vec<String> = x.gold_answers.iter().map(|g| normalize_answer(g)).collect();
        let em = golds.contains(&ans_norm);
        let contains = golds.iter().any(|g| contains_answer(&ans_norm, g));
        // The best share of one gold answer's words found in the answer ("Wilhelm Röntgen" for
        // "Wilhelm Conrad Röntgen": 2/3).
        let gold_overlap = golds
            .iter()
            .map(|g| share_found(&g.split(' ').filter(|w| !w.is_empty()).collect::<Vec<_>>(), &ans_set).1)
            .fold(0.0, f64::max);
        (f64::from(u8::from(em)), f64::from(u8::from(contains)), gold_overlap)
    };
    let aligned = align(x.nugget, x.answer);
    let lp = x.logprobs.map_or([f64::NAN; 3], |l| l.map(|v| v.max(-30.0)));
    let (nl_mean, nl_min, nl_low3) = x.nugget_lp.map_or((f64::NAN, f64::NAN, f64::NAN), |n| (n.mean, n.min, n.low3));
    let pmi_mean = x.nugget_lp.and_then(|n| n.pmi_mean).unwrap_or(f64::NAN);
    let pmi_low3 = x.nugget_lp.and_then(|n| n.pmi_low3).unwrap_or(f64::NAN);
    // A short passage is its own best window.
    let window = x.window_lp.or(x.nugget_lp);
    let window_lp_mean = window.map_or(f64::NAN, |n| n.mean);
    let window_pmi_mean = window.and_then(|n| n.pmi_mean).unwrap_or(f64::NAN);
    vec![
        ("overlap", overlap),
        ("bigram_overlap", bigram),
        ("overlap_all", overlap_all),
        ("missing_words", (nug.len() - present) as f64),
        ("log_nugget_words", (1.0 + nug.len() as f64).ln()),
        ("log_answer_words", (1.0 + ans.len() as f64).ln()),
        ("em", em),
        ("contains", contains),
        ("short_form", f64::from(u8::from(!x.gold_answers.is_empty()))),
        ("gold_overlap", gold_overlap),
        ("best_overlap", aligned.best_overlap),
        ("best_bigram", aligned.best_bigram),
        ("soft_overlap", soft_overlap),
        ("best_soft_overlap", aligned.best_soft_overlap),
        ("numbers_missing", aligned.numbers_missing),
        ("number_conflict", aligned.number_conflict),
        ("negation_mismatch", aligned.negation_mismatch),
        ("names_missing", aligned.names_missing),
        ("lp_support", lp[0]),
        ("lp_partial", lp[1]),
        ("lp_not", lp[2]),
        ("yes_minus_no", lp[0] - lp[2]),
        ("partial_minus_no", lp[1] - lp[2]),
        ("nugget_lp_mean", nl_mean),
        ("nugget_lp_min", nl_min),
        ("nugget_lp_low3", nl_low3),
        ("pmi_mean", pmi_mean),
        ("pmi_low3", pmi_low3),
        ("window_lp_mean", window_lp_mean),
        ("window_pmi_mean", window_pmi_mean),
        // The stack that holds the head fills it in (see [`Stack::apply_for`]).
        (HIDDEN_LOGIT, f64::NAN),
    ]
}

/// The features named `names`, in that order (unknown names read as missing).
pub fn features_named(names: &[impl AsRef<str>], x: &FeatureInput<'_>) -> Vec<f64> {
    let all = named_features(x);
    names.iter().map(|n| all.iter().find(|(k, _)| *k == n.as_ref()).map_or(f64::NAN, |(_, v)| *v)).collect()
}

/// The features of `set`, in [`feature_names`] order, out of a vector of all of them
/// ([`every_feature_name`] order).
pub fn select(set: FeatureSet, all: &[f64]) -> Vec<f64> {
    let names = every_feature_name();
    feature_names(set)
        .iter()
        .map(|n| names.iter().position(|k| k == n).and_then(|i| all.get(i)).copied().unwrap_or(f64::NAN))
        .collect()
}

/// Compute the feature vector of a feature set, in [`feature_names`] order.
pub fn features(set: FeatureSet, x: &FeatureInput<'_>) -> Vec<f64> {
    features_named(&feature_names(set), x)
}

/// A feature value standardised; missing (NaN) reads as the mean.
fn standardise(v: f64, mean: f64, std: f64) -> f64 {
    if v.is_finite() {
        (v - mean) / std
    } else {
        0.0
    }
}

/// A fitted multinomial logistic regression over standardised features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    /// Feature set.
    pub features: FeatureSet,
    /// Feature names, for people.
    pub names: Vec<String>,
    /// Per-feature mean.
    pub mean: Vec<f64>,
    /// Per-feature standard deviation.
    pub std: Vec<f64>,
    /// Weights per label (support, partial, not): bias first, then one per feature.
    pub weights: Vec<Vec<f64>>,
    /// Labels the stack can output (2-grade stacks never output partial).
    pub labels: Vec<Label>,
    /// When set, the stack is ordinal: its two-label weights give one support score, and
    /// partial support is the band between two cuts on it (see [`Stack::fit_ordinal`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordinal: Option<Ordinal>,
    /// The hidden-state head whose logit is the feature [`HIDDEN_LOGIT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Head>,
}

/// Each file's grading (indexed by file): 3-grade when its gold has a partial label.
fn file_gradings(files: &[usize], golds: &[Label]) -> Vec<Grades> {
    let n = files.iter().copied().max().map_or(0, |m| m + 1);
    (0..n).map(|f| Grades::of_golds(files.iter().zip(golds).filter(|(&g, _)| g == f).map(|(_, &l)| l))).collect()
}

/// Mean over the files that have pairs of each file's macro-F1 on its own grading.
fn mean_file_macro_f1(pairs: &[Vec<(Label, Label)>], grading: &[Grades]) -> Option<f64> {
    mean_file_f1(pairs, grading, false)
}

/// [`mean_file_macro_f1`], or with `balanced` each file's class-balanced macro-F1
/// ([`crate::metrics::balanced_macro_f1`]).
fn mean_file_f1(pairs: &[Vec<(Label, Label)>], grading: &[Grades], balanced: bool) -> Option<f64> {
    let f1: Vec<f64> = pairs
        .iter()
        .zip(grading)
        .filter(|(v, _)| !v.is_empty())
        .map(|(v, &g)| if balanced { crate::metrics::balanced_macro_f1(v, g) } else { agreement(v, g).macro_f1 })
        .collect();
    (!f1.is_empty()).then(|| f1.iter().sum::<f64>() / f1.len() as f64)
}

/// One configuration a long-form stack can take, with its held-out score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Features.
    pub set: FeatureSet,
    /// L2 penalty.
    pub l2: f64,
    /// Ordinal head (one support score, two cuts) rather than multinomial.
    pub ordinal: bool,
    /// What the choice ranks by: the mean of `by_folds` and `by_source` (or `by_folds` alone).
    pub score: f64,
    /// Mean over held-out folds of queries of their mean per-file macro-F1, each file on its own
    /// grading: how the fit does on unseen queries of the sources it was fitted on.
    pub by_folds: f64,
    /// Mean over the input files, each left out in turn (fitted on the others), of its
    /// macro-F1: how the fit carries to a source it has not seen. `None` with one file.
    pub by_source: Option<f64>,
}

/// How a long-form stack was chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Whole files were also left out in turn (two or more input files).
    pub by_source: bool,
    /// Folds of queries scored.
    pub parts: usize,
    /// Every candidate, best first.
    pub candidates: Vec<Candidate>,
}

impl Selection {
    /// The chosen configuration.
    pub fn chosen(&self) -> Option<&Candidate> {
        self.candidates.first()
    }
}

/// One point of a learning curve (see [`Stack::learning_curve`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// Labeled verdicts asked for.
    pub labels: usize,
    /// Labeled verdicts the fits used on average (whole groups; capped by what there is).
    pub used: usize,
    /// Mean held-out macro-F1 over the fits.
    pub mean: f64,
    /// Lowest and highest.
    pub min: f64,
    /// Highest.
    pub max: f64,
    /// Fits that could be scored.
    pub fits: usize,
}

/// L2 penalties a long-form fit chooses among, strongest first (ties go to the simpler fit).
pub const L2_GRID: [f64; 3] = [1e-1, 1e-2, 1e-3];

/// Cuts on an ordinal stack's scores ([`Scores`]): support from `support` up on the support
/// score s, else partial support from `partial` up on the partial score q (s itself unless the
/// stack has [`Ordinal::partial_weights`]), else not_support. The distribution is the
/// cumulative-logit one, P(support) = σ(slope·(s − support)) and P(at least partial) =
/// max(P(support), σ(slope·(q − partial))), so a verdict at a cut is even between the labels on
/// either side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ordinal {
    /// Score from which a verdict is at least partial support.
    pub partial: f64,
    /// Score from which a verdict is support.
    pub support: f64,
    /// Slope of the cumulative logits (fitted by likelihood).
    pub slope: f64,
    /// The support cut of 2-grade decisions, when the fit had both 3-grade and 2-grade files:
    /// each grading's cuts are placed on the files of that grading (a 2-grade file says nothing
    /// about where partial support ends, a 3-grade one decides support against two neighbours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_two: Option<f64>,
    /// A second score for the partial cut: intercept, then one weight per feature on the
    /// stack's standardised features, fitted for at-least-partial against not-support on the
    /// 3-grade files. Without it the partial cut reads the support score. What makes a verdict
    /// partly supported (some of the nugget found) need not weigh the features as support
    /// against the rest does; a second score lets the partial band follow it. NaN features read
    /// as the stack's fitted mean here too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_weights: Option<Vec<f64>>,
}

/// A verdict's two ordinal scores: support against the rest, and the score the partial cut
/// reads (the support score again unless the stack has [`Ordinal::partial_weights`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Support against the rest.
    pub support: f64,
    /// At least partial against not-support.
    pub partial: f64,
}

impl Ordinal {
    /// Distribution in [`Label::ALL`] order for a verdict's scores.
    pub fn probs(&self, s: Scores) -> [f64; 3] {
        let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
        let ps = sigmoid(self.slope * (s.support - self.support));
        let at_least_partial = sigmoid(self.slope * (s.partial - self.partial)).max(ps);
        [ps, at_least_partial - ps, 1.0 - at_least_partial]
    }

    /// The distribution for a score when decisions are made on `grades`: with a 2-grade
    /// support cut of its own, support against the rest at that cut (partial is then 0).
    pub fn probs_for(&self, s: Scores, grades: Grades) -> [f64; 3] {
        match (grades, self.support_two) {
            (Grades::Two, Some(cut)) => {
                let ps = 1.0 / (1.0 + (-self.slope * (s.support - cut)).exp());
                [ps, 0.0, 1.0 - ps]
            }
            _ => self.probs(s),
        }
    }

    /// The label the cuts give a verdict's scores: support from the support cut, else partial
    /// from the partial cut (on the partial score).
    pub fn label(&self, s: Scores) -> Label {
        if s.support >= self.support {
            Label::Support
        } else if s.partial >= self.partial {
            Label::PartialSupport
        } else {
            Label::NotSupport
        }
    }

    /// The label the cuts give a verdict's scores on `grades` (see [`Ordinal::probs_for`]).
    pub fn label_for(&self, s: Scores, grades: Grades) -> Label {
        match (grades, self.support_two) {
            (Grades::Two, Some(cut)) => Label::by_cuts(s.support, cut, cut),
            (g, _) => g.fold(self.label(s)),
        }
    }
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

impl Stack {
    /// Fit on (features, gold) with L2 penalty `l2`, by full-batch gradient descent.
    /// Classes are weighted inversely to their frequency, which aims at macro-F1.
    pub fn fit(set: FeatureSet, xs: &[Vec<f64>], golds: &[Label], two_grade: bool, l2: f64) -> Stack {
        Stack::fit_weighted(set, xs, golds, &vec![1.0; xs.len()], two_grade, l2)
    }

    /// [`Stack::fit`] with a weight per example (e.g. so that each labeled file counts the same
    /// however many verdicts it has); class weights are computed on the weighted counts.
    pub fn fit_weighted(
        set: FeatureSet,
        xs: &[Vec<f64>],
        golds: &[Label],
        sample_w: &[f64],
        two_grade: bool,
        l2: f64,
    ) -> Stack {
        let labels: Vec<Label> = if two_grade { vec![Label::Support, Label::NotSupport] } else { Label::ALL.to_vec() };
        let grades = if two_grade { Grades::Two } else { Grades::Three };
        let golds: Vec<Label> = golds.iter().map(|&g| grades.fold(g)).collect();
        let d = xs.first().map_or(0, Vec::len);
        let mut mean = vec![0.0; d];
        let mut std = vec![0.0; d];
        let mut seen = vec![0usize; d];
        for x in xs {
            for j in 0..d {
                if x[j].is_finite() {
                    mean[j] += x[j];
                    seen[j] += 1;
                }
            }
        }
        for j in 0..d {
            mean[j] /= seen[j].max(1) as f64;
        }
        for x in xs {
            for j in 0..d {
                if x[j].is_finite() {
                    std[j] += (x[j] - mean[j]).powi(2);
                }
            }
        }
        for j in 0..d {
            std[j] = (std[j] / seen[j].max(1) as f64).sqrt().max(1e-6);
        }
        let z: Vec<Vec<f64>> =
            xs.iter().map(|x| (0..d).map(|j| standardise(x[j], mean[j], std[j])).collect()).collect();
        let k = labels.len();
        let y: Vec<usize> = golds.iter().map(|g| labels.iter().position(|l| l == g).unwrap_or(k - 1)).collect();
        let sw: Vec<f64> = (0..xs.len()).map(|i| sample_w.get(i).copied().unwrap_or(1.0)).collect();
        let total: f64 = sw.iter().sum::<f64>().max(1e-12);
        let mut counts = vec![0.0f64; k];
        for (&c, &w) in y.iter().zip(&sw) {
            counts[c] += w;
        }
        // Classes weigh inversely to their frequency, except for sets with balanced cuts: their
        // score is P(support) under the fitting sources' own prior, and the cuts do the balancing.
        let class_w: Vec<f64> = counts
            .iter()
            .map(|&c| match (c > 0.0, set.balanced_cuts()) {
                (false, _) => 0.0,
                (true, true) => 1.0,
                (true, false) => total / (k as f64 * c),
            })
            .collect();
        let mut w = vec![vec![0.0; d + 1]; k];
        let names = feature_names(set);
        let signs: Vec<f64> = if set.is_monotone() && names.len() == d {
            names.iter().map(|n| direction(n)).collect()
        } else {
            vec![0.0; d]
        };
        let lr = 0.5;
        for _ in 0..600 {
            let mut grad = vec![vec![0.0; d + 1]; k];
            for ((x, &yi), &si) in z.iter().zip(&y).zip(&sw) {
                let logits: Vec<f64> =
                    w.iter().map(|wc| wc[0] + (0..d).map(|j| wc[j + 1] * x[j]).sum::<f64>()).collect();
                let p = softmax(&logits);
                let cw = class_w[yi] * si;
                for c in 0..k {
                    let g = cw * (p[c] - f64::from(u8::from(c == yi)));
                    grad[c][0] += g;
                    for j in 0..d {
                        grad[c][j + 1] += g * x[j];
                    }
                }
            }
            for c in 0..k {
                for j in 0..=d {
                    let reg = if j > 0 { l2 * w[c][j] } else { 0.0 };
                    w[c][j] -= lr * (grad[c][j] / total + reg);
                }
            }
            // Monotone sets: a feature that speaks for support may not lower support against
            // not-support (and one that speaks against it may not raise it), however the fitting
            // data happens to fall; projected onto that constraint after each step.
            for (j, dir) in signs.iter().enumerate() {
                let (s, n) = (w[0][j + 1], w[k - 1][j + 1]);
                if dir * (s - n) < 0.0 {
                    let mid = (s + n) / 2.0;
                    w[0][j + 1] = mid;
                    w[k - 1][j + 1] = mid;
                }
            }
        }
        Stack {
            features: set,
            names: feature_names(set).into_iter().map(str::to_string).collect(),
            mean,
            std,
            weights: w,
            labels,
            ordinal: None,
            head: None,
        }
    }

    /// Fit an ordinal stack: a support-vs-rest regression gives one score per verdict, and two
    /// cuts on it (partial band, support) are chosen for the mean macro-F1 over the fitting
    /// files, each on its own grading (`files[i]` is item i's file; a file whose gold has no
    /// partial label is 2-grade and only places the support cut). Sources disagree about how
    /// often partial support occurs; a band on one score predicts each label where its share of
    /// the score is, where a multinomial head learns the pooled prior and rarely says partial.
    /// Sets with [`FeatureSet::balanced_cuts`] place the cuts for each file's class-balanced
    /// macro-F1 instead, so that they carry to a source whose label shares are unknown.
    pub fn fit_ordinal(
        set: FeatureSet,
        xs: &[Vec<f64>],
        golds: &[Label],
        sample_w: &[f64],
        files: &[usize],
        l2: f64,
    ) -> Stack {
        let balanced = set.balanced_cuts();
        let mut stack = Stack::fit_weighted(set, xs, golds, sample_w, true, l2);
        let grading = file_gradings(files, golds);
        let per_file: Vec<Vec<usize>> =
            (0..grading.len()).map(|f| (0..xs.len()).filter(|&i| files[i] == f).collect()).collect();
        let any_three = grading.contains(&Grades::Three);
        // The cut grid below is one list for both cuts: only balanced cuts (a grid of P) suit a
        // partial score on its own scale.
        debug_assert!(!set.two_scores() || balanced, "a partial score needs balanced cuts");
        let partial_weights = (set.two_scores() && any_three)
            .then(|| stack.partial_score_weights(xs, golds, sample_w, files, &grading, l2));
        let scores: Vec<Scores> = xs
            .iter()
            .map(|x| {
                let support = stack.score(x);
                let partial = partial_weights.as_ref().map_or(support, |w| stack.linear(w, x));
                Scores { support, partial }
            })
            .collect();
        let cuts: Vec<f64> = if balanced {
            // Where P(support) is 0.05, 0.10, ..., 0.95, and beyond in whole logits to 0.0025 and
            // 0.9975 (a steep score squeezes the partial band below 0.05): a coarse grid, which
            // keeps the cuts from following the fitting sources' score quantiles.
            let mut grid: Vec<f64> = (1..20).map(|q| (f64::from(q) / (20.0 - f64::from(q))).ln()).collect();
            grid.extend([-6.0, -5.0, -4.0, -3.0, 3.0, 4.0, 5.0, 6.0]);
            grid.sort_by(f64::total_cmp);
            grid
        } else {
            // The scores' 2nd, 4th, ..., 98th percentiles.
            let mut sorted: Vec<f64> = scores.iter().map(|s| s.support).filter(|s| s.is_finite()).collect();
            sorted.sort_by(f64::total_cmp);
            if sorted.is_empty() {
                vec![0.0]
            } else {
                (1..50).map(|q| sorted[(q * (sorted.len() - 1)) / 50]).collect()
            }
        };
        // With files of both gradings, each grading's cuts are placed on its own files. Balanced
        // cuts place the 3-grade cuts on every file (one support cut, so that more sources place
        // it), and then the 2-grade support cut on the 2-grade files alone, where a fit has them:
        // a 2-grade source may count as supported what a 3-grade one calls partial.
        let any_two = grading.iter().enumerate().any(|(f, &g)| g == Grades::Two && !per_file[f].is_empty());
        let two_cut = any_three && any_two;
        let split = two_cut && !balanced;
        let objective = |o: &Ordinal, only: Option<Grades>| -> f64 {
            let pairs: Vec<Vec<(Label, Label)>> = per_file
                .iter()
                .zip(&grading)
                .map(|(ix, &g)| {
                    if only.is_some_and(|want| want != g) {
                        return Vec::new();
                    }
                    ix.iter().map(|&i| (golds[i], o.label_for(scores[i], g))).collect()
                })
                .collect();
            mean_file_f1(&pairs, &grading, balanced).unwrap_or(0.0)
        };
        let base = Ordinal {
            partial: 0.0,
            support: 0.0,
            slope: 1.0,
            support_two: None,
            partial_weights: partial_weights.clone(),
        };
        let mut best = (f64::NEG_INFINITY, base.clone());
        for (a, &support) in cuts.iter().enumerate() {
            // One score: the partial cut at or below the support cut; two scores: anywhere.
            let partials: &[f64] = match (any_three, partial_weights.is_some()) {
                (false, _) => std::slice::from_ref(&cuts[a]),
                (true, false) => &cuts[..=a],
                (true, true) => &cuts,
            };
            for &partial in partials {
                let o = Ordinal { partial, support, ..base.clone() };
                let f = objective(&o, split.then_some(Grades::Three));
                if f > best.0 + 1e-12 {
                    best = (f, o);
                }
            }
        }
        if two_cut {
            let mut top = (f64::NEG_INFINITY, best.1.support);
            for &cut in &cuts {
                let f = objective(&Ordinal { support_two: Some(cut), ..best.1.clone() }, Some(Grades::Two));
                if f > top.0 + 1e-12 {
                    top = (f, cut);
                }
            }
            best.1.support_two = Some(top.1);
        }
        // The slope by weighted likelihood (2-grade files: support against the rest).
        let log_lik = |o: &Ordinal| -> f64 {
            per_file
                .iter()
                .zip(&grading)
                .flat_map(|(ix, &g)| ix.iter().map(move |&i| (i, g)))
                .map(|(i, g)| {
                    let q = g.fold_probs(o.probs_for(scores[i], g))[g.fold(golds[i]).index()];
                    sample_w.get(i).copied().unwrap_or(1.0) * q.max(1e-9).ln()
                })
                .sum()
        };
        let mut o = best.1.clone();
        let mut top = f64::NEG_INFINITY;
        for k in 0..=40 {
            let slope = (-3.0 + 5.0 * f64::from(k) / 40.0).exp();
            let l = log_lik(&Ordinal { slope, ..best.1.clone() });
            if l > top {
                top = l;
                o.slope = slope;
            }
        }
        stack.ordinal = Some(o);
        if any_three {
            stack.labels = Label::ALL.to_vec();
        }
        stack
    }

    /// Fit a long-form stack, choosing its features (among `sets`), L2 penalty and head
    /// (multinomial or ordinal) on held-out data drawn from the fitting data itself, two ways:
    /// by `folds` (records of one query share a fold: unseen queries of the sources fitted on)
    /// and, with items of two or more files, by leaving each file out in turn (fitted on the
    /// others: a source no fit has seen). The choice ranks by the mean of the two, so a
    /// configuration must do well on both. Scores are the mean over files of macro-F1, each file
    /// on its own grading. The best candidate is refitted on all items. `xs_of(set)` gives every
    /// item's features of `set`.
    pub fn select_long_form(
        sets: &[FeatureSet],
        xs_of: impl Fn(FeatureSet) -> Vec<Vec<f64>>,
        golds: &[Label],
        sample_w: &[f64],
        files: &[usize],
        folds: &[usize],
    ) -> (Stack, Selection) {
        use rayon::prelude::*;
        let grading = file_gradings(files, golds);
        let n_files = files.iter().collect::<HashSet<_>>().len();
        let by_source = n_files >= 2;
        let xs: Vec<(FeatureSet, Vec<Vec<f64>>)> = sets.iter().map(|&s| (s, xs_of(s))).collect();
        let fit = |set: FeatureSet, x: &[Vec<f64>], l2: f64, ordinal: bool, idx: &[usize]| {
            let xi: Vec<Vec<f64>> = idx.iter().map(|&i| x[i].clone()).collect();
            let g: Vec<Label> = idx.iter().map(|&i| golds[i]).collect();
            let w: Vec<f64> = idx.iter().map(|&i| sample_w[i]).collect();
            let f: Vec<usize> = idx.iter().map(|&i| files[i]).collect();
            if ordinal {
                Stack::fit_ordinal(set, &xi, &g, &w, &f, l2)
            } else {
                let two_grade = !f.iter().any(|&k| grading[k] == Grades::Three);
                Stack::fit_weighted(set, &xi, &g, &w, two_grade, l2)
            }
        };
        // Sets with balanced cuts are ordinal only (the cuts are what make them carry).
        let configs: Vec<(usize, f64, bool)> = (0..xs.len())
            .flat_map(|k| L2_GRID.iter().flat_map(move |&l2| [false, true].map(|o| (k, l2, o))))
            .filter(|&(k, _, o)| o || !xs[k].0.balanced_cuts())
            .collect();
        // Mean per-file macro-F1 over held-out parts (`part_of[i]` is item i's part).
        let held_out = |set: FeatureSet, x: &[Vec<f64>], l2: f64, ordinal: bool, part_of: &[usize]| -> f64 {
            let n_parts = part_of.iter().copied().max().map_or(0, |m| m + 1);
            let (mut sum, mut used) = (0.0, 0usize);
            for part in 0..n_parts {
                let (test, train): (Vec<usize>, Vec<usize>) = (0..golds.len()).partition(|&i| part_of[i] == part);
                if test.is_empty() || train.is_empty() {
                    continue;
                }
                let s = fit(set, x, l2, ordinal, &train);
                let mut pairs: Vec<Vec<(Label, Label)>> = vec![Vec::new(); grading.len()];
                for &i in &test {
                    let g = grading[files[i]];
                    pairs[files[i]].push((golds[i], s.decide_for(&x[i], g)));
                }
                if let Some(f1) = mean_file_macro_f1(&pairs, &grading) {
                    sum += f1;
                    used += 1;
                }
            }
            if used == 0 {
                f64::NAN
            } else {
                sum / used as f64
            }
        };
        let mut candidates: Vec<Candidate> = configs
            .par_iter()
            .map(|&(k, l2, ordinal)| {
                let (set, x) = (xs[k].0, &xs[k].1);
                let by_folds = held_out(set, x, l2, ordinal, folds);
                let by_source_score = by_source.then(|| held_out(set, x, l2, ordinal, files));
                // Both count: unseen queries of the sources fitted on, and a source no fit has seen;
                // one alone where the other held nothing out (every verdict in one fold).
                let score = match by_source_score {
                    Some(s) if by_folds.is_finite() => (s + by_folds) / 2.0,
                    Some(s) => s,
                    None => by_folds,
                };
                Candidate { set, l2, ordinal, score, by_folds, by_source: by_source_score }
            })
            .collect();
        let n_folds = folds.iter().copied().max().map_or(0, |m| m + 1);
        let parts = (0..n_folds).filter(|&p| folds.contains(&p) && folds.iter().any(|&q| q != p)).count();
        // Best first; a stable sort keeps the simpler (earlier) candidate ahead on a tie.
        candidates.sort_by(|a, b| {
            let key = |c: &Candidate| if c.score.is_finite() { c.score } else { f64::NEG_INFINITY };
            key(b).total_cmp(&key(a))
        });
        let best = candidates.first().copied();
        let all: Vec<usize> = (0..golds.len()).collect();
        let stack = match best {
            Some(c) => {
                let k = xs.iter().position(|(s, _)| *s == c.set).unwrap_or(0);
                fit(c.set, &xs[k].1, c.l2, c.ordinal, &all)
            }
            None => fit(sets.first().copied().unwrap_or(FeatureSet::All), &xs_of(FeatureSet::All), 1e-3, true, &all),
        };
        (stack, Selection { by_source, parts, candidates })
    }

    /// How a long-form stack's held-out macro-F1 grows with the labels it is fitted on: for each
    /// size, stacks of the given configuration fitted on that many verdicts, drawn whole record
    /// groups at a time (`groups[i]`) from every fold but one, scored on the held-out fold (mean
    /// per-file macro-F1, each file on its own grading), over every fold and three draws. Each
    /// file weighs the same in every fit. Sizes at or above what the training folds hold use all
    /// of it.
    #[allow(clippy::too_many_arguments)]
    pub fn learning_curve(
        set: FeatureSet,
        xs: &[Vec<f64>],
        golds: &[Label],
        files: &[usize],
        groups: &[u64],
        folds: &[usize],
        (l2, ordinal): (f64, bool),
        sizes: &[usize],
    ) -> Vec<CurvePoint> {
        use rayon::prelude::*;
        let grading = file_gradings(files, golds);
        let n_folds = folds.iter().copied().max().map_or(0, |m| m + 1);
        let jobs: Vec<(usize, usize, u64)> = sizes
            .iter()
            .enumerate()
            .flat_map(|(k, _)| (0..n_folds).flat_map(move |f| (0..3u64).map(move |d| (k, f, d))))
            .collect();
        let results: Vec<(usize, usize, Option<f64>)> = jobs
            .par_iter()
            .map(|&(k, fold, draw)| {
                let (test, pool): (Vec<usize>, Vec<usize>) = (0..xs.len()).partition(|&i| folds[i] == fold);
                // Whole groups in a seeded random order, taken until the size is reached.
                let mut keys: Vec<u64> = pool.iter().map(|&i| groups[i]).collect::<HashSet<_>>().into_iter().collect();
                keys.sort_unstable();
                let mut rng = crate::metrics::Rng::new(((fold as u64) << 32) | (draw + 1));
                for i in (1..keys.len()).rev() {
                    keys.swap(i, rng.below(i + 1));
                }
                let rank: std::collections::HashMap<u64, usize> =
                    keys.iter().enumerate().map(|(r, &g)| (g, r)).collect();
                let mut train = pool.clone();
                train.sort_by_key(|&i| rank[&groups[i]]);
                let want = sizes[k];
                if want < train.len() {
                    // Cut at a group boundary at or past the size.
                    let mut end = want;
                    while end < train.len() && groups[train[end]] == groups[train[end - 1]] {
                        end += 1;
                    }
                    train.truncate(end);
                }
                if test.is_empty() || train.is_empty() {
                    return (k, train.len(), None);
                }
                let n_files = grading.len();
                let mut per_file = vec![0usize; n_files];
                for &i in &train {
                    per_file[files[i]] += 1;
                }
                let present = per_file.iter().filter(|&&c| c > 0).count().max(1) as f64;
                let x: Vec<Vec<f64>> = train.iter().map(|&i| xs[i].clone()).collect();
                let g: Vec<Label> = train.iter().map(|&i| golds[i]).collect();
                let w: Vec<f64> =
                    train.iter().map(|&i| train.len() as f64 / (present * per_file[files[i]] as f64)).collect();
                let f: Vec<usize> = train.iter().map(|&i| files[i]).collect();
                if g.iter().all(|&l| Grades::Two.fold(l) == Grades::Two.fold(g[0])) {
                    return (k, train.len(), None);
                }
                let stack = if ordinal {
                    Stack::fit_ordinal(set, &x, &g, &w, &f, l2)
                } else {
                    let two_grade = !f.iter().any(|&j| grading[j] == Grades::Three);
                    Stack::fit_weighted(set, &x, &g, &w, two_grade, l2)
                };
                let mut pairs: Vec<Vec<(Label, Label)>> = vec![Vec::new(); n_files];
                for &i in &test {
                    let g = grading[files[i]];
                    pairs[files[i]].push((golds[i], stack.decide_for(&xs[i], g)));
                }
                (k, train.len(), mean_file_macro_f1(&pairs, &grading))
            })
            .collect();
        sizes
            .iter()
            .enumerate()
            .map(|(k, &size)| {
                let mine: Vec<(usize, f64)> =
                    results.iter().filter(|r| r.0 == k).filter_map(|r| r.2.map(|f| (r.1, f))).collect();
                let scores: Vec<f64> = mine.iter().map(|m| m.1).collect();
                let n = scores.len().max(1) as f64;
                CurvePoint {
                    labels: size,
                    used: mine.iter().map(|m| m.0).sum::<usize>() / mine.len().max(1),
                    mean: scores.iter().sum::<f64>() / n,
                    min: scores.iter().copied().fold(f64::INFINITY, f64::min),
                    max: scores.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    fits: scores.len(),
                }
            })
            .collect()
    }

    fn logits(&self, x: &[f64]) -> Vec<f64> {
        self.weights.iter().map(|wc| self.linear(wc, x)).collect()
    }

    /// `w` (intercept, then one weight per feature) applied to the standardised features `x`.
    fn linear(&self, w: &[f64], x: &[f64]) -> f64 {
        w[0] + (0..self.mean.len())
            .map(|j| w[j + 1] * standardise(x.get(j).copied().unwrap_or(f64::NAN), self.mean[j], self.std[j]))
            .sum::<f64>()
    }

    /// An ordinal stack's scores for features `x` ([`Scores`]).
    pub fn scores(&self, x: &[f64]) -> Scores {
        let support = self.score(x);
        let partial = match self.ordinal.as_ref().and_then(|o| o.partial_weights.as_ref()) {
            Some(w) => self.linear(w, x),
            None => support,
        };
        Scores { support, partial }
    }

    /// The weights of [`Ordinal::partial_weights`]: a monotone regression of at least partial
    /// against not-support over the 3-grade files' verdicts (each file weighing as in the
    /// stack's fit), re-expressed on this stack's standardisation.
    fn partial_score_weights(
        &self,
        xs: &[Vec<f64>],
        golds: &[Label],
        sample_w: &[f64],
        files: &[usize],
        grading: &[Grades],
        l2: f64,
    ) -> Vec<f64> {
        let idx: Vec<usize> = (0..xs.len()).filter(|&i| grading[files[i]] == Grades::Three).collect();
        // A missing feature reads as this stack's mean, in the fit as where it is used (the
        // subset's own mean would be another value).
        let x: Vec<Vec<f64>> = idx
            .iter()
            .map(|&i| xs[i].iter().zip(&self.mean).map(|(&v, &m)| if v.is_finite() { v } else { m }).collect())
            .collect();
        // At least partial reads as support in a 2-label fit.
        let g: Vec<Label> = idx
            .iter()
            .map(|&i| if golds[i] == Label::NotSupport { Label::NotSupport } else { Label::Support })
            .collect();
        let w: Vec<f64> = idx.iter().map(|&i| sample_w.get(i).copied().unwrap_or(1.0)).collect();
        let fit = Stack::fit_weighted(self.features, &x, &g, &w, true, l2);
        let d = self.mean.len();
        let beta: Vec<f64> = (0..=d).map(|j| fit.weights[0][j] - fit.weights[1][j]).collect();
        // beta . (x - m') / s' = beta . (z s + m - m') / s' with z = (x - m) / s.
        let mut out = vec![beta[0]; d + 1];
        for j in 0..d {
            out[j + 1] = beta[j + 1] * self.std[j] / fit.std[j];
            out[0] += beta[j + 1] * (self.mean[j] - fit.mean[j]) / fit.std[j];
        }
        out
    }

    /// The support score of a two-label stack: logit of support minus logit of the rest.
    fn score(&self, x: &[f64]) -> f64 {
        let l = self.logits(x);
        l[0] - l.last().copied().unwrap_or(0.0)
    }

    /// Check a stack read from a file: arrays of matching lengths, finite numbers, known
    /// features. `Err` names the field and what is wrong (a hand-edited or truncated file would
    /// otherwise panic or give NaN verdicts).
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        let d = self.names.len();
        let bad = |field: &str, why: String| Err((field.to_string(), why));
        if d == 0 {
            return bad("names", "is empty".into());
        }
        let mut known = every_feature_name();
        known.push(HIDDEN_LOGIT);
        if let Some(n) = self.names.iter().find(|n| !known.contains(&n.as_str())) {
            return bad("names", format!("`{n}` is not a feature gavel computes"));
        }
        match (&self.head, self.names.iter().any(|n| n == HIDDEN_LOGIT)) {
            (Some(h), true) => h.validate()?,
            (None, true) => return bad("head", format!("is missing: feature `{HIDDEN_LOGIT}` needs it")),
            (Some(_), false) => return bad("head", format!("is unused: no feature `{HIDDEN_LOGIT}`")),
            (None, false) => {}
        }
        for (field, v) in [("mean", &self.mean), ("std", &self.std)] {
            if v.len() != d {
                return bad(field, format!("has {} values for {d} features", v.len()));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return bad(field, "holds a number that is not finite".into());
            }
        }
        if self.std.iter().any(|&x| x <= 0.0) {
            return bad("std", "holds a value that is not positive".into());
        }
        if self.labels.len() < 2 || self.labels.len() > 3 {
            return bad("labels", format!("has {} labels; a stack has 2 or 3", self.labels.len()));
        }
        // An ordinal stack keeps two-label weights (one support score) whatever its labels.
        let rows = if self.ordinal.is_some() { 2 } else { self.labels.len() };
        if self.weights.len() != rows {
            return bad("weights", format!("has {} rows; {rows} expected", self.weights.len()));
        }
        if let Some(row) = self.weights.iter().find(|r| r.len() != d + 1) {
            return bad("weights", format!("has a row of {} values; {d} features need {}", row.len(), d + 1));
        }
        if self.weights.iter().flatten().any(|x| !x.is_finite()) {
            return bad("weights", "holds a number that is not finite".into());
        }
        if let Some(o) = &self.ordinal {
            if !(o.partial.is_finite() && o.support.is_finite() && o.slope.is_finite()) {
                return bad("ordinal", "needs finite cuts and a finite slope".into());
            }
            match &o.partial_weights {
                // With a partial score of its own the partial cut is on another scale.
                None if o.partial > o.support => {
                    return bad("ordinal", "needs partial <= support (one score for both cuts)".into());
                }
                None => {}
                Some(w) if w.len() != d + 1 || w.iter().any(|x| !x.is_finite()) => {
                    return bad("ordinal.partial_weights", format!("needs {} finite values", d + 1));
                }
                Some(_) if self.labels.len() != 3 => {
                    return bad("ordinal.partial_weights", "is set on a stack without a partial label".into());
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Label distribution in [`Label::ALL`] order for decisions on `grades` (an ordinal stack
    /// may have a 2-grade support cut of its own).
    pub fn predict_for(&self, x: &[f64], grades: Grades) -> [f64; 3] {
        match &self.ordinal {
            Some(o) => o.probs_for(self.scores(x), grades),
            None => self.predict(x),
        }
    }

    /// Label distribution in [`Label::ALL`] order.
    pub fn predict(&self, x: &[f64]) -> [f64; 3] {
        if let Some(o) = &self.ordinal {
            return o.probs(self.scores(x));
        }
        let logits = self.logits(x);
        let p = softmax(&logits);
        let mut out = [0.0; 3];
        for (l, v) in self.labels.iter().zip(p) {
            out[l.index()] = v;
        }
        out
    }

    /// Distribution for one verdict decided on `grades` (features looked up by the names the
    /// stack was fitted with; see [`Stack::predict_for`]).
    pub fn apply_for(&self, x: &FeatureInput<'_>, grades: Grades) -> [f64; 3] {
        self.apply_decided(x, grades).0
    }

    /// [`Stack::apply_for`] with the stack's decision ([`Stack::decide_for`]).
    pub fn apply_decided(&self, x: &FeatureInput<'_>, grades: Grades) -> ([f64; 3], Label) {
        let mut f = features_named(&self.names, x);
        if let (Some(head), Some(j)) = (&self.head, self.names.iter().position(|n| n == HIDDEN_LOGIT)) {
            // Without a read (a run without --hidden, a remote backend) it reads as the mean.
            f[j] = x.hidden.and_then(|h| head.logit(h)).unwrap_or(f64::NAN);
        }
        match &self.ordinal {
            // One pass over the features for both the distribution and the cuts' label.
            Some(o) => {
                let s = self.scores(&f);
                (o.probs_for(s, grades), o.label_for(s, grades))
            }
            None => (self.predict(&f), self.decide_for(&f, grades)),
        }
    }

    /// The label the stack gives features `x` on `grades`: an ordinal stack's cuts, which were
    /// placed for macro-F1 (inside a narrow partial band the most probable label of its
    /// distribution, whose slope is fitted for calibrated probabilities, can be a neighbour);
    /// else the most probable label.
    pub fn decide_for(&self, x: &[f64], grades: Grades) -> Label {
        match &self.ordinal {
            Some(o) => o.label_for(self.scores(x), grades),
            None => grades.decide(self.predict_for(x, grades)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long-form input with label votes (yes - no = 1) and no likelihood read.
    fn voted<'a>(nugget: &'a str, answer: &'a str) -> FeatureInput<'a> {
        FeatureInput {
            logprobs: Some([-1.0, -5.0, -2.0]),
            nugget_lp: None,
            window_lp: None,
            nugget,
            answer,
            gold_answers: &[],
            hidden: None,
        }
    }

    #[test]
    fn features_are_sensible() {
        let x = voted("The Eiffel Tower is in Paris", "the eiffel tower stands in paris");
        let f = features(FeatureSet::All, &x);
        assert_eq!(f.len(), feature_names(FeatureSet::All).len());
        let at = |name: &str| f[feature_names(FeatureSet::All).iter().position(|n| *n == name).unwrap()];
        assert_eq!((at("overlap"), at("best_overlap"), at("missing_words")), (1.0, 1.0, 0.0));
        assert_eq!(at("yes_minus_no"), 1.0);
        assert!(at("nugget_lp_mean").is_nan(), "no nugget likelihood read");
        let g = vec!["Paris".to_string()];
        let s = FeatureInput {
            logprobs: None,
            nugget_lp: None,
            window_lp: None,
            nugget: "Paris",
            answer: "It is Paris.",
            gold_answers: &g,
            hidden: None,
        };
        let f = features(FeatureSet::NoModel, &s);
        assert_eq!(f.len(), feature_names(FeatureSet::NoModel).len());
        assert_eq!((f[6], f[7]), (0.0, 1.0));
    }

    #[test]
    fn missing_features_read_as_the_mean() {
        // The second feature is missing on half the rows (a backend that cannot read it).
        let xs: Vec<Vec<f64>> = (0..100)
            .map(|i| vec![(i % 10) as f64 / 10.0, if i % 2 == 0 { f64::NAN } else { (i % 10) as f64 }])
            .collect();
        let golds: Vec<Label> =
            xs.iter().map(|x| if x[0] >= 0.5 { Label::Support } else { Label::NotSupport }).collect();
        let s = Stack::fit(FeatureSet::NoModel, &xs, &golds, true, 1e-3);
        assert!(s.mean.iter().chain(&s.std).all(|v| v.is_finite()));
        assert!(s.weights.iter().flatten().all(|w| w.is_finite()));
        let p = s.predict(&[0.9, f64::NAN]);
        assert!(p.iter().all(|v| v.is_finite()) && p[0] > 0.5, "{p:?}");
    }

    #[test]
    fn stacks_find_features_by_name() {
        let x = voted("Paris is big", "paris is big");
        let f = features_named(&["yes_minus_no", "overlap", "no_such_feature"], &x);
        assert_eq!(f[0], 1.0);
        assert_eq!(f[1], 1.0);
        assert!(f[2].is_nan());
    }

    /// Two labeled files of `n` verdicts each over (score, noise): file 0 is 3-grade (not below
    /// 0.4, partial to 0.7, support above); file 1 is 2-grade (REALSumm-like: support from 0.7,
    /// its not_support never says partial).
    fn two_files(n: usize) -> (Vec<Vec<f64>>, Vec<Label>, Vec<usize>) {
        let (mut xs, mut golds, mut files) = (Vec::new(), Vec::new(), Vec::new());
        for f in 0..2 {
            for i in 0..n {
                let x = (i % 100) as f64 / 100.0;
                xs.push(vec![x, ((i * 7) % 13) as f64]);
                golds.push(match x {
                    x if x >= 0.7 => Label::Support,
                    x if x >= 0.4 && f == 0 => Label::PartialSupport,
                    _ => Label::NotSupport,
                });
                files.push(f);
            }
        }
        (xs, golds, files)
    }

    #[test]
    fn ordinal_stacks_place_the_partial_band_per_file_grading() {
        let (xs, golds, files) = two_files(300);
        let w = vec![1.0; xs.len()];
        let s = Stack::fit_ordinal(FeatureSet::NoModel, &xs, &golds, &w, &files, 1e-3);
        let o = s.ordinal.clone().expect("ordinal");
        assert!(o.partial < o.support && o.slope > 0.0, "{o:?}");
        let label = |x: f64| crate::label::LabelProbs::from_array(s.predict(&[x, 3.0])).argmax();
        assert_eq!((label(0.1), label(0.55), label(0.9)), (Label::NotSupport, Label::PartialSupport, Label::Support));
        let p = s.predict(&[0.55, 3.0]);
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)) && (p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{p:?}");
        // Files of both gradings: the 2-grade file places a support cut of its own (its
        // not_support runs to 0.7, so the cut sits near 0.7, not at the 3-grade file's 0.7 by
        // chance), and 2-grade decisions never say partial.
        let two_cut = o.support_two.expect("a 2-grade support cut");
        assert!(two_cut.is_finite());
        let p2 = s.predict_for(&[0.55, 3.0], Grades::Two);
        assert_eq!(p2[1], 0.0);
        assert!(p2[2] > 0.5 && s.predict_for(&[0.9, 3.0], Grades::Two)[0] > 0.5, "{p2:?}");
        assert_eq!(s.predict_for(&[0.55, 3.0], Grades::Three), s.predict(&[0.55, 3.0]));
        // It survives a round trip through the calibration file.
        let back: Stack = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.predict(&[0.55, 3.0]), p);
        // Only 2-grade files: one cut, never partial.
        let two: Vec<usize> = files.iter().map(|_| 0).collect();
        let folded: Vec<Label> =
            golds.iter().map(|&g| if g == Label::PartialSupport { Label::NotSupport } else { g }).collect();
        let s = Stack::fit_ordinal(FeatureSet::NoModel, &xs[300..], &folded[300..], &w[300..], &two[300..], 1e-3);
        assert_eq!(s.predict(&[0.55, 3.0])[1], 0.0);
        assert!(s.predict(&[0.9, 3.0])[0] > 0.5 && s.predict(&[0.1, 3.0])[2] > 0.5);
    }

    /// Two sources judged by the same rule (overlap below 0.35: not supported, to 0.65: partly,
    /// above: supported, with some noise) in very different shares; the first in `copies`.
    fn shares(copies: usize) -> (Vec<Vec<f64>>, Vec<Label>, Vec<usize>) {
        let (mut xs, mut golds, mut files) = (Vec::new(), Vec::new(), Vec::new());
        for (f, lo, hi) in [(0usize, 0.0, 0.5), (1, 0.3, 1.0)] {
            for i in 0..400 {
                let x = lo + (hi - lo) * ((i * 37) % 400) as f64 / 400.0;
                let noisy = x + 0.08 * (((i * 13) % 7) as f64 - 3.0) / 3.0;
                let gold = match noisy {
                    v if v >= 0.65 => Label::Support,
                    v if v >= 0.35 => Label::PartialSupport,
                    _ => Label::NotSupport,
                };
                let n = if f == 0 && gold == Label::NotSupport { copies } else { 1 };
                for _ in 0..n {
                    // Transfer's features: overlap and best overlap, each exact and soft; numbers
                    // missing; two PMIs.
                    xs.push(vec![x, x, x, x, 0.0, 0.0, 0.0]);
                    golds.push(gold);
                    files.push(f);
                }
            }
        }
        (xs, golds, files)
    }

    #[test]
    fn transfer_cuts_do_not_follow_the_fitting_sources_label_shares() {
        let fit = |copies: usize| {
            let (xs, golds, files) = shares(copies);
            let w = vec![1.0; xs.len()];
            let s = Stack::fit_ordinal(FeatureSet::Transfer, &xs, &golds, &w, &files, 1e-3);
            // Where along the overlap each label starts, by the stack's own decisions.
            let label = |x: f64| s.decide_for(&[x, x, x, x, 0.0, 0.0, 0.0], Grades::Three);
            let start = |l: Label| (0..=100).map(|k| f64::from(k) / 100.0).find(|&x| label(x) == l);
            (start(Label::PartialSupport), start(Label::Support))
        };
        let (p1, s1) = fit(1);
        let (p4, s4) = fit(10);
        let (p1, s1, p4, s4) = (p1.unwrap(), s1.unwrap(), p4.unwrap(), s4.unwrap());
        // Near the rule's own cuts, and barely moved by ten copies of one source's unsupported
        // verdicts (the cuts' objective ignores the shares; the score under them moves a little).
        assert!((p1 - 0.35).abs() <= 0.1 && (s1 - 0.65).abs() <= 0.1, "partial from {p1}, support from {s1}");
        assert!((p4 - 0.35).abs() <= 0.1 && (s4 - 0.65).abs() <= 0.1, "partial from {p4}, support from {s4}");
        assert!((p4 - p1).abs() <= 0.06 && (s4 - s1).abs() <= 0.06, "{p1}/{s1} became {p4}/{s4}");
    }

    #[test]
    fn ordinal_decisions_follow_the_cuts_even_for_a_narrow_band() {
        let (xs, golds, files) = shares(1);
        let w = vec![1.0; xs.len()];
        let s = Stack::fit_ordinal(FeatureSet::Transfer, &xs, &golds, &w, &files, 1e-3);
        let o = s.ordinal.clone().unwrap();
        for x in &xs {
            assert_eq!(s.decide_for(x, Grades::Three), o.label(s.scores(x)));
            assert_eq!(s.decide_for(x, Grades::Two), Grades::Two.fold(o.label(s.scores(x))));
        }
        let partial = xs.iter().filter(|x| s.decide_for(x, Grades::Three) == Label::PartialSupport).count();
        let golds_partial = golds.iter().filter(|&&g| g == Label::PartialSupport).count();
        assert!(partial * 2 > golds_partial, "{partial} decided partial of {golds_partial}");
    }

    #[test]
    fn a_partial_score_of_its_own_reads_what_separates_partial_from_not() {
        // Support when the overlap reaches 0.6, whatever the PMI; below it, partial when the
        // PMI (the last feature) is high: one score cannot rank partial against not-support.
        let (mut xs, mut golds, mut files) = (Vec::new(), Vec::new(), Vec::new());
        for f in 0..2 {
            for i in 0..600 {
                let a = ((i * 37) % 600) as f64 / 600.0;
                let b = ((i * 53 + f * 11) % 97) as f64 / 97.0;
                golds.push(match (a >= 0.6, b >= 0.5) {
                    (true, _) => Label::Support,
                    (false, true) => Label::PartialSupport,
                    (false, false) => Label::NotSupport,
                });
                xs.push(vec![a, a, a, a, 0.0, 0.0, b]);
                files.push(f);
            }
        }
        let w = vec![1.0; xs.len()];
        let s = Stack::fit_ordinal(FeatureSet::Transfer, &xs, &golds, &w, &files, 1e-3);
        let o = s.ordinal.clone().expect("ordinal");
        let pw = o.partial_weights.clone().expect("a partial score");
        assert!(pw[7] > 0.0 && pw[7] > pw[1].abs(), "the partial score weighs the PMI most: {pw:?}");
        let share = |want: Label| {
            let of: Vec<&Vec<f64>> = xs.iter().zip(&golds).filter(|(_, &g)| g == want).map(|(x, _)| x).collect();
            of.iter().filter(|x| s.decide_for(x, Grades::Three) == want).count() as f64 / of.len() as f64
        };
        let (sp, pp, np) = (share(Label::Support), share(Label::PartialSupport), share(Label::NotSupport));
        assert!(sp > 0.8 && pp > 0.8 && np > 0.8, "support {sp:.2}, partial {pp:.2}, not {np:.2} decided right");
        // Its probabilities are a distribution, and it survives the calibration file.
        let p = s.predict(&[0.3, 0.3, 0.3, 0.3, 0.0, 0.0, 0.9]);
        assert!(p.iter().all(|v| (0.0..=1.0).contains(v)) && (p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{p:?}");
        let back: Stack = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.ordinal, Some(o));
        assert!(back.validate().is_ok());
        // A 2-grade-only fit has no partial band to read.
        let two: Vec<Label> =
            golds.iter().map(|&g| if g == Label::PartialSupport { Label::NotSupport } else { g }).collect();
        let s2 = Stack::fit_ordinal(FeatureSet::Transfer, &xs, &two, &w, &files, 1e-3);
        assert!(s2.ordinal.unwrap().partial_weights.is_none());
    }

    #[test]
    fn a_balanced_fit_places_the_2_grade_cut_on_the_2_grade_files() {
        // A 3-grade source supports from 0.65 (partial from 0.35); a 2-grade one only from 0.85.
        let (mut xs, mut golds, mut files) = (Vec::new(), Vec::new(), Vec::new());
        for (f, from) in [(0usize, 0.65), (1, 0.85)] {
            for i in 0..500 {
                let x = ((i * 37) % 500) as f64 / 500.0;
                golds.push(match x {
                    v if v >= from => Label::Support,
                    v if f == 0 && v >= 0.35 => Label::PartialSupport,
                    _ => Label::NotSupport,
                });
                xs.push(vec![x, x, x, x, 0.0, 0.0, 0.0]);
                files.push(f);
            }
        }
        let w = vec![1.0; xs.len()];
        let s = Stack::fit_ordinal(FeatureSet::Transfer, &xs, &golds, &w, &files, 1e-3);
        assert!(s.ordinal.as_ref().is_some_and(|o| o.support_two.is_some()), "{:?}", s.ordinal);
        let start = |g: Grades| {
            (0..=100)
                .map(|k| f64::from(k) / 100.0)
                .find(|&x| s.decide_for(&[x, x, x, x, 0.0, 0.0, 0.0], g) == Label::Support)
        };
        let (three, two) = (start(Grades::Three).unwrap(), start(Grades::Two).unwrap());
        assert!((two - 0.85).abs() <= 0.06, "2-grade support from {two}");
        assert!(two > three + 0.05, "3-grade support from {three}, 2-grade from {two}");
    }

    #[test]
    fn a_partial_score_that_does_not_fit_its_stack_is_refused() {
        let (xs, golds, files) = shares(1);
        let w = vec![1.0; xs.len()];
        let s = Stack::fit_ordinal(FeatureSet::Transfer, &xs, &golds, &w, &files, 1e-3);
        assert!(s.validate().is_ok());
        let mut short = s.clone();
        short.ordinal.as_mut().unwrap().partial_weights.as_mut().unwrap().pop();
        assert_eq!(short.validate().unwrap_err().0, "ordinal.partial_weights");
        let mut two_labels = s.clone();
        two_labels.labels = vec![Label::Support, Label::NotSupport];
        let (field, why) = two_labels.validate().unwrap_err();
        assert_eq!(field, "ordinal.partial_weights");
        assert!(why.contains("partial label"), "{why}");
        // With one score the partial cut may not pass the support cut; with two it may.
        let mut crossed = s.clone();
        if let Some(o) = crossed.ordinal.as_mut() {
            o.partial = o.support + 1.0;
        }
        assert!(crossed.validate().is_ok());
        if let Some(o) = crossed.ordinal.as_mut() {
            o.partial_weights = None;
        }
        assert_eq!(crossed.validate().unwrap_err().0, "ordinal");
    }

    #[test]
    fn long_form_stacks_are_chosen_on_held_out_sources_or_folds() {
        let (xs, golds, files) = two_files(400);
        let folds: Vec<usize> = (0..xs.len()).map(|i| (i / 7) % 4).collect();
        let w = vec![1.0; xs.len()];
        // Two files: each is left out in turn. The second set carries only noise.
        let xs_of = |set: FeatureSet| match set {
            FeatureSet::NoModel => xs.clone(),
            _ => xs.iter().map(|x| vec![x[1], x[1] * 0.5]).collect(),
        };
        let sets = [FeatureSet::Aligned, FeatureSet::NoModel];
        let (s, sel) = Stack::select_long_form(&sets, xs_of, &golds, &w, &files, &folds);
        assert!(sel.by_source && sel.parts == 4, "{sel:?}");
        assert!(sel.candidates.iter().all(|c| c.by_source.is_some() && c.by_folds.is_finite()), "{sel:?}");
        assert_eq!(sel.candidates.len(), 2 * L2_GRID.len() * 2);
        let best = sel.chosen().unwrap();
        assert_eq!(best.set, FeatureSet::NoModel, "{sel:?}");
        // Left out, the 3-grade file is judged by a fit on the 2-grade one, which never says
        // partial: below 1 by construction, far above the noise set.
        assert!(best.score > 0.75 && sel.candidates.last().unwrap().score < 0.5, "{sel:?}");
        assert!(sel.candidates.windows(2).all(|w| w[0].score >= w[1].score), "best first");
        assert_eq!((s.ordinal.is_some(), s.features), (best.ordinal, FeatureSet::NoModel));
        // One file: by folds.
        let one: Vec<usize> = vec![0; 400];
        let (_, sel) = Stack::select_long_form(
            &[FeatureSet::NoModel],
            |_| xs[..400].to_vec(),
            &golds[..400],
            &w[..400],
            &one,
            &folds[..400],
        );
        assert!(!sel.by_source && sel.parts == 4, "{sel:?}");
        assert!(sel.chosen().unwrap().score > 0.85, "{sel:?}");
    }

    #[test]
    fn learning_curves_grow_with_the_labels_and_draw_whole_groups() {
        let (xs, golds, files) = two_files(400);
        // Noisy labels: a tenth flipped, so few labels fit worse than many.
        let golds: Vec<Label> = golds
            .iter()
            .enumerate()
            .map(|(i, &g)| {
                if i % 10 == 3 {
                    if g == Label::Support {
                        Label::NotSupport
                    } else {
                        Label::Support
                    }
                } else {
                    g
                }
            })
            .collect();
        let groups: Vec<u64> = (0..xs.len()).map(|i| (i / 4) as u64).collect();
        let folds: Vec<usize> = (0..xs.len()).map(|i| (i / 4) % 4).collect();
        let curve = Stack::learning_curve(
            FeatureSet::NoModel,
            &xs,
            &golds,
            &files,
            &groups,
            &folds,
            (1e-2, true),
            &[12, 100, usize::MAX],
        );
        assert_eq!(curve.len(), 3);
        assert!(curve.iter().all(|p| p.fits == 12 && p.min <= p.mean && p.mean <= p.max), "{curve:?}");
        // Whole groups of 4: 12 asked is 12 used; all is the 3 training folds (600).
        assert_eq!((curve[0].used, curve[2].used), (12, 600), "{curve:?}");
        assert!(curve[2].mean > 0.7 && curve[2].mean >= curve[0].mean, "{curve:?}");
    }

    #[test]
    fn aligned_stacks_keep_each_feature_in_its_direction_whatever_the_data() {
        // Fitting data where a changed number goes with support (a quirk of the sample): an
        // aligned stack must still not let number_conflict raise support; an unconstrained set may.
        let names = feature_names(FeatureSet::AlignedNoModel);
        let at = |n: &str| names.iter().position(|k| *k == n).unwrap();
        let (mut xs, mut golds) = (Vec::new(), Vec::new());
        for i in 0..200 {
            let support = i % 2 == 0;
            let mut x = vec![0.5; names.len()];
            x[at("best_overlap")] = if support { 0.9 } else { 0.3 } + (i % 7) as f64 * 0.01;
            x[at("number_conflict")] = if support == (i % 10 != 1) { 1.0 } else { 0.0 };
            xs.push(x);
            golds.push(if support { Label::Support } else { Label::NotSupport });
        }
        let s = Stack::fit(FeatureSet::AlignedNoModel, &xs, &golds, true, 1e-3);
        let j = at("number_conflict") + 1;
        assert!(s.weights[0][j] - s.weights[1][j] <= 1e-12, "number_conflict raises support: {:?}", s.weights);
        let b = at("best_overlap") + 1;
        assert!(s.weights[0][b] - s.weights[1][b] > 0.1, "overlap still speaks for support: {:?}", s.weights);
        assert_eq!(direction("number_conflict"), -1.0);
        assert_eq!(direction("pmi_mean"), 1.0);
    }

    #[test]
    fn fit_separates_a_learnable_problem() {
        // Support iff the first feature is high; the second is noise.
        let xs: Vec<Vec<f64>> = (0..200).map(|i| vec![(i % 10) as f64 / 10.0, ((i * 7) % 13) as f64]).collect();
        let golds: Vec<Label> =
            xs.iter().map(|x| if x[0] >= 0.5 { Label::Support } else { Label::NotSupport }).collect();
        let s = Stack::fit(FeatureSet::NoModel, &xs, &golds, true, 1e-3);
        let correct = xs
            .iter()
            .zip(&golds)
            .filter(|(x, g)| crate::label::LabelProbs::from_array(s.predict(x)).argmax() == **g)
            .count();
        assert!(correct >= 190, "{correct}/200");
        let p = s.predict(&xs[0]);
        assert_eq!(p[1], 0.0);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let json = serde_json::to_string(&s).unwrap();
        let back = serde_json::from_str::<Stack>(&json).unwrap();
        for x in &xs {
            let (a, b) = (s.predict(x), back.predict(x));
            assert!((0..3).all(|k| (a[k] - b[k]).abs() < 1e-12));
        }
    }
}
