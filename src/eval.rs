//! Reports over a labeled file: the verifier's labels joined with the gold ones, next to the
//! no-model baselines (majority class, lexical overlap), per source, with calibration and
//! bootstrap intervals; and re-deciding stored verdicts under another calibration.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::aggregate::Verdict;
use crate::calibrate::Calibrator;
use crate::label::{Grades, Label, LabelProbs};
use crate::lexical::{lexical_overlap, LexicalThresholds};
use crate::metrics::{agreement, bootstrap, calibration, majority, sample_level, Agreement, Calibration, Intervals};
use crate::record::{group_of, output_mismatch, Outputs, Task, UniqueIds};
use crate::rubric::{Check, CheckOutcome};
use crate::stack::FeatureInput;

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
    /// The query (or article) of its record ([`crate::record::group_of`]): bootstrap
    /// intervals resample these, since the records of one query are not independent.
    pub cluster: u64,
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
    /// Verdicts judged that have no gold label to score them against (left out of the metrics).
    pub unlabeled: usize,
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
    /// Verdicts without a gold label, left out of the metrics (said, not dropped silently).
    #[serde(skip_serializing_if = "is_zero")]
    pub unlabeled: usize,
    /// Long-form results.
    pub rubric: Option<RubricReport>,
    /// Short-form results.
    pub short: Option<ShortReport>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn pairs_of(items: &[NuggetItem], f: impl Fn(&NuggetItem) -> Label) -> Vec<(Label, Label)> {
    items.iter().map(|i| (i.gold, f(i))).collect()
}

/// Build the report.
pub fn build_report(input: &EvalInput) -> EvalReport {
    let rubric = (!input.nuggets.is_empty()).then(|| {
        let items = &input.nuggets;
        let grades = Grades::of_golds(items.iter().map(|i| i.gold));
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
                    .map(|i| (i.cluster, i.gold, native(i), input.lexical.label(i.lexical)))
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
        unlabeled: input.unlabeled,
        rubric,
        short,
    }
}

/// Join labeled tasks with their output records (as written by `gavel verify`, found by
/// [`Outputs::get`]) into report input. Missing and failed records are counted as failures,
/// never dropped.
pub fn collect(
    name: &str,
    tasks: &[(usize, Task)],
    outputs: &Outputs,
    parse_failures: Vec<(usize, String)>,
) -> EvalInput {
    let mut input = EvalInput {
        name: name.to_string(),
        records: tasks.len() + parse_failures.len(),
        failures: parse_failures,
        ..Default::default()
    };
    let unique = UniqueIds::of(tasks.iter().map(|(_, t)| t));
    for (line, task) in tasks {
        let Some(out) = outputs.get(task.id.as_deref(), *line, unique.has(task)) else {
            input.failures.push((*line, "no output record".into()));
            continue;
        };
        if let Some(err) = &out.error {
            input.failures.push((*line, err.message.clone()));
            continue;
        }
        if let Some(why) = output_mismatch(task, out) {
            input.failures.push((*line, why));
            continue;
        }
        let source = task.source.clone().unwrap_or_else(|| name.to_string());
        let probs = |v: &Verdict| v.probs.map(LabelProbs::to_array);
        let raw_probs = |v: &Verdict| v.raw.as_ref().map(|r| r.probs.to_array());
        if task.is_short_form() {
            let (Some(gold), Some(v)) = (task.gold, out.verdicts.first()) else {
                input.unlabeled += usize::from(task.gold.is_none() && !out.verdicts.is_empty());
                continue;
            };
            let em = Check::ExactMatch { answers: task.gold_answers.clone(), fallback_llm: false };
            let contains = Check::Contains { answers: task.gold_answers.clone(), fallback_llm: false };
            input.short.push(ShortItem {
                source,
                gold: Grades::Two.fold(gold),
                em: em.evaluate(&task.answer) == CheckOutcome::Decided(Label::Support),
                contains: contains.evaluate(&task.answer) == CheckOutcome::Decided(Label::Support),
                model: v.verdict.label,
                probs: probs(&v.verdict),
                raw_probs: raw_probs(&v.verdict),
            });
            continue;
        }
        for (n, v) in task.nuggets.iter().zip(&out.verdicts) {
            let Some(gold) = n.gold else {
                input.unlabeled += 1;
                continue;
            };
            input.nuggets.push(NuggetItem {
                source: source.clone(),
                gold,
                pred: v.verdict.label,
                probs: probs(&v.verdict),
                raw_probs: raw_probs(&v.verdict),
                lexical: lexical_overlap(&n.text, &task.answer),
                group: task.query.as_ref().map(|q| format!("{q}\u{1}{}", n.text)),
                cluster: group_of(task),
            });
        }
    }
    input
}

/// Re-decide the model verdicts of output records from their raw model outputs (`raw`), under
/// `calibrator` (or uncalibrated when `None`), without running the model. Deterministic
/// verdicts are left as they are.
pub fn rescore_outputs(tasks: &[(usize, Task)], outputs: &mut Outputs, calibrator: Option<&Calibrator>) {
    // Decisions are made on the file's grading: 3-grade when any gold is partial support.
    let grades = Grades::of_golds(tasks.iter().flat_map(|(_, t)| t.nuggets.iter().filter_map(|n| n.gold)));
    let unique = UniqueIds::of(tasks.iter().map(|(_, t)| t));
    for (line, task) in tasks {
        let Some(out) = outputs.get_mut(task.id.as_deref(), *line, unique.has(task)) else {
            continue;
        };
        if output_mismatch(task, out).is_some() {
            continue;
        }
        for (i, v) in out.verdicts.iter_mut().enumerate().take(task.nuggets.len()) {
            let Some(raw) = v.verdict.raw.as_ref() else { continue };
            let (probs, label) = match calibrator {
                Some(c) => {
                    let judged =
                        crate::aggregate::BlockSpan::text(v.verdict.block_span.as_ref(), &task.answer, &task.passages);
                    c.verdict(raw.probs.to_array(), &FeatureInput::of(task, i, raw).judging(judged), grades)
                }
                None => (raw.probs.to_array(), raw.probs.argmax()),
            };
            let lp = LabelProbs::from_array(probs);
            v.verdict.probs = Some(lp);
            v.verdict.label = label;
            v.verdict.score = lp.expected_value();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Label::{NotSupport as N, PartialSupport as P, Support as S};

    /// Verdicts without gold are left out of the metrics and counted in the report.
    #[test]
    fn verdicts_without_gold_are_counted_not_dropped_silently() {
        let task = crate::record::parse_record(
            r#"{"answer":"x","nuggets":[{"text":"a","gold":"support"},{"text":"b"},{"text":"c","gold":null}]}"#,
            "l.jsonl:1",
            None,
            crate::record::ShortForm::Hybrid,
        )
        .unwrap();
        let verdicts: Vec<serde_json::Value> = ["a", "b", "c"]
            .iter()
            .map(|n| serde_json::json!({"nugget": n, "importance": "vital", "weight": 1.0, "label": "support", "score": 1.0, "by": "llm"}))
            .collect();
        let out: crate::record::OutputRecord =
            serde_json::from_value(serde_json::json!({"line": 1, "verdicts": verdicts})).unwrap();
        let input = collect("l.jsonl", &[(1, task)], &Outputs::new(vec![out]), Vec::new());
        assert_eq!((input.nuggets.len(), input.unlabeled), (1, 2));
        let md = crate::report::to_markdown(&build_report(&input));
        assert!(md.contains("2 verdicts without a gold label (not scored)"), "{md}");
    }

    #[test]
    fn two_grade_reports_fold_the_partial_mass_before_choosing() {
        // 3-way argmax says support (0.45), but partial + not (0.55) outweighs it.
        let item = |gold, probs: [f64; 3]| NuggetItem {
            source: "s".into(),
            gold,
            pred: LabelProbs::from_array(probs).argmax(),
            probs: Some(probs),
            raw_probs: Some(probs),
            lexical: 0.0,
            group: None,
            cluster: 0,
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
            model: LabelProbs::from_array(probs).argmax(),
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
}
