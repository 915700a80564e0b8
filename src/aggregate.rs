//! Aggregation: per-nugget verdicts -> per-answer scores and rewards (AutoNuggetizer scores,
//! the weighted reward with pitfalls, a soft reward from probabilities, sample-level max).

use serde::{Deserialize, Serialize};

use crate::label::Grades;
pub use crate::label::LabelProbs;
use crate::rubric::{Importance, Label, Nugget};

/// Who decided a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// The model.
    Llm,
    /// Normalised exact match.
    ExactMatch,
    /// Containment.
    Contains,
    /// Regular expression.
    Regex,
    /// Number within tolerance.
    Numeric,
}

/// The model's raw label distribution and log-probabilities over the whole vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawScore {
    /// Distribution renormalised over the labels, before calibration.
    pub probs: LabelProbs,
    /// log P of each label's words (support, partial, not) over the vocabulary.
    #[serde(deserialize_with = "logprobs_or_null")]
    pub logprobs: [f64; 3],
    /// How expected the nugget's own tokens were after the passage, when the backend reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nugget_lp: Option<NuggetLp>,
    /// The same after only the window of the passage that matches the nugget best (one or two
    /// sentences, see [`crate::lexical::align`]), read for long passages, where the rest of the
    /// text dilutes the whole-passage read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_lp: Option<NuggetLp>,
    /// The model's final hidden states, when read (`--hidden`): what a head fitted by `gavel
    /// calibrate --stack aligned-hidden` reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<HiddenRead>,
}

/// The model's hidden states for one verdict: the final layer's (after the output norm) and a
/// middle layer's output (the residual stream halfway up, where small models' probes often read
/// more than at the top).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HiddenRead {
    /// At the label position (the last token of the prompt, where the label is read).
    pub last: Vec<f32>,
    /// The mean over the positions that read the nugget's tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nugget_mean: Option<Vec<f32>>,
    /// The middle layer at the label position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid: Option<Vec<f32>>,
    /// The middle layer's mean over the positions that read the nugget's tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mid_nugget_mean: Option<Vec<f32>>,
}

impl HiddenRead {
    /// A read of the final layer at the label position only.
    pub fn last_only(last: Vec<f32>) -> HiddenRead {
        HiddenRead { last, nugget_mean: None, mid: None, mid_nugget_mean: None }
    }
}

/// Reads log-probabilities as written: JSON has no -inf, so serde_json writes it as null.
fn logprobs_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<[f64; 3], D::Error> {
    let v: [Option<f64>; 3] = Deserialize::deserialize(d)?;
    Ok(v.map(|x| x.unwrap_or(f64::NEG_INFINITY)))
}

/// Summary of the log-probabilities of a nugget's tokens given the passage before it (read in
/// the same forward pass as the label): a nugget the passage states is predictable; a wrong
/// date or name is a surprise.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NuggetLp {
    /// Mean per-token log-probability.
    pub mean: f64,
    /// Lowest token log-probability.
    pub min: f64,
    /// Mean of the three lowest.
    pub low3: f64,
    /// Tokens read.
    pub tokens: usize,
    /// Pointwise mutual information of passage and nugget, per token: the mean log-probability
    /// above minus the same with a content-free passage ("N/A"). Fluent, generic nuggets are
    /// likely anywhere; this measures what the passage itself adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmi_mean: Option<f64>,
    /// The mean of the three lowest per-token PMIs (the tokens the passage explains least).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pmi_low3: Option<f64>,
}

fn mean_lowest(v: &[f64], k: usize) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let k = k.min(v.len()).max(1);
    v[..k].iter().sum::<f64>() / k as f64
}

impl NuggetLp {
    /// Summarise per-token log-probabilities given the passage (`cond`) and, when read, given a
    /// content-free passage (`base`); `None` when there are none.
    pub fn new(cond: &[f32], base: Option<&[f32]>) -> Option<NuggetLp> {
        let v: Vec<f64> = cond.iter().map(|&l| f64::from(l).max(-30.0)).collect();
        if v.is_empty() {
            return None;
        }
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let low3 = mean_lowest(&v, 3);
        let (pmi_mean, pmi_low3) = match base {
            Some(b) if !b.is_empty() => {
                let w: Vec<f64> = b.iter().map(|&l| f64::from(l).max(-30.0)).collect();
                let base_mean = w.iter().sum::<f64>() / w.len() as f64;
                // Token by token when both read the same tokens, else the summaries' difference.
                let low = if w.len() == n {
                    let d: Vec<f64> = v.iter().zip(&w).map(|(c, b)| c - b).collect();
                    mean_lowest(&d, 3)
                } else {
                    low3 - mean_lowest(&w, 3)
                };
                (Some(mean - base_mean), Some(low))
            }
            _ => (None, None),
        };
        Some(NuggetLp { mean, min: mean_lowest(&v, 1), low3, tokens: n, pmi_mean, pmi_low3 })
    }
}

/// Where a block lies in its record (see [`Verdict::block_span`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSpan {
    /// The passage it was cut from; `None`: the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passage: Option<usize>,
    /// First byte.
    pub start: usize,
    /// Byte after the last.
    pub end: usize,
}

impl BlockSpan {
    /// The block's text in a record with this `answer` and `passages` (the whole answer when
    /// there is no span or it does not fit).
    pub fn text<'a>(span: Option<&BlockSpan>, answer: &'a str, passages: &'a [String]) -> &'a str {
        let Some(s) = span else { return answer };
        let source = match s.passage {
            Some(p) => passages.get(p).map_or(answer, String::as_str),
            None => answer,
        };
        source.get(s.start..s.end).unwrap_or(source)
    }
}

/// The verdict for one nugget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Final label.
    pub label: Label,
    /// Label distribution (scored mode); absent for deterministic checks and reasoned mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probs: Option<LabelProbs>,
    /// Expected credit in [0, 1]: from `probs` when present, else the label's value.
    pub score: f64,
    /// Who decided.
    pub by: DecidedBy,
    /// The model's uncalibrated output (scored mode), kept for evaluation and stacking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawScore>,
    /// Rationale (reasoned mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
    /// Quoted evidence from the judged text (reasoned mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quote: Option<String>,
    /// When the judged text was several blocks (a record's `passages`, or an answer too long
    /// for the context): the index of the block that decided (the one that supports the nugget
    /// best, "sample level").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<usize>,
    /// Where the deciding block lies: in passage `passage` (or in the answer, `None`), bytes
    /// `start..end`; so that features of the judged text can be read again from the record
    /// (`eval --from`, `calibrate --from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_span: Option<BlockSpan>,
}

impl Verdict {
    /// A deterministic verdict.
    pub fn decided(label: Label, by: DecidedBy) -> Self {
        Verdict {
            label,
            probs: None,
            score: label.value(),
            by,
            raw: None,
            rationale: None,
            quote: None,
            block: None,
            block_span: None,
        }
    }

    /// A scored-mode model verdict from a distribution.
    pub fn from_probs(probs: LabelProbs) -> Self {
        Verdict::scored(probs, probs.argmax())
    }

    /// A scored-mode model verdict from a distribution and the label a calibration decided
    /// (an ordinal stack's cuts can differ from the distribution's peak).
    pub fn scored(probs: LabelProbs, label: Label) -> Self {
        Verdict {
            label,
            probs: Some(probs),
            score: probs.expected_value(),
            by: DecidedBy::Llm,
            raw: None,
            rationale: None,
            quote: None,
            block: None,
            block_span: None,
        }
    }

    /// Fold partial support into not support (2-grade mode).
    pub fn two_grade(mut self) -> Self {
        if let Some(p) = self.probs {
            let folded = LabelProbs::from_array(Grades::Two.fold_probs(p.to_array()));
            self.probs = Some(folded);
            self.score = folded.expected_value();
            self.label = folded.argmax();
        } else {
            self.label = Grades::Two.fold(self.label);
            self.score = self.label.value();
        }
        self
    }
}

/// Per-answer scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// (#support + 0.5 #partial) / #nuggets, over non-pitfall nuggets.
    pub all_score: f64,
    /// The same over vital nuggets; `None` when there are none.
    pub vital_score: Option<f64>,
    /// #support / #nuggets.
    pub strict_all_score: f64,
    /// #support / #vital.
    pub strict_vital_score: Option<f64>,
    /// sum w_i v_i / sum_{w_i > 0} w_i, pitfalls (w < 0) subtract; may be negative.
    pub weighted_reward: f64,
    /// The weighted reward with each v_i replaced by its expected credit under the label distribution.
    pub soft_reward: f64,
}

fn ratio(num: f64, den: usize) -> Option<f64> {
    (den > 0).then(|| num / den as f64)
}

/// Aggregate the verdicts of one answer. `nuggets` and `verdicts` are parallel.
pub fn aggregate(nuggets: &[Nugget], verdicts: &[Verdict]) -> Scores {
    debug_assert_eq!(nuggets.len(), verdicts.len());
    let (mut all, mut strict_all, mut n_all) = (0.0, 0.0, 0usize);
    let (mut vital, mut strict_vital, mut n_vital) = (0.0, 0.0, 0usize);
    let (mut weighted, mut soft, mut positive, mut magnitude) = (0.0, 0.0, 0.0, 0.0);
    for (n, v) in nuggets.iter().zip(verdicts) {
        let value = v.label.value();
        let strict = if v.label == Label::Support { 1.0 } else { 0.0 };
        weighted += n.weight * value;
        soft += n.weight * v.score;
        if n.weight > 0.0 {
            positive += n.weight;
        }
        magnitude += n.weight.abs();
        if n.is_pitfall() {
            continue;
        }
        all += value;
        strict_all += strict;
        n_all += 1;
        if n.importance == Importance::Vital {
            vital += value;
            strict_vital += strict;
            n_vital += 1;
        }
    }
    // A rubric of pitfalls only has no positive weight to divide by: its hits are counted
    // against the pitfalls' total weight, so a hit costs (-1 when all hit) where it gave 0.
    let reward = |x: f64| {
        if positive > 0.0 {
            x / positive
        } else if magnitude > 0.0 {
            x / magnitude
        } else {
            0.0
        }
    };
    Scores {
        all_score: ratio(all, n_all).unwrap_or(0.0),
        vital_score: ratio(vital, n_vital),
        strict_all_score: ratio(strict_all, n_all).unwrap_or(0.0),
        strict_vital_score: ratio(strict_vital, n_vital),
        weighted_reward: reward(weighted),
        soft_reward: reward(soft),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rubric::Importance::{Okay, Vital};

    #[test]
    fn nugget_likelihood_summaries() {
        let n = NuggetLp::new(&[-1.0, -4.0, -0.5, -2.5], Some(&[-2.0, -3.0, -1.5, -2.5])).unwrap();
        assert_eq!(n.tokens, 4);
        assert!((n.mean - -2.0).abs() < 1e-12);
        assert_eq!(n.min, -4.0);
        assert!((n.low3 - (-4.0 - 2.5 - 1.0) / 3.0).abs() < 1e-12);
        // Per-token PMI: 1, -1, 1, 0 -> mean 0.25, three lowest -1, 0, 1 -> 0.
        assert!((n.pmi_mean.unwrap() - 0.25).abs() < 1e-12);
        assert!(n.pmi_low3.unwrap().abs() < 1e-12);
        // Different token counts: the summaries' difference.
        let m = NuggetLp::new(&[-1.0, -3.0], Some(&[-2.0])).unwrap();
        assert!((m.pmi_mean.unwrap() - 0.0).abs() < 1e-12);
        assert!((m.pmi_low3.unwrap() - 0.0).abs() < 1e-12);
        assert_eq!(NuggetLp::new(&[-1.0], None).unwrap().pmi_mean, None);
        assert!(NuggetLp::new(&[], None).is_none());
        let json = serde_json::to_value(n).unwrap();
        assert_eq!(serde_json::from_value::<NuggetLp>(json).unwrap(), n);
    }

    fn nugget(imp: Importance) -> Nugget {
        Nugget::new("n").with_importance(imp)
    }

    fn v(l: Label) -> Verdict {
        Verdict::decided(l, DecidedBy::Llm)
    }

    /// Hand-computed with AutoNuggetizer's definitions: 4 nuggets, 2 vital;
    /// vital: support + partial, okay: support + not.
    #[test]
    fn autonuggetizer_scores() {
        let nuggets = vec![nugget(Vital), nugget(Vital), nugget(Okay), nugget(Okay)];
        let verdicts = vec![v(Label::Support), v(Label::PartialSupport), v(Label::Support), v(Label::NotSupport)];
        let s = aggregate(&nuggets, &verdicts);
        assert_eq!(s.all_score, 2.5 / 4.0);
        assert_eq!(s.vital_score, Some(1.5 / 2.0));
        assert_eq!(s.strict_all_score, 2.0 / 4.0);
        assert_eq!(s.strict_vital_score, Some(1.0 / 2.0));
        // weights 1, 1, 0.5, 0.5: (1 + 0.5 + 0.5 + 0) / 3
        assert!((s.weighted_reward - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.soft_reward - s.weighted_reward).abs() < 1e-12);
    }

    #[test]
    fn pitfalls_subtract_and_are_not_counted_as_nuggets() {
        let nuggets =
            vec![nugget(Vital).with_weight(2.0), nugget(Okay).with_weight(1.0), nugget(Vital).with_weight(-1.5)];
        let verdicts = vec![v(Label::Support), v(Label::PartialSupport), v(Label::Support)];
        let s = aggregate(&nuggets, &verdicts);
        // (2*1 + 1*0.5 - 1.5*1) / 3
        assert!((s.weighted_reward - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.all_score, 1.5 / 2.0);
        assert_eq!(s.vital_score, Some(1.0));
    }

    #[test]
    fn a_rubric_of_pitfalls_only_costs_its_hits() {
        let nuggets = vec![nugget(Vital).with_weight(-1.0), nugget(Vital).with_weight(-3.0)];
        // Both avoided: 0; the heavier hit: -3/4; both hit: -1 (it was 0 whatever was hit).
        let s = aggregate(&nuggets, &[v(Label::NotSupport), v(Label::NotSupport)]);
        assert_eq!(s.weighted_reward, 0.0);
        let s = aggregate(&nuggets, &[v(Label::NotSupport), v(Label::Support)]);
        assert!((s.weighted_reward - -0.75).abs() < 1e-12);
        let s = aggregate(&nuggets, &[v(Label::Support), v(Label::Support)]);
        assert!((s.weighted_reward - -1.0).abs() < 1e-12);
        assert_eq!(aggregate(&[], &[]).weighted_reward, 0.0);
    }

    #[test]
    fn no_vital_nuggets_means_no_vital_score() {
        let s = aggregate(&[nugget(Okay)], &[v(Label::Support)]);
        assert_eq!(s.vital_score, None);
        assert_eq!(s.strict_vital_score, None);
        assert_eq!(s.all_score, 1.0);
        assert_eq!(s.weighted_reward, 1.0);
    }

    #[test]
    fn soft_reward_uses_expected_credit() {
        let p = LabelProbs::from_array([0.6, 0.2, 0.2]);
        let s = aggregate(&[nugget(Vital), nugget(Vital)], &[Verdict::from_probs(p), v(Label::NotSupport)]);
        assert!((s.soft_reward - 0.7 / 2.0).abs() < 1e-12);
        assert_eq!(s.all_score, 0.5);
    }

    #[test]
    fn argmax_and_two_grade() {
        assert_eq!(LabelProbs::from_array([0.2, 0.5, 0.3]).argmax(), Label::PartialSupport);
        assert_eq!(LabelProbs::from_array([0.4, 0.2, 0.4]).argmax(), Label::NotSupport);
        let folded = Verdict::from_probs(LabelProbs::from_array([0.4, 0.35, 0.25])).two_grade();
        assert_eq!(folded.label, Label::NotSupport);
        assert!((folded.score - 0.4).abs() < 1e-12);
    }
}
