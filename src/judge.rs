//! The judge: deterministic checks first, then the model for the nuggets that need it, with the
//! shared prefix of each answer evaluated once; verdicts merged and aggregated per task.

use std::sync::Arc;

use regex::Regex;
use serde::Serialize;

use crate::aggregate::{aggregate, BlockSpan, DecidedBy, LabelProbs, NuggetLp, RawScore, Scores, Verdict};
use crate::backend::{Backend, LabelScore, PromptGroup};
use crate::cache::VerdictCache;
use crate::calibrate::Calibrator;
use crate::error::{Error, Result};
use crate::label::Grades;
use crate::prompt::{JudgeMode, JudgeVars, PromptSet};
use crate::record::Task;
use crate::rubric::{Check, CheckOutcome, Label};
use crate::stack::FeatureInput;

/// The fewest answer tokens a block may hold: an answer that would need smaller blocks (a
/// context nearly filled by the rest of the prompt, or `--block-tokens` below it) fails as
/// `too_long` instead.
pub const MIN_BLOCK_TOKENS: usize = 32;

/// Settings of the judge.
#[derive(Debug, Clone)]
pub struct JudgeConfig {
    /// Scored (default) or reasoned.
    pub mode: JudgeMode,
    /// Fold partial support into not support.
    pub two_grade: bool,
    /// Cut the judged text to fit the context instead of failing the record.
    pub truncate: bool,
    /// Token budget of a reasoned verdict.
    pub max_reason_tokens: usize,
    /// Scored mode: also read the nugget's likelihood and its content-free baseline (PMI), the
    /// stacked judge's strongest model signal; costs about 30% of verdicts/s on REALSumm.
    pub likelihood: bool,
    /// Judge an answer too long for the context in blocks (merged at sample level) instead of
    /// failing it as `too_long`.
    pub blocks: bool,
    /// Cut every answer longer than this many tokens into blocks, even one that fits.
    pub block_tokens: Option<usize>,
    /// Tokens of each block's end repeated at the start of the next.
    pub block_overlap: usize,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            mode: JudgeMode::Scored,
            two_grade: false,
            truncate: false,
            max_reason_tokens: 160,
            likelihood: true,
            blocks: true,
            block_tokens: None,
            block_overlap: 64,
        }
    }
}

impl JudgeConfig {
    /// Set the mode.
    pub fn with_mode(mut self, mode: JudgeMode) -> Self {
        self.mode = mode;
        self
    }

    /// Set 2-grade folding.
    pub fn with_two_grade(mut self, yes: bool) -> Self {
        self.two_grade = yes;
        self
    }

    /// Read the nugget likelihood (and its PMI baseline) in scored mode.
    pub fn with_likelihood(mut self, yes: bool) -> Self {
        self.likelihood = yes;
        self
    }

    /// Set truncation.
    pub fn with_truncate(mut self, yes: bool) -> Self {
        self.truncate = yes;
        self
    }

    /// Set block judging: on or off, the block size (`None`: as large as the context allows)
    /// and the overlap between blocks, in tokens.
    pub fn with_blocks(mut self, on: bool, tokens: Option<usize>, overlap: usize) -> Self {
        self.blocks = on;
        self.block_tokens = tokens;
        self.block_overlap = overlap;
        self
    }
}

/// The result for one task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    /// One verdict per nugget, in rubric order.
    pub verdicts: Vec<Verdict>,
    /// Aggregated scores.
    pub scores: Scores,
    /// The judged text was cut to fit.
    pub truncated: bool,
}

/// The prompt of one nugget, split where the shared part ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedPrompt {
    /// Nugget index in the task.
    pub nugget: usize,
    /// Shared prefix (identical for all nuggets of the task).
    pub prefix: String,
    /// Per-nugget suffix; the exact prompt is `prefix + suffix`.
    pub suffix: String,
}

/// Verifies answers against rubrics with a backend.
pub struct Judge {
    backend: Arc<dyn Backend>,
    prompts: PromptSet,
    config: JudgeConfig,
    cache: Option<(Arc<VerdictCache>, String)>,
    calibrator: Option<Calibrator>,
    baselines: BaselineMemo,
}

/// Where a nugget's content-free baseline comes from: read in this call (group, suffix), or
/// known from an earlier call.
#[derive(Clone)]
enum Baseline {
    Read(usize, usize),
    Known(Arc<[f32]>),
}

/// Content-free baseline reads kept across calls and requests: they depend only on the
/// baseline prompt (template, query, nugget) and the model, both fixed for a judge, so a rubric
/// judged against many answers (RL rollouts, a file of systems' summaries) pays for each once.
/// Two generations bound the memory: when the young one is full, it becomes the old one.
#[derive(Default)]
struct BaselineMemo {
    inner: std::sync::Mutex<[MemoGeneration; 2]>,
}

/// Baseline reads by (prefix, suffix) of their prompt.
type MemoGeneration = std::collections::HashMap<(String, String), Arc<[f32]>>;

impl BaselineMemo {
    /// Entries per generation (about 100 bytes of floats each, plus the key).
    const GENERATION: usize = 1 << 16;

    fn get(&self, prefix: &str, suffix: &str) -> Option<Arc<[f32]>> {
        let memo = self.inner.lock().ok()?;
        let key = (prefix.to_string(), suffix.to_string());
        memo[0].get(&key).or_else(|| memo[1].get(&key)).cloned()
    }

    fn put(&self, prefix: &str, suffix: &str, lps: &[f32]) {
        let Ok(mut memo) = self.inner.lock() else { return };
        if memo[0].len() >= Self::GENERATION {
            memo[1] = std::mem::take(&mut memo[0]);
        }
        memo[0].insert((prefix.to_string(), suffix.to_string()), Arc::from(lps));
    }
}

/// Passages longer than this many words also get a read of each nugget after its best-matching
/// window alone (see [`RawScore::window_lp`]); shorter ones are their own window.
pub const WINDOW_MIN_WORDS: usize = 200;

/// The passage of the baseline prompts that measure how likely a nugget is without evidence.
const CONTENT_FREE_PASSAGE: &str = "N/A";

struct Pending {
    task: usize,
    nuggets: Vec<usize>,
    truncated: bool,
    /// The block judged, when the task is judged in blocks, and where it lies.
    block: Option<(usize, BlockSpan)>,
    /// The text judged: the answer, its cut, or the block.
    text: String,
}

/// One prompt group of a task: (block and where it lies, judged text, group, truncated).
type Entry = (Option<(usize, BlockSpan)>, String, PromptGroup, bool);

/// A block of a text: where it lies, its text, its prompt group.
type Part = (BlockSpan, String, PromptGroup);

impl Judge {
    /// A judge over `backend` with `prompts`.
    pub fn new(backend: Arc<dyn Backend>, prompts: PromptSet, config: JudgeConfig) -> Self {
        Judge { backend, prompts, config, cache: None, calibrator: None, baselines: BaselineMemo::default() }
    }

    /// Cache raw model outputs in `cache`; `model_key` identifies the model file (see
    /// [`crate::cache::model_fingerprint`]).
    pub fn with_cache(mut self, cache: Arc<VerdictCache>, model_key: impl Into<String>) -> Self {
        self.cache = Some((cache, model_key.into()));
        self
    }

    /// Apply a calibration to scored-mode distributions.
    pub fn with_calibrator(mut self, calibrator: Option<Calibrator>) -> Self {
        self.calibrator = calibrator;
        self
    }

    /// Check what would otherwise fail every record: in scored mode, that each label's words
    /// start with a token of their own in this model.
    pub fn check(&self) -> Result<()> {
        match self.config.mode {
            JudgeMode::Scored => self.backend.check_labels(&self.prompts.labels().as_choices()),
            JudgeMode::Reasoned => Ok(()),
        }
    }

    /// The calibration in use.
    pub fn calibrator(&self) -> Option<&Calibrator> {
        self.calibrator.as_ref()
    }

    /// Scores through the cache: hits are read, misses go to the backend in one call and are
    /// stored. A cache failure is logged and the backend answers instead.
    fn score_cached(&self, groups: &[PromptGroup]) -> Vec<Vec<Result<LabelScore>>> {
        let choices = self.prompts.labels().as_choices();
        let Some((cache, model)) = &self.cache else {
            return self.backend.score(groups, &choices);
        };
        // Entries written in batch-invariant mode are exact for any batch; the others are not,
        // so the two never answer for each other.
        let mode = if self.backend.info().batch_invariant { "scored/batch-invariant" } else { "scored" };
        let keys: Vec<Vec<[u8; 32]>> = groups
            .iter()
            .map(|g| g.suffixes.iter().map(|s| VerdictCache::key(model, mode, &g.prefix, s)).collect())
            .collect();
        let flat: Vec<[u8; 32]> = keys.iter().flatten().copied().collect();
        let hits = match cache.get_many(&flat) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("{e}; judging without the cache");
                return self.backend.score(groups, &choices);
            }
        };
        let mut hits = hits.into_iter();
        let reads_hidden = self.backend.reads_hidden();
        let mut out: Vec<Vec<Option<Result<LabelScore>>>> = Vec::with_capacity(groups.len());
        let mut misses: Vec<PromptGroup> = Vec::new();
        let mut miss_at: Vec<(usize, Vec<usize>)> = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            let mut row = Vec::with_capacity(g.suffixes.len());
            let mut missing = Vec::new();
            for si in 0..g.suffixes.len() {
                let hit = hits.next().flatten().and_then(|bytes| serde_json::from_slice::<CachedScore>(&bytes).ok());
                // An entry stored without the nugget's likelihood does not answer a prompt that asks for it.
                let hit = hit.filter(|c| g.span(si).is_none() || c.span_logprobs.is_some());
                // Hidden states are not cached (a few KB each): a run that reads them reads anew.
                let hit = hit.filter(|_| !reads_hidden);
                match hit {
                    Some(c) => row.push(Some(Ok(LabelScore {
                        span_logprobs: c.span_logprobs,
                        ..LabelScore::votes(c.probs, c.logprobs)
                    }))),
                    None => {
                        row.push(None);
                        missing.push(si);
                    }
                }
            }
            if !missing.is_empty() {
                let suffixes = missing.iter().map(|&i| g.suffixes[i].clone()).collect();
                let spans = missing.iter().map(|&i| g.span(i)).collect();
                misses.push(PromptGroup { prefix: g.prefix.clone(), suffixes, spans, baseline: g.baseline });
                miss_at.push((gi, missing));
            }
            out.push(row);
        }
        if !misses.is_empty() {
            let results = self.backend.score(&misses, &choices);
            let mut store = Vec::new();
            for ((gi, idx), res) in miss_at.into_iter().zip(results) {
                for (si, r) in idx.into_iter().zip(res) {
                    if let Ok(s) = &r {
                        let c = CachedScore {
                            probs: s.probs.clone(),
                            logprobs: s.logprobs.clone(),
                            span_logprobs: s.span_logprobs.clone(),
                        };
                        if let Ok(bytes) = serde_json::to_vec(&c) {
                            store.push((keys[gi][si], bytes));
                        }
                    }
                    out[gi][si] = Some(r);
                }
            }
            if let Err(e) = cache.put_many(&store) {
                tracing::warn!("{e}; verdicts not cached");
            }
        }
        out.into_iter()
            .map(|row| {
                row.into_iter().map(|r| r.unwrap_or_else(|| Err(Error::Internal("missing score".into())))).collect()
            })
            .collect()
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The templates.
    pub fn prompts(&self) -> &PromptSet {
        &self.prompts
    }

    /// The settings.
    pub fn config(&self) -> &JudgeConfig {
        &self.config
    }

    /// Render the exact prompts the model would see for the nuggets of `task` that need it.
    pub fn render(&self, task: &Task) -> Result<Vec<RenderedPrompt>> {
        let nuggets: Vec<usize> = (0..task.nuggets.len()).filter(|&i| task.nuggets[i].needs_model()).collect();
        let group = self.group(task, &task.answer, &nuggets)?;
        Ok(nuggets
            .into_iter()
            .zip(group.suffixes)
            .map(|(nugget, suffix)| RenderedPrompt { nugget, prefix: group.prefix.clone(), suffix })
            .collect())
    }

    /// The texts the model judges for `task`: its passages, the blocks its answer is cut into,
    /// or the answer (cut when truncating). A verdict's `block` indexes this list.
    pub fn judged_texts(&self, task: &Task) -> Result<Vec<String>> {
        let nuggets: Vec<usize> = (0..task.nuggets.len()).filter(|&i| task.nuggets[i].needs_model()).collect();
        Ok(self.fitted_groups(task, &nuggets)?.into_iter().map(|(_, text, _, _)| text).collect())
    }

    fn format(&self, task: &Task, answer: &str, nugget: &str) -> Result<String> {
        let vars = JudgeVars { query: task.query.as_deref(), answer, nugget, gold_answers: &task.gold_answers };
        let prompt = self.prompts.render_judge(self.config.mode, &vars)?;
        Ok(self.backend.format_chat(&prompt.messages)? + &prompt.reply_start)
    }

    fn group(&self, task: &Task, answer: &str, nuggets: &[usize]) -> Result<PromptGroup> {
        let mut g = PromptGroup::split(
            |n| self.format(task, answer, n),
            nuggets.iter().map(|&i| task.nuggets[i].text.as_str()),
        )?;
        if self.config.mode != JudgeMode::Scored || !self.config.likelihood || !self.backend.reads_spans() {
            g.spans.clear();
        }
        Ok(g)
    }

    /// The prompt groups of a task: one per passage when the record brings passages; one per
    /// block when the answer is longer than the context allows (or than `block_tokens`) and
    /// blocks are on; else the one group of [`Judge::fitted_group`].
    fn fitted_groups(&self, task: &Task, nuggets: &[usize]) -> Result<Vec<Entry>> {
        // Each prompt group is rendered once: it measures whether its text needs cutting, and is
        // judged as it is when it does not.
        let blocks = |text: &str, passage: Option<usize>, whole: PromptGroup| -> Result<Vec<Part>> {
            match self.blocks_of(text, &whole)? {
                Some(ranges) => ranges
                    .into_iter()
                    .map(|(a, b)| {
                        // The block without the white space at its edges, and where that lies.
                        let raw = &text[a..b];
                        let start = a + (raw.len() - raw.trim_start().len());
                        let end = (b - (raw.len() - raw.trim_end().len())).max(start);
                        let block = text[start..end].to_string();
                        let g = self.group(task, &block, nuggets)?;
                        Ok((BlockSpan { passage, start, end }, block, g))
                    })
                    .collect(),
                None => Ok(vec![(BlockSpan { passage, start: 0, end: text.len() }, text.to_string(), whole)]),
            }
        };
        if !task.passages.is_empty() {
            // Each passage, itself cut when it does not fit; blocks are numbered in order.
            let mut parts = Vec::new();
            for (pi, p) in task.passages.iter().enumerate() {
                let whole = self.group(task, p, nuggets)?;
                parts.extend(if self.config.blocks {
                    blocks(p, Some(pi), whole)?
                } else {
                    vec![(BlockSpan { passage: Some(pi), start: 0, end: p.len() }, p.clone(), whole)]
                });
            }
            return Ok(parts
                .into_iter()
                .enumerate()
                .map(|(i, (span, text, g))| (Some((i, span)), text, g, false))
                .collect());
        }
        let whole = self.group(task, &task.answer, nuggets)?;
        // --truncate keeps its meaning: the start of the answer, cut to fit, is judged.
        if self.config.blocks && !self.config.truncate {
            let parts = blocks(&task.answer, None, whole)?;
            if parts.len() == 1 {
                let (_, text, g) = parts.into_iter().next().expect("one part");
                return Ok(vec![(None, text, g, false)]);
            }
            return Ok(parts
                .into_iter()
                .enumerate()
                .map(|(i, (span, text, g))| (Some((i, span)), text, g, false))
                .collect());
        }
        let (g, truncated) = self.fitted_group(task, nuggets, whole)?;
        let text = if truncated { String::new() } else { task.answer.clone() };
        Ok(vec![(None, text, g, truncated)])
    }

    /// Where to cut `text` (the answer or a passage), whose prompt group is `group`, into
    /// blocks, or `None` when it is judged whole: it fits the context (and `block_tokens`, when
    /// set).
    fn blocks_of(&self, text: &str, group: &PromptGroup) -> Result<Option<Vec<(usize, usize)>>> {
        let n_ctx = self.backend.info().n_ctx;
        let cap = self.config.block_tokens;
        let longest = group.suffixes.iter().map(String::len).max().unwrap_or(0);
        // A token is at least one byte: a prompt of fewer bytes than the limit fits it.
        let bytes = group.prefix.len() + longest;
        if bytes <= n_ctx && cap.is_none_or(|c| text.len() <= c) {
            return Ok(None);
        }
        let reserve = if self.config.mode == JudgeMode::Reasoned { self.config.max_reason_tokens } else { 0 };
        let longest = group.suffixes.iter().max_by_key(|s| s.len()).map(String::as_str).unwrap_or("");
        let tokens = self.backend.count_tokens(&format!("{}{}", group.prefix, longest))? + reserve;
        let answer_tokens = self.backend.count_tokens(text)?;
        // What a block may hold: the context less the rest of the prompt, with a margin for
        // tokens that merge differently at the block's edges.
        let room = n_ctx.saturating_sub(tokens.saturating_sub(answer_tokens) + 16);
        let limit = cap.map_or(room, |c| c.min(room));
        if answer_tokens <= limit {
            return Ok(None);
        }
        if limit < MIN_BLOCK_TOKENS {
            return Err(Error::TooLong { tokens, n_ctx });
        }
        let count = |t: &str| self.backend.count_tokens(t).unwrap_or(t.len());
        Ok(Some(crate::lexical::cut_blocks(text, count, limit, self.config.block_overlap.min(limit / 2))))
    }

    /// Build the prompt group, cutting the answer when `truncate` is on and it does not fit.
    fn fitted_group(&self, task: &Task, nuggets: &[usize], group: PromptGroup) -> Result<(PromptGroup, bool)> {
        if !self.config.truncate {
            return Ok((group, false));
        }
        let n_ctx = self.backend.info().n_ctx;
        let reserve = if self.config.mode == JudgeMode::Reasoned { self.config.max_reason_tokens } else { 0 };
        let need = |g: &PromptGroup| -> Result<usize> {
            let longest = g.suffixes.iter().max_by_key(|s| s.len()).map(String::as_str).unwrap_or("");
            Ok(self.backend.count_tokens(&format!("{}{}", g.prefix, longest))? + reserve)
        };
        let mut tokens = need(&group)?;
        if tokens <= n_ctx {
            return Ok((group, false));
        }
        let mut answer: &str = &task.answer;
        for _ in 0..8 {
            let answer_tokens = self.backend.count_tokens(answer)?.max(1);
            let overhead = tokens.saturating_sub(answer_tokens);
            let budget = n_ctx.saturating_sub(overhead + 8);
            if budget == 0 {
                break;
            }
            let keep = (answer.len() as f64 * budget as f64 / answer_tokens as f64 * 0.97) as usize;
            let mut cut = keep.min(answer.len().saturating_sub(1));
            while !answer.is_char_boundary(cut) {
                cut -= 1;
            }
            answer = &answer[..cut];
            let g = self.group(task, answer, nuggets)?;
            tokens = need(&g)?;
            if tokens <= n_ctx {
                return Ok((g, true));
            }
        }
        Err(Error::TooLong { tokens, n_ctx })
    }

    /// Prompts that read each nugget's likelihood after a content-free passage (the baseline of
    /// its PMI): the task's prompts with the passage replaced by "N/A", each cut right after the
    /// nugget (what follows cannot change the nugget's own tokens), identical prompts read once,
    /// prompts read by an earlier call not read again.
    /// Returns the groups and, per pending task and nugget, where its baseline is.
    #[allow(clippy::type_complexity)]
    fn baseline_groups(
        &self,
        tasks: &[Task],
        pending: &[Pending],
        main: &[PromptGroup],
    ) -> (Vec<PromptGroup>, Vec<Vec<Option<Baseline>>>) {
        use std::collections::HashMap;
        let mut groups: Vec<PromptGroup> = Vec::new();
        let mut group_of: HashMap<String, usize> = HashMap::new();
        let mut suffix_of: HashMap<(usize, String), usize> = HashMap::new();
        let mut base_of = Vec::with_capacity(pending.len());
        for (p, g) in pending.iter().zip(main) {
            let wanted = (0..p.nuggets.len()).any(|k| g.span(k).is_some());
            let base = if wanted {
                // The main prompt rendered, so this rarely fails; the verdicts then go without PMI.
                self.group(&tasks[p.task], CONTENT_FREE_PASSAGE, &p.nuggets)
                    .map_err(|e| tracing::warn!("content-free baseline prompt not rendered, no PMI read: {e}"))
                    .ok()
            } else {
                None
            };
            let Some(base) = base else {
                base_of.push(vec![None; p.nuggets.len()]);
                continue;
            };
            let row = (0..p.nuggets.len())
                .map(|k| {
                    let (a, b) = base.span(k)?;
                    let cut = base.suffixes[k][..b].to_string();
                    if let Some(known) = self.baselines.get(&base.prefix, &cut) {
                        return Some(Baseline::Known(known));
                    }
                    let gi = *group_of.entry(base.prefix.clone()).or_insert_with(|| {
                        groups.push(PromptGroup {
                            prefix: base.prefix.clone(),
                            suffixes: Vec::new(),
                            spans: Vec::new(),
                            baseline: true,
                        });
                        groups.len() - 1
                    });
                    let si = *suffix_of.entry((gi, cut.clone())).or_insert_with(|| {
                        groups[gi].suffixes.push(cut);
                        groups[gi].spans.push(Some((a, b)));
                        groups[gi].suffixes.len() - 1
                    });
                    Some(Baseline::Read(gi, si))
                })
                .collect();
            base_of.push(row);
        }
        (groups, base_of)
    }

    /// Prompts that read each nugget's likelihood after only the window of a long passage that
    /// matches it best (one or two sentences, by content words): long evidence dilutes the
    /// whole-passage read, the best span decides. Identical prompts are read once.
    /// Returns the groups and, per pending task and nugget, where its read is.
    #[allow(clippy::type_complexity)]
    fn window_groups(
        &self,
        tasks: &[Task],
        pending: &[Pending],
        main: &[PromptGroup],
    ) -> (Vec<PromptGroup>, Vec<Vec<Option<(usize, usize)>>>) {
        let mut groups: Vec<PromptGroup> = Vec::new();
        let mut index: std::collections::HashMap<(String, String), usize> = std::collections::HashMap::new();
        let mut rows = Vec::with_capacity(pending.len());
        for (p, g) in pending.iter().zip(main) {
            let task = &tasks[p.task];
            let text = if p.text.is_empty() { task.answer.as_str() } else { p.text.as_str() };
            let long = text.split_whitespace().count() > WINDOW_MIN_WORDS;
            let row = (0..p.nuggets.len())
                .map(|k| {
                    if !long || g.span(k).is_none() {
                        return None;
                    }
                    let ni = p.nuggets[k];
                    let (a, b) = crate::lexical::align(&task.nuggets[ni].text, text).window;
                    let window = text.get(a..b)?.trim();
                    if window.is_empty() {
                        return None;
                    }
                    let w = self.group(task, window, &[ni]).ok()?;
                    let span = w.span(0)?;
                    let suffix = w.suffixes.into_iter().next()?;
                    let gi = *index.entry((w.prefix.clone(), suffix.clone())).or_insert_with(|| {
                        groups.push(PromptGroup {
                            prefix: w.prefix,
                            suffixes: vec![suffix],
                            spans: vec![Some(span)],
                            baseline: false,
                        });
                        groups.len() - 1
                    });
                    Some((gi, 0))
                })
                .collect();
            rows.push(row);
        }
        (groups, rows)
    }

    /// Judge many tasks; one result per task, in order. Model work for all of them is batched.
    pub fn judge(&self, tasks: &[Task]) -> Vec<Result<Judgement>> {
        let mut verdicts: Vec<Vec<Option<Verdict>>> = tasks.iter().map(|t| vec![None; t.nuggets.len()]).collect();
        let mut failed: Vec<Option<Error>> = tasks.iter().map(|_| None).collect();
        let mut pending = Vec::new();
        let mut groups = Vec::new();
        for (ti, task) in tasks.iter().enumerate() {
            let mut need = Vec::new();
            for (ni, n) in task.nuggets.iter().enumerate() {
                match n.check.evaluate(&task.answer) {
                    CheckOutcome::Decided(label) => {
                        verdicts[ti][ni] = Some(Verdict::decided(label, decided_by(&n.check, &task.answer)))
                    }
                    CheckOutcome::NeedsModel => need.push(ni),
                }
            }
            if need.is_empty() {
                continue;
            }
            match self.fitted_groups(task, &need) {
                Ok(entries) => {
                    for (block, text, g, truncated) in entries {
                        groups.push(g);
                        pending.push(Pending { task: ti, nuggets: need.clone(), truncated, block, text });
                    }
                }
                Err(e) => failed[ti] = Some(e),
            }
        }
        let mut truncated = vec![false; tasks.len()];
        match self.config.mode {
            JudgeMode::Scored => {
                // The content-free baselines of the nuggets' likelihoods go into the same
                // backend call, so they share its decodes.
                let (base_groups, base_of) = self.baseline_groups(tasks, &pending, &groups);
                let (window_groups, window_of) = self.window_groups(tasks, &pending, &groups);
                let n_main = groups.len();
                let n_base = base_groups.len();
                let mut all = groups;
                all.extend(base_groups);
                all.extend(window_groups);
                let mut results = self.score_cached(&all);
                let window_results = results.split_off((n_main + n_base).min(results.len()));
                let base_results = results.split_off(n_main.min(results.len()));
                for (g, res) in all[n_main..].iter().zip(&base_results) {
                    for (suffix, r) in g.suffixes.iter().zip(res) {
                        if let Some(lps) = r.as_ref().ok().and_then(|s| s.span_logprobs.as_deref()) {
                            self.baselines.put(&g.prefix, suffix, lps);
                        }
                    }
                }
                let base_lps = |p: usize, k: usize| -> Option<&[f32]> {
                    match base_of[p][k].as_ref()? {
                        Baseline::Read(g, s) => base_results.get(*g)?.get(*s)?.as_ref().ok()?.span_logprobs.as_deref(),
                        Baseline::Known(lps) => Some(lps),
                    }
                };
                for (pi, (p, res)) in pending.iter().zip(results).enumerate() {
                    truncated[p.task] = p.truncated;
                    for (k, (&ni, r)) in p.nuggets.iter().zip(res).enumerate() {
                        match r {
                            Ok(s) => {
                                let raw = [s.probs[0], s.probs[1], s.probs[2]];
                                let logprobs = [s.logprobs[0], s.logprobs[1], s.logprobs[2]];
                                let nugget_lp =
                                    s.span_logprobs.as_deref().and_then(|c| NuggetLp::new(c, base_lps(pi, k)));
                                let window_lp = window_of[pi][k]
                                    .and_then(|(g, s)| window_results.get(g)?.get(s)?.as_ref().ok())
                                    .and_then(|w| w.span_logprobs.as_deref())
                                    .and_then(|c| NuggetLp::new(c, base_lps(pi, k)));
                                let read = RawScore {
                                    probs: LabelProbs::from_array(raw),
                                    logprobs,
                                    nugget_lp,
                                    window_lp,
                                    hidden: s.hidden,
                                };
                                let mut v = match &self.calibrator {
                                    Some(c) => {
                                        let (probs, label) = c.verdict(
                                            raw,
                                            &FeatureInput::of(&tasks[p.task], ni, &read).judging(&p.text),
                                            if self.config.two_grade { Grades::Two } else { Grades::Three },
                                        );
                                        Verdict::scored(LabelProbs::from_array(probs), label)
                                    }
                                    None => Verdict::from_probs(LabelProbs::from_array(raw)),
                                };
                                v.raw = Some(read);
                                v.block = p.block.map(|(i, _)| i);
                                v.block_span = p.block.map(|(_, s)| s);
                                keep_best(&mut verdicts[p.task][ni], v);
                            }
                            Err(e) => fail_nugget(&mut failed[p.task], ni, e),
                        }
                    }
                }
            }
            JudgeMode::Reasoned => {
                let grammar = self.prompts.reasoned_grammar();
                let grammar = (!grammar.trim().is_empty()).then_some(grammar);
                let results = self.backend.generate(&groups, grammar, self.config.max_reason_tokens);
                for (p, res) in pending.iter().zip(results) {
                    truncated[p.task] = p.truncated;
                    for (&ni, r) in p.nuggets.iter().zip(res) {
                        match r.and_then(|text| parse_reasoned(&text)) {
                            Ok(mut v) => {
                                v.block = p.block.map(|(i, _)| i);
                                v.block_span = p.block.map(|(_, s)| s);
                                keep_best(&mut verdicts[p.task][ni], v);
                            }
                            Err(e) => fail_nugget(&mut failed[p.task], ni, e),
                        }
                    }
                }
            }
        }
        tasks
            .iter()
            .zip(verdicts)
            .zip(failed)
            .zip(truncated)
            .map(|(((task, vs), err), truncated)| {
                if let Some(e) = err {
                    return Err(e);
                }
                let vs: Vec<Verdict> = vs
                    .into_iter()
                    .map(|v| v.ok_or_else(|| Error::Internal("nugget left without verdict".into())))
                    .map(|v| v.map(|v| if self.config.two_grade { v.two_grade() } else { v }))
                    .collect::<Result<_>>()?;
                let scores = aggregate(&task.nuggets, &vs);
                Ok(Judgement { verdicts: vs, scores, truncated })
            })
            .collect()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CachedScore {
    probs: Vec<f64>,
    logprobs: Vec<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    span_logprobs: Option<Vec<f32>>,
}

fn fail_nugget(slot: &mut Option<Error>, nugget: usize, e: Error) {
    if slot.is_none() {
        *slot = Some(e.in_nugget(nugget));
    }
}

fn decided_by(check: &Check, text: &str) -> DecidedBy {
    match check {
        Check::Llm => DecidedBy::Llm,
        Check::ExactMatch { .. } => DecidedBy::ExactMatch,
        // The hybrid's first stage: an exact match is also contained; say which decided.
        Check::Contains { answers, .. } if crate::rubric::exact_match(answers, text) => DecidedBy::ExactMatch,
        Check::Contains { .. } => DecidedBy::Contains,
        Check::Regex { .. } => DecidedBy::Regex,
        Check::Numeric { .. } => DecidedBy::Numeric,
    }
}

/// Keep the verdict that supports the nugget best (sample level over blocks): the higher
/// probability of support, else the higher score; on a tie the earlier block stands.
fn keep_best(slot: &mut Option<Verdict>, v: Verdict) {
    let support = |v: &Verdict| (v.probs.map_or(0.0, |p| p.support), v.score);
    match slot {
        Some(old) if support(&v) <= support(old) => {}
        _ => *slot = Some(v),
    }
}

/// Parse reasoned-mode output (`Reasoning: ...\nQuote: "..."\nVerdict: label`).
pub fn parse_reasoned(text: &str) -> Result<Verdict> {
    static RE: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r#"(?s)^\s*Reasoning:\s*(?P<r>[^\n]*)\nQuote:\s*"(?P<q>[^"\n]*)"\nVerdict:\s*(?P<v>support|partial_support|not_support)\s*$"#)
            .expect("static regex")
    });
    let caps = re.captures(text).ok_or_else(|| Error::Output {
        output: text.to_string(),
        reason: "does not match the reasoned-mode grammar".into(),
    })?;
    let label = Label::parse(&caps["v"]).unwrap_or(Label::NotSupport);
    let quote = caps["q"].trim().to_string();
    Ok(Verdict {
        label,
        probs: None,
        score: label.value(),
        by: DecidedBy::Llm,
        raw: None,
        rationale: Some(caps["r"].trim().to_string()),
        quote: (!quote.is_empty()).then_some(quote),
        block: None,
        block_span: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_memo_keeps_two_generations_and_no_more() {
        let memo = BaselineMemo::default();
        memo.put("p", "first", &[-1.0]);
        // One generation later it is still found (in the old one) ...
        for i in 0..BaselineMemo::GENERATION {
            memo.put("p", &i.to_string(), &[0.0]);
        }
        assert_eq!(memo.get("p", "first").as_deref(), Some(&[-1.0f32][..]));
        // ... two generations later it is gone: memory stays bounded.
        for i in 0..BaselineMemo::GENERATION {
            memo.put("q", &i.to_string(), &[0.0]);
        }
        assert!(memo.get("p", "first").is_none());
        assert!(memo.get("q", "0").is_some());
    }

    #[test]
    fn the_block_that_supports_a_nugget_best_decides() {
        let verdict = |p: [f64; 3], block: usize| {
            let mut v = Verdict::from_probs(LabelProbs::from_array(p));
            v.block = Some(block);
            v
        };
        let mut slot = None;
        keep_best(&mut slot, verdict([0.2, 0.1, 0.7], 0));
        keep_best(&mut slot, verdict([0.6, 0.3, 0.1], 1));
        // A tie on support keeps the earlier block; a lower one never replaces.
        keep_best(&mut slot, verdict([0.6, 0.0, 0.4], 2));
        keep_best(&mut slot, verdict([0.5, 0.5, 0.0], 3));
        let v = slot.unwrap();
        assert_eq!((v.block, v.label), (Some(1), Label::Support));
        assert!((v.score - (0.6 + 0.5 * 0.3)).abs() < 1e-12, "the deciding block's score: {}", v.score);
        // Without probabilities (reasoned mode), the label's value decides.
        let mut slot = None;
        let mut a = Verdict::decided(Label::PartialSupport, DecidedBy::Llm);
        a.block = Some(0);
        let mut b = Verdict::decided(Label::NotSupport, DecidedBy::Llm);
        b.block = Some(1);
        keep_best(&mut slot, a);
        keep_best(&mut slot, b);
        assert_eq!(slot.unwrap().block, Some(0));
    }

    #[test]
    fn reasoned_output_parses() {
        let v = parse_reasoned("Reasoning: it says so.\nQuote: \"Paris is big\"\nVerdict: partial_support").unwrap();
        assert_eq!(v.label, Label::PartialSupport);
        assert_eq!(v.rationale.as_deref(), Some("it says so."));
        assert_eq!(v.quote.as_deref(), Some("Paris is big"));
        let v = parse_reasoned("Reasoning: no.\nQuote: \"\"\nVerdict: not_support").unwrap();
        assert_eq!(v.quote, None);
        assert!(parse_reasoned("Verdict: maybe").is_err());
    }
}
