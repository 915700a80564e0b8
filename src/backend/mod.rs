//! The LLM behind the judge. One trait, so the judge, extractor and server never know whether
//! they talk to the embedded llama.cpp model or to something else.

pub mod llama;
pub mod openai;

use std::time::Duration;

use serde::Serialize;

use crate::aggregate::HiddenRead;
use crate::error::Result;
use crate::prompt::Message;

pub use llama::{EmbeddedBackend, EmbeddedConfig};
pub use openai::{RemoteBackend, RemoteConfig};

/// One answer's prompts: the shared prefix (system prompt, query, answer) and one suffix per
/// nugget. A backend evaluates the prefix once and each suffix from a copy of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptGroup {
    /// Text shared by every suffix; may be empty.
    pub prefix: String,
    /// Per-nugget continuations.
    pub suffixes: Vec<String>,
    /// Per suffix, the byte range of the item (nugget) text in it, when scoring should also read
    /// the item's likelihood ([`LabelScore::span_logprobs`]); empty for none.
    pub spans: Vec<Option<(usize, usize)>>,
    /// A content-free baseline group (the PMI's reference prompts): its tokens count as
    /// [`TokenBudget::baseline`] in [`Usage`].
    pub baseline: bool,
}

impl PromptGroup {
    /// Build a group from a renderer of whole prompts: the prefix is what the prompt rendered
    /// with [`crate::prompt::NUGGET_SENTINEL`] shares up to the sentinel's line; when some item's
    /// prompt does not start with it (a template that puts the item early), nothing is shared.
    pub fn split<'a>(
        render: impl Fn(&str) -> crate::error::Result<String>,
        items: impl IntoIterator<Item = &'a str>,
    ) -> crate::error::Result<PromptGroup> {
        let probe = render(crate::prompt::NUGGET_SENTINEL)?;
        let prefix = crate::prompt::shared_prefix(&probe).to_string();
        let items: Vec<&str> = items.into_iter().collect();
        let full = items.iter().map(|i| render(i)).collect::<crate::error::Result<Vec<String>>>()?;
        let prefix = if full.iter().all(|t| t.starts_with(&prefix)) { prefix } else { String::new() };
        let suffixes: Vec<String> = full.into_iter().map(|t| t[prefix.len()..].to_string()).collect();
        let spans = suffixes
            .iter()
            .zip(&items)
            .map(|(s, item)| if item.is_empty() { None } else { s.find(item).map(|a| (a, a + item.len())) })
            .collect();
        Ok(PromptGroup { prefix, suffixes, spans, baseline: false })
    }

    /// A group without item spans.
    pub fn new(prefix: impl Into<String>, suffixes: Vec<String>) -> PromptGroup {
        PromptGroup { prefix: prefix.into(), suffixes, spans: Vec::new(), baseline: false }
    }

    /// The item span of suffix `i`, if any.
    pub fn span(&self, i: usize) -> Option<(usize, usize)> {
        self.spans.get(i).copied().flatten()
    }
}

/// The model's vote over the label choices for one prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelScore {
    /// Probabilities renormalised over the choices (sums to 1).
    pub probs: Vec<f64>,
    /// Raw log-probability of each choice over the whole vocabulary (its forms summed).
    pub logprobs: Vec<f64>,
    /// When the group gave the suffix an item span: log P of each of the item's tokens given
    /// everything before it (the passage above all), the model's own measure of how expected
    /// the nugget is after reading the passage. Backends that cannot read it leave `None`.
    pub span_logprobs: Option<Vec<f32>>,
    /// The model's hidden states, when the backend reads them ([`Backend::reads_hidden`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<HiddenRead>,
}

impl LabelScore {
    /// The vote alone: probabilities over the choices and their log-probabilities, no other
    /// reads (the likelihood and hidden states are added by backends that read them).
    pub fn votes(probs: Vec<f64>, logprobs: Vec<f64>) -> LabelScore {
        LabelScore { probs, logprobs, span_logprobs: None, hidden: None }
    }

    /// The vote from each choice's log-probability over the whole vocabulary (each choice's
    /// forms already summed): the probabilities are those renormalised over the choices.
    pub fn from_logprobs(logprobs: Vec<f64>) -> LabelScore {
        let z = log_sum_exp(&logprobs);
        LabelScore::votes(logprobs.iter().map(|lp| (lp - z).exp()).collect(), logprobs)
    }
}

/// log Σ exp(x), stable; an infinite or empty input gives its maximum (-inf when empty).
pub(crate) fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// What a backend is, for reports and cache keys.
#[derive(Debug, Clone, Serialize)]
pub struct BackendInfo {
    /// `llama.cpp (embedded)`, ...
    pub kind: String,
    /// Model file or name.
    pub model: String,
    /// Context size in tokens.
    pub n_ctx: usize,
    /// Threads used for decoding.
    pub n_threads: usize,
    /// Whether scores are bit-identical whatever shares a call (see
    /// [`EmbeddedConfig::batch_invariant`]); cache entries of the two kinds are kept apart.
    pub batch_invariant: bool,
}

/// Unique prompt tokens of scoring, by the part of the prompt they belong to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TokenBudget {
    /// The head every prompt of a call shares (chat header, system prompt, instructions),
    /// evaluated once per call at most.
    pub head: usize,
    /// The rest of each answer's prefix (query, answer), once per answer.
    pub prefix: usize,
    /// Each nugget's own suffix (statement, question, cue), once per verdict.
    pub suffix: usize,
    /// The content-free baseline prompts of the PMI (prefix and suffix).
    pub baseline: usize,
}

impl std::ops::AddAssign for TokenBudget {
    fn add_assign(&mut self, o: TokenBudget) {
        self.head += o.head;
        self.prefix += o.prefix;
        self.suffix += o.suffix;
        self.baseline += o.baseline;
    }
}

/// What was spent between two readings of a running total (`after - before`).
impl std::ops::Sub for TokenBudget {
    type Output = TokenBudget;
    fn sub(self, o: TokenBudget) -> TokenBudget {
        TokenBudget {
            head: self.head - o.head,
            prefix: self.prefix - o.prefix,
            suffix: self.suffix - o.suffix,
            baseline: self.baseline - o.baseline,
        }
    }
}

/// Tokens processed and time taken, for throughput reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Unique prompt tokens evaluated (a shared prefix counts once).
    pub prompt_tokens: usize,
    /// Scoring's prompt tokens by part (embedded backend; zero where a backend does not tell).
    pub budget: TokenBudget,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Time spent in the model.
    #[serde(with = "secs")]
    pub elapsed: Duration,
}

/// Serialises a `Duration` as seconds (`#[serde(with = "secs")]`), for every summary gavel writes.
pub mod secs {
    /// Seconds as a float.
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// An LLM that can score label tokens and generate grammar-constrained text.
pub trait Backend: Send + Sync {
    /// Description for reports.
    fn info(&self) -> BackendInfo;

    /// Wrap messages in the model's chat template, ending with the assistant turn opener.
    fn format_chat(&self, messages: &[Message]) -> Result<String>;

    /// Number of tokens `text` takes (special tokens parsed).
    fn count_tokens(&self, text: &str) -> Result<usize>;

    /// For each group and each suffix, the distribution over `choices` of the next token after
    /// prefix + suffix. `choices[i]` lists surface forms of choice i; the first token of each
    /// form counts. Errors are per prompt (e.g. too long), never for the whole call.
    fn score(&self, groups: &[PromptGroup], choices: &[Vec<String>]) -> Vec<Vec<Result<LabelScore>>>;

    /// For each group and suffix, greedy text after prefix + suffix, constrained by the GBNF
    /// `grammar` when given, at most `max_tokens` tokens.
    fn generate(&self, groups: &[PromptGroup], grammar: Option<&str>, max_tokens: usize) -> Vec<Vec<Result<String>>>;

    /// Whether [`Backend::score`] reads item spans ([`LabelScore::span_logprobs`]); prompts
    /// sent to a backend that does not carry no spans.
    fn reads_spans(&self) -> bool {
        false
    }

    /// Whether [`Backend::score`] reads hidden states ([`LabelScore::hidden`]).
    fn reads_hidden(&self) -> bool {
        false
    }

    /// Tokens and model time consumed since the backend was created.
    fn usage(&self) -> Usage;

    /// Check that each of `choices` (label words) starts with a token of its own in this model,
    /// so a bad label file fails at start, not on every record.
    fn check_labels(&self, choices: &[Vec<String>]) -> Result<()> {
        let _ = choices;
        Ok(())
    }

    /// Evaluate `text` as one sequence and return (tokens, time): the raw prefill speed that
    /// benchmarks compare against.
    fn prefill(&self, text: &str) -> Result<(usize, Duration)>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_is_stable_and_keeps_infinities() {
        let big = log_sum_exp(&[1000.0, 1000.0]);
        assert!((big - (1000.0 + 2f64.ln())).abs() < 1e-9, "no overflow: {big}");
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[f64::NEG_INFINITY, f64::NEG_INFINITY]), f64::NEG_INFINITY);
        assert_eq!(log_sum_exp(&[0.0, f64::INFINITY]), f64::INFINITY, "not NaN");
        assert!((log_sum_exp(&[f64::NEG_INFINITY, -1.0]) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_token_budget_adds_by_part_and_differences_two_readings() {
        let before = TokenBudget { head: 5, prefix: 100, suffix: 40, baseline: 7 };
        let mut running = before;
        running += TokenBudget { head: 0, prefix: 30, suffix: 12, baseline: 3 };
        assert_eq!(running, TokenBudget { head: 5, prefix: 130, suffix: 52, baseline: 10 });
        assert_eq!(running - before, TokenBudget { head: 0, prefix: 30, suffix: 12, baseline: 3 });
    }

    #[test]
    fn a_vote_from_log_probabilities_renormalises_over_the_choices() {
        let s = LabelScore::from_logprobs(vec![-1.0, -2.0, -3.0]);
        assert_eq!(s.logprobs, vec![-1.0, -2.0, -3.0]);
        assert!((s.probs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!((s.probs[0] / s.probs[1] - 1f64.exp()).abs() < 1e-9);
        assert!(s.span_logprobs.is_none() && s.hidden.is_none());
    }
}
