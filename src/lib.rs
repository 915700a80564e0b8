//! gavel: a rubric-based generative verifier for search-augmented LLMs, with an embedded
//! llama.cpp judge.
//!
//! Data flow, one module per stage:
//!
//! ```text
//! record/rubric -> prompt   -> backend   -> judge      -> aggregate -> pipeline
//! (what)           (render)    (the LLM)    (verdicts)    (rewards)    (JSONL in/out, bench)
//! ```
//!
//! - [`rubric`]: nuggets, importance, weights, deterministic checks (exact match, contains,
//!   regex, numeric) and SQuAD-style normalisation.
//! - [`record`]: the JSON Lines input formats and output records.
//! - [`prompt`]: minijinja templates (embedded, overridable), label words, the reasoned grammar.
//! - [`backend`]: the [`backend::Backend`] trait, the embedded llama.cpp implementation (the
//!   only module that touches llama-cpp-2) and the OpenAI-compatible HTTP one.
//! - [`judge`]: deterministic checks first, then one batched model call for every nugget that
//!   needs the model; the shared prefix of each answer is evaluated once.
//! - [`aggregate`]: AutoNuggetizer scores, weighted and soft rewards.
//! - [`pipeline`]: streaming JSONL verification with error records, and the benchmark.
//! - [`extract`]: query (+ passages) -> nugget rubric, grammar-constrained, importance scored.
//! - [`model_store`]: the embedded default model, fetched with pip on first use.

pub mod aggregate;
pub mod backend;
pub mod cache;
pub mod calibrate;
pub mod error;
pub mod eval;
pub mod extract;
pub mod judge;
pub mod model_store;
pub mod pipeline;
pub mod prompt;
pub mod record;
pub mod report;
pub mod rubric;
pub mod server;
pub mod stack;

pub use aggregate::{aggregate, Scores, Verdict};
pub use backend::{Backend, EmbeddedBackend, EmbeddedConfig, RemoteBackend, RemoteConfig};
pub use error::{Error, Result};
pub use judge::{Judge, JudgeConfig, Judgement};
pub use prompt::{JudgeMode, PromptSet};
pub use record::{parse_record, ShortForm, Task};
pub use rubric::{Check, Importance, Label, Nugget, Rubric};
