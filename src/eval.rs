//! Agreement with gold labels: accuracy, per-class precision/recall/F1, macro and micro
//! averages, confusion matrices, calibration (ECE, Brier, reliability table), sample level, and
//! the no-model baselines (majority class, lexical overlap).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::rubric::{normalize_answer, Label};

/// 3-grade labels or 2-grade (partial folded into not_support).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grades {
    /// support / partial_support / not_support.
    Three,
    /// support / not_support.
    Two,
}

impl Grades {
    /// Map a label into this grading.
    pub fn fold(self, l: Label) -> Label {
        match (self, l) {
            (Grades::Two, Label::PartialSupport) => Label::NotSupport,
            _ => l,
        }
    }

    /// Map a distribution (in [`Label::ALL`] order) into this grading: 2-grade moves the partial
    /// probability onto not_support, so a decision weighs partial's mass as not supported.
    pub fn fold_probs(self, p: [f64; 3]) -> [f64; 3] {
        match self {
            Grades::Three => p,
            Grades::Two => [p[0], 0.0, p[1] + p[2]],
        }
    }

    /// The label this grading decides for a distribution: argmax after [`Grades::fold_probs`].
    pub fn decide(self, p: [f64; 3]) -> Label {
        crate::aggregate::LabelProbs::from_array(self.fold_probs(p)).argmax()
    }
}

/// Precision, recall, F1 and gold count of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// The class.
    pub label: Label,
    /// TP / (TP + FP); 0 when nothing was predicted.
    pub precision: f64,
    /// TP / (TP + FN); 0 when the class never occurs.
    pub recall: f64,
    /// Harmonic mean; 0 when both are 0.
    pub f1: f64,
    /// Gold count.
    pub support: usize,
    /// Predicted count.
    pub predicted: usize,
}

/// Agreement of predictions with gold labels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    /// Grading used.
    pub grades: Grades,
    /// Pairs compared.
    pub n: usize,
    /// Fraction equal.
    pub accuracy: f64,
    /// Classes present in gold or predictions, in [`Label::ALL`] order.
    pub classes: Vec<ClassMetrics>,
    /// Unweighted mean of per-class precision.
    pub macro_precision: f64,
    /// Unweighted mean of per-class recall.
    pub macro_recall: f64,
    /// Unweighted mean of per-class F1 (over classes in gold or predictions, as scikit-learn).
    pub macro_f1: f64,
    /// Micro F1 (equals accuracy for single-label classification).
    pub micro_f1: f64,
    /// `confusion[g][p]`: gold g predicted p, indices in [`Label::ALL`] order.
    pub confusion: [[usize; 3]; 3],
}

/// Compare (gold, predicted) pairs.
pub fn agreement(pairs: &[(Label, Label)], grades: Grades) -> Agreement {
    let mut confusion = [[0usize; 3]; 3];
    for &(g, p) in pairs {
        confusion[grades.fold(g).index()][grades.fold(p).index()] += 1;
    }
    let n = pairs.len();
    let correct: usize = (0..3).map(|i| confusion[i][i]).sum();
    let mut classes = Vec::new();
    for label in Label::ALL {
        let i = label.index();
        let support: usize = confusion[i].iter().sum();
        let predicted: usize = (0..3).map(|g| confusion[g][i]).sum();
        if support == 0 && predicted == 0 {
            continue;
        }
        let tp = confusion[i][i] as f64;
        let precision = if predicted > 0 { tp / predicted as f64 } else { 0.0 };
        let recall = if support > 0 { tp / support as f64 } else { 0.0 };
        let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
        classes.push(ClassMetrics { label, precision, recall, f1, support, predicted });
    }
    let mean = |f: fn(&ClassMetrics) -> f64| {
        if classes.is_empty() {
            0.0
        } else {
            classes.iter().map(f).sum::<f64>() / classes.len() as f64
        }
    };
    let accuracy = if n > 0 { correct as f64 / n as f64 } else { 0.0 };
    Agreement {
        grades,
        n,
        accuracy,
        macro_precision: mean(|c| c.precision),
        macro_recall: mean(|c| c.recall),
        macro_f1: mean(|c| c.f1),
        micro_f1: accuracy,
        classes,
        confusion,
    }
}

/// One bin of a reliability table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bin {
    /// Lower edge of confidence.
    pub lo: f64,
    /// Upper edge.
    pub hi: f64,
    /// Items in the bin.
    pub count: usize,
    /// Mean confidence.
    pub confidence: f64,
    /// Fraction correct.
    pub accuracy: f64,
}

/// Calibration of predicted distributions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// Items.
    pub n: usize,
    /// Expected calibration error of the top label (equal-width bins).
    pub ece: f64,
    /// Multi-class Brier score: mean over items of sum_k (p_k - y_k)^2.
    pub brier: f64,
    /// Reliability table.
    pub bins: Vec<Bin>,
}

/// Calibration of `(probs in Label::ALL order, gold)` under `grades` (2-grade folds the partial
/// probability into not_support).
pub fn calibration(items: &[([f64; 3], Label)], grades: Grades, n_bins: usize) -> Calibration {
    let n_bins = n_bins.max(1);
    let mut sums = vec![(0usize, 0.0f64, 0.0f64); n_bins];
    let mut brier = 0.0;
    for &(p, gold) in items {
        let p = grades.fold_probs(p);
        let gold = grades.fold(gold);
        let pred = crate::aggregate::LabelProbs::from_array(p).argmax();
        let conf = p[pred.index()];
        let b = ((conf * n_bins as f64) as usize).min(n_bins - 1);
        sums[b].0 += 1;
        sums[b].1 += conf;
        sums[b].2 += f64::from(u8::from(pred == gold));
        for l in Label::ALL {
            let y = f64::from(u8::from(l == gold));
            brier += (p[l.index()] - y).powi(2);
        }
    }
    let n = items.len();
    let mut ece = 0.0;
    let bins = sums
        .iter()
        .enumerate()
        .map(|(i, &(count, conf, acc))| {
            let (confidence, accuracy) = if count > 0 { (conf / count as f64, acc / count as f64) } else { (0.0, 0.0) };
            if n > 0 {
                ece += count as f64 / n as f64 * (confidence - accuracy).abs();
            }
            Bin { lo: i as f64 / n_bins as f64, hi: (i + 1) as f64 / n_bins as f64, count, confidence, accuracy }
        })
        .collect();
    Calibration { n, ece, brier: if n > 0 { brier / n as f64 } else { 0.0 }, bins }
}

/// The most frequent gold label (ties: the lower credit).
pub fn majority(golds: impl IntoIterator<Item = Label>) -> Label {
    let mut counts = [0usize; 3];
    for g in golds {
        counts[g.index()] += 1;
    }
    let mut best = Label::NotSupport;
    for l in [Label::PartialSupport, Label::Support] {
        if counts[l.index()] > counts[best.index()] {
            best = l;
        }
    }
    best
}

const STOPWORDS: &[&str] = &[
    "of", "in", "on", "at", "to", "for", "by", "with", "and", "or", "is", "are", "was", "were", "be", "been", "it",
    "its", "as", "that", "this", "from", "has", "have", "had", "he", "she", "his", "her", "they", "their", "which",
    "who", "not", "but",
];

/// Whether `w` (normalised) is a stop word of the lexical judge.
pub fn is_stopword(w: &str) -> bool {
    STOPWORDS.contains(&w)
}

/// Which half of a labeled file a record belongs to, so that fitting and scoring never see the
/// same query/article: records are split by a hash of the query, or, without a query, of the
/// first nugget (REALSumm's nuggets are its article's content units).
pub fn part_of(task: &crate::record::Task) -> char {
    if split_hash(task).is_multiple_of(2) {
        'a'
    } else {
        'b'
    }
}

/// Which of `k` cross-validation folds a record falls in: by the same query/article key as
/// [`part_of`] (other bits of its hash), so a fold never shares a query with the others.
pub fn fold_of(task: &crate::record::Task, k: usize) -> usize {
    ((split_hash(task) >> 1) % k.max(1) as u64) as usize
}

fn split_hash(task: &crate::record::Task) -> u64 {
    let key = match task.query.as_deref() {
        Some(q) if !q.trim().is_empty() => q.to_string(),
        _ => task.nuggets.first().map(|n| n.text.clone()).unwrap_or_else(|| task.answer.clone()),
    };
    // FNV-1a: stable across platforms and releases.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Lexical overlap judge: the fraction of the nugget's content words (normalised, stop words
/// removed) that occur in the judged text. No model.
pub fn lexical_overlap(nugget: &str, text: &str) -> f64 {
    let words: HashSet<String> = normalize_answer(text).split(' ').map(str::to_string).collect();
    let content: Vec<String> = normalize_answer(nugget)
        .split(' ')
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(w))
        .map(str::to_string)
        .collect();
    if content.is_empty() {
        return 0.0;
    }
    content.iter().filter(|w| words.contains(*w)).count() as f64 / content.len() as f64
}

/// Thresholds of the lexical judge: support at or above `support`, partial at or above
/// `partial`, else not_support.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LexicalThresholds {
    /// Overlap for support.
    pub support: f64,
    /// Overlap for partial support.
    pub partial: f64,
}

impl Default for LexicalThresholds {
    fn default() -> Self {
        LexicalThresholds { support: 0.75, partial: 0.5 }
    }
}

impl LexicalThresholds {
    /// Label an overlap score.
    pub fn label(self, overlap: f64) -> Label {
        Label::by_cuts(overlap, self.partial, self.support)
    }

    /// Thresholds maximising macro-F1 on `(overlap, gold)` pairs (grid search in steps of 0.05).
    pub fn fit(items: &[(f64, Label)], grades: Grades) -> Self {
        let mut best = (f64::NEG_INFINITY, LexicalThresholds::default());
        for s in 1..=20 {
            let support = s as f64 * 0.05;
            let partials: Vec<f64> = match grades {
                Grades::Two => vec![support],
                Grades::Three => (0..=s).map(|p| p as f64 * 0.05).collect(),
            };
            for partial in partials {
                let t = LexicalThresholds { support, partial };
                let pairs: Vec<(Label, Label)> = items.iter().map(|&(o, g)| (g, t.label(o))).collect();
                let f = agreement(&pairs, grades).macro_f1;
                if f > best.0 + 1e-12 {
                    best = (f, t);
                }
            }
        }
        best.1
    }
}

/// Search-Gen-V sample level: the best label over the records of one group (support >
/// partial_support > not_support), for gold and prediction alike. Items without a group stay
/// as they are.
pub fn sample_level(items: &[(Option<String>, Label, Label)]) -> Vec<(Label, Label)> {
    let mut groups: BTreeMap<&str, (Label, Label)> = BTreeMap::new();
    let mut out = Vec::new();
    for (key, g, p) in items {
        match key {
            Some(k) => {
                let e = groups.entry(k.as_str()).or_insert((*g, *p));
                e.0 = e.0.max(*g);
                e.1 = e.1.max(*p);
            }
            None => out.push((*g, *p)),
        }
    }
    out.extend(groups.into_values());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Label::{NotSupport as N, PartialSupport as P, Support as S};

    #[test]
    fn hand_computed_three_grade() {
        // gold S S S P P N N N N N ; pred S S P P N N N N S N
        let gold = [S, S, S, P, P, N, N, N, N, N];
        let pred = [S, S, P, P, N, N, N, N, S, N];
        let pairs: Vec<_> = gold.iter().copied().zip(pred.iter().copied()).collect();
        let a = agreement(&pairs, Grades::Three);
        assert_eq!(a.n, 10);
        assert!((a.accuracy - 0.7).abs() < 1e-12);
        assert_eq!(a.confusion, [[2, 1, 0], [0, 1, 1], [1, 0, 4]]);
        // S: tp 2, pred 3, gold 3 -> p 2/3 r 2/3 f 2/3
        // P: tp 1, pred 2, gold 2 -> p 1/2 r 1/2 f 1/2
        // N: tp 4, pred 5, gold 5 -> p 4/5 r 4/5 f 4/5
        let f: Vec<f64> = a.classes.iter().map(|c| c.f1).collect();
        assert!((f[0] - 2.0 / 3.0).abs() < 1e-12 && (f[1] - 0.5).abs() < 1e-12 && (f[2] - 0.8).abs() < 1e-12);
        assert!((a.macro_f1 - (2.0 / 3.0 + 0.5 + 0.8) / 3.0).abs() < 1e-12);
        assert_eq!(a.micro_f1, a.accuracy);
    }

    #[test]
    fn two_grade_folds_partial() {
        let pairs = [(S, P), (P, N), (N, S), (S, S)];
        let a = agreement(&pairs, Grades::Two);
        // folded: (S,N) (N,N) (N,S) (S,S)
        assert_eq!(a.confusion, [[1, 0, 1], [0, 0, 0], [1, 0, 1]]);
        assert_eq!(a.classes.len(), 2);
        assert!((a.accuracy - 0.5).abs() < 1e-12);
        assert!((a.macro_f1 - 0.5).abs() < 1e-12);
    }

    #[test]
    fn empty_class_in_the_confusion_matrix() {
        // Partial never occurs in gold but is predicted once: it counts with F1 0.
        let pairs = [(S, S), (N, N), (N, P), (S, S)];
        let a = agreement(&pairs, Grades::Three);
        assert_eq!(a.confusion[1], [0, 0, 0]);
        let p = a.classes.iter().find(|c| c.label == P).unwrap();
        assert_eq!((p.support, p.predicted, p.precision, p.recall, p.f1), (0, 1, 0.0, 0.0, 0.0));
        // S: 1/1/1; N: p 1, r 0.5, f 2/3; P: 0
        assert!((a.macro_f1 - (1.0 + 2.0 / 3.0 + 0.0) / 3.0).abs() < 1e-12);
        // A class neither in gold nor predicted is left out.
        let a = agreement(&[(S, S), (N, N)], Grades::Three);
        assert_eq!(a.classes.len(), 2);
        assert_eq!(a.macro_f1, 1.0);
        let a = agreement(&[], Grades::Three);
        assert_eq!((a.n, a.accuracy, a.macro_f1), (0, 0.0, 0.0));
    }

    #[test]
    fn calibration_hand_computed() {
        let items = [([0.9, 0.05, 0.05], S), ([0.8, 0.1, 0.1], N), ([0.1, 0.1, 0.8], N), ([0.2, 0.2, 0.6], S)];
        let c = calibration(&items, Grades::Three, 10);
        // bins: 0.9 -> bin 9 (correct), 0.8 -> bin 8 (wrong), 0.8 -> bin 8 (correct), 0.6 -> bin 6 (wrong)
        assert_eq!(c.bins[8].count, 2);
        assert!((c.bins[8].accuracy - 0.5).abs() < 1e-12);
        let ece = 0.25 * (0.9f64 - 1.0).abs() + 0.5 * (0.8f64 - 0.5).abs() + 0.25 * (0.6f64 - 0.0).abs();
        assert!((c.ece - ece).abs() < 1e-12, "{} vs {ece}", c.ece);
        let brier = ((0.1f64.powi(2) + 0.05f64.powi(2) * 2.0)
            + (0.8f64.powi(2) + 0.1f64.powi(2) + 0.9f64.powi(2))
            + (0.1f64.powi(2) * 2.0 + 0.2f64.powi(2))
            + (0.8f64.powi(2) + 0.2f64.powi(2) + 0.6f64.powi(2)))
            / 4.0;
        assert!((c.brier - brier).abs() < 1e-12);
    }

    #[test]
    fn baselines() {
        assert_eq!(majority([S, N, N, P]), N);
        assert_eq!(majority([S, S, N]), S);
        assert_eq!(lexical_overlap("The Eiffel Tower is in Paris", "the eiffel tower stands in paris, france"), 1.0);
        assert!(
            (lexical_overlap("Eiffel Tower in Rome", "the eiffel tower stands in paris") - 2.0 / 3.0).abs() < 1e-12
        );
        assert_eq!(lexical_overlap("of the", "anything"), 0.0);
        let t = LexicalThresholds::default();
        assert_eq!((t.label(0.8), t.label(0.6), t.label(0.1)), (S, P, N));
        let items = [(0.9, S), (0.8, S), (0.3, N), (0.2, N)];
        let fitted = LexicalThresholds::fit(&items, Grades::Two);
        let pairs: Vec<_> = items.iter().map(|&(o, g)| (g, fitted.label(o))).collect();
        assert_eq!(agreement(&pairs, Grades::Two).accuracy, 1.0);
    }

    #[test]
    fn two_grade_reports_fold_the_partial_mass_before_choosing() {
        // 3-way argmax says support (0.45), but partial + not (0.55) outweighs it.
        let item = |gold, probs: [f64; 3]| NuggetItem {
            source: "s".into(),
            gold,
            pred: crate::aggregate::LabelProbs::from_array(probs).argmax(),
            probs: Some(probs),
            raw_probs: Some(probs),
            lexical: 0.0,
            group: None,
            record: 0,
        };
        let input = EvalInput {
            nuggets: vec![item(N, [0.45, 0.3, 0.25]), item(S, [0.6, 0.1, 0.3]), item(N, [0.2, 0.5, 0.3])],
            ..Default::default()
        };
        let r = build_report(&input).rubric.unwrap();
        assert_eq!(r.grades, Grades::Two);
        assert_eq!(r.model2.accuracy, 1.0);
        assert_eq!(r.sources[0].model_accuracy, 1.0);
        // 3-grade agreement keeps the 3-way decision: the first item is a wrong support.
        assert_eq!(r.model3.confusion[2][0], 1);
        // With partial in gold the report is 3-grade and decides 3-way.
        let mut input = input;
        input.nuggets.push(item(P, [0.1, 0.8, 0.1]));
        let r = build_report(&input).rubric.unwrap();
        assert_eq!((r.grades, r.sources[0].model_accuracy), (Grades::Three, 0.5));
    }

    #[test]
    fn short_form_reports_the_model_calibration() {
        let item = |gold, probs| ShortItem {
            source: "s".into(),
            gold,
            em: false,
            contains: false,
            model: crate::aggregate::LabelProbs::from_array(probs).argmax(),
            probs: Some(probs),
            raw_probs: Some([0.5, 0.0, 0.5]),
        };
        let input = EvalInput { short: vec![item(S, [0.8, 0.0, 0.2]), item(N, [0.6, 0.0, 0.4])], ..Default::default() };
        let r = build_report(&input).short.unwrap();
        // Bin 8: confidence 0.8, right; bin 6: 0.6, wrong -> ECE (0.2 + 0.6) / 2.
        let c = r.calibration.unwrap();
        assert!((c.ece - 0.4).abs() < 1e-12, "{}", c.ece);
        assert!(r.raw_calibration.is_some());
    }

    #[test]
    fn bootstrap_intervals_resample_records() {
        // 20 records of 3 verdicts; gavel right on all, the lexical judge on every other record.
        let pairs: Vec<(usize, Label, Label, Label)> = (0..60)
            .map(|i| {
                let gold = [S, P, N][i % 3];
                (i / 3, gold, gold, if (i / 3) % 2 == 0 { gold } else { N })
            })
            .collect();
        let iv = bootstrap(&pairs, Grades::Three, 500).unwrap();
        assert_eq!(iv.resamples, 500);
        assert_eq!((iv.model.lo, iv.model.hi), (1.0, 1.0));
        let lex = agreement(&pairs.iter().map(|p| (p.1, p.3)).collect::<Vec<_>>(), Grades::Three).macro_f1;
        assert!(iv.lexical.lo < lex && lex < iv.lexical.hi && iv.lexical.hi < 1.0, "{iv:?} vs {lex}");
        assert!(iv.model_minus_lexical.lo > 0.0, "{iv:?}");
        // Reproducible, and nothing to resample with one record.
        assert_eq!(bootstrap(&pairs, Grades::Three, 500), Some(iv));
        assert_eq!(bootstrap(&pairs[..3], Grades::Three, 500), None);
    }

    #[test]
    fn sample_level_takes_the_max_per_group() {
        let items = vec![
            (Some("a".to_string()), N, P),
            (Some("a".to_string()), S, N),
            (None, N, N),
            (Some("b".to_string()), P, P),
        ];
        let mut s = sample_level(&items);
        s.sort();
        assert_eq!(s, vec![(N, N), (P, P), (S, P)]);
    }
}

// ---------------------------------------------------------------------------------------------
// Reports over a labeled file

/// One labeled nugget verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct NuggetItem {
    /// Record source (dataset).
    pub source: String,
    /// Gold label.
    pub gold: Label,
    /// The verifier's label (calibrated when a calibration was used).
    pub pred: Label,
    /// The verifier's distribution (calibrated when used).
    pub probs: Option<[f64; 3]>,
    /// The model's raw distribution.
    pub raw_probs: Option<[f64; 3]>,
    /// Lexical overlap of nugget and judged text.
    pub lexical: f64,
    /// Sample-level group (nugget judged against several blocks of one answer).
    pub group: Option<String>,
    /// The record (input line) it came from: bootstrap intervals resample records.
    pub record: usize,
}

/// A 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// 2.5th percentile.
    pub lo: f64,
    /// 97.5th percentile.
    pub hi: f64,
}

/// Bootstrap intervals of macro-F1 (native grading), resampling records with replacement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Intervals {
    /// Resamples drawn.
    pub resamples: usize,
    /// gavel's macro-F1.
    pub model: Interval,
    /// The lexical judge's macro-F1.
    pub lexical: Interval,
    /// gavel minus the lexical judge, on the same resample.
    pub model_minus_lexical: Interval,
}

/// Bootstrap intervals over `pairs` = (record, gold, gavel's label, lexical label); a fixed seed,
/// so a report is reproducible. `None` with fewer than two records.
pub fn bootstrap(pairs: &[(usize, Label, Label, Label)], grades: Grades, resamples: usize) -> Option<Intervals> {
    let mut by_record: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        by_record.entry(p.0).or_default().push(i);
    }
    let records: Vec<Vec<usize>> = by_record.into_values().collect();
    if records.len() < 2 || resamples == 0 {
        return None;
    }
    // xorshift64*: enough for resampling, and the same on every platform.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as usize % n
    };
    let (mut m, mut l, mut d) = (Vec::new(), Vec::new(), Vec::new());
    let (mut gm, mut gl) = (Vec::new(), Vec::new());
    for _ in 0..resamples {
        gm.clear();
        gl.clear();
        for _ in 0..records.len() {
            for &i in &records[next(records.len())] {
                gm.push((pairs[i].1, pairs[i].2));
                gl.push((pairs[i].1, pairs[i].3));
            }
        }
        let (a, b) = (agreement(&gm, grades).macro_f1, agreement(&gl, grades).macro_f1);
        m.push(a);
        l.push(b);
        d.push(a - b);
    }
    let interval = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
        Interval { lo: q(0.025), hi: q(0.975) }
    };
    Some(Intervals {
        resamples,
        model: interval(&mut m),
        lexical: interval(&mut l),
        model_minus_lexical: interval(&mut d),
    })
}

/// One labeled short-form answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ShortItem {
    /// Record source.
    pub source: String,
    /// Gold: support = correct.
    pub gold: Label,
    /// Normalised exact match with a gold answer.
    pub em: bool,
    /// A gold answer is contained in the answer.
    pub contains: bool,
    /// The model's label.
    pub model: Label,
    /// The model's distribution (calibrated when a calibration was used), when it judged.
    pub probs: Option<[f64; 3]>,
    /// The model's raw distribution.
    pub raw_probs: Option<[f64; 3]>,
}

/// Everything needed to build a report.
#[derive(Debug, Clone, Default)]
pub struct EvalInput {
    /// Report title (usually the input file).
    pub name: String,
    /// Model and calibration, for the header.
    pub setup: Vec<(String, String)>,
    /// Records read.
    pub records: usize,
    /// Long-form items.
    pub nuggets: Vec<NuggetItem>,
    /// Short-form items.
    pub short: Vec<ShortItem>,
    /// Failed records: (line, message).
    pub failures: Vec<(usize, String)>,
    /// Lexical thresholds (fixed or fitted elsewhere).
    pub lexical: LexicalThresholds,
}

/// Per-source row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceRow {
    /// Source name.
    pub source: String,
    /// Items.
    pub n: usize,
    /// Model macro-F1 (native grading).
    pub model_macro_f1: f64,
    /// Model accuracy.
    pub model_accuracy: f64,
    /// Lexical baseline macro-F1.
    pub lexical_macro_f1: f64,
    /// Majority-class macro-F1.
    pub majority_macro_f1: f64,
}

/// Rubric-level (long-form) results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RubricReport {
    /// Native grading: two-way when gold has no partial label.
    pub grades: Grades,
    /// The verifier, 3-grade.
    pub model3: Agreement,
    /// The verifier, 2-grade.
    pub model2: Agreement,
    /// The uncalibrated model (native grading), when a calibration was applied.
    pub raw: Option<Agreement>,
    /// Sample level (native grading), when records share groups.
    pub sample: Option<Agreement>,
    /// Majority class of the gold labels (native grading).
    pub majority_label: Label,
    /// Majority-class agreement.
    pub majority: Agreement,
    /// Lexical-overlap agreement.
    pub lexical: Agreement,
    /// Thresholds used by the lexical judge.
    pub lexical_thresholds: LexicalThresholds,
    /// Calibration of the verifier's distribution (native grading).
    pub calibration: Option<Calibration>,
    /// Calibration of the raw distribution, when a calibration was applied.
    pub raw_calibration: Option<Calibration>,
    /// Histogram (10 bins) of P(support) per gold label, in [`Label::ALL`] order.
    pub support_histogram: [[usize; 10]; 3],
    /// Per-source rows.
    pub sources: Vec<SourceRow>,
    /// 95% bootstrap intervals of gavel's and the lexical judge's macro-F1 (native grading).
    pub intervals: Option<Intervals>,
}

/// Short-form results: EM, containment, the model, and the hybrid side by side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShortReport {
    /// Exact match alone.
    pub em: Agreement,
    /// Containment alone.
    pub contains: Agreement,
    /// The model alone.
    pub model: Agreement,
    /// EM, then the model where EM fails (the paper's EM + verifier).
    pub em_model: Agreement,
    /// EM, then containment: no model.
    pub em_contains: Agreement,
    /// EM, then containment, then the model where both fail (gavel's `hybrid`).
    pub hybrid: Agreement,
    /// Majority class.
    pub majority: Agreement,
    /// Calibration of the model's distribution (correct = support), when it gave one.
    pub calibration: Option<Calibration>,
    /// Calibration of the raw distribution, when a calibration was applied.
    pub raw_calibration: Option<Calibration>,
}

/// A full evaluation report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// Title.
    pub name: String,
    /// Set-up lines.
    pub setup: Vec<(String, String)>,
    /// Records read.
    pub records: usize,
    /// Failed records (line, message); counted, never dropped.
    pub failures: Vec<(usize, String)>,
    /// Long-form results.
    pub rubric: Option<RubricReport>,
    /// Short-form results.
    pub short: Option<ShortReport>,
}

fn pairs_of(items: &[NuggetItem], f: impl Fn(&NuggetItem) -> Label) -> Vec<(Label, Label)> {
    items.iter().map(|i| (i.gold, f(i))).collect()
}

/// Build the report.
pub fn build_report(input: &EvalInput) -> EvalReport {
    let rubric = (!input.nuggets.is_empty()).then(|| {
        let items = &input.nuggets;
        let grades = if items.iter().any(|i| i.gold == Label::PartialSupport) { Grades::Three } else { Grades::Two };
        let majority_label = majority(items.iter().map(|i| grades.fold(i.gold)));
        // A 2-grade decision folds the partial probability into not_support before choosing, as
        // `--two-grade` verdicts do (argmax first would drop partial's mass).
        let two = |i: &NuggetItem| i.probs.map_or(Grades::Two.fold(i.pred), |p| Grades::Two.decide(p));
        let native = |i: &NuggetItem| if grades == Grades::Two { two(i) } else { i.pred };
        let calibrated = items.iter().any(|i| i.raw_probs.is_some() && i.raw_probs != i.probs);
        let raw = calibrated.then(|| {
            agreement(&pairs_of(items, |i| i.raw_probs.map_or_else(|| native(i), |p| grades.decide(p))), grades)
        });
        let groups: Vec<(Option<String>, Label, Label)> =
            items.iter().map(|i| (i.group.clone(), i.gold, native(i))).collect();
        let shared = {
            let mut seen = HashSet::new();
            items.iter().filter_map(|i| i.group.as_ref()).any(|g| !seen.insert(g))
        };
        let sample = shared.then(|| agreement(&sample_level(&groups), grades));
        let with_probs: Vec<([f64; 3], Label)> = items.iter().filter_map(|i| i.probs.map(|p| (p, i.gold))).collect();
        let with_raw: Vec<([f64; 3], Label)> = items.iter().filter_map(|i| i.raw_probs.map(|p| (p, i.gold))).collect();
        let mut support_histogram = [[0usize; 10]; 3];
        for (p, g) in &with_probs {
            support_histogram[g.index()][((p[0] * 10.0) as usize).min(9)] += 1;
        }
        let mut by_source: BTreeMap<&str, Vec<NuggetItem>> = BTreeMap::new();
        for i in items {
            by_source.entry(i.source.as_str()).or_default().push(i.clone());
        }
        let sources = by_source
            .into_iter()
            .map(|(source, its)| {
                let m = agreement(&pairs_of(&its, native), grades);
                SourceRow {
                    source: source.to_string(),
                    n: its.len(),
                    model_macro_f1: m.macro_f1,
                    model_accuracy: m.accuracy,
                    lexical_macro_f1: agreement(&pairs_of(&its, |i| input.lexical.label(i.lexical)), grades).macro_f1,
                    majority_macro_f1: agreement(&pairs_of(&its, |_| majority_label), grades).macro_f1,
                }
            })
            .collect();
        RubricReport {
            grades,
            model3: agreement(&pairs_of(items, |i| i.pred), Grades::Three),
            model2: agreement(&pairs_of(items, two), Grades::Two),
            raw,
            sample,
            majority_label,
            majority: agreement(&pairs_of(items, |_| majority_label), grades),
            lexical: agreement(&pairs_of(items, |i| input.lexical.label(i.lexical)), grades),
            lexical_thresholds: input.lexical,
            calibration: (!with_probs.is_empty()).then(|| calibration(&with_probs, grades, 10)),
            raw_calibration: (calibrated && !with_raw.is_empty()).then(|| calibration(&with_raw, grades, 10)),
            support_histogram,
            sources,
            intervals: bootstrap(
                &items
                    .iter()
                    .map(|i| (i.record, i.gold, native(i), input.lexical.label(i.lexical)))
                    .collect::<Vec<_>>(),
                grades,
                1000,
            ),
        }
    });
    let short = (!input.short.is_empty()).then(|| {
        let s = &input.short;
        let yes = |b: bool| if b { Label::Support } else { Label::NotSupport };
        let pairs = |f: &dyn Fn(&ShortItem) -> Label| s.iter().map(|i| (i.gold, f(i))).collect::<Vec<_>>();
        let maj = majority(s.iter().map(|i| i.gold));
        ShortReport {
            em: agreement(&pairs(&|i| yes(i.em)), Grades::Two),
            contains: agreement(&pairs(&|i| yes(i.contains)), Grades::Two),
            model: agreement(&pairs(&|i| i.model), Grades::Two),
            em_model: agreement(&pairs(&|i| if i.em { Label::Support } else { i.model }), Grades::Two),
            em_contains: agreement(&pairs(&|i| yes(i.em || i.contains)), Grades::Two),
            hybrid: agreement(&pairs(&|i| if i.em || i.contains { Label::Support } else { i.model }), Grades::Two),
            majority: agreement(&pairs(&|_| maj), Grades::Two),
            calibration: {
                let v: Vec<([f64; 3], Label)> = s.iter().filter_map(|i| i.probs.map(|p| (p, i.gold))).collect();
                (!v.is_empty()).then(|| calibration(&v, Grades::Two, 10))
            },
            raw_calibration: {
                let calibrated = s.iter().any(|i| i.raw_probs.is_some() && i.raw_probs != i.probs);
                let v: Vec<([f64; 3], Label)> = s.iter().filter_map(|i| i.raw_probs.map(|p| (p, i.gold))).collect();
                (calibrated && !v.is_empty()).then(|| calibration(&v, Grades::Two, 10))
            },
        }
    });
    EvalReport {
        name: input.name.clone(),
        setup: input.setup.clone(),
        records: input.records,
        failures: input.failures.clone(),
        rubric,
        short,
    }
}

/// A label triple (support, partial, not) as output records write it: an object with the label
/// names (`probs`) or an array in that order (`raw.logprobs`).
pub fn label_triple(v: &serde_json::Value) -> Option<[f64; 3]> {
    if let Some(o) = v.as_object() {
        return Some([
            o.get("support")?.as_f64()?,
            o.get("partial_support")?.as_f64()?,
            o.get("not_support")?.as_f64()?,
        ]);
    }
    let a = v.as_array()?;
    Some([a.first()?.as_f64()?, a.get(1)?.as_f64()?, a.get(2)?.as_f64()?])
}

/// The nugget-likelihood summary of a verdict's `raw` object, when present.
pub fn raw_nugget_lp(raw: &serde_json::Value) -> Option<crate::aggregate::NuggetLp> {
    raw.get("nugget_lp").and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// Read an output file (written by verify or eval) into a map from [`crate::pipeline::record_key`]
/// to record; lines that do not parse are skipped.
pub fn read_outputs(path: &std::path::Path) -> crate::Result<std::collections::HashMap<String, serde_json::Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
    let mut outputs = std::collections::HashMap::new();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            let id = v.get("id").and_then(|i| i.as_str()).map(str::to_string);
            let n = v.get("line").and_then(|l| l.as_u64()).unwrap_or(0) as usize;
            outputs.insert(crate::pipeline::record_key(id.as_deref(), n), v);
        }
    }
    Ok(outputs)
}

/// Join labeled tasks with their output records (as written by `gavel verify`, found by
/// [`crate::pipeline::record_key`]) into report input. Missing and failed records are counted
/// as failures, never dropped.
pub fn collect(
    name: &str,
    tasks: &[(usize, crate::record::Task)],
    outputs: &std::collections::HashMap<String, serde_json::Value>,
    parse_failures: Vec<(usize, String)>,
) -> EvalInput {
    use crate::rubric::{Check, CheckOutcome};
    let mut input = EvalInput {
        name: name.to_string(),
        records: tasks.len() + parse_failures.len(),
        failures: parse_failures,
        ..Default::default()
    };
    for (line, task) in tasks {
        let key = crate::pipeline::record_key(task.id.as_deref(), *line);
        let Some(out) = outputs.get(&key) else {
            input.failures.push((*line, "no output record".into()));
            continue;
        };
        if let Some(err) = out.get("error").filter(|e| !e.is_null()) {
            input.failures.push((*line, err.get("message").and_then(|m| m.as_str()).unwrap_or("error").to_string()));
            continue;
        }
        let verdicts = out.get("verdicts").and_then(|v| v.as_array()).cloned().unwrap_or_default();
        let source = task.source.clone().unwrap_or_else(|| name.to_string());
        if task.is_short_form() {
            let (Some(gold), Some(v)) = (task.gold, verdicts.first()) else {
                continue;
            };
            let Some(model) = v.get("label").and_then(|l| l.as_str()).and_then(Label::parse) else {
                continue;
            };
            let em = Check::ExactMatch { answers: task.gold_answers.clone(), fallback_llm: false };
            let contains = Check::Contains { answers: task.gold_answers.clone(), fallback_llm: false };
            input.short.push(ShortItem {
                source,
                gold: Grades::Two.fold(gold),
                em: em.evaluate(&task.answer) == CheckOutcome::Decided(Label::Support),
                contains: contains.evaluate(&task.answer) == CheckOutcome::Decided(Label::Support),
                model,
                probs: v.get("probs").and_then(label_triple),
                raw_probs: v.get("raw").and_then(|r| r.get("probs")).and_then(label_triple),
            });
            continue;
        }
        for (n, v) in task.nuggets.iter().zip(&verdicts) {
            let Some(gold) = n.gold else { continue };
            let Some(pred) = v.get("label").and_then(|l| l.as_str()).and_then(Label::parse) else {
                continue;
            };
            input.nuggets.push(NuggetItem {
                source: source.clone(),
                gold,
                pred,
                probs: v.get("probs").and_then(label_triple),
                raw_probs: v.get("raw").and_then(|r| r.get("probs")).and_then(label_triple),
                lexical: lexical_overlap(&n.text, &task.answer),
                group: task.query.as_ref().map(|q| format!("{q}\u{1}{}", n.text)),
                record: *line,
            });
        }
    }
    input
}

/// Re-decide the model verdicts of output records from their raw model outputs (`raw.probs`,
/// `raw.logprobs`), under `calibrator` (or uncalibrated when `None`), without running the model.
/// Deterministic verdicts are left as they are.
pub fn rescore_outputs(
    tasks: &[(usize, crate::record::Task)],
    outputs: &mut std::collections::HashMap<String, serde_json::Value>,
    calibrator: Option<&crate::calibrate::Calibrator>,
) {
    for (line, task) in tasks {
        let key = crate::pipeline::record_key(task.id.as_deref(), *line);
        let Some(out) = outputs.get_mut(&key) else { continue };
        let Some(verdicts) = out.get_mut("verdicts").and_then(|v| v.as_array_mut()) else { continue };
        for (n, v) in task.nuggets.iter().zip(verdicts.iter_mut()) {
            let Some(raw) = v.get("raw").cloned() else { continue };
            let (Some(p), Some(lp)) =
                (raw.get("probs").and_then(label_triple), raw.get("logprobs").and_then(label_triple))
            else {
                continue;
            };
            let probs = match calibrator {
                Some(c) => {
                    let x = crate::stack::FeatureInput {
                        logprobs: Some(lp),
                        nugget_lp: raw_nugget_lp(&raw),
                        nugget: &n.text,
                        answer: &task.answer,
                        gold_answers: &task.gold_answers,
                    };
                    c.verdict_probs(p, &x)
                }
                None => p,
            };
            let lp = crate::aggregate::LabelProbs::from_array(probs);
            v["probs"] = serde_json::json!({"support": probs[0], "partial_support": probs[1], "not_support": probs[2]});
            v["label"] = serde_json::json!(lp.argmax().as_str());
            v["score"] = serde_json::json!(lp.expected_value());
        }
    }
}
