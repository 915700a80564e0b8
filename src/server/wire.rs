//! The request and response bodies of the reward server: OpenRLHF's remote reward model shape
//! (`/get_reward`), the native batch shape (`/v1/verify`), and how an RL label becomes a rubric.
//!
//! A label (one per query) maps to a [`Task`] this way:
//!
//! - a JSON object, or a string holding one (`"{\"nuggets\": [...]}"`): the same fields as a
//!   `gavel verify` record without `answer` (`nuggets` for long-form, `gold_answers` for
//!   short-form, `query`, `id`), plus `rubric`: the id of a rubric loaded with `--rubric` or
//!   `--rubrics DIR`, which supplies the nuggets;
//! - a JSON array of strings, or a string holding one (`"[\"2015\", \"2014-15\"]"`): gold
//!   answers (short-form);
//! - any other string: one gold answer (short-form);
//! - empty or null: the server's `--rubric`, when it has one (it also fills in any label or
//!   record without `nuggets`, `gold_answers` or `rubric`).
//!
//! The judged text is `query[i]` minus `prompts[i]` (when given), with trailing end-of-turn
//! and padding tokens cut. The question the judge sees comes from the label's `query` or the
//! rubric's, never from the chat-templated prompt.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::judge::Judgement;
use crate::pipeline::output_record;
use crate::record::{json_type, parse_record, salvage_id, OutputRecord, ShortForm, Task};
use crate::rubric::Rubric;

use super::text;

/// Why a whole request is refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refused {
    /// Not JSON, or not the documented shape; the message names the field.
    BadRequest(String),
    /// More records than one request may carry.
    TooManyRecords {
        /// Records in the request.
        got: usize,
        /// The limit.
        limit: usize,
    },
}

/// Rubrics the server knows and the short-form policy: everything a label needs to become a task.
#[derive(Debug, Clone, Default)]
pub struct LabelRules {
    /// Applied to labels and records that bring no `nuggets`, `gold_answers` or `rubric` id.
    pub default_rubric: Option<Rubric>,
    /// Rubrics a label or record selects with `"rubric": "<id>"`.
    pub rubrics: BTreeMap<String, Rubric>,
    /// How short-form labels are judged.
    pub short_form: ShortForm,
}

impl LabelRules {
    fn named(&self, id: &str, location: &str) -> Result<&Rubric> {
        self.rubrics.get(id).or_else(|| self.default_rubric.as_ref().filter(|r| r.id == id)).ok_or_else(|| {
            let mut known: Vec<&str> = self.rubrics.keys().map(String::as_str).collect();
            known.extend(self.default_rubric.as_ref().map(|r| r.id.as_str()));
            Error::field(
                location,
                "rubric",
                format!(
                    "`{id}` is not loaded on this server (loaded: {}); start it with --rubrics DIR",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            )
        })
    }

    /// Build the task of one record object (`answer` already in it).
    fn task(&self, mut record: Map<String, Value>, location: &str) -> Result<Task> {
        let rubric = match record.remove("rubric") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(self.named(&id, location)?),
            Some(_) => return Err(Error::field(location, "rubric", "must be a string (a rubric id)")),
        };
        // The server-wide rubric fills in records that bring no criteria of their own.
        let rubric = match rubric {
            Some(r) => Some(r),
            None if record.contains_key("nuggets") || record.contains_key("gold_answers") => None,
            None => self.default_rubric.as_ref(),
        };
        let line = Value::Object(record).to_string();
        parse_record(&line, location, rubric, self.short_form)
    }
}

fn bad(msg: impl Into<String>) -> Refused {
    Refused::BadRequest(msg.into())
}

fn parse_body(body: &[u8]) -> std::result::Result<Map<String, Value>, Refused> {
    // A byte-order mark, as some clients (.NET, PowerShell) send.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    // What Python's json.dumps writes and JSON readers refuse: a float label that is NaN or
    // infinite as a bare `NaN` or `Infinity`, read as the text gavel-rl sends for the same label;
    // a lone UTF-16 surrogate (`\ud800`, from text decoded with `surrogateescape`), read as U+FFFD
    // so that one broken completion does not fail the request. Still broken elsewhere: that
    // error, said of the text read (its columns moved).
    let parsed = serde_json::from_slice::<Value>(body).or_else(|e| match python_json(body) {
        Some((fixed, read_as)) => serde_json::from_slice::<Value>(&fixed).map_err(|e| (e, read_as)),
        None => Err((e, String::new())),
    });
    match parsed {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(bad(format!("the body must be a JSON object, not {}", json_type(&other)))),
        Err((e, read_as)) => Err(bad(format!("the body is not valid JSON: {e}{read_as}"))),
    }
}

/// `body` with what Python's json.dumps writes outside JSON made JSON: each bare `NaN`,
/// `Infinity` and `-Infinity` outside strings replaced by the string Python prints for it
/// (`"nan"`, `"inf"`, `"-inf"`), and each unpaired surrogate escape inside a string by `\ufffd`.
/// With it, how it was read (for an error message); `None` when there is nothing to change.
fn python_json(body: &[u8]) -> Option<(Vec<u8>, String)> {
    const CONSTANTS: [(&[u8], &[u8]); 3] =
        [(b"-Infinity", b"\"-inf\""), (b"Infinity", b"\"inf\""), (b"NaN", b"\"nan\"")];
    let mut out = Vec::with_capacity(body.len() + 8);
    let (mut in_string, mut constants, mut surrogates) = (false, false, false);
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if in_string {
            match b {
                b'\\' => {
                    let unit = surrogate_at(body, i);
                    let paired = match unit {
                        Some(0xD800..=0xDBFF) => matches!(surrogate_at(body, i + 6), Some(0xDC00..=0xDFFF)),
                        _ => false,
                    };
                    if paired {
                        out.extend_from_slice(&body[i..i + 12]);
                        i += 12;
                    } else if unit.is_some() {
                        out.extend_from_slice(b"\\ufffd");
                        i += 6;
                        surrogates = true;
                    } else {
                        // Any other escape: the backslash and the escaped byte, as they are.
                        out.extend_from_slice(&body[i..(i + 2).min(body.len())]);
                        i += 2;
                    }
                    continue;
                }
                b'"' => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if let Some((from, to)) = CONSTANTS.iter().find(|(from, _)| body[i..].starts_with(from)) {
            out.extend_from_slice(to);
            i += from.len();
            constants = true;
            continue;
        }
        out.push(b);
        i += 1;
    }
    let read_as = match (constants, surrogates) {
        (false, false) => return None,
        (true, false) => " (with NaN and Infinity read as the strings \"nan\" and \"inf\")",
        (false, true) => " (with lone surrogates read as U+FFFD)",
        (true, true) => " (with NaN and Infinity read as the strings \"nan\" and \"inf\", lone surrogates as U+FFFD)",
    };
    Some((out, read_as.to_string()))
}

/// The UTF-16 surrogate that a `\uXXXX` escape at `i` writes, if it writes one.
fn surrogate_at(body: &[u8], i: usize) -> Option<u32> {
    let esc = body.get(i..i + 6)?;
    if &esc[..2] != b"\\u" {
        return None;
    }
    let unit = u32::from_str_radix(std::str::from_utf8(&esc[2..]).ok()?, 16).ok()?;
    (0xD800..=0xDFFF).contains(&unit).then_some(unit)
}

fn strings(body: &mut Map<String, Value>, field: &str) -> std::result::Result<Option<Vec<String>>, Refused> {
    match body.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                other => Err(bad(format!("field `{field}[{i}]` must be a string, not {}", json_type(&other)))),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(bad(format!("field `{field}` must be an array of strings, not {}", json_type(&other)))),
    }
}

/// One `/get_reward` item, parsed: its task, or why its label is unusable.
pub type RewardItem = Result<Task>;

/// Parse an OpenRLHF `/get_reward` body into one item per query.
pub fn parse_reward_request(
    body: &[u8],
    rules: &LabelRules,
    max_records: usize,
) -> std::result::Result<Vec<RewardItem>, Refused> {
    let mut body = parse_body(body)?;
    let query = strings(&mut body, "query")?
        .ok_or_else(|| bad("field `query` is missing (an array of prompt + response strings)"))?;
    if query.len() > max_records {
        return Err(Refused::TooManyRecords { got: query.len(), limit: max_records });
    }
    let prompts = strings(&mut body, "prompts")?;
    if let Some(p) = &prompts {
        if p.len() != query.len() {
            return Err(bad(format!("field `prompts` has {} items but `query` has {}", p.len(), query.len())));
        }
    }
    let labels = match body.remove("labels") {
        None | Some(Value::Null) => None,
        Some(Value::Array(l)) if l.len() == query.len() => Some(l),
        Some(Value::Array(l)) => {
            return Err(bad(format!("field `labels` has {} items but `query` has {}", l.len(), query.len())))
        }
        Some(other) => {
            return Err(bad(format!(
                "field `labels` must be an array (one label per query), not {}",
                json_type(&other)
            )))
        }
    };
    if labels.is_none() && rules.default_rubric.is_none() {
        return Err(bad(
            "field `labels` is missing: give one label per query (gold answers, nuggets or a rubric id), or start the server with --rubric",
        ));
    }
    // OpenRLHF sends "" for every label when the trainer has no label key: refuse the request
    // (the trainer stops at once) rather than answer a reward of 0 for every sample.
    if rules.default_rubric.is_none()
        && !query.is_empty()
        && labels.as_ref().is_some_and(|l| l.iter().all(is_empty_label))
    {
        return Err(bad(
            "every label is empty and the server has no --rubric: give the trainer the dataset's label column \
             (OpenRLHF >= 0.10.2: --data.label_key; older: --label_key), or start the server with --rubric FILE",
        ));
    }
    let mut labels = labels.map(Vec::into_iter);
    Ok(query
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let prompt = prompts.as_ref().map(|p| p[i].as_str());
            let label = labels.as_mut().and_then(Iterator::next).unwrap_or(Value::Null);
            let location = format!("labels[{i}]");
            let mut record = label_record(label, &location, rules)?;
            let answer = response_text(q, prompt).map_err(|why| Error::field(format!("query[{i}]"), "prompts", why))?;
            record.insert("answer".into(), Value::String(answer.to_string()));
            rules.task(record, &location)
        })
        .collect())
}

fn is_empty_label(label: &Value) -> bool {
    match label {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// Parse a slime remote reward body (`--rm-type remote_rm`): `{"prompt", "response", "label"}`,
/// where `prompt` is a string or a list of chat messages and `label` anything a `/get_reward`
/// label may be. The question the judge sees is the label's `query`, else the content of the
/// prompt's last user message (a chat-templated string prompt is never used as the question).
pub fn parse_slime_request(body: &[u8], rules: &LabelRules) -> std::result::Result<RewardItem, Refused> {
    let mut body = parse_body(body)?;
    let response = match body.remove("response") {
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => return Err(bad("field `response` is missing (the generated text)")),
        Some(other) => return Err(bad(format!("field `response` must be a string, not {}", json_type(&other)))),
    };
    let question = match body.remove("prompt") {
        Some(Value::Array(messages)) => last_user_content(&messages),
        _ => None,
    };
    let label = body.remove("label").unwrap_or(Value::Null);
    if is_empty_label(&label) && rules.default_rubric.is_none() {
        return Err(bad(
            "field `label` is empty and the server has no --rubric: give slime the dataset's label column \
             (--label-key), or start the server with --rubric FILE",
        ));
    }
    Ok((|| {
        let mut record = label_record(label, "label", rules)?;
        if let Some(q) = question.filter(|_| !record.contains_key("query")) {
            record.insert("query".into(), Value::String(q));
        }
        let (answer, _) =
            text::response_text(&response, None).map_err(|why| Error::field("response", "response", why))?;
        record.insert("answer".into(), Value::String(answer.to_string()));
        rules.task(record, "label")
    })())
}

/// The text of the last `{"role": "user"}` message (string content, or the text parts of a
/// list of content parts).
fn last_user_content(messages: &[Value]) -> Option<String> {
    messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")).and_then(|m| {
        match m.get("content")? {
            Value::String(s) => Some(s.clone()),
            Value::Array(parts) => {
                let text: Vec<&str> = parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect();
                (!text.is_empty()).then(|| text.join("\n"))
            }
            _ => None,
        }
        .filter(|s| !s.trim().is_empty())
    })
}

/// The slime reply: one reward (pick it with slime's `--reward-key reward`) and gavel's other
/// scores next to it.
#[derive(Debug, Clone, Serialize)]
pub struct SlimeResponse {
    /// 1/0 for short-form, `weighted_reward` for long-form.
    pub reward: f64,
    /// `soft_reward`, `all_score`, `strict_all_score`, `model_verdicts`.
    #[serde(flatten)]
    pub extra: BTreeMap<&'static str, f64>,
}

/// The slime reply of a judged item, or the item's error.
pub fn slime_response(outcome: Outcome) -> std::result::Result<SlimeResponse, ItemError> {
    let mut r = reward_response(vec![outcome]);
    if let Some(e) = r.errors.pop() {
        return Err(e);
    }
    let extra =
        r.extra_logs.into_iter().filter(|(k, _)| *k != "error").filter_map(|(k, v)| Some((k, *v.first()?))).collect();
    Ok(SlimeResponse { reward: r.rewards.first().copied().unwrap_or_default(), extra })
}

/// The record fields a label stands for (everything but `answer`).
fn label_record(label: Value, location: &str, rules: &LabelRules) -> Result<Map<String, Value>> {
    let gold = |answers: Vec<Value>| {
        let mut m = Map::new();
        m.insert("gold_answers".into(), Value::Array(answers));
        m
    };
    match label {
        Value::Object(m) => Ok(m),
        Value::Null => default_label(location, rules),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                return default_label(location, rules);
            }
            if t.starts_with('{') {
                return match serde_json::from_str::<Value>(t) {
                    Ok(Value::Object(m)) => Ok(m),
                    Ok(_) | Err(_) => Err(Error::Parse {
                        location: location.into(),
                        reason: "the label starts with `{` but is not a JSON object".into(),
                    }),
                };
            }
            if t.starts_with('[') {
                if let Ok(list) = serde_json::from_str::<Vec<Value>>(t) {
                    if let Some(answers) = scalars(&list) {
                        return Ok(gold(answers));
                    }
                }
            }
            Ok(gold(vec![Value::String(s)]))
        }
        Value::Array(items) => scalars(&items).map(gold).ok_or_else(|| {
            Error::field(location, "gold_answers", "an array label must hold strings or numbers (gold answers)")
        }),
        // Numbers become text where the record is read (`record::scalar_text`).
        other @ (Value::Number(_) | Value::Bool(_)) => Ok(gold(vec![other])),
    }
}

/// Gold answers from a JSON array of strings, numbers or booleans (`[0, 1]`, `["2015", 2014]`).
fn scalars(items: &[Value]) -> Option<Vec<Value>> {
    items.iter().all(|v| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))).then(|| items.to_vec())
}

fn default_label(location: &str, rules: &LabelRules) -> Result<Map<String, Value>> {
    if rules.default_rubric.is_some() {
        Ok(Map::new())
    } else {
        Err(Error::field(location, "label", "is empty and the server has no --rubric to fall back on"))
    }
}

/// The judged text: `query` after `prompt` (OpenRLHF sends prompt + response; see
/// [`text::response_text`] for decode differences, left-cut prompts and end tokens).
pub fn response_text<'a>(query: &'a str, prompt: Option<&str>) -> std::result::Result<&'a str, String> {
    text::response_text(query, prompt).map(|(t, _)| t)
}

/// One item of a request after the engine: judged, or refused before it got there.
pub enum Outcome {
    /// The task and its result.
    Judged(Task, Result<Judgement>),
    /// The item never became a task (bad label or record); `id` salvaged where possible.
    Invalid {
        /// The record's id, when it could be read.
        id: Option<String>,
        /// Why.
        error: Error,
    },
}

/// A failed item of a `/get_reward` request (extra field; OpenRLHF reads only the three others).
#[derive(Debug, Clone, Serialize)]
pub struct ItemError {
    /// Position in `query`.
    pub index: usize,
    /// Machine-readable kind (as in `gavel verify` error records).
    pub kind: String,
    /// What went wrong.
    pub message: String,
}

/// The `/get_reward` reply.
#[derive(Debug, Clone, Serialize)]
pub struct RewardResponse {
    /// The reward per query: 1/0 (correct or not) for short-form, `weighted_reward` for
    /// long-form, 0 for an item that failed.
    pub rewards: Vec<f64>,
    /// The same values (OpenRLHF uses `scores` for filtering and logging).
    pub scores: Vec<f64>,
    /// Per-query series OpenRLHF logs as means: `soft_reward`, `all_score`,
    /// `strict_all_score`, `model_verdicts`, `error`.
    pub extra_logs: BTreeMap<&'static str, Vec<f64>>,
    /// Failed items, with why; absent when none failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ItemError>,
}

/// Turn the judged items of a `/get_reward` request into its reply.
pub fn reward_response(outcomes: Vec<Outcome>) -> RewardResponse {
    let n = outcomes.len();
    let mut rewards = Vec::with_capacity(n);
    let keys = ["soft_reward", "all_score", "strict_all_score", "model_verdicts", "error"];
    let mut logs: BTreeMap<&'static str, Vec<f64>> = keys.iter().map(|&k| (k, Vec::with_capacity(n))).collect();
    let mut errors = Vec::new();
    for (index, outcome) in outcomes.into_iter().enumerate() {
        let record = match outcome {
            Outcome::Judged(task, result) => output_record(index + 1, &task, result),
            Outcome::Invalid { id, error } => OutputRecord::error(index + 1, id, &error),
        };
        let (reward, values) = match (&record.scores, &record.error) {
            (Some(s), None) => {
                let reward = match record.correct {
                    Some(c) => f64::from(u8::from(c)),
                    None => s.weighted_reward,
                };
                let model =
                    record.verdicts.iter().filter(|v| v.verdict.by == crate::aggregate::DecidedBy::Llm).count() as f64;
                (reward, [s.soft_reward, s.all_score, s.strict_all_score, model, 0.0])
            }
            _ => {
                if let Some(e) = record.error {
                    errors.push(ItemError { index, kind: e.kind, message: e.message });
                }
                (0.0, [0.0, 0.0, 0.0, 0.0, 1.0])
            }
        };
        rewards.push(reward);
        for (k, v) in keys.iter().zip(values) {
            if let Some(series) = logs.get_mut(k) {
                series.push(v);
            }
        }
    }
    RewardResponse { scores: rewards.clone(), rewards, extra_logs: logs, errors }
}

/// One `/v1/verify` record, parsed: the id (for error records) and its task or why not.
pub type VerifyItem = (Option<String>, Result<Task>);

/// Parse a `/v1/verify` body: `{"records": [record, ...]}`, each record what `gavel verify`
/// reads on one line (an object, or a string holding one).
pub fn parse_verify_request(
    body: &[u8],
    rules: &LabelRules,
    max_records: usize,
) -> std::result::Result<Vec<VerifyItem>, Refused> {
    let mut body = parse_body(body)?;
    let records = match body.remove("records") {
        Some(Value::Array(r)) => r,
        None => return Err(bad("field `records` is missing (an array of gavel verify records)")),
        Some(other) => return Err(bad(format!("field `records` must be an array, not {}", json_type(&other)))),
    };
    if records.len() > max_records {
        return Err(Refused::TooManyRecords { got: records.len(), limit: max_records });
    }
    Ok(records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let location = format!("records[{i}]");
            let r = match r {
                Value::String(line) => match serde_json::from_str::<Value>(&line) {
                    Ok(v) => v,
                    Err(e) => {
                        let error = Error::Parse {
                            location: format!("{location}, column {}", e.column()),
                            reason: e.to_string(),
                        };
                        return (salvage_id(&line), Err(error));
                    }
                },
                other => other,
            };
            let id = salvage_id(&r.to_string());
            match r {
                Value::Object(m) => (id, rules.task(m, &location)),
                other => (
                    None,
                    Err(Error::Parse {
                        location,
                        reason: format!("a record must be a JSON object, not {}", json_type(&other)),
                    }),
                ),
            }
        })
        .collect())
}

/// Totals of a `/v1/verify` reply.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifySummary {
    /// Records in the request.
    pub records: usize,
    /// Records that failed (they have an `error`).
    pub errors: usize,
    /// Verdicts over all records.
    pub verdicts: usize,
    /// Verdicts decided by the model.
    pub model_verdicts: usize,
}

/// The `/v1/verify` reply: one `gavel verify` output record per input record, in order (`line`
/// is the 1-based position in `records`).
#[derive(Debug, Clone, Serialize)]
pub struct VerifyResponse {
    /// The output records.
    pub records: Vec<OutputRecord>,
    /// Totals.
    pub summary: VerifySummary,
}

/// Turn the judged records of a `/v1/verify` request into its reply.
pub fn verify_response(outcomes: Vec<Outcome>) -> VerifyResponse {
    let mut summary = VerifySummary::default();
    let records: Vec<OutputRecord> = outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let r = match o {
                Outcome::Judged(task, result) => output_record(i + 1, &task, result),
                Outcome::Invalid { id, error } => OutputRecord::error(i + 1, id, &error),
            };
            summary.records += 1;
            summary.errors += usize::from(r.error.is_some());
            summary.verdicts += r.verdicts.len();
            summary.model_verdicts +=
                r.verdicts.iter().filter(|v| v.verdict.by == crate::aggregate::DecidedBy::Llm).count();
            r
        })
        .collect();
    VerifyResponse { records, summary }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rubric::Check;

    fn rules() -> LabelRules {
        LabelRules::default()
    }

    fn one(body: &str, rules: &LabelRules) -> Result<Task> {
        parse_reward_request(body.as_bytes(), rules, 100).unwrap().pop().unwrap()
    }

    #[test]
    fn response_is_query_minus_prompt_without_end_tokens() {
        assert_eq!(
            response_text(
                "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n Paris<|im_end|><|endoftext|><|endoftext|>",
                Some("<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\n")
            ),
            Ok("Paris")
        );
        // Left padding before the prompt.
        assert_eq!(response_text("<pad><pad>P: x</s>", Some("P:")), Ok("x"));
        // A prompt that is not in the query is an error, not the whole query judged.
        assert!(response_text("abc", Some("zzz")).is_err());
        assert_eq!(response_text("  abc  ", None), Ok("abc"));
    }

    #[test]
    fn plain_string_label_is_one_gold_answer() {
        let t = one(r#"{"query":["Q A: Canberra"],"prompts":["Q A:"],"labels":["Canberra"]}"#, &rules()).unwrap();
        assert_eq!(t.answer, "Canberra");
        assert_eq!(t.gold_answers, vec!["Canberra"]);
        assert!(matches!(t.nuggets[0].check, Check::Contains { fallback_llm: true, .. }));
        assert_eq!(t.query, None, "the prompt is not used as the question");
        // A number-like string stays a gold answer.
        let t = one(r#"{"query":["1961"],"labels":["1961"]}"#, &rules()).unwrap();
        assert_eq!(t.gold_answers, vec!["1961"]);
    }

    #[test]
    fn json_labels_become_rubrics() {
        let t = one(
            r#"{"query":["x"],"labels":["{\"query\":\"q?\",\"nuggets\":[\"a\",{\"text\":\"b\",\"importance\":\"okay\"}]}"]}"#,
            &rules(),
        )
        .unwrap();
        assert_eq!(t.nuggets.len(), 2);
        assert_eq!(t.query.as_deref(), Some("q?"));
        assert!(!t.is_short_form());
        let t = one(r#"{"query":["x"],"labels":["[\"2015\", \"2014-15\"]"]}"#, &rules()).unwrap();
        assert_eq!(t.gold_answers, vec!["2015", "2014-15"]);
        let t = one(r#"{"query":["x"],"labels":[{"gold_answers":["y"]}]}"#, &rules()).unwrap();
        assert_eq!(t.gold_answers, vec!["y"]);
        let t = one(r#"{"query":["x"],"labels":[["y","z"]]}"#, &rules()).unwrap();
        assert_eq!(t.gold_answers, vec!["y", "z"]);
    }

    #[test]
    fn number_labels_are_written_as_people_write_them() {
        // A float column of a trainer's dataset sends 8.0: the answer "8" must match it.
        for (label, want) in [("8.0", vec!["8"]), ("8", vec!["8"]), ("[8.0, 1e3, 0.5]", vec!["8", "1000", "0.5"])] {
            let t = one(&format!(r#"{{"query":["x"],"labels":[{label}]}}"#), &rules()).unwrap();
            assert_eq!(t.gold_answers, want, "{label}");
        }
        let t = one(r#"{"query":["x"],"labels":[{"gold_answers":[8.0,"eight"]}]}"#, &rules()).unwrap();
        assert_eq!(t.gold_answers, vec!["8", "eight"]);
        let e = one(r#"{"query":["x"],"labels":[{"gold_answers":[[8]]}]}"#, &rules()).unwrap_err().to_string();
        assert!(e.contains("gold_answers[0]") && e.contains("string or a number"), "{e}");
    }

    /// Python's json.dumps writes NaN and infinite floats as bare words, and some clients send
    /// a byte-order mark: the request is read, and each such label is the text gavel-rl sends.
    #[test]
    fn python_constants_and_a_byte_order_mark_are_read() {
        let items =
            parse_reward_request(br#"{"query":["a","b","c"],"labels":["Canberra",NaN,-Infinity]}"#, &rules(), 10)
                .unwrap();
        let golds: Vec<Vec<String>> = items.into_iter().map(|i| i.unwrap().gold_answers).collect();
        assert_eq!(golds, vec![vec!["Canberra"], vec!["nan"], vec!["-inf"]]);
        // Inside strings the words are text, escaped quotes included.
        let (fixed, _) = python_json(br#"{"q":"NaN \"Infinity\"","l":[Infinity]}"#).unwrap();
        assert_eq!(fixed, br#"{"q":"NaN \"Infinity\"","l":["inf"]}"#.to_vec());
        assert!(python_json(br#"{"q":"NaN"}"#).is_none());
        // A body broken elsewhere: that error, and how the constants were read.
        let e = parse_body(br#"{"labels":[NaN],"query":["x"],}"#).unwrap_err();
        assert!(matches!(&e, Refused::BadRequest(m) if m.contains("trailing comma") && m.contains("NaN")), "{e:?}");
        let t = one("\u{feff}{\"query\":[\"x\"],\"labels\":[\"y\"]}", &rules()).unwrap();
        assert_eq!(t.gold_answers, vec!["y"]);
    }

    /// Python writes a string holding a lone surrogate (text decoded with `surrogateescape`) as
    /// `\udcXX`, which no JSON reader takes: the item is judged with U+FFFD in its place, a pair
    /// that makes one character is kept, and the other items are judged as sent.
    #[test]
    fn lone_surrogates_are_read_as_replacement_characters() {
        let body = br#"{"query":["ok \ud83d\ude00","broken \udcff tail","a\ud800","\\ud800 is text"],"labels":["x","x","x",NaN]}"#;
        assert!(serde_json::from_slice::<Value>(br#"{"query":["broken \udcff tail"]}"#).is_err(), "serde refuses it");
        let items = parse_reward_request(body, &rules(), 10).unwrap();
        let answers: Vec<String> = items.into_iter().map(|i| i.unwrap().answer).collect();
        assert_eq!(answers, vec!["ok \u{1F600}", "broken \u{FFFD} tail", "a\u{FFFD}", "\\ud800 is text"]);
        let e = parse_body(br#"{"query":["\udcff"],}"#).unwrap_err();
        assert!(matches!(&e, Refused::BadRequest(m) if m.contains("trailing comma") && m.contains("U+FFFD")), "{e:?}");
    }

    #[test]
    fn rubric_ids_and_the_default_rubric() {
        let r = Rubric::from_json(r#"{"id":"cap","query":"capital?","nuggets":["a","b","c"]}"#, "r").unwrap();
        let mut rules = rules();
        rules.rubrics.insert("cap".into(), r.clone());
        let t = one(r#"{"query":["x"],"labels":["{\"rubric\":\"cap\"}"]}"#, &rules).unwrap();
        assert_eq!(t.nuggets.len(), 3);
        assert_eq!(t.query.as_deref(), Some("capital?"));
        let e = one(r#"{"query":["x"],"labels":["{\"rubric\":\"nope\"}"]}"#, &rules).unwrap_err().to_string();
        assert!(e.contains("labels[0]") && e.contains("rubric") && e.contains("cap"), "{e}");
        // Without labels, the default rubric.
        let e = parse_reward_request(br#"{"query":["x"]}"#, &rules, 10).unwrap_err();
        assert!(matches!(e, Refused::BadRequest(m) if m.contains("labels")));
        rules.default_rubric = Some(r);
        let t = one(r#"{"query":["x"]}"#, &rules).unwrap();
        assert_eq!(t.nuggets.len(), 3);
        let t = one(r#"{"query":["x"],"labels":[""]}"#, &rules).unwrap();
        assert_eq!(t.nuggets.len(), 3);
        // A label's own gold answers win over the default rubric.
        let t = one(r#"{"query":["x"],"labels":["y"]}"#, &rules).unwrap();
        assert_eq!(t.gold_answers, vec!["y"]);
    }

    #[test]
    fn bad_labels_fail_their_item_only() {
        let items = parse_reward_request(
            br#"{"query":["a","b","c"],"labels":["ok","{\"nuggets\":[{\"text\":\"n\",\"kind\":\"magic\"}]}","{broken"]}"#,
            &rules(),
            10,
        )
        .unwrap();
        assert!(items[0].is_ok());
        let e = items[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("labels[1]") && e.contains("nuggets[0].kind"), "{e}");
        let e = items[2].as_ref().unwrap_err().to_string();
        assert!(e.contains("labels[2]"), "{e}");
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        let cases: [(&str, &str); 8] = [
            ("{not json", "not valid JSON"),
            ("[1,2]", "JSON object"),
            (r#"{"labels":["a"]}"#, "`query`"),
            (r#"{"query":"abc","labels":["a"]}"#, "`query` must be an array"),
            (r#"{"query":["a",3],"labels":["a","b"]}"#, "`query[1]`"),
            (r#"{"query":["a"],"prompts":["p","q"],"labels":["a"]}"#, "`prompts` has 2"),
            (r#"{"query":["a"],"labels":["a","b"]}"#, "`labels` has 2"),
            (r#"{"query":["a"],"labels":"a"}"#, "`labels` must be an array"),
        ];
        for (body, want) in cases {
            match parse_reward_request(body.as_bytes(), &rules(), 10) {
                Err(Refused::BadRequest(m)) => assert!(m.contains(want), "{body}: {m}"),
                other => panic!("{body}: {:?}", other.map(|v| v.len())),
            }
        }
        let e = parse_reward_request(br#"{"query":["a","b","c"],"labels":["a","b","c"]}"#, &rules(), 2).unwrap_err();
        assert_eq!(e, Refused::TooManyRecords { got: 3, limit: 2 });
        for (body, want) in
            [(r#"{"recs":[]}"#, "`records` is missing"), (r#"{"records":{}}"#, "`records` must be an array")]
        {
            match parse_verify_request(body.as_bytes(), &rules(), 10) {
                Err(Refused::BadRequest(m)) => assert!(m.contains(want), "{body}: {m}"),
                other => panic!("{body}: {:?}", other.map(|v| v.len())),
            }
        }
    }

    #[test]
    fn verify_records_fail_one_by_one() {
        let items = parse_verify_request(
            br#"{"records":[{"id":"a","answer":"x","nuggets":["n"]},{"id":"b","query":"q"},"{\"id\":\"c\",\"answer\":\"y\",\"gold_answers\":[\"y\"]}",7]}"#,
            &rules(),
            10,
        )
        .unwrap();
        assert_eq!(items.len(), 4);
        assert!(items[0].1.is_ok());
        assert_eq!(items[1].0.as_deref(), Some("b"));
        let e = items[1].1.as_ref().unwrap_err().to_string();
        assert!(e.contains("records[1]") && e.contains("answer"), "{e}");
        assert!(items[2].1.as_ref().unwrap().is_short_form());
        assert!(items[3].1.is_err());
    }

    #[test]
    fn reward_is_correctness_for_short_form_and_weighted_reward_for_long_form() {
        use crate::aggregate::{aggregate, Verdict};
        use crate::rubric::{Label, Nugget};
        let short = Task::short_form(None, "x", vec!["x".into()], ShortForm::Hybrid);
        let v = vec![Verdict::decided(Label::Support, crate::aggregate::DecidedBy::ExactMatch)];
        let j = Judgement { scores: aggregate(&short.nuggets, &v), verdicts: v, truncated: false };
        let long = Task::new(None, "x", vec![Nugget::new("a"), Nugget::new("b")]);
        let v = vec![
            Verdict::decided(Label::Support, crate::aggregate::DecidedBy::Llm),
            Verdict::decided(Label::NotSupport, crate::aggregate::DecidedBy::Llm),
        ];
        let lj = Judgement { scores: aggregate(&long.nuggets, &v), verdicts: v, truncated: false };
        let r = reward_response(vec![
            Outcome::Judged(short, Ok(j)),
            Outcome::Judged(long, Ok(lj)),
            Outcome::Invalid { id: None, error: Error::field("labels[2]", "label", "is empty") },
        ]);
        assert_eq!(r.rewards, vec![1.0, 0.5, 0.0]);
        assert_eq!(r.scores, r.rewards);
        assert_eq!(r.extra_logs["error"], vec![0.0, 0.0, 1.0]);
        assert_eq!(r.extra_logs["model_verdicts"], vec![0.0, 2.0, 0.0]);
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].index, 2);
        assert!(r.errors[0].message.contains("labels[2]"));
    }
}
