//! gavel: a rubric-based generative verifier for search-augmented LLMs, with an embedded
//! llama.cpp judge.
//!
//! Data flow, one module per stage:
//!
//! ```text
//! error, label, metrics, lexical   shared vocabulary: errors, labels and gradings, agreement,
//!                                  word matching
//! rubric, prompt, model_store      what is asked: nuggets and checks; templates; the model file
//! aggregate, record                verdicts -> scores; input and output records
//! stack, calibrate                 learned read-outs of the model's outputs, fitted on labels
//! cache, backend                   the verdict cache; the LLM (llama.cpp or HTTP)
//! judge                            checks, then one batched model call; verdicts per task
//! labeled                          labeled files and the labeled verdicts a fit needs
//! extract, pipeline                query -> rubric; JSON Lines streams, resuming, the benchmark
//! eval, report                     agreement reports over labeled files (Markdown, HTML, JSON)
//! server                           the reward server (HTTP) over a judge
//! ```
//!
//! Read left to right and top to bottom, each module imports only modules before it, so there
//! is no import circle (tests/layers.rs checks it).
//!
//! - [`label`]: the three labels, a distribution over them, and the 2-grade fold.
//! - [`lexical`]: SQuAD-style normalisation, exact match, containment, content-word overlap and
//!   the lexical-overlap judge.
//! - [`metrics`]: agreement (accuracy, per-class and macro F1, confusion), ECE and Brier,
//!   majority class, sample level, bootstrap intervals.
//! - [`rubric`]: nuggets, importance, weights and the deterministic checks (exact match,
//!   contains, regex, numeric).
//! - [`record`]: the JSON Lines input formats, output records (written and read back), record
//!   keys and the a/b halves of labeled files.
//! - [`prompt`]: minijinja templates (embedded, overridable), label words, the reasoned grammar.
//! - [`backend`]: the [`backend::Backend`] trait, the embedded llama.cpp implementation (the
//!   only module that touches llama-cpp-2) and the OpenAI-compatible HTTP one.
//! - [`aggregate`]: verdicts, AutoNuggetizer scores, weighted and soft rewards.
//! - [`stack`]: the stacked judge's features and heads (multinomial, ordinal).
//! - [`calibrate`]: calibrations: applying them, the `auto` policy, and fitting them
//!   ([`calibrate::fit`]).
//! - [`judge`]: deterministic checks first, then one batched model call for every nugget that
//!   needs the model; the shared prefix of each answer is evaluated once.
//! - [`labeled`]: reading labeled files and gathering labeled verdicts from a judge run or a
//!   verdicts file; the content-free label prior.
//! - [`pipeline`]: streaming JSONL verification and extraction with error records, resuming,
//!   and the benchmark.
//! - [`extract`]: query (+ passages) -> nugget rubric, grammar-constrained, importance scored.
//! - [`eval`] and [`report`]: agreement reports over labeled files.
//! - [`cache`], [`model_store`]: the verdict cache and the embedded default model.
//! - [`server`]: the reward server for RL trainers.
//!
//! The `gavel` binary (src/main.rs, its flags in src/cli/) maps flags to these configs, shows
//! progress and prints; it holds no library logic.

pub mod aggregate;
pub mod backend;
pub mod cache;
pub mod calibrate;
pub mod error;
pub mod eval;
pub mod extract;
pub mod head;
pub mod judge;
pub mod label;
pub mod labeled;
pub mod lexical;
pub mod metrics;
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
