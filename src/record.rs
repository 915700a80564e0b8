//! Input records (JSON Lines: long-form with `nuggets`, short-form with `gold_answers`) and the
//! output records written for them.

use serde::{Deserialize, Serialize};

use crate::aggregate::{Scores, Verdict};
use crate::error::{Error, Result};
use crate::rubric::{Check, Label, Nugget, RawNugget, Rubric};

/// How short-form records (with `gold_answers`) are judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShortForm {
    /// Exact match, then containment of a gold answer, then the model only when both fail.
    #[default]
    Hybrid,
    /// Exact match first, the model only when it fails (the paper's EM + verifier).
    EmLlm,
    /// Normalised exact match only.
    Em,
    /// The model only.
    Llm,
}

/// One unit of work: a judged text and its rubric.
#[derive(Debug, Clone)]
pub struct Task {
    /// Record id, when given.
    pub id: Option<String>,
    /// Record source, when given.
    pub source: Option<String>,
    /// The question; may be absent.
    pub query: Option<String>,
    /// The judged text.
    pub answer: String,
    /// The criteria.
    pub nuggets: Vec<Nugget>,
    /// Gold answers of a short-form record (empty for long-form).
    pub gold_answers: Vec<String>,
    /// Record-level gold label (short-form `correct`/`incorrect`).
    pub gold: Option<Label>,
    /// Blocks the record brings (`passages`: retrieved passages, or an answer cut by its
    /// producer): each nugget is judged against each, and the block that supports it best
    /// decides. Empty: the answer is the one judged text (cut by the engine when too long).
    pub passages: Vec<String>,
}

impl Task {
    /// A long-form task.
    pub fn new(query: Option<String>, answer: impl Into<String>, nuggets: Vec<Nugget>) -> Self {
        Task {
            id: None,
            source: None,
            query,
            answer: answer.into(),
            nuggets,
            gold_answers: Vec::new(),
            gold: None,
            passages: Vec::new(),
        }
    }

    /// A short-form task: one criterion, "the answer is one of `gold_answers`".
    pub fn short_form(
        query: Option<String>,
        answer: impl Into<String>,
        gold_answers: Vec<String>,
        policy: ShortForm,
    ) -> Self {
        let nugget = short_form_nugget(&gold_answers, policy);
        Task {
            id: None,
            source: None,
            query,
            answer: answer.into(),
            nuggets: vec![nugget],
            gold_answers,
            gold: None,
            passages: Vec::new(),
        }
    }

    /// Whether this is a short-form record.
    pub fn is_short_form(&self) -> bool {
        !self.gold_answers.is_empty()
    }
}

fn short_form_nugget(gold: &[String], policy: ShortForm) -> Nugget {
    let text = gold.join("\" or \"");
    let check = match policy {
        ShortForm::Hybrid => Check::Contains { answers: gold.to_vec(), fallback_llm: true },
        ShortForm::EmLlm => Check::ExactMatch { answers: gold.to_vec(), fallback_llm: true },
        ShortForm::Em => Check::ExactMatch { answers: gold.to_vec(), fallback_llm: false },
        ShortForm::Llm => Check::Llm,
    };
    Nugget::new(text).with_check(check)
}

#[derive(Deserialize)]
struct RawRecord {
    id: Option<serde_json::Value>,
    source: Option<String>,
    query: Option<String>,
    answer: Option<String>,
    nuggets: Option<Vec<RawNugget>>,
    gold_answers: Option<Vec<serde_json::Value>>,
    gold: Option<crate::label::GoldText>,
    passages: Option<Vec<String>>,
}

/// What kind of JSON value `v` is, for messages ("an array", "null").
pub fn json_type(v: &serde_json::Value) -> &'static str {
    use serde_json::Value;
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A gold answer given as a JSON string, number or boolean, as the text a person writes: an
/// integral number without a fraction (`8.0` and `8` -> "8", `1e3` -> "1000"), other numbers
/// as Python prints them ([`python_float`]: `0.5`, `1e-05`), so that a label sent as a number
/// and one the Python client turned into text are the same text. `None` for arrays, objects and
/// null.
pub fn scalar_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Number(n) => Some(match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            Some(f) if n.is_f64() => python_float(f),
            _ => n.to_string(),
        }),
        _ => None,
    }
}

/// A finite float as Python's `repr` writes it: the shortest digits that read back to it, in
/// plain notation while the decimal point falls within 16 digits of them and the number is at
/// least 1e-4 ("0.0001", "1000000000000000.0"), else in scientific notation with a signed
/// exponent of at least two digits ("1e-05", "1.5e+300").
fn python_float(f: f64) -> String {
    // Rust's `{:e}` writes the shortest round-trip digits ("-1.5e300", "1e-5"), but where `f`
    // lies exactly halfway between two such strings it takes the upper one and Python the even
    // one (847472097840887.25 is "847472097840887.2"). `{:.Ne}` rounds the exact value half to
    // even: at the shortest length, its digits are Python's whenever they read back to `f`.
    let shortest = format!("{f:e}");
    let digits = shortest.split_once('e').map_or(0, |(m, _)| m.bytes().filter(u8::is_ascii_digit).count());
    let even = format!("{f:.*e}", digits.saturating_sub(1));
    let sci = if even.parse::<f64>().ok() == Some(f) { even } else { shortest };
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` writes an exponent");
    let exp: i32 = exp.parse().expect("`{:e}` writes an integral exponent");
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    // The number is 0.DIGITS x 10^point.
    let point = exp + 1;
    if !(-4 < point && point <= 16) {
        let tail = &digits[1..];
        let dot = if tail.is_empty() { "" } else { "." };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{}{dot}{tail}e{esign}{:02}", &digits[..1], exp.unsigned_abs());
    }
    let n = digits.len() as i32;
    if point <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point >= n {
        format!("{sign}{digits}{}.0", "0".repeat((point - n) as usize))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{sign}{int}.{frac}")
    }
}

/// A record's raw fields, or the error with the path of the field it is in (`answer`,
/// `nuggets[2].text`; `None` outside any field).
fn read_record(line: &str) -> std::result::Result<RawRecord, (Option<String>, serde_json::Error)> {
    let mut de = serde_json::Deserializer::from_str(line);
    let raw: RawRecord = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        ((!path.is_empty() && path != ".").then_some(path), e.into_inner())
    })?;
    de.end().map_err(|e| (None, e))?;
    Ok(raw)
}

/// Parse one JSON Lines record. `rubric`, when given, supplies the nuggets of every record.
pub fn parse_record(line: &str, location: &str, rubric: Option<&Rubric>, policy: ShortForm) -> Result<Task> {
    // A file saved with a byte-order mark carries it on its first line.
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    // A line that does not start an object: named for what it is (serde would say "expected
    // struct RawRecord", or "expected ident" of plain text).
    if !line.trim_start().starts_with('{') {
        let what = match serde_json::from_str::<serde_json::Value>(line) {
            Ok(v) => format!("this line is {}", json_type(&v)),
            Err(e) => format!("this line is not JSON ({}, column {})", crate::error::json_reason(&e), e.column()),
        };
        return Err(Error::Parse {
            location: location.to_string(),
            reason: format!("a record must be a JSON object ({{\"answer\": ..., ...}}), one per line; {what}"),
        });
    }
    let raw = read_record(line).map_err(|(field, e)| {
        let reason = crate::error::json_reason(&e);
        let location = format!("{location}, column {}", e.column());
        match field {
            // Well-formed JSON with a field of the wrong type or name.
            Some(field) if crate::error::is_field_error(line, &e) => Error::InvalidField { location, field, reason },
            Some(field) => Error::Parse { location: format!("{location}, field `{field}`"), reason },
            None => Error::Parse { location, reason },
        }
    })?;
    let id = raw.id.map(|v| match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    });
    let passages = raw.passages.unwrap_or_default();
    if let Some(i) = passages.iter().position(|p| p.trim().is_empty()) {
        return Err(Error::field(location, format!("passages[{i}]"), "is empty"));
    }
    // With passages and no answer, the passages together are the judged text (for the lexical
    // signals and reports).
    let answer = match raw.answer {
        Some(a) => a,
        None if !passages.is_empty() => passages.join("\n\n"),
        None => return Err(Error::field(location, "answer", "is missing (give `answer` or `passages`)")),
    };
    let gave_gold_answers = raw.gold_answers.is_some();
    let gold_answers = raw
        .gold_answers
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, a)| {
            scalar_text(a)
                .ok_or_else(|| Error::field(location, format!("gold_answers[{i}]"), "must be a string or a number"))
        })
        .collect::<Result<Vec<String>>>()?;
    let gold_answers: Vec<String> = gold_answers.into_iter().filter(|a| !a.trim().is_empty()).collect();
    let nuggets = match (rubric, raw.nuggets) {
        (Some(r), _) => r.nuggets.clone(),
        (None, Some(ns)) if !ns.is_empty() => ns
            .into_iter()
            .enumerate()
            .map(|(i, n)| n.validate(location, &format!("nuggets[{i}]")))
            .collect::<Result<Vec<_>>>()?,
        (None, Some(_)) if gold_answers.is_empty() => return Err(Error::field(location, "nuggets", "is empty")),
        (None, _) if !gold_answers.is_empty() => vec![short_form_nugget(&gold_answers, policy)],
        (None, None) if gave_gold_answers => {
            return Err(Error::field(location, "gold_answers", "is empty (give at least one gold answer)"))
        }
        (None, _) => {
            return Err(Error::field(
                location,
                "nuggets",
                "is missing (give `nuggets`, `gold_answers`, or pass --rubric)",
            ))
        }
    };
    let gold = raw.gold.map(|g| g.label().map_err(|why| Error::field(location, "gold", why))).transpose()?;
    let query = raw.query.filter(|q| !q.trim().is_empty()).or_else(|| rubric.and_then(|r| r.query.clone()));
    Ok(Task { id, source: raw.source, query, answer, nuggets, gold_answers, gold, passages })
}

/// One nugget's verdict as written out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerdictRecord {
    /// Nugget text.
    pub nugget: String,
    /// Importance.
    pub importance: crate::rubric::Importance,
    /// Weight.
    pub weight: f64,
    /// The verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Gold label from the input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gold: Option<Label>,
}

/// The error part of an error record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Machine-readable kind.
    pub kind: String,
    /// What went wrong and where.
    pub message: String,
}

/// One output line, as `gavel verify` writes it and [`read_outputs`] reads it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputRecord {
    /// 1-based input line.
    pub line: usize,
    /// Record id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Record source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Aggregated scores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scores: Option<Scores>,
    /// Short-form: whether the answer was judged correct.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
    /// Short-form gold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gold: Option<Label>,
    /// Per-nugget verdicts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<VerdictRecord>,
    /// The judged text was cut to fit the context (`--truncate`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Present when the record failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

impl OutputRecord {
    /// An error record.
    pub fn error(line: usize, id: Option<String>, err: &Error) -> Self {
        OutputRecord {
            line,
            id,
            source: None,
            scores: None,
            correct: None,
            gold: None,
            verdicts: Vec::new(),
            truncated: false,
            error: Some(ErrorInfo { kind: err.kind().to_string(), message: err.to_string() }),
        }
    }
}

impl OutputRecord {
    /// The key this record is known by (see [`record_key`]).
    pub fn key(&self) -> String {
        record_key(self.id.as_deref(), self.line)
    }
}

/// The key a record is known by in an output file: its id, else its line number.
pub fn record_key(id: Option<&str>, line: usize) -> String {
    match id {
        Some(id) => format!("id:{id}"),
        None => format!("line:{line}"),
    }
}

/// The key of one output line (see [`record_key`]), and whether it is an error record, when
/// it is an output record.
pub fn output_key(line: &[u8]) -> Option<(String, bool)> {
    #[derive(Deserialize)]
    struct Key {
        line: usize,
        id: Option<String>,
        error: Option<serde::de::IgnoredAny>,
    }
    let k: Key = serde_json::from_slice(line).ok()?;
    Some((record_key(k.id.as_deref(), k.line), k.error.is_some()))
}

/// Read an output file (written by verify or eval) into a map from [`record_key`] to record;
/// lines that do not parse are skipped (their records then count as missing).
pub fn read_outputs(path: &std::path::Path) -> Result<Outputs> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(Outputs::new(text.lines().filter_map(|line| serde_json::from_str::<OutputRecord>(line).ok()).collect()))
}

/// The records of an output file, found by the id and line of the input record they judged
/// (see [`Outputs::get`]).
#[derive(Debug, Default)]
pub struct Outputs {
    records: Vec<OutputRecord>,
    by_line: std::collections::HashMap<usize, usize>,
    /// Ids that only one output record has.
    by_id: std::collections::HashMap<String, usize>,
}

impl Outputs {
    /// Index `records` by their line, and by id where only one of them has it.
    pub fn new(records: Vec<OutputRecord>) -> Self {
        let mut count: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for r in &records {
            if let Some(id) = &r.id {
                *count.entry(id).or_default() += 1;
            }
        }
        let by_id = records
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.id.as_ref().filter(|id| count[id.as_str()] == 1).map(|id| (id.clone(), i)))
            .collect();
        let by_line = records.iter().enumerate().map(|(i, r)| (r.line, i)).collect();
        Outputs { records, by_line, by_id }
    }

    fn index(&self, id: Option<&str>, line: usize, id_unique: bool) -> Option<usize> {
        let at_line = self.by_line.get(&line).copied().filter(|&i| self.records[i].id.as_deref() == id);
        at_line.or_else(|| id.filter(|_| id_unique).and_then(|id| self.by_id.get(id).copied()))
    }

    /// The output of the input record with this id at this line: the output written for that
    /// line with the same id; else, when the id is unique in the input (`id_unique`) and in the
    /// output, the output of that id (an output of the same records in another order). Records
    /// that share an id are never given one another's output.
    pub fn get(&self, id: Option<&str>, line: usize, id_unique: bool) -> Option<&OutputRecord> {
        self.index(id, line, id_unique).map(|i| &self.records[i])
    }

    /// As [`Outputs::get`], to change it.
    pub fn get_mut(&mut self, id: Option<&str>, line: usize, id_unique: bool) -> Option<&mut OutputRecord> {
        self.index(id, line, id_unique).map(|i| &mut self.records[i])
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// The ids that only one of an input's records has (see [`Outputs::get`]).
pub struct UniqueIds<'a>(std::collections::HashSet<&'a str>);

impl<'a> UniqueIds<'a> {
    /// Count the ids of `tasks`.
    pub fn of(tasks: impl IntoIterator<Item = &'a Task>) -> Self {
        let mut count: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for t in tasks {
            if let Some(id) = t.id.as_deref() {
                *count.entry(id).or_default() += 1;
            }
        }
        UniqueIds(count.into_iter().filter(|&(_, n)| n == 1).map(|(id, _)| id).collect())
    }

    /// Whether `task` has an id no other record of the input has.
    pub fn has(&self, task: &Task) -> bool {
        task.id.as_deref().is_some_and(|id| self.0.contains(id))
    }
}

/// Why `out` is not the output of `task`, when it is not: a long-form record's verdicts must be
/// of its nuggets, in order (a verdicts file of other records, or of an edited file, would
/// otherwise be scored against the wrong gold labels).
pub fn output_mismatch(task: &Task, out: &OutputRecord) -> Option<String> {
    if task.is_short_form() || out.error.is_some() {
        return None;
    }
    if out.verdicts.len() != task.nuggets.len() {
        return Some(format!(
            "the output (line {}) has {} verdicts for the record's {} nuggets: the verdicts are of another file",
            out.line,
            out.verdicts.len(),
            task.nuggets.len()
        ));
    }
    let (i, (n, v)) = task.nuggets.iter().zip(&out.verdicts).enumerate().find(|(_, (n, v))| n.text != v.nugget)?;
    Some(format!(
        "nugget {i}: the output (line {}) judged {:?}, not the record's {:?}: the verdicts are of another file",
        out.line,
        clip(&v.nugget),
        clip(&n.text)
    ))
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Best-effort id of a line that failed to parse, so error records can still be matched.
pub fn salvage_id(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    match v.get("id")? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Which half of a labeled file a record belongs to, so that fitting and scoring never see the
/// same query/article: records are split by a hash of the query, or, without a query, of the
/// first nugget (REALSumm's nuggets are its article's content units).
pub fn part_of(task: &Task) -> Part {
    if split_hash(task).is_multiple_of(2) {
        Part::A
    } else {
        Part::B
    }
}

/// A half of a labeled file (see [`part_of`]): fit on one, score the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// The first half.
    A,
    /// The second half.
    B,
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Part::A => "a",
            Part::B => "b",
        })
    }
}

/// The record's group: records that share a query (or, without one, an article's first nugget)
/// share it. They are not independent, so bootstrap intervals resample groups.
pub fn group_of(task: &Task) -> u64 {
    split_hash(task)
}

/// Which of `k` cross-validation folds a record falls in: by the same query/article key as
/// [`part_of`] (other bits of its hash), so a fold never shares a query with the others.
pub fn fold_of(task: &Task, k: usize) -> usize {
    ((split_hash(task) >> 1) % k.max(1) as u64) as usize
}

fn split_hash(task: &Task) -> u64 {
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

impl std::str::FromStr for ShortForm {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "hybrid" => Ok(ShortForm::Hybrid),
            "em-llm" => Ok(ShortForm::EmLlm),
            "em" => Ok(ShortForm::Em),
            "llm" => Ok(ShortForm::Llm),
            other => Err(format!("`{other}` is not hybrid, em-llm, em or llm")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(line: usize, id: Option<&str>, nuggets: &[&str]) -> OutputRecord {
        let verdicts: Vec<serde_json::Value> = nuggets
            .iter()
            .map(|n| serde_json::json!({"nugget": n, "importance": "vital", "weight": 1.0, "label": "support", "score": 1.0, "by": "llm"}))
            .collect();
        serde_json::from_value(serde_json::json!({"line": line, "id": id, "verdicts": verdicts})).unwrap()
    }

    /// Two records of one id each get their own output (the one written for their line); the
    /// last of them was given to both.
    #[test]
    fn outputs_of_records_that_share_an_id_are_found_by_line() {
        let o = Outputs::new(vec![
            output(1, Some("q"), &["A"]),
            output(2, Some("q"), &["B"]),
            output(3, Some("u"), &["C"]),
            output(4, None, &["D"]),
        ]);
        let first = |id: Option<&str>, line, unique| o.get(id, line, unique).map(|r| r.verdicts[0].nugget.clone());
        assert_eq!(first(Some("q"), 1, false).as_deref(), Some("A"));
        assert_eq!(first(Some("q"), 2, false).as_deref(), Some("B"));
        assert_eq!(first(Some("q"), 3, false), None, "line 3 is another id's output");
        assert_eq!(first(Some("u"), 9, true).as_deref(), Some("C"), "an id unique on both sides is found on any line");
        assert_eq!(first(None, 4, true).as_deref(), Some("D"));
        assert_eq!(first(None, 3, true), None);
        // An id two input records share, of which the output holds one (an interrupted run):
        // the other record has no output, not that one.
        let part = Outputs::new(vec![output(1, Some("q"), &["A"])]);
        assert!(part.get(Some("q"), 1, false).is_some());
        assert!(part.get(Some("q"), 2, false).is_none());
    }

    #[test]
    fn outputs_of_other_nuggets_are_named_a_mismatch() {
        let task =
            parse_record(r#"{"answer":"x","nuggets":["A","B"]}"#, "in.jsonl:1", None, ShortForm::Hybrid).unwrap();
        assert_eq!(output_mismatch(&task, &output(1, None, &["A", "B"])), None);
        let why = output_mismatch(&task, &output(1, None, &["B", "A"])).unwrap();
        assert!(why.contains("nugget 0") && why.contains("\"B\""), "{why}");
        let why = output_mismatch(&task, &output(1, None, &["A"])).unwrap();
        assert!(why.contains("1 verdicts for the record's 2 nuggets"), "{why}");
    }

    #[test]
    fn long_form_record() {
        let t = parse_record(
            r#"{"id":"a","query":null,"answer":"x","nuggets":[{"text":"n","gold":"support"},"m"]}"#,
            "in.jsonl:1",
            None,
            ShortForm::Hybrid,
        )
        .unwrap();
        assert_eq!(t.id.as_deref(), Some("a"));
        assert_eq!(t.query, None);
        assert_eq!(t.nuggets.len(), 2);
        assert_eq!(t.nuggets[0].gold, Some(Label::Support));
        assert!(!t.is_short_form());
    }

    #[test]
    fn number_gold_answers_read_as_text() {
        let t =
            parse_record(r#"{"answer":"8","gold_answers":[8.0,-2,0.25,true," "]}"#, "in.jsonl:1", None, ShortForm::Em)
                .unwrap();
        assert_eq!(t.gold_answers, vec!["8", "-2", "0.25", "true"]);
        let e = parse_record(r#"{"answer":"8","gold_answers":["a",null]}"#, "in.jsonl:4", None, ShortForm::Em)
            .unwrap_err()
            .to_string();
        assert!(e.contains("in.jsonl:4") && e.contains("gold_answers[1]"), "{e}");
    }

    /// Each pair: a float and Python's `repr` of it (checked with CPython 3).
    #[test]
    fn floats_are_written_as_python_writes_them() {
        let cases = [
            (0.5, "0.5"),
            (0.1, "0.1"),
            (-2.25, "-2.25"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e-5, "1e-05"),
            (-1.5e-7, "-1.5e-07"),
            (123.456, "123.456"),
            (1e15, "1000000000000000.0"),
            (1.5e15, "1500000000000000.0"),
            (1234567890123456.7, "1234567890123456.8"),
            (1e16, "1e+16"),
            (2e20, "2e+20"),
            (1.5e300, "1.5e+300"),
            (5e-324, "5e-324"),
            // Exactly halfway between two shortest strings: the even one, as Python.
            (847472097840887.0 + 0.25, "847472097840887.2"),
            (937917.4360351562, "937917.4360351562"),
            (93518834674695.0 + 0.125, "93518834674695.12"),
            (0.5000000000000001, "0.5000000000000001"),
        ];
        for (f, want) in cases {
            assert_eq!(python_float(f), want, "{f:e}");
        }
        let text = |json: &str| scalar_text(&serde_json::from_str(json).unwrap()).unwrap();
        assert_eq!(text("8.0"), "8");
        assert_eq!(text("1e-5"), "1e-05");
        assert_eq!(text("1e16"), "1e+16");
        assert_eq!(text("123456789012345678"), "123456789012345678");
    }

    /// Well-formed JSON with a wrong field is that field's error; broken JSON is a parse error.
    #[test]
    fn a_wrong_field_is_a_field_error_and_broken_json_a_parse_error() {
        let kind = |line: &str| parse_record(line, "in.jsonl:1", None, ShortForm::Em).unwrap_err().kind();
        assert_eq!(kind(r#"{"answer":3,"gold_answers":["x"]}"#), "invalid_field");
        assert_eq!(kind(r#"{"answer":"x","nuggets":[{"txt":"y"}]}"#), "invalid_field");
        assert_eq!(kind(r#"{"answer":"x","nuggets":[{"text":"y","weight":"heavy"}]}"#), "invalid_field");
        assert_eq!(kind(r#"{"answer":"x","nuggets":["#), "parse");
        assert_eq!(kind(r#"{"answer":"x" "nuggets":[]}"#), "parse");
        // A wrong field early in broken text: the text is not JSON.
        assert_eq!(kind(r#"{"answer":3,"gold_answers":["x""#), "parse");
        let e = parse_record(r#"{"answer":3}"#, "in.jsonl:1", None, ShortForm::Em).unwrap_err().to_string();
        assert!(e.starts_with("in.jsonl:1, column 11: field `answer`: invalid type"), "{e}");
    }

    #[test]
    fn short_form_record_becomes_hybrid_nugget() {
        let t = parse_record(
            r#"{"id":7,"query":"q","answer":"Röntgen","gold_answers":["Wilhelm Röntgen","Röntgen"],"gold":"correct"}"#,
            "in.jsonl:2",
            None,
            ShortForm::Hybrid,
        )
        .unwrap();
        assert_eq!(t.id.as_deref(), Some("7"));
        assert_eq!(t.gold, Some(Label::Support));
        let b = parse_record(r#"{"answer":"x","gold_answers":["y"],"gold":false}"#, "in.jsonl:3", None, ShortForm::Em)
            .unwrap();
        assert_eq!(b.gold, Some(Label::NotSupport));
        assert_eq!(t.nuggets.len(), 1);
        assert!(matches!(t.nuggets[0].check, Check::Contains { fallback_llm: true, .. }));
        assert_eq!(t.nuggets[0].text, "Wilhelm Röntgen\" or \"Röntgen");
    }

    #[test]
    fn bad_records_name_line_and_field() {
        let e = parse_record(r#"{"query":"q"}"#, "in.jsonl:3", None, ShortForm::Hybrid).unwrap_err().to_string();
        assert!(e.contains("in.jsonl:3") && e.contains("answer"), "{e}");
        let e = parse_record(r#"{"answer":"a"}"#, "in.jsonl:4", None, ShortForm::Hybrid).unwrap_err().to_string();
        assert!(e.contains("in.jsonl:4") && e.contains("nuggets"), "{e}");
        let e = parse_record(r#"{"answer":"a","nuggets":[{"txt":"x"}]}"#, "in.jsonl:5", None, ShortForm::Hybrid)
            .unwrap_err();
        assert!(e.to_string().contains("in.jsonl:5"), "{e}");
        let e = parse_record("{not json", "in.jsonl:6", None, ShortForm::Hybrid).unwrap_err().to_string();
        assert!(e.contains("in.jsonl:6"), "{e}");
        let e = parse_record(
            r#"{"answer":"a","nuggets":[{"text":"x","wieght":2}]}"#,
            "in.jsonl:7",
            None,
            ShortForm::Hybrid,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("in.jsonl:7") && e.contains("`wieght`"), "{e}");
        // A byte-order mark before the first record is not an error.
        let t = parse_record("\u{feff}{\"answer\":\"a\",\"nuggets\":[\"x\"]}", "in.jsonl:1", None, ShortForm::Hybrid);
        assert!(t.is_ok(), "{t:?}");
    }

    #[test]
    fn rubric_applies_to_every_record() {
        let r = Rubric::from_json(r#"{"id":"r","nuggets":["a","b"]}"#, "r.json").unwrap();
        let t = parse_record(r#"{"answer":"x"}"#, "l", Some(&r), ShortForm::Hybrid).unwrap();
        assert_eq!(t.nuggets.len(), 2);
    }
}
