//! Labeled files: reading them (a record that does not parse is kept with its line, never
//! dropped), their halves, the labeled verdicts that a judge run or an earlier verdicts file
//! gives for fitting a calibration, and the model's label prior on content-free answers.

use std::collections::HashSet;
use std::path::Path;

use crate::calibrate::{LabeledVerdict, CONTENT_FREE_ANSWERS};
use crate::error::{Error, Result};
use crate::judge::Judge;
use crate::record::{output_mismatch, parse_record, part_of, Outputs, Part, ShortForm, Task, UniqueIds};
use crate::rubric::Nugget;

/// The records of a labeled file.
#[derive(Debug, Clone, Default)]
pub struct Labeled {
    /// Records with their 1-based line numbers.
    pub tasks: Vec<(usize, Task)>,
    /// (line, message) of the records that did not parse.
    pub failures: Vec<(usize, String)>,
}

impl Labeled {
    /// Gold labels carried by the parsed records: one per labeled nugget, one per labeled
    /// short-form record.
    pub fn gold_count(&self) -> usize {
        self.tasks
            .iter()
            .map(|(_, t)| {
                if t.is_short_form() {
                    // The record's label stands for each of its criteria.
                    t.gold.map_or(0, |_| t.nuggets.len())
                } else {
                    t.nuggets.iter().filter(|n| n.gold.is_some()).count()
                }
            })
            .sum()
    }

    /// Fails, naming the file and the field, when records parsed but none carries a gold label
    /// (a misspelt label field would otherwise give a report, or a fit, with nothing to compare;
    /// checked before the model runs). A file whose records all failed to parse passes: the
    /// failures are reported with their lines.
    pub fn require_gold(&self, location: &str) -> Result<()> {
        if self.tasks.is_empty() || self.gold_count() > 0 {
            return Ok(());
        }
        Err(Error::field(
            location,
            "gold",
            format!(
                "no gold label in its {} record{}: give each nugget one, {{\"text\": ..., \"gold\": \
                 \"support\"}} (support, partial_support or not_support), or a short-form record \"gold\": \
                 \"correct\" or \"incorrect\"",
                self.tasks.len(),
                if self.tasks.len() == 1 { "" } else { "s" }
            ),
        ))
    }
}

/// A labeled file in messages: its path, and the half read when only one is.
pub fn location(path: &Path, part: Option<Part>) -> String {
    match part {
        Some(p) => format!("{} (part {p})", path.display()),
        None => path.display().to_string(),
    }
}

/// Read a labeled file; with `part`, keep that half's records only (parse failures are kept
/// whatever their half). Short-form records are read for the model to judge every one of them.
pub fn read_labeled(path: &Path, part: Option<Part>) -> Result<Labeled> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let name = path.display().to_string();
    let mut labeled = Labeled::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_record(line, &format!("{name}:{}", i + 1), None, ShortForm::Llm) {
            Ok(t) if part.is_none_or(|p| part_of(&t) == p) => labeled.tasks.push((i + 1, t)),
            Ok(_) => {}
            Err(e) => labeled.failures.push((i + 1, e.to_string())),
        }
    }
    Ok(labeled)
}

/// Labeled verdicts gathered for a fit, and the records that gave none.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// The model's labeled verdicts.
    pub verdicts: Vec<LabeledVerdict>,
    /// (file, line, why) of the records that were not judged or have no output.
    pub failed: Vec<(usize, usize, String)>,
}

impl Collected {
    /// Verdict `v` of nugget `nugget`, when the model read it; its features come from the text
    /// it was judged against (the deciding block, when there were blocks).
    fn add(&mut self, task: &Task, file: usize, nugget: usize, v: &crate::aggregate::Verdict) {
        let Some(raw) = &v.raw else { return };
        let judged = crate::aggregate::BlockSpan::text(v.block_span.as_ref(), &task.answer, &task.passages);
        if let Some(l) = LabeledVerdict::new(task, nugget, file, raw, judged) {
            self.verdicts.push(l);
        }
    }
}

/// Judge labeled records (`files[i]` is the file of `tasks[i]`) in batches of `batch` and keep
/// the model's raw reads; `progress(done, total)` is called after each batch.
pub fn judge_labeled(
    judge: &Judge,
    tasks: &[(usize, Task)],
    files: &[usize],
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Collected {
    let mut out = Collected::default();
    let batch = batch.max(1);
    for (k, chunk) in tasks.chunks(batch).enumerate() {
        let records: Vec<Task> = chunk.iter().map(|(_, t)| t.clone()).collect();
        for (b, ((line, task), r)) in chunk.iter().zip(judge.judge(&records)).enumerate() {
            let file = files[k * batch + b];
            match r {
                Ok(j) => {
                    for (i, v) in j.verdicts.iter().enumerate() {
                        out.add(task, file, i, v);
                    }
                }
                Err(e) => out.failed.push((file, *line, e.to_string())),
            }
        }
        progress(((k + 1) * batch).min(tasks.len()), tasks.len());
    }
    out
}

/// The labeled verdicts of records already judged: their raw reads in `outputs[file]`, verdicts
/// files written by an earlier `eval` or `verify` of the same labeled files. No model run.
pub fn from_outputs(tasks: &[(usize, Task)], files: &[usize], outputs: &[Outputs]) -> Collected {
    let mut out = Collected::default();
    // Ids are matched within a file: one input file's records against its verdicts file.
    let unique: Vec<UniqueIds> = (0..outputs.len())
        .map(|f| UniqueIds::of(tasks.iter().zip(files).filter(|&(_, &g)| g == f).map(|((_, t), _)| t)))
        .collect();
    for ((line, task), &file) in tasks.iter().zip(files) {
        let id_unique = unique.get(file).is_some_and(|u| u.has(task));
        let Some(record) = outputs.get(file).and_then(|o| o.get(task.id.as_deref(), *line, id_unique)) else {
            out.failed.push((file, *line, "no output record".into()));
            continue;
        };
        if let Some(e) = &record.error {
            out.failed.push((file, *line, e.message.clone()));
            continue;
        }
        if let Some(why) = output_mismatch(task, record) {
            out.failed.push((file, *line, why));
            continue;
        }
        for (i, v) in record.verdicts.iter().enumerate().take(task.nuggets.len()) {
            out.add(task, file, i, &v.verdict);
        }
    }
    out
}

/// The model's mean label distribution when content-free answers ("N/A", "", "[MASK]") are
/// judged against a sample of the records' own nuggets: the prior that contextual calibration
/// divides out. Uniform when nothing could be judged.
pub fn content_free_prior(judge: &Judge, tasks: &[(usize, Task)]) -> [f64; 3] {
    let mut sample: Vec<Nugget> = Vec::new();
    let mut seen = HashSet::new();
    for (_, t) in tasks {
        for n in &t.nuggets {
            if n.needs_model() && seen.insert(n.text.clone()) && sample.len() < 48 {
                sample.push(Nugget::new(n.text.clone()));
            }
        }
    }
    let cf_tasks: Vec<Task> = CONTENT_FREE_ANSWERS.iter().map(|a| Task::new(None, *a, sample.clone())).collect();
    let mut cf = [0.0; 3];
    let mut n = 0.0;
    for j in judge.judge(&cf_tasks).into_iter().flatten() {
        for v in j.verdicts {
            if let Some(raw) = v.raw {
                let p = raw.probs.to_array();
                for k in 0..3 {
                    cf[k] += p[k];
                }
                n += 1.0;
            }
        }
    }
    if n > 0.0 {
        [cf[0] / n, cf[1] / n, cf[2] / n]
    } else {
        [1.0 / 3.0; 3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labeled(lines: &str) -> (tempfile::TempDir, std::path::PathBuf, Labeled) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.jsonl");
        std::fs::write(&path, lines).unwrap();
        let l = read_labeled(&path, None).unwrap();
        (dir, path, l)
    }

    #[test]
    fn gold_labels_are_counted_per_nugget_and_per_short_form_record() {
        let (_d, path, l) = labeled(concat!(
            r#"{"id": "a", "answer": "x", "nuggets": [{"text": "x", "gold": "support"}, {"text": "y"}, {"text": "z", "gold": "not_support"}]}"#,
            "\n",
            r#"{"id": "b", "answer": "Paris", "gold_answers": ["Paris"], "gold": "correct"}"#,
            "\n",
            r#"{"id": "c", "answer": "Rome", "gold_answers": ["Paris"]}"#,
            "\nnot json\n",
        ));
        assert_eq!((l.tasks.len(), l.failures.len()), (3, 1));
        assert_eq!(l.gold_count(), 3);
        assert!(l.require_gold(&location(&path, None)).is_ok());
    }

    #[test]
    fn a_file_without_gold_labels_is_an_error_naming_it_but_one_that_did_not_parse_is_not() {
        let (_d, path, l) = labeled("{\"answer\": \"x\", \"nuggets\": [\"x\"], \"labels\": [\"support\"]}\n");
        assert_eq!(l.gold_count(), 0);
        let e = l.require_gold(&location(&path, Some(Part::B))).unwrap_err().to_string();
        assert!(e.contains("l.jsonl (part b)") && e.contains("gold") && e.contains("in its 1 record:"), "{e}");
        // Nothing parsed: the failures are the report, with their lines.
        let (_d, path, l) = labeled("not json\n");
        assert!(l.tasks.is_empty() && l.require_gold(&location(&path, None)).is_ok());
    }
}
