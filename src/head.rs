//! A head users teach with their labels: a logistic read-out of the model's hidden state (the
//! final layer's or a middle layer's, at the label position or the mean over the positions that
//! read the nugget), fitted by `gavel calibrate` on verdicts judged with `--hidden`. Its output,
//! one logit of support, is a feature of the stack ([`crate::stack::FeatureSet::AlignedHidden`]),
//! so the stack still decides with the alignment and likelihood features next to it.
//!
//! The width comes from the reads (any GGUF); which read and how strong the penalty is are chosen
//! by cross-validation over groups of records (queries), never on the records scored.

use serde::{Deserialize, Serialize};

use crate::aggregate::HiddenRead;
use crate::metrics::Rng;
use crate::rubric::Label;

/// Which hidden state a head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenPool {
    /// At the label position (the prompt's last token).
    Last,
    /// The mean over the positions that read the nugget's tokens.
    NuggetMean,
    /// A middle layer's output at the label position.
    Mid,
    /// A middle layer's output, the mean over the positions that read the nugget's tokens.
    MidNuggetMean,
}

impl HiddenPool {
    /// Every read, in the order a fit tries them.
    pub const ALL: [HiddenPool; 4] =
        [HiddenPool::Last, HiddenPool::NuggetMean, HiddenPool::Mid, HiddenPool::MidNuggetMean];

    /// The read of this pool, when there is one.
    pub fn read(self, h: &HiddenRead) -> Option<&[f32]> {
        match self {
            HiddenPool::Last => Some(&h.last),
            HiddenPool::NuggetMean => h.nugget_mean.as_deref(),
            HiddenPool::Mid => h.mid.as_deref(),
            HiddenPool::MidNuggetMean => h.mid_nugget_mean.as_deref(),
        }
    }

    /// Name for people.
    pub fn as_str(self) -> &'static str {
        match self {
            HiddenPool::Last => "last",
            HiddenPool::NuggetMean => "nugget_mean",
            HiddenPool::Mid => "mid",
            HiddenPool::MidNuggetMean => "mid_nugget_mean",
        }
    }
}

/// Penalties a head's fit chooses among (on standardised reads, loss averaged per verdict).
pub const HEAD_L2: [f64; 5] = [1e-3, 1e-2, 1e-1, 1.0, 10.0];

/// A fitted read-out: standardise the read, then one logistic unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// Which read.
    pub pool: HiddenPool,
    /// Per-dimension mean.
    pub mean: Vec<f64>,
    /// Per-dimension standard deviation.
    pub std: Vec<f64>,
    /// One weight per dimension (of the standardised read).
    pub weights: Vec<f64>,
    /// Bias.
    pub bias: f64,
    /// The L2 penalty it was fitted with.
    pub l2: f64,
}

/// The soft target of a gold label: support 1, partial 0.5, not 0.
pub fn target(gold: Label) -> f64 {
    match gold {
        Label::Support => 1.0,
        Label::PartialSupport => 0.5,
        Label::NotSupport => 0.0,
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

impl Head {
    /// The support logit of one verdict; `None` when the read is missing or of another width
    /// (another model).
    pub fn logit(&self, h: &HiddenRead) -> Option<f64> {
        let x = self.pool.read(h)?;
        if x.len() != self.weights.len() {
            return None;
        }
        let z = x
            .iter()
            .zip(&self.mean)
            .zip(&self.std)
            .zip(&self.weights)
            .map(|(((&v, m), s), w)| w * (f64::from(v) - m) / s)
            .sum::<f64>();
        Some(self.bias + z)
    }

    /// Fit on `xs` (one read per verdict, all of one width) with soft `targets` in [0, 1] and
    /// a weight per verdict, penalty `l2`: weighted logistic loss by accelerated gradient
    /// descent with the step from the loss's curvature bound (power iteration).
    pub fn fit(pool: HiddenPool, xs: &[&[f32]], targets: &[f64], weights: &[f64], l2: f64) -> Head {
        let n = xs.len();
        let d = xs.first().map_or(0, |x| x.len());
        let total: f64 = weights.iter().sum::<f64>().max(1e-12);
        let mut mean = vec![0.0; d];
        for x in xs {
            for (m, &v) in mean.iter_mut().zip(x.iter()) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
        let mut std = vec![0.0; d];
        for x in xs {
            for ((s, &v), m) in std.iter_mut().zip(x.iter()).zip(&mean) {
                *s += (f64::from(v) - m).powi(2);
            }
        }
        std.iter_mut().for_each(|s| *s = (*s / n.max(1) as f64).sqrt().max(1e-6));
        let z: Vec<Vec<f64>> = xs
            .iter()
            .map(|x| x.iter().zip(&mean).zip(&std).map(|((&v, m), s)| (f64::from(v) - m) / s).collect())
            .collect();
        // Curvature bound: 1/4 of the largest eigenvalue of the weighted second moment (bias
        // column included), plus the penalty.
        let mut v = vec![1.0 / ((d + 1) as f64).sqrt(); d + 1];
        let mut lambda = 1.0;
        for _ in 0..20 {
            let mut next = vec![0.0; d + 1];
            for (zi, &wi) in z.iter().zip(weights) {
                let dot = v[0] + zi.iter().zip(&v[1..]).map(|(a, b)| a * b).sum::<f64>();
                let c = wi * dot / total;
                next[0] += c;
                for (nj, &a) in next[1..].iter_mut().zip(zi) {
                    *nj += c * a;
                }
            }
            lambda = next.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            v = next.into_iter().map(|x| x / lambda).collect();
        }
        let step = 1.0 / (0.25 * lambda * 1.05 + l2);
        let mut w = vec![0.0; d + 1];
        let mut prev = w.clone();
        for t in 0..400 {
            // Nesterov: gradient at the look-ahead point.
            let mom = t as f64 / (t as f64 + 3.0);
            let look: Vec<f64> = w.iter().zip(&prev).map(|(a, b)| a + mom * (a - b)).collect();
            let mut grad = vec![0.0; d + 1];
            for ((zi, &ti), &wi) in z.iter().zip(targets).zip(weights) {
                let s = look[0] + zi.iter().zip(&look[1..]).map(|(a, b)| a * b).sum::<f64>();
                let g = wi * (sigmoid(s) - ti) / total;
                grad[0] += g;
                for (gj, &a) in grad[1..].iter_mut().zip(zi) {
                    *gj += g * a;
                }
            }
            for (j, gj) in grad.iter_mut().enumerate().skip(1) {
                *gj += l2 * look[j];
            }
            prev = w;
            w = look.iter().zip(&grad).map(|(a, g)| a - step * g).collect();
        }
        Head { pool, mean, std, weights: w[1..].to_vec(), bias: w[0], l2 }
    }

    /// Check a head read from a file: matching widths and finite numbers.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        let d = self.weights.len();
        let bad = |field: &str, why: String| Err((field.to_string(), why));
        if d == 0 {
            return bad("head.weights", "is empty".into());
        }
        for (field, v) in [("head.mean", &self.mean), ("head.std", &self.std)] {
            if v.len() != d {
                return bad(field, format!("has {} values for a width of {d}", v.len()));
            }
        }
        let all = self.mean.iter().chain(&self.std).chain(&self.weights).chain([&self.bias, &self.l2]);
        if all.into_iter().any(|x| !x.is_finite()) {
            return bad("head", "holds a number that is not finite".into());
        }
        if self.std.iter().any(|&s| s <= 0.0) {
            return bad("head.std", "holds a value that is not positive".into());
        }
        Ok(())
    }
}

/// Area under the ROC curve of `scores` for separating supported (target 1) from unsupported
/// (target 0) verdicts; partial ones are left out. Ties count half. `None` without both.
pub fn auc(scores: &[f64], targets: &[f64]) -> Option<f64> {
    let mut pairs: Vec<(f64, bool)> =
        scores.iter().zip(targets).filter(|(_, &t)| t == 0.0 || t == 1.0).map(|(&s, &t)| (s, t == 1.0)).collect();
    let pos = pairs.iter().filter(|p| p.1).count();
    let neg = pairs.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mann-Whitney U from average ranks.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j < pairs.len() && pairs[j].0 == pairs[i].0 {
            j += 1;
        }
        let avg = (i + j + 1) as f64 / 2.0;
        rank_sum += avg * pairs[i..j].iter().filter(|p| p.1).count() as f64;
        i = j;
    }
    Some((rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64)
}

/// Labeled reads a head is fitted on.
pub struct HeadData<'a> {
    /// Each verdict's hidden states.
    pub reads: Vec<&'a HiddenRead>,
    /// Soft targets ([`target`]).
    pub targets: Vec<f64>,
    /// Weights (each file counting the same, classes balanced).
    pub weights: Vec<f64>,
    /// Cross-validation fold of each verdict (by query).
    pub folds: Vec<usize>,
    /// Group (query) of each verdict, for learning-curve draws.
    pub groups: Vec<u64>,
}

/// One candidate of a head's choice with its held-out AUC.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeadCandidate {
    /// Read.
    pub pool: HiddenPool,
    /// Penalty.
    pub l2: f64,
    /// Mean held-out AUC over the folds.
    pub auc: f64,
}

impl HeadData<'_> {
    fn xs(&self, pool: HiddenPool, idx: &[usize]) -> Option<Vec<&[f32]>> {
        idx.iter().map(|&i| pool.read(self.reads[i])).collect()
    }

    fn fit_on(&self, pool: HiddenPool, l2: f64, idx: &[usize]) -> Option<Head> {
        let xs = self.xs(pool, idx)?;
        let t: Vec<f64> = idx.iter().map(|&i| self.targets[i]).collect();
        let w: Vec<f64> = idx.iter().map(|&i| self.weights[i]).collect();
        Some(Head::fit(pool, &xs, &t, &w, l2))
    }

    /// Held-out AUC of `(pool, l2)` fitted on the verdicts of `train` and scored on `test`.
    fn held_out_auc(&self, pool: HiddenPool, l2: f64, train: &[usize], test: &[usize]) -> Option<f64> {
        let head = self.fit_on(pool, l2, train)?;
        let s: Vec<f64> = test.iter().map(|&i| head.logit(self.reads[i]).unwrap_or(0.0)).collect();
        let t: Vec<f64> = test.iter().map(|&i| self.targets[i]).collect();
        auc(&s, &t)
    }

    /// Choose the read and penalty by fold cross-validation (mean held-out AUC), every
    /// candidate with its score, best first.
    pub fn choose(&self) -> Vec<HeadCandidate> {
        let folds = self.folds.iter().copied().max().map_or(0, |m| m + 1);
        let mut out = Vec::new();
        for pool in HiddenPool::ALL {
            if self.reads.iter().any(|r| pool.read(r).is_none()) {
                continue;
            }
            for l2 in HEAD_L2 {
                let aucs: Vec<f64> = (0..folds)
                    .filter_map(|k| {
                        let (test, train): (Vec<usize>, Vec<usize>) =
                            (0..self.reads.len()).partition(|&i| self.folds[i] == k);
                        self.held_out_auc(pool, l2, &train, &test)
                    })
                    .collect();
                if !aucs.is_empty() {
                    out.push(HeadCandidate { pool, l2, auc: aucs.iter().sum::<f64>() / aucs.len() as f64 });
                }
            }
        }
        out.sort_by(|a, b| b.auc.total_cmp(&a.auc));
        out
    }

    /// The chosen head's logit for each verdict from a head that never saw it: fitted on the
    /// verdicts whose `unit` differs (unit = file, so a stack fitted on these logits learns how
    /// far the head carries to a source it has not seen; or fold, with one file).
    pub fn cross_logits(&self, pool: HiddenPool, l2: f64, units: &[usize]) -> Vec<f64> {
        let n_units = units.iter().copied().max().map_or(0, |m| m + 1);
        let mut out = vec![f64::NAN; self.reads.len()];
        for u in 0..n_units {
            let (test, train): (Vec<usize>, Vec<usize>) = (0..self.reads.len()).partition(|&i| units[i] == u);
            if test.is_empty() || train.is_empty() {
                continue;
            }
            if let Some(head) = self.fit_on(pool, l2, &train) {
                for i in test {
                    out[i] = head.logit(self.reads[i]).unwrap_or(f64::NAN);
                }
            }
        }
        out
    }

    /// Fit the head on every verdict.
    pub fn fit_all(&self, pool: HiddenPool, l2: f64) -> Option<Head> {
        self.fit_on(pool, l2, &(0..self.reads.len()).collect::<Vec<_>>())
    }

    /// The head's learning curve: for each size, held-out AUC (each fold left out in turn,
    /// `draws` random draws of whole groups from the other folds until `size` verdicts), mean
    /// over folds and draws; `(size asked, verdicts used on average, AUC)`.
    pub fn learning_curve(&self, pool: HiddenPool, l2: f64, sizes: &[usize], draws: usize) -> Vec<(usize, usize, f64)> {
        let folds = self.folds.iter().copied().max().map_or(0, |m| m + 1);
        let mut rng = Rng::new(17);
        sizes
            .iter()
            .map(|&size| {
                let (mut aucs, mut used) = (Vec::new(), Vec::new());
                for k in 0..folds {
                    let (test, pool_idx): (Vec<usize>, Vec<usize>) =
                        (0..self.reads.len()).partition(|&i| self.folds[i] == k);
                    let mut groups: Vec<u64> = pool_idx.iter().map(|&i| self.groups[i]).collect();
                    groups.sort_unstable();
                    groups.dedup();
                    for _ in 0..draws {
                        // Shuffle the groups, take them whole until `size` verdicts.
                        for i in (1..groups.len()).rev() {
                            groups.swap(i, rng.below(i + 1));
                        }
                        let mut train = Vec::new();
                        for g in &groups {
                            if train.len() >= size {
                                break;
                            }
                            train.extend(pool_idx.iter().copied().filter(|&i| self.groups[i] == *g));
                        }
                        if let Some(a) = self.held_out_auc(pool, l2, &train, &test) {
                            aucs.push(a);
                            used.push(train.len());
                        }
                    }
                }
                let n = aucs.len().max(1) as f64;
                (size, (used.iter().sum::<usize>() as f64 / n) as usize, aucs.iter().sum::<f64>() / n)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_recovers_the_separating_direction_of_a_synthetic_set() {
        // 40 dimensions of different scales, labels by the sign of a known direction.
        let d = 40;
        let mut rng = Rng::new(5);
        let mut normal = || {
            // Sum of uniforms: close enough to normal for this.
            (0..12).map(|_| rng.below(1_000_000) as f64 / 1e6).sum::<f64>() - 6.0
        };
        let truth: Vec<f64> = (0..d).map(|_| normal()).collect();
        let scale: Vec<f64> = (0..d).map(|j| 0.5 + (j % 5) as f64).collect();
        let n = 1500;
        let xs: Vec<Vec<f32>> = (0..n).map(|_| (0..d).map(|j| (normal() * scale[j]) as f32).collect()).collect();
        let targets: Vec<f64> = xs
            .iter()
            .map(|x| {
                let s: f64 = x.iter().zip(&truth).map(|(&v, w)| f64::from(v) * w).sum();
                f64::from(u8::from(s > 0.0))
            })
            .collect();
        let refs: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let head = Head::fit(HiddenPool::Last, &refs, &targets, &vec![1.0; n], 1e-3);
        head.validate().unwrap();
        // The direction in the original space: weight / std per dimension.
        let got: Vec<f64> = head.weights.iter().zip(&head.std).map(|(w, s)| w / s).collect();
        let cos = got.iter().zip(&truth).map(|(a, b)| a * b).sum::<f64>()
            / (got.iter().map(|a| a * a).sum::<f64>().sqrt() * truth.iter().map(|b| b * b).sum::<f64>().sqrt());
        assert!(cos > 0.95, "cosine with the true direction {cos}");
        let reads: Vec<HiddenRead> = xs.iter().map(|x| HiddenRead::last_only(x.clone())).collect();
        let scores: Vec<f64> = reads.iter().map(|r| head.logit(r).unwrap()).collect();
        let correct = scores.iter().zip(&targets).filter(|(s, t)| (**s > 0.0) == (**t == 1.0)).count();
        assert!(correct as f64 / n as f64 > 0.95, "{correct} of {n}");
        assert!(auc(&scores, &targets).unwrap() > 0.99);
        // A read of another width (another model) gives no logit rather than a wrong one.
        assert_eq!(head.logit(&HiddenRead::last_only(vec![0.0; d + 1])), None);
        assert_eq!(head.logit(&HiddenRead::last_only(xs[0].clone())).map(|v| v.is_finite()), Some(true));
        // Chosen by cross-validation, held-out AUC high; a learning curve that rises.
        let data = HeadData {
            reads: reads.iter().collect(),
            targets: targets.clone(),
            weights: vec![1.0; n],
            folds: (0..n).map(|i| i % 4).collect(),
            groups: (0..n).map(|i| (i / 3) as u64).collect(),
        };
        let chosen = data.choose();
        assert_eq!(chosen.len(), HEAD_L2.len(), "only `last` reads exist");
        assert!(chosen[0].auc > 0.97, "{chosen:?}");
        let curve = data.learning_curve(HiddenPool::Last, chosen[0].l2, &[30, 900], 2);
        assert!(curve[0].2 < curve[1].2, "{curve:?}");
        assert!(curve[0].1 >= 30 && curve[0].1 < 40, "whole groups of 3: {curve:?}");
    }

    #[test]
    fn auc_counts_ties_half_and_skips_partial() {
        assert_eq!(auc(&[0.1, 0.9], &[0.0, 1.0]), Some(1.0));
        assert_eq!(auc(&[0.9, 0.1], &[0.0, 1.0]), Some(0.0));
        assert_eq!(auc(&[0.5, 0.5], &[0.0, 1.0]), Some(0.5));
        assert_eq!(auc(&[0.1, 0.3, 0.9], &[0.0, 0.5, 1.0]), Some(1.0));
        assert_eq!(auc(&[0.1], &[1.0]), None);
    }
}
