//! Agreement with gold labels: accuracy, per-class precision/recall/F1, macro and micro
//! averages, confusion matrices, calibration (ECE, Brier, reliability table), the majority
//! class, Search-Gen-V's sample level, and bootstrap intervals resampled by query.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::label::{Grades, Label, LabelProbs};

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

/// Macro-F1 on `grades` with each gold label weighing the same in total (a verdict of a label
/// with n golds counts 1/n): the score a set of decisions would get if every label were equally
/// common, whatever their shares in `pairs`. Labels with neither gold nor prediction are left out.
pub fn balanced_macro_f1(pairs: &[(Label, Label)], grades: Grades) -> f64 {
    let confusion = confusion(pairs, grades);
    let weight: Vec<f64> = confusion
        .iter()
        .map(|row| match row.iter().sum::<usize>() {
            0 => 0.0,
            n => 1.0 / n as f64,
        })
        .collect();
    let mut f1 = Vec::new();
    for c in 0..3 {
        let predicted: usize = (0..3).map(|g| confusion[g][c]).sum();
        if confusion[c].iter().sum::<usize>() == 0 && predicted == 0 {
            continue;
        }
        let tp = confusion[c][c] as f64 * weight[c];
        let fp: f64 = (0..3).filter(|&g| g != c).map(|g| confusion[g][c] as f64 * weight[g]).sum();
        let fn_: f64 = (0..3).filter(|&p| p != c).map(|p| confusion[c][p] as f64 * weight[c]).sum();
        f1.push(if tp > 0.0 { 2.0 * tp / (2.0 * tp + fp + fn_) } else { 0.0 });
    }
    if f1.is_empty() {
        0.0
    } else {
        f1.iter().sum::<f64>() / f1.len() as f64
    }
}

/// Counts of (gold, predicted) on `grades`, indexed [gold][predicted].
fn confusion(pairs: &[(Label, Label)], grades: Grades) -> [[usize; 3]; 3] {
    let mut confusion = [[0usize; 3]; 3];
    for &(g, p) in pairs {
        confusion[grades.fold(g).index()][grades.fold(p).index()] += 1;
    }
    confusion
}

/// Compare (gold, predicted) pairs.
pub fn agreement(pairs: &[(Label, Label)], grades: Grades) -> Agreement {
    let confusion = confusion(pairs, grades);
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
        let pred = LabelProbs::from_array(p).argmax();
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

/// A 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// 2.5th percentile.
    pub lo: f64,
    /// 97.5th percentile.
    pub hi: f64,
}

/// A small seeded generator (xorshift64*): enough for resampling and shuffles, the same on every
/// platform, so reports and fits that draw at random are reproducible.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value; seed 0 is the bootstrap's).
    pub fn new(seed: u64) -> Rng {
        // Xorshift must not start at 0; the bootstrap's historical start is seed 0's.
        Rng(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        let s = &mut self.0;
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as usize % n
    }
}

/// Bootstrap intervals of macro-F1 (native grading), resampling queries (clusters of records)
/// with replacement.
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

/// Bootstrap intervals over `pairs` = (cluster, gold, gavel's label, lexical label), drawing
/// whole clusters (the verdicts of one query: they are not independent); a fixed seed, so a
/// report is reproducible. `None` with fewer than two clusters.
pub fn bootstrap(pairs: &[(u64, Label, Label, Label)], grades: Grades, resamples: usize) -> Option<Intervals> {
    let mut by_cluster: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        by_cluster.entry(p.0).or_default().push(i);
    }
    let clusters: Vec<Vec<usize>> = by_cluster.into_values().collect();
    if clusters.len() < 2 || resamples == 0 {
        return None;
    }
    let mut rng = Rng::new(0);
    let mut next = |n: usize| rng.below(n);
    let (mut m, mut l, mut d) = (Vec::new(), Vec::new(), Vec::new());
    let (mut gm, mut gl) = (Vec::new(), Vec::new());
    for _ in 0..resamples {
        gm.clear();
        gl.clear();
        for _ in 0..clusters.len() {
            for &i in &clusters[next(clusters.len())] {
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

#[cfg(test)]
mod tests {
    use super::*;
    use Label::{NotSupport as N, PartialSupport as P, Support as S};

    #[test]
    fn balanced_macro_f1_weighs_each_gold_label_the_same() {
        // Balanced shares: the same as macro-F1.
        let pairs = [(S, S), (S, N), (N, N), (N, S)];
        assert!((balanced_macro_f1(&pairs, Grades::Two) - agreement(&pairs, Grades::Two).macro_f1).abs() < 1e-12);
        // Nine not-supported golds, one supported; "not_support" everywhere. Plain macro-F1
        // rewards the prior (0.474); balanced, it is what it would be on equal shares (1/3).
        let mut skewed = vec![(N, N); 9];
        skewed.push((S, N));
        assert!((agreement(&skewed, Grades::Two).macro_f1 - 0.4737).abs() < 1e-3);
        assert!((balanced_macro_f1(&skewed, Grades::Two) - 1.0 / 3.0).abs() < 1e-12);
        // Tripling a label's verdicts changes nothing.
        let mut tripled = Vec::new();
        for &(g, p) in &[(S, S), (S, P), (P, P), (P, N), (N, N), (N, N), (N, S)] {
            tripled.extend(std::iter::repeat_n((g, p), if g == N { 3 } else { 1 }));
        }
        let once = [(S, S), (S, P), (P, P), (P, N), (N, N), (N, N), (N, S)];
        assert!((balanced_macro_f1(&tripled, Grades::Three) - balanced_macro_f1(&once, Grades::Three)).abs() < 1e-12);
    }

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
    fn bootstrap_intervals_resample_whole_queries() {
        // 20 queries of 3 verdicts; gavel right on all, the lexical judge on every other query.
        let pairs: Vec<(u64, Label, Label, Label)> = (0..60)
            .map(|i| {
                let gold = [S, P, N][i % 3];
                ((i / 3) as u64, gold, gold, if (i / 3) % 2 == 0 { gold } else { N })
            })
            .collect();
        let iv = bootstrap(&pairs, Grades::Three, 500).unwrap();
        assert_eq!(iv.resamples, 500);
        assert_eq!((iv.model.lo, iv.model.hi), (1.0, 1.0));
        let lex = agreement(&pairs.iter().map(|p| (p.1, p.3)).collect::<Vec<_>>(), Grades::Three).macro_f1;
        assert!(iv.lexical.lo < lex && lex < iv.lexical.hi && iv.lexical.hi < 1.0, "{iv:?} vs {lex}");
        assert!(iv.model_minus_lexical.lo > 0.0, "{iv:?}");
        // Reproducible, and nothing to resample with one query.
        assert_eq!(bootstrap(&pairs, Grades::Three, 500), Some(iv));
        assert_eq!(bootstrap(&pairs[..3], Grades::Three, 500), None);
        // 10 queries of 10 verdicts, the lexical judge right on every verdict of half the
        // queries and wrong on every verdict of the others; then the same verdicts, each its own
        // query. Drawing whole queries keeps the errors in their blocks: a wider interval.
        let blocks: Vec<(u64, Label, Label, Label)> = (0..100)
            .map(|i| {
                let gold = [S, N][i % 2];
                let wrong = if gold == S { N } else { S };
                ((i / 10) as u64, gold, gold, if (i / 10) % 2 == 0 { gold } else { wrong })
            })
            .collect();
        let flat: Vec<(u64, Label, Label, Label)> =
            blocks.iter().enumerate().map(|(i, p)| (i as u64, p.1, p.2, p.3)).collect();
        let (bq, bv) = (bootstrap(&blocks, Grades::Two, 500).unwrap(), bootstrap(&flat, Grades::Two, 500).unwrap());
        let width = |x: &Intervals| x.lexical.hi - x.lexical.lo;
        assert!(width(&bq) > 2.0 * width(&bv), "by query {:?}, by verdict {:?}", bq.lexical, bv.lexical);
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

    #[test]
    fn majority_takes_the_most_frequent_gold() {
        assert_eq!(majority([S, N, N, P]), N);
        assert_eq!(majority([S, S, N]), S);
        // Ties go to the lower credit.
        assert_eq!(majority([S, N]), N);
    }
}
