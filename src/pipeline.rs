//! Streaming verification: JSON Lines in, one output line per input record, in order, written
//! and flushed as each batch completes; malformed lines become error records. Also the
//! benchmark that compares scored-mode throughput with raw prefill speed.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::extract::{ExtractTask, Extractor};
use crate::judge::Judge;
use crate::record::{
    output_key, parse_record, part_of, record_key, salvage_id, OutputRecord, Part, ShortForm, Task, VerdictRecord,
};
use crate::rubric::Rubric;

/// Options of [`verify_stream`].
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Name of the input in messages (file name or `stdin`).
    pub input_name: String,
    /// Rubric applied to every record.
    pub rubric: Option<Rubric>,
    /// Short-form policy.
    pub short_form: ShortForm,
    /// Records judged together (their model work shares decodes).
    pub batch_records: usize,
    /// Keys (see [`record_key`]) of records already in the output, with how many records of
    /// each key are done: that many input records of the key are skipped, not written again (a
    /// key shared by several records, a duplicate id, is redone for the records not yet done).
    pub skip: std::collections::HashMap<String, usize>,
    /// Set (by a signal handler) to stop after the batch in flight: its records are written,
    /// no further record is read, and the summary says `interrupted`.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Judge only the records of this half of a labeled file ([`crate::record::part_of`]): the
    /// others are passed over, neither judged nor written (a record that does not parse has no
    /// half and is written as an error record).
    pub part: Option<Part>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            input_name: "stdin".into(),
            rubric: None,
            short_form: ShortForm::Hybrid,
            batch_records: 32,
            skip: Default::default(),
            stop: None,
            part: None,
        }
    }
}

/// Totals of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Records read (non-blank lines).
    pub records: usize,
    /// Records that failed (error records written).
    pub errors: usize,
    /// Verdicts produced (all kinds).
    pub verdicts: usize,
    /// Verdicts decided by the model.
    pub model_verdicts: usize,
    /// Records whose judged text was truncated.
    pub truncated: usize,
    /// Records skipped because the output already had them (`--resume`).
    pub skipped: usize,
    /// Records of the output resumed into that no input record matched (`--resume` onto the
    /// output of another input), counted when the input ends.
    pub unmatched: usize,
    /// A stop was asked ([`VerifyOptions::stop`]): the run ended after a whole batch (or when
    /// its input ended or its output closed, as a pipeline's other process died of the same
    /// signal).
    pub interrupted: bool,
    /// The output was closed under the run (a broken pipe: `gavel verify | head`): it ended
    /// there, and the records after the last whole batch written were not judged.
    pub output_closed: bool,
    /// Wall time.
    #[serde(with = "crate::backend::secs")]
    pub elapsed: Duration,
}

impl Summary {
    /// Verdicts per second of wall time.
    pub fn verdicts_per_sec(&self) -> f64 {
        self.verdicts as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

enum Item {
    Task { line: usize, task: Task },
    Failed { line: usize, id: Option<String>, error: Error },
}

/// Turn a judged task into its output record.
pub fn output_record(line: usize, task: &Task, result: Result<crate::judge::Judgement>) -> OutputRecord {
    match result {
        Err(e) => {
            let mut r = OutputRecord::error(line, task.id.clone(), &e);
            r.source = task.source.clone();
            r
        }
        Ok(j) => {
            let short = task.is_short_form();
            let verdicts = task
                .nuggets
                .iter()
                .zip(&j.verdicts)
                .map(|(n, v)| VerdictRecord {
                    nugget: n.text.clone(),
                    importance: n.importance,
                    weight: n.weight,
                    verdict: v.clone(),
                    gold: n.gold,
                })
                .collect();
            OutputRecord {
                line,
                id: task.id.clone(),
                source: task.source.clone(),
                correct: short.then(|| j.verdicts.first().is_some_and(|v| v.label == crate::rubric::Label::Support)),
                gold: task.gold,
                scores: Some(j.scores),
                verdicts,
                truncated: j.truncated,
                error: None,
            }
        }
    }
}

/// Verify every record of `input`, writing one JSON line per record to `output`.
/// `progress` is called after each batch with (records done, verdicts done).
/// A broken pipe on the output ends the run early, without an error ([`Summary::output_closed`]).
pub fn verify_stream<R: BufRead, W: Write>(
    judge: &Judge,
    mut input: R,
    output: &mut W,
    opts: &VerifyOptions,
    mut progress: impl FnMut(&Summary),
) -> Result<Summary> {
    let start = Instant::now();
    let mut summary = Summary::default();
    let mut skip = opts.skip.clone();
    let mut line_no = 0usize;
    let mut buf = Vec::new();
    let batch = opts.batch_records.max(1);
    let mut eof = false;
    while !eof {
        if stop_asked(&opts.stop) {
            break;
        }
        let mut items = Vec::with_capacity(batch);
        while items.len() < batch {
            buf.clear();
            let n = input.read_until(b'\n', &mut buf).map_err(|e| Error::io(&opts.input_name, e))?;
            if n == 0 {
                eof = true;
                break;
            }
            line_no += 1;
            let location = format!("{}:{line_no}", opts.input_name);
            let text = match std::str::from_utf8(&buf) {
                Ok(t) => t.trim().trim_start_matches('\u{feff}'),
                Err(e) => {
                    let error = Error::Parse { location, reason: format!("invalid UTF-8: {e}") };
                    items.push(Item::Failed { line: line_no, id: None, error });
                    continue;
                }
            };
            if text.is_empty() {
                continue;
            }
            let parsed = parse_record(text, &location, opts.rubric.as_ref(), opts.short_form);
            // A record of the other half is not this run's: neither judged nor counted as done.
            let other_half = opts.part.is_some_and(|p| parsed.as_ref().is_ok_and(|t| part_of(t) != p));
            if let Some(n) = skip.get_mut(&record_key(salvage_id(text).as_deref(), line_no)).filter(|n| **n > 0) {
                *n -= 1;
                summary.skipped += usize::from(!other_half);
                continue;
            }
            if other_half {
                continue;
            }
            match parsed {
                Ok(task) => items.push(Item::Task { line: line_no, task }),
                Err(error) => items.push(Item::Failed { line: line_no, id: salvage_id(text), error }),
            }
        }
        if items.is_empty() {
            break;
        }
        let tasks: Vec<Task> = items
            .iter()
            .filter_map(|i| match i {
                Item::Task { task, .. } => Some(task.clone()),
                Item::Failed { .. } => None,
            })
            .collect();
        let mut results = judge.judge(&tasks).into_iter();
        let mut tasks = tasks.into_iter();
        let mut out = Vec::new();
        for item in items {
            let record = match item {
                Item::Failed { line, id, error } => OutputRecord::error(line, id, &error),
                Item::Task { line, .. } => {
                    let (task, result) = match (tasks.next(), results.next()) {
                        (Some(t), Some(r)) => (t, r),
                        _ => return Err(Error::Internal("judge returned fewer results than tasks".into())),
                    };
                    output_record(line, &task, result)
                }
            };
            summary.records += 1;
            if record.error.is_some() {
                summary.errors += 1;
            }
            summary.verdicts += record.verdicts.len();
            summary.model_verdicts +=
                record.verdicts.iter().filter(|v| v.verdict.by == crate::aggregate::DecidedBy::Llm).count();
            summary.truncated += usize::from(record.truncated);
            serde_json::to_writer(&mut out, &record).map_err(|e| Error::Internal(format!("serialise: {e}")))?;
            out.push(b'\n');
        }
        let written = output.write_all(&out).and_then(|_| output.flush());
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                summary.output_closed = true;
                break;
            }
            return Err(Error::io("output", e));
        }
        summary.elapsed = start.elapsed();
        progress(&summary);
    }
    // Also when the input ended or the output closed after the stop was asked: Ctrl-C reaches
    // every process of a pipeline, so the one feeding gavel may have died of it.
    summary.interrupted = stop_asked(&opts.stop);
    if eof && !summary.output_closed {
        summary.unmatched = skip.values().sum();
    }
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// Whether a stop was asked through a [`VerifyOptions::stop`] (or extract's) flag.
fn stop_asked(stop: &Option<std::sync::Arc<std::sync::atomic::AtomicBool>>) -> bool {
    stop.as_ref().is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
}

/// Options of [`extract_stream`].
#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Name of the input in messages (file name or `stdin`).
    pub input_name: String,
    /// Queries extracted together (their windows are generated in parallel).
    pub batch: usize,
    /// Write the input records with a `nuggets` field added, instead of one line of nuggets per
    /// query.
    pub attach: bool,
    /// Also write one rubric file per query (`<id>.json`) here.
    pub rubric_dir: Option<std::path::PathBuf>,
    /// Non-empty input lines already done (a resumed run): skipped, not written again.
    pub skip: usize,
    /// As [`VerifyOptions::stop`]: stop after the batch in flight.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions { input_name: "stdin".into(), batch: 8, attach: false, rubric_dir: None, skip: 0, stop: None }
    }
}

/// Totals of an extraction run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExtractSummary {
    /// Query lines read.
    pub queries: usize,
    /// Nuggets written.
    pub nuggets: usize,
    /// Lines that failed (error records written).
    pub errors: usize,
    /// A stop was asked ([`ExtractOptions::stop`]), as [`Summary::interrupted`].
    pub interrupted: bool,
    /// The output was closed under the run, as [`Summary::output_closed`].
    pub output_closed: bool,
    /// Wall time.
    #[serde(with = "crate::backend::secs")]
    pub elapsed: Duration,
}

/// An extraction input line: the record as given, and the task read from it.
type ExtractInput = (serde_json::Map<String, serde_json::Value>, ExtractTask);

/// An extraction input line read: its input, or the id it names (if any) and why it failed.
type ExtractLine = std::result::Result<ExtractInput, (Option<String>, Error)>;

/// Extract a rubric for every query line of `input`, writing one JSON line per line to `output`
/// (or the input record with `nuggets` attached), flushed per batch; malformed lines become
/// error records. `progress` is called after each batch. A broken pipe on the output ends the
/// run early, without an error ([`ExtractSummary::output_closed`]).
pub fn extract_stream<R: BufRead, W: Write>(
    extractor: &Extractor,
    input: R,
    output: &mut W,
    opts: &ExtractOptions,
    mut progress: impl FnMut(&ExtractSummary),
) -> Result<ExtractSummary> {
    if let Some(d) = &opts.rubric_dir {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let start = Instant::now();
    let mut summary = ExtractSummary::default();
    // (line, record or error)
    let mut pending: Vec<(usize, ExtractLine)> = Vec::new();
    let mut lines = input.lines().enumerate();
    let mut skip = opts.skip;
    // Rubric ids written in this run, with their line.
    let mut written_ids: std::collections::HashMap<String, (usize, String)> = std::collections::HashMap::new();
    loop {
        // Lines read but not yet extracted are not written: `--resume` reads them again.
        if stop_asked(&opts.stop) {
            break;
        }
        let mut eof = false;
        match lines.next() {
            Some((i, line)) => {
                let line = line.map_err(|e| Error::io(&opts.input_name, e))?;
                if !line.trim().is_empty() && skip > 0 {
                    skip -= 1;
                } else if !line.trim().is_empty() {
                    let parsed = parse_extract_record(&line, &format!("{}:{}", opts.input_name, i + 1));
                    // A line that fails keeps its id, if it has one, for its error record.
                    let parsed = parsed.map_err(|e| (salvage_id(&line), e));
                    pending.push((i + 1, parsed));
                }
            }
            None => eof = true,
        }
        let ready = pending.iter().filter(|(_, r)| r.is_ok()).count() >= opts.batch.max(1);
        if !(ready || (eof && !pending.is_empty())) {
            if eof {
                break;
            }
            continue;
        }
        let batch = std::mem::take(&mut pending);
        let tasks: Vec<ExtractTask> =
            batch.iter().filter_map(|(_, r)| r.as_ref().ok().map(|(_, t)| t.clone())).collect();
        let t0 = Instant::now();
        let mut results = extractor.extract(&tasks).into_iter();
        let per_query = t0.elapsed().as_secs_f64() / tasks.len().max(1) as f64;
        let mut out = Vec::new();
        for (line, rec) in batch {
            summary.queries += 1;
            let (mut record, task) = match rec {
                Ok(r) => r,
                Err((id, e)) => {
                    summary.errors += 1;
                    let v = serde_json::json!({"line": line, "id": id, "error": {"kind": e.kind(), "message": e.to_string()}});
                    writeln!(out, "{v}").map_err(|e| Error::io("output", e))?;
                    continue;
                }
            };
            let id = record.get("id").map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
            let result =
                results.next().unwrap_or_else(|| Err(Error::Internal("extractor returned too few results".into())));
            let v = match result {
                Ok(x) => {
                    summary.nuggets += x.nuggets.len();
                    let list: Vec<serde_json::Value> = x
                        .nuggets
                        .iter()
                        .map(|n| serde_json::json!({"text": n.text, "importance": n.importance, "p_vital": n.p_vital}))
                        .collect();
                    // Rubric files and attached records carry what the rubric format knows.
                    let plain: Vec<serde_json::Value> = x
                        .nuggets
                        .iter()
                        .map(|n| serde_json::json!({"text": n.text, "importance": n.importance}))
                        .collect();
                    let written = opts.rubric_dir.as_ref().map(|d| {
                        let name = id.clone().unwrap_or_else(|| format!("line-{line}"));
                        // Rubrics are found by id: a second query of one id would replace the
                        // first's file. It is that line's error, and the first file stays.
                        if let Some((first, query)) = written_ids.get(&name) {
                            // The same query again (records of one question): its rubric is
                            // written already.
                            if *query == task.query {
                                return Ok(());
                            }
                            return Err(Error::field(
                                format!("{}:{line}", opts.input_name),
                                "id",
                                format!(
                                    "the rubric id {name:?} is also line {first}'s, another query, whose rubric \
                                     file it would replace: give each query its own id"
                                ),
                            ));
                        }
                        written_ids.insert(name.clone(), (line, task.query.clone()));
                        let file = d.join(format!("{}.json", file_stem(&name)));
                        let rubric = serde_json::json!({"id": name, "query": task.query, "nuggets": plain});
                        let text = serde_json::to_string_pretty(&rubric).unwrap_or_default();
                        std::fs::write(&file, text + "\n").map_err(|e| Error::io(&file, e))
                    });
                    if let Some(Err(e)) = written {
                        // One query's file failing (a full disk, a bad name) is that line's error.
                        summary.errors += 1;
                        serde_json::json!({"line": line, "id": id, "error": {"kind": e.kind(), "message": e.to_string()}})
                    } else if opts.attach {
                        record.insert("nuggets".into(), serde_json::Value::Array(plain));
                        serde_json::Value::Object(record)
                    } else {
                        serde_json::json!({"line": line, "id": id, "query": task.query, "nuggets": list,
                            "windows": x.windows, "merged": x.merged, "seconds": per_query})
                    }
                }
                Err(e) => {
                    summary.errors += 1;
                    serde_json::json!({"line": line, "id": id, "error": {"kind": e.kind(), "message": e.to_string()}})
                }
            };
            writeln!(out, "{v}").map_err(|e| Error::io("output", e))?;
        }
        if let Err(e) = output.write_all(&out).and_then(|_| output.flush()) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                summary.output_closed = true;
                break;
            }
            return Err(Error::io("output", e));
        }
        summary.elapsed = start.elapsed();
        progress(&summary);
        if eof {
            break;
        }
    }
    summary.interrupted = stop_asked(&opts.stop);
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// One extraction input line: the record as given, and the task read from it.
fn parse_extract_record(line: &str, location: &str) -> Result<ExtractInput> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| Error::Parse {
        location: format!("{location}, column {}", e.column()),
        reason: crate::error::json_reason(&e),
    })?;
    let serde_json::Value::Object(map) = v else {
        return Err(Error::Parse { location: location.into(), reason: "a record must be a JSON object".into() });
    };
    let query = match map.get("query") {
        Some(serde_json::Value::String(q)) if !q.trim().is_empty() => q.clone(),
        Some(serde_json::Value::String(_)) => return Err(Error::field(location, "query", "is empty")),
        Some(_) => return Err(Error::field(location, "query", "must be a string")),
        None => return Err(Error::field(location, "query", "is missing")),
    };
    let passages = match map.get("passages") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, p)| match p {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Object(o) => {
                    o.get("text").or_else(|| o.get("segment")).and_then(|t| t.as_str()).map(str::to_string).ok_or_else(
                        || Error::field(location, format!("passages[{i}]"), "an object needs a `text` string"),
                    )
                }
                _ => Err(Error::field(location, format!("passages[{i}]"), "must be a string")),
            })
            .collect::<Result<_>>()?,
        Some(_) => return Err(Error::field(location, "passages", "must be a list of strings")),
    };
    Ok((map, ExtractTask { query, passages }))
}

/// A file name for an id: its letters, digits, `-`, `_` and `.`, others as `_`; an id longer than
/// file systems allow keeps its first 80 characters and a hash of the whole, so names stay apart.
fn file_stem(id: &str) -> String {
    let clean: String =
        id.chars().map(|c| if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect();
    // An id written as it is keeps its name; one with characters replaced gets a hash of the
    // id too, so that `a/b` and `a_b` are two files.
    if clean == id && clean.len() <= 120 && !clean.starts_with('.') {
        return clean;
    }
    use sha2::Digest;
    let hash = sha2::Sha256::digest(id.as_bytes());
    let head: String = clean.trim_start_matches('.').chars().take(80).collect();
    format!("{head}-{}", hash.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>())
}

/// Benchmark numbers of scored mode next to raw prefill speed.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Records judged.
    pub records: usize,
    /// Verdicts produced by the model.
    pub verdicts: usize,
    /// Records that failed.
    pub errors: usize,
    /// Wall time of the scoring, seconds (the raw prefill samples left out).
    pub seconds: f64,
    /// Model verdicts per second.
    pub verdicts_per_sec: f64,
    /// Unique prompt tokens evaluated (each shared prefix once).
    pub prompt_tokens: usize,
    /// Unique prompt tokens per second of wall time.
    pub prompt_tokens_per_sec: f64,
    /// Raw prefill: tokens in the single sequence.
    pub prefill_tokens: usize,
    /// Raw prefill speed, tokens/s: the median of the samples.
    pub prefill_tokens_per_sec: f64,
    /// Each raw prefill sample's speed, tokens/s, in the order taken (spread over the run).
    pub prefill_samples: Vec<f64>,
    /// `prompt_tokens_per_sec / prefill_tokens_per_sec`.
    pub ratio: f64,
    /// The unique prompt tokens by part (head, per-answer prefix, per-nugget suffix, baseline),
    /// where the backend tells.
    pub budget: crate::backend::TokenBudget,
    /// Tokens of the model-judged nuggets' own text (each tokenized alone): what a verdict
    /// cannot do without.
    pub nugget_tokens: usize,
}

/// Raw prefill samples a benchmark takes across its run (before the first batch, between
/// batches, after the last): the machine's speed drifts, and one sample taken at one moment
/// moved the ratio by 30 points between runs on the same machine.
const PREFILL_SAMPLES: usize = 5;

/// Score `tasks` in batches of `batch_records` and measure raw prefill of about
/// `prefill_tokens` tokens of the same records' text through the same backend, up to
/// [`PREFILL_SAMPLES`] times spread over the run (fewer when there are fewer than four
/// batches). The scoring's time and tokens leave the samples out; a sample clears the cache, so
/// the batch after it evaluates the shared head again (counted: it is part of the scoring).
pub fn bench(judge: &Judge, tasks: &[Task], batch_records: usize, prefill_tokens: usize) -> Result<BenchReport> {
    let backend = judge.backend();
    let text = prefill_text(backend.as_ref(), tasks, prefill_tokens)?;
    let chunks: Vec<&[Task]> = tasks.chunks(batch_records.max(1)).collect();
    // Samples before batches 0, n/4, n/2, 3n/4 (distinct ones) and after the last.
    let mut at: Vec<usize> = (0..PREFILL_SAMPLES - 1).map(|k| k * chunks.len() / (PREFILL_SAMPLES - 1)).collect();
    at.dedup();
    let mut samples = Vec::with_capacity(PREFILL_SAMPLES);
    let mut prefill_n = 0;
    let mut sample = |samples: &mut Vec<f64>| -> Result<()> {
        let (n, took) = backend.prefill(&text)?;
        prefill_n = n;
        samples.push(n as f64 / took.as_secs_f64().max(1e-9));
        Ok(())
    };
    let (mut prompt_tokens, mut budget) = (0, crate::backend::TokenBudget::default());
    let mut elapsed = Duration::ZERO;
    let (mut verdicts, mut errors) = (0, 0);
    for (i, chunk) in chunks.iter().enumerate() {
        if at.contains(&i) {
            sample(&mut samples)?;
        }
        let before = backend.usage();
        let start = Instant::now();
        for r in judge.judge(chunk) {
            match r {
                Ok(j) => verdicts += j.verdicts.iter().filter(|v| v.by == crate::aggregate::DecidedBy::Llm).count(),
                Err(_) => errors += 1,
            }
        }
        elapsed += start.elapsed();
        // Usage between a batch's start and end: a backend that counts its prefill samples
        // (llama-server reports their tokens) does not add them to the scoring's.
        let after = backend.usage();
        prompt_tokens += after.prompt_tokens - before.prompt_tokens;
        budget += after.budget - before.budget;
    }
    sample(&mut samples)?;
    let seconds = elapsed.as_secs_f64();
    let mut nugget_tokens = 0;
    for t in tasks {
        for n in t.nuggets.iter().filter(|n| n.needs_model()) {
            nugget_tokens += backend.count_tokens(&n.text)?;
        }
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let prefill_tps = if sorted.len() % 2 == 0 { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] };
    let tps = prompt_tokens as f64 / seconds.max(1e-9);
    Ok(BenchReport {
        records: tasks.len(),
        verdicts,
        errors,
        seconds,
        verdicts_per_sec: verdicts as f64 / seconds.max(1e-9),
        prompt_tokens,
        prompt_tokens_per_sec: tps,
        prefill_tokens: prefill_n,
        prefill_tokens_per_sec: prefill_tps,
        prefill_samples: samples,
        ratio: tps / prefill_tps,
        budget,
        nugget_tokens,
    })
}

/// The records' own text, one sequence of at most about `prefill_tokens` tokens.
fn prefill_text(backend: &dyn crate::backend::Backend, tasks: &[Task], prefill_tokens: usize) -> Result<String> {
    let mut text = String::new();
    for t in tasks {
        text.push_str(&t.answer);
        text.push('\n');
        if text.len() > prefill_tokens * 6 {
            break;
        }
    }
    let mut cut = text.len();
    while backend.count_tokens(&text[..cut])? > prefill_tokens && cut > 0 {
        cut = cut * 9 / 10;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
    }
    text.truncate(cut);
    Ok(text)
}

/// What an existing output file already holds.
#[derive(Debug, Clone, Default)]
pub struct ResumeState {
    /// Keys of the complete records, with how many records of each key are done.
    pub done: std::collections::HashMap<String, usize>,
    /// Complete records kept.
    pub kept: usize,
    /// Bytes of an incomplete last line that were cut off (to be redone).
    pub dropped_bytes: u64,
    /// Error records taken out of the file, to be judged again (a failure may have been
    /// passing: a remote server down, a full disk); their new lines are appended.
    pub retried: usize,
}

/// Scan `path` for complete output records and cut off an incomplete last line (a run killed
/// mid-write), so that appending continues cleanly. Error records whose key no other record
/// shares are taken out of the file (see [`replace_file`]) and not counted as done, so the
/// resumed run judges them again. A missing file is an empty state. A complete line in the middle that
/// is not an output record is an error naming it: cutting there would lose every record after it.
pub fn prepare_resume(path: &std::path::Path) -> Result<ResumeState> {
    scan_resume(path, output_key)
}

/// [`prepare_resume`] for `gavel extract`'s output, whose lines are in input order, one per
/// non-empty input line (an `--attach` line is the input record, so it may carry neither `line`
/// nor `id`): every complete JSON object counts, and `kept` is how many input lines are done.
pub fn prepare_extract_resume(path: &std::path::Path) -> Result<ResumeState> {
    scan_resume(path, |line| {
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(line).ok().map(|_| (String::new(), false))
    })
}

/// `output_key` gives a complete line's key and whether it is an error record to redo.
fn scan_resume(path: &std::path::Path, output_key: impl Fn(&[u8]) -> Option<(String, bool)>) -> Result<ResumeState> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ResumeState::default()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut state = ResumeState::default();
    let mut good_end = 0usize;
    let mut start = 0usize;
    // Complete records: key, whether an error record, byte range.
    let mut records = Vec::new();
    while start < data.len() {
        let Some(nl) = data[start..].iter().position(|&b| b == b'\n') else {
            break;
        };
        let line = &data[start..start + nl];
        let Some((key, is_error)) = output_key(line) else {
            if line.iter().all(u8::is_ascii_whitespace) {
                start += nl + 1;
                good_end = start;
                continue;
            }
            let n = data[..start].iter().filter(|&&b| b == b'\n').count() + 1;
            return Err(Error::Parse {
                location: format!("{}:{n}", path.display()),
                reason: "not an output record; --resume stops rather than drop the records after it (fix or \
                         remove this line)"
                    .into(),
            });
        };
        records.push((key, is_error, start..start + nl + 1));
        start += nl + 1;
        good_end = start;
    }
    // An error record is judged again only when no other record has its key: with a key twice
    // (two records of one id), skipping goes by count in input order, so taking one out could
    // redo the wrong one.
    let mut keys: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (key, _, _) in &records {
        *keys.entry(key.as_str()).or_default() += 1;
    }
    let mut failed = Vec::new();
    for (key, is_error, range) in &records {
        if *is_error && keys[key.as_str()] == 1 {
            failed.push(range.clone());
        } else {
            *state.done.entry(key.clone()).or_default() += 1;
            state.kept += 1;
        }
    }
    if !failed.is_empty() {
        state.retried = failed.len();
        state.dropped_bytes = (data.len() - good_end) as u64;
        let mut kept = Vec::with_capacity(good_end);
        let mut at = 0;
        for r in failed {
            kept.extend_from_slice(&data[at..r.start]);
            at = r.end;
        }
        kept.extend_from_slice(&data[at..good_end]);
        replace_file(path, &kept)?;
        return Ok(state);
    }
    if good_end < data.len() {
        state.dropped_bytes = (data.len() - good_end) as u64;
        let f = std::fs::OpenOptions::new().write(true).open(path).map_err(|e| Error::io(path, e))?;
        f.set_len(good_end as u64).map_err(|e| Error::io(path, e))?;
    }
    Ok(state)
}

/// Replace the contents of `path` (through a symbolic link, the file it points to) with `data`:
/// written to a new file beside it with the same permissions, flushed to disk, then renamed over
/// it, so an interruption leaves the old file whole.
fn replace_file(path: &std::path::Path, data: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let path = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    let tmp = path.with_file_name(format!(
        ".{}.resume-tmp",
        path.file_name().map_or_else(|| "output".into(), |n| n.to_string_lossy())
    ));
    let perms = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?.permissions();
    // One left by a run killed here would stop this one.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.set_permissions(perms)?;
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, &path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_keeps_complete_lines_and_cuts_a_partial_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        std::fs::write(&p, "{\"line\":1,\"id\":\"a\"}\n{\"line\":2}\n{\"line\":3,\"id\":\"c\",\"sco").unwrap();
        let s = prepare_resume(&p).unwrap();
        assert_eq!(s.kept, 2);
        assert!(s.done.contains_key("id:a") && s.done.contains_key("line:2") && !s.done.contains_key("id:c"));
        assert_eq!(s.dropped_bytes, "{\"line\":3,\"id\":\"c\",\"sco".len() as u64);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "{\"line\":1,\"id\":\"a\"}\n{\"line\":2}\n");
        // A complete-looking last line without its newline is redone too.
        std::fs::write(&p, "{\"line\":1}\n{\"line\":2}").unwrap();
        let s = prepare_resume(&p).unwrap();
        assert_eq!((s.kept, s.dropped_bytes), (1, 10));
        assert_eq!(prepare_resume(&dir.path().join("none")).unwrap().kept, 0);
        // An unreadable line in the middle is an error, and nothing is cut.
        let body = "{\"line\":1}\ngarbage\n{\"line\":3}\n";
        std::fs::write(&p, body).unwrap();
        let e = prepare_resume(&p).unwrap_err().to_string();
        assert!(e.contains("out.jsonl:2") && e.contains("not an output record"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), body);
        // Duplicate ids are counted, not merged.
        std::fs::write(&p, "{\"line\":1,\"id\":\"x\"}\n{\"line\":2,\"id\":\"x\"}\n").unwrap();
        assert_eq!(prepare_resume(&p).unwrap().done.get("id:x"), Some(&2));
    }

    #[test]
    fn resume_takes_error_records_out_to_judge_them_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        let ok1 = "{\"line\":1,\"id\":\"a\",\"scores\":{}}\n";
        let bad2 = "{\"line\":2,\"id\":\"b\",\"error\":{\"kind\":\"remote\",\"message\":\"down\"}}\n";
        let ok3 = "{\"line\":3,\"scores\":{}}\n";
        let bad4 = "{\"line\":4,\"error\":{\"kind\":\"parse\",\"message\":\"x\"}}\n";
        std::fs::write(&p, format!("{ok1}{bad2}{ok3}{bad4}{{\"line\":5,\"sc")).unwrap();
        let s = prepare_resume(&p).unwrap();
        assert_eq!((s.kept, s.retried), (2, 2));
        assert!(s.done.contains_key("id:a") && s.done.contains_key("line:3"));
        assert!(!s.done.contains_key("id:b") && !s.done.contains_key("line:4"));
        assert_eq!(s.dropped_bytes, "{\"line\":5,\"sc".len() as u64);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), format!("{ok1}{ok3}"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
        // An error record whose key another record shares stays done: skipping goes by count
        // in input order, so taking it out could redo the wrong record of the two.
        std::fs::write(&p, format!("{bad2}{{\"line\":7,\"id\":\"b\",\"scores\":{{}}}}\n{bad4}")).unwrap();
        let s = prepare_resume(&p).unwrap();
        assert_eq!((s.kept, s.retried, s.done.get("id:b")), (2, 1, Some(&2)));
        // Through a symbolic link the file it points to is rewritten, with its permissions.
        use std::os::unix::fs::PermissionsExt;
        let real = dir.path().join("real.jsonl");
        std::fs::write(&real, format!("{ok1}{bad4}")).unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(prepare_resume(&link).unwrap().retried, 1);
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), ok1);
        assert_eq!(std::fs::metadata(&real).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_file(&real).unwrap();
        // Extract's output keeps its error lines: its resume counts lines in input order.
        std::fs::write(&p, format!("{ok1}{bad2}")).unwrap();
        let s = prepare_extract_resume(&p).unwrap();
        assert_eq!((s.kept, s.retried), (2, 0));
    }

    #[test]
    fn rubric_file_names_stay_short_distinct_and_safe() {
        assert_eq!(file_stem("q-12_a.b"), "q-12_a.b");
        assert!(file_stem("a/b c").starts_with("a_b_c-"), "{}", file_stem("a/b c"));
        assert_ne!(file_stem("a/b"), file_stem("a_b"), "a replaced character is not another id");
        assert_eq!(file_stem("a_b"), "a_b");
        let long_a = "x".repeat(300);
        let long_b = format!("{}y", "x".repeat(299));
        let (a, b) = (file_stem(&long_a), file_stem(&long_b));
        assert!(a.len() <= 100 && b.len() <= 100, "{a} {b}");
        assert_ne!(a, b);
        assert!(!file_stem("..").starts_with('.'));
    }
}
