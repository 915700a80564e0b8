//! The `gavel` binary's flags (clap derive), and how they map onto the library's configs.
//! Defaults come from the library's `Default`s; a subcommand takes only the flag groups it
//! honours, so clap refuses any other flag with a message.

pub mod config;
pub mod interrupt;
pub mod io;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use gavel::backend::{EmbeddedConfig, RemoteConfig};
use gavel::calibrate::CalibrationSpec;
use gavel::extract::ExtractConfig;
use gavel::label::Grades;
use gavel::pipeline::{ExtractOptions, VerifyOptions};
use gavel::prompt::JudgeMode;
use gavel::record::{Part, ShortForm};
use gavel::server::ServeConfig;
use gavel::stack::FeatureSet;

const AFTER_HELP: &str = "\
Examples:
  gavel verify --input examples/longform.jsonl
  gavel verify --input answers.jsonl --rubric rubrics/research-answer.toml --output verdicts.jsonl
  cat examples/shortform.jsonl | gavel verify --short-form hybrid
  gavel render --input examples/longform.jsonl --line 1
  gavel bench --input data.jsonl --records 200

Exit codes: 0 all records verified; 1 some records failed (error records were written);
2 the run could not start (bad flags, model, rubric or template); 130 stopped by Ctrl-C (the
first finishes and writes the batch in flight; --resume continues); 141 the output was closed
under the run (`gavel verify | head`).";

/// Rubric-based verifier for search-augmented LLM answers, with an embedded llama.cpp judge.
#[derive(Parser)]
#[command(name = "gavel", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    /// Log more (-v info, -vv debug, including llama.cpp's own logs).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Verify answers: JSON Lines in, one JSON line of verdicts and scores out per record.
    #[command(after_help = AFTER_HELP)]
    Verify(VerifyArgs),
    /// Print the exact prompts the model would see for a record (no model run).
    // The engine's knobs change no prompt: accepted (scripts share flags between commands) but
    // not listed.
    #[command(
        mut_arg("threads", |a| a.hide(true)),
        mut_arg("wave_tokens", |a| a.hide(true)),
        mut_arg("seqs", |a| a.hide(true)),
        mut_arg("batch_invariant", |a| a.hide(true)),
        mut_arg("hidden", |a| a.hide(true)),
        mut_arg("in_flight", |a| a.hide(true)),
        mut_arg("top_logprobs", |a| a.hide(true))
    )]
    Render(RenderArgs),
    /// Measure scored-mode throughput against raw prefill speed on the same backend.
    Bench(BenchArgs),
    /// Run the verifier over a labeled file and report agreement with the gold labels
    /// (Markdown on stdout; report.md, report.html, metrics.json and, unless --from,
    /// verdicts.jsonl in --out).
    Eval(EvalArgs),
    /// Fit a calibration for the current model on labeled files: a stacked judge over the
    /// model's reads and lexical signals, chosen on held-out queries (docs/teach.md); verify,
    /// eval and serve apply it automatically.
    Calibrate(CalibrateArgs),
    /// Extract nugget rubrics from queries (and retrieved passages): JSON Lines in
    /// (`query`, optional `passages`), one line of nuggets per query out.
    Extract(ExtractArgs),
    /// Fetch (once) and print the path of the embedded default model.
    FetchModel,
    /// Serve rewards over HTTP for RL trainers (OpenRLHF, verl, TRL, slime); see docs/serve.md.
    Serve(ServeArgs),
    /// Validate rubric files and print a summary of each.
    Check {
        /// Rubric files (.json or .toml), or folders of them.
        #[arg(required = true)]
        rubrics: Vec<PathBuf>,
    },
}

const REMOTE: &str = "Remote backend (--backend openai)";

/// Where the model runs.
#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// llama.cpp in this process.
    Embedded,
    /// An OpenAI-compatible server (vLLM, SGLang, llama-server).
    Openai,
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Where the model runs: `embedded` (llama.cpp in this process) or `openai` (an
    /// OpenAI-compatible server: vLLM, SGLang, llama-server; see --base-url).
    #[arg(long, value_enum, default_value_t = BackendKind::Embedded)]
    pub backend: BackendKind,
    /// GGUF model file [default: the embedded default model, SmolLM2-135M-Instruct Q4_1, fetched
    /// once]. With --backend openai: the file the server serves, if you have it here (its
    /// calibration and cache entries then apply).
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// Context size in tokens; prompts longer than this fail (see --truncate)
    /// [default: 8192 embedded; the server's with --backend openai].
    #[arg(long)]
    pub n_ctx: Option<u32>,
    /// Decode threads [default: number of cores].
    #[arg(long, value_parser = positive)]
    pub threads: Option<usize>,
    /// Most prompt tokens packed into one decode.
    #[arg(long, default_value_t = EmbeddedConfig::new("").wave_tokens, value_parser = positive)]
    pub wave_tokens: usize,
    /// Most prompts (sequences) in one decode.
    #[arg(long, default_value_t = EmbeddedConfig::new("").n_seq_max, value_parser = clap::value_parser!(u32).range(1..))]
    pub seqs: u32,
    /// Make every raw output bit-identical whatever else shares its decode (RL rewards and cache
    /// entries independent of the batch), at about 60% fewer verdicts/s; without it a verdict's
    /// probabilities move slightly with its batch (docs/reliability.md).
    #[arg(long)]
    pub batch_invariant: bool,
    /// Also read the model's hidden states into each verdict's `raw.hidden`: the final layer's
    /// and a middle layer's, each at the label position and as the mean over the nugget's
    /// tokens; what `gavel calibrate --stack transfer-hidden` fits a head on (docs/teach.md). A
    /// calibration with such a head turns it on by itself. Embedded backend only; about 10 KB
    /// per verdict in the output.
    #[arg(long)]
    pub hidden: bool,
    /// Server base URL ending in /v1; repeat (or comma-separate) to spread
    /// requests round-robin over several servers.
    #[arg(long, value_delimiter = ',', help_heading = REMOTE)]
    pub base_url: Vec<String>,
    /// Model name sent in requests [default: the first of /v1/models].
    #[arg(long, help_heading = REMOTE)]
    pub model_name: Option<String>,
    /// Environment variable holding the server's API key (sent as a Bearer token).
    #[arg(long, default_value = "OPENAI_API_KEY", help_heading = REMOTE)]
    pub openai_key_env: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = RemoteConfig::new("").in_flight, help_heading = REMOTE, value_parser = positive)]
    pub in_flight: usize,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = RemoteConfig::new("").timeout.as_secs(), help_heading = REMOTE)]
    pub request_timeout: u64,
    /// Retries (with backoff) on 429, 5xx, timeouts and connection errors.
    #[arg(long, default_value_t = RemoteConfig::new("").retries, help_heading = REMOTE)]
    pub retries: u32,
    /// The model's Jinja chat template [default: the server's, from /props].
    #[arg(long, help_heading = REMOTE)]
    pub chat_template: Option<PathBuf>,
    /// Alternatives asked for in top_logprobs (vLLM allows 20 by default).
    #[arg(long, default_value_t = RemoteConfig::new("").top_logprobs, help_heading = REMOTE)]
    pub top_logprobs: usize,
}

/// How the model's raw reads are made: what every subcommand that runs the judge takes.
#[derive(Args, Clone)]
pub struct ScoreArgs {
    /// Scored mode without reading the nugget's likelihood and its content-free baseline (PMI):
    /// about 30% more verdicts/s; a stacked calibration then reads those features as missing.
    #[arg(long)]
    pub no_likelihood: bool,
    /// Cut judged texts that do not fit the context (reported as `"truncated": true`) and
    /// judge only their start, instead of judging them in blocks.
    #[arg(long)]
    pub truncate: bool,
    /// Do not judge answers too long for the context in blocks: they fail as `too_long`. By default each nugget is judged against every block and the
    /// block that supports it best decides (its index in the verdict's `block`).
    #[arg(long)]
    pub no_blocks: bool,
    /// Cut every answer longer than this many tokens into blocks, even one that fits the
    /// context [default: as large as the context allows].
    #[arg(long, value_parser = block_tokens)]
    pub block_tokens: Option<usize>,
    /// Tokens of a block's end repeated at the start of the next, so a statement across a cut
    /// is whole in one block.
    #[arg(long, default_value_t = 64)]
    pub block_overlap: usize,
    /// Folder of template files overriding the built-in ones (same names as `prompts/`).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
}

/// Judge mode, as a flag.
#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum ModeArg {
    /// Label-token probabilities, one forward pass.
    Scored,
    /// Grammar-constrained rationale, quote and label.
    Reasoned,
}

impl From<ModeArg> for JudgeMode {
    fn from(m: ModeArg) -> Self {
        match m {
            ModeArg::Scored => JudgeMode::Scored,
            ModeArg::Reasoned => JudgeMode::Reasoned,
        }
    }
}

/// How verdicts are decided.
#[derive(Args, Clone)]
pub struct DecideArgs {
    /// Judge mode: `scored` (label-token probabilities, one forward pass) or `reasoned`
    /// (grammar-constrained rationale, quote and label).
    #[arg(long, value_enum, default_value_t = ModeArg::Scored)]
    pub mode: ModeArg,
    /// 2-grade verdicts: fold partial_support into not_support.
    #[arg(long)]
    pub two_grade: bool,
    /// Calibration: `auto` (the file fitted by `gavel calibrate` for this model, if any),
    /// `none`, or a path to a calibration file.
    #[arg(long, default_value = "auto")]
    pub calibration: CalibrationSpec,
}

/// Short-form policy, as a flag.
#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum ShortFormArg {
    /// Exact match, then containment of a gold answer, then the model when both miss.
    Hybrid,
    /// The paper's exact match + verifier.
    EmLlm,
    /// Exact match only.
    Em,
    /// The model only.
    Llm,
}

impl From<ShortFormArg> for ShortForm {
    fn from(s: ShortFormArg) -> Self {
        match s {
            ShortFormArg::Hybrid => ShortForm::Hybrid,
            ShortFormArg::EmLlm => ShortForm::EmLlm,
            ShortFormArg::Em => ShortForm::Em,
            ShortFormArg::Llm => ShortForm::Llm,
        }
    }
}

/// How input records become tasks.
#[derive(Args, Clone)]
pub struct RecordArgs {
    /// Rubric file applied to every record (replaces the records' own nuggets).
    #[arg(long)]
    pub rubric: Option<PathBuf>,
    /// Short-form records (`gold_answers`): `hybrid` (exact match, then containment of a gold
    /// answer, then the model when both miss), `em-llm` (the paper's EM + verifier), `em`, `llm`.
    #[arg(long, value_enum, default_value_t = ShortFormArg::Hybrid)]
    pub short_form: ShortFormArg,
}

/// The verdict cache, for the subcommands where it is off by default.
#[derive(Args, Clone)]
pub struct CacheArgs {
    /// Cache raw model outputs on disk ($GAVEL_HOME/cache/verdicts.redb), keyed by model file,
    /// mode and exact prompt; re-runs of the same work are instant.
    #[arg(long)]
    pub cache: bool,
}

/// Everything a command that judges records with the model takes: verify, bench and serve.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub score: ScoreArgs,
    #[command(flatten)]
    pub decide: DecideArgs,
    #[command(flatten)]
    pub records: RecordArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// A half of a labeled file, as a flag.
#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum PartArg {
    /// The first half.
    A,
    /// The second half.
    B,
}

impl From<PartArg> for Part {
    fn from(p: PartArg) -> Self {
        match p {
            PartArg::A => Part::A,
            PartArg::B => Part::B,
        }
    }
}

#[derive(Args)]
pub struct ExtractArgs {
    /// Input JSON Lines file (`query`, optional `passages: [str]`, optional `id`); `-` or absent
    /// reads stdin.
    #[arg(long, short = 'i')]
    pub input: Option<PathBuf>,
    /// Output JSON Lines file; absent writes stdout.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Write the input records with a `nuggets` field added (pipe into `gavel verify`), instead
    /// of one line of nuggets per query.
    #[arg(long)]
    pub attach: bool,
    /// Also write one rubric file per query (`<id>.json`, the format of `rubrics/`) here.
    #[arg(long)]
    pub rubric_dir: Option<PathBuf>,
    /// Continue a killed run: keep the lines already in --output (one per non-empty input line,
    /// in order; an incomplete last line is redone) and append the rest. Give the same input.
    #[arg(long)]
    pub resume: bool,
    /// Most nuggets per query.
    #[arg(long, default_value_t = ExtractConfig::default().max_nuggets)]
    pub max_nuggets: usize,
    /// Fewest items the model must write per window (duplicates are merged afterwards).
    #[arg(long, default_value_t = ExtractConfig::default().min_nuggets)]
    pub min_nuggets: usize,
    /// Most words per nugget.
    #[arg(long, default_value_t = ExtractConfig::default().max_words)]
    pub max_words: usize,
    /// Passages per window; the list is updated after each window.
    #[arg(long, default_value_t = ExtractConfig::default().window)]
    pub window: usize,
    /// Most characters of one passage shown to the model.
    #[arg(long, default_value_t = ExtractConfig::default().passage_chars)]
    pub passage_chars: usize,
    /// Merge nuggets whose word sets overlap at least this much (1 = exact duplicates only).
    #[arg(long, default_value_t = ExtractConfig::default().dedup_threshold)]
    pub dedup: f64,
    /// Token budget of one generated list (a list cut by it keeps its complete items).
    #[arg(long, default_value_t = ExtractConfig::default().max_tokens, value_parser = positive)]
    pub max_tokens: usize,
    /// Queries processed together (their windows are generated in parallel).
    #[arg(long, default_value_t = ExtractOptions::default().batch, value_parser = positive)]
    pub batch: usize,
    /// Folder of template files overriding the built-in ones (same names as `prompts/`).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

impl ExtractArgs {
    /// The extraction settings.
    pub fn config(&self) -> ExtractConfig {
        ExtractConfig {
            max_nuggets: self.max_nuggets,
            min_nuggets: self.min_nuggets,
            max_words: self.max_words,
            window: self.window,
            passage_chars: self.passage_chars,
            dedup_threshold: self.dedup,
            max_tokens: self.max_tokens,
        }
    }
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Input JSON Lines file; `-` or absent reads stdin.
    #[arg(long, short = 'i')]
    pub input: Option<PathBuf>,
    /// Output JSON Lines file; absent writes stdout. Lines are flushed as each batch completes.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Records judged together; their prompts share decode calls.
    #[arg(long, default_value_t = VerifyOptions::default().batch_records, value_parser = positive)]
    pub batch: usize,
    /// Print the prompts of the first record instead of running the model.
    #[arg(long)]
    pub dry_run: bool,
    /// Skip the records already in --output (by id, else line) and append the rest: continues
    /// a run that was killed or interrupted; an incomplete last line is redone.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args)]
pub struct RenderArgs {
    /// Input JSON Lines file.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// 1-based line to render.
    #[arg(long, default_value_t = 1, value_parser = positive)]
    pub line: usize,
    /// Judge mode whose prompts to print.
    #[arg(long, value_enum, default_value_t = ModeArg::Scored)]
    pub mode: ModeArg,
    /// Folder of template files overriding the built-in ones (same names as `prompts/`).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    #[command(flatten)]
    pub records: RecordArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Labeled JSON Lines file (long-form nuggets with `gold`, or short-form with `gold`); the
    /// model judges every short-form answer, so EM, model and hybrid can be compared.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Folder for verdicts.jsonl (not with --from), report.md, report.html and metrics.json.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Continue a killed run: keep the verdicts already in --out.
    #[arg(long)]
    pub resume: bool,
    /// Do not use the verdict cache (on by default for eval).
    #[arg(long)]
    pub no_cache: bool,
    /// Records judged together.
    #[arg(long, default_value_t = VerifyOptions::default().batch_records, value_parser = positive)]
    pub batch: usize,
    /// Judge and report one half of the file only (`a` or `b`, split by query/article); the
    /// other half's records are not judged.
    #[arg(long, value_enum)]
    pub part: Option<PartArg>,
    /// Do not run the model: re-decide from the raw model outputs in this verdicts file
    /// (written by an earlier eval, or verify), under --calibration. Instant.
    #[arg(long)]
    pub from: Option<PathBuf>,
    #[command(flatten)]
    pub score: ScoreArgs,
    #[command(flatten)]
    pub decide: DecideArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// The stacked judge's features, as a flag.
#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum StackArg {
    /// Choose among the feature sets below (and the penalty and head) by leaving each input
    /// file out in turn (one file: by folds of queries).
    Auto,
    /// Label votes, the nugget's likelihood/PMI and the lexical features.
    All,
    /// The likelihood and lexical features.
    Likelihood,
    /// The lexical features only (the ablation).
    NoModel,
    /// Few monotone features: best-sentence overlap, numbers, negation, names, the votes'
    /// difference and the nugget's likelihood/PMI.
    Aligned,
    /// The aligned lexical features only.
    AlignedNoModel,
    /// `aligned` plus a head fitted on the model's hidden states (verdicts judged with
    /// --hidden; `auto` tries it when every long-form verdict has them).
    AlignedHidden,
    /// Seven monotone features that carry to unseen sources (overlap and best-sentence overlap,
    /// each exact and soft, numbers missing, the nugget's PMI) and an ordinal head (a support
    /// score and an at-least-partial score) whose cuts are placed for class-balanced macro-F1.
    Transfer,
    /// `transfer` plus a head fitted on the model's hidden states (verdicts judged with
    /// --hidden; `auto` tries it when every long-form verdict has them).
    TransferHidden,
    /// No stack: contextual calibration and thresholds.
    None,
}

impl StackArg {
    /// The feature sets to choose among (empty for no stack).
    pub fn features(self) -> Vec<FeatureSet> {
        match self {
            StackArg::Auto => FeatureSet::ALL.to_vec(),
            StackArg::All => vec![FeatureSet::All],
            StackArg::Likelihood => vec![FeatureSet::Likelihood],
            StackArg::NoModel => vec![FeatureSet::NoModel],
            StackArg::Aligned => vec![FeatureSet::Aligned],
            StackArg::AlignedNoModel => vec![FeatureSet::AlignedNoModel],
            StackArg::AlignedHidden => vec![FeatureSet::AlignedHidden],
            StackArg::Transfer => vec![FeatureSet::Transfer],
            StackArg::TransferHidden => vec![FeatureSet::TransferHidden],
            StackArg::None => Vec::new(),
        }
    }
}

/// Grading to optimise, as a flag.
#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum GradesArg {
    /// 3-grade when the file has partial_support gold, else 2-grade.
    Auto,
    /// support / not_support.
    #[value(name = "2")]
    Two,
    /// support / partial_support / not_support.
    #[value(name = "3")]
    Three,
}

impl GradesArg {
    /// The grading, `None` for auto.
    pub fn grades(self) -> Option<Grades> {
        match self {
            GradesArg::Auto => None,
            GradesArg::Two => Some(Grades::Two),
            GradesArg::Three => Some(Grades::Three),
        }
    }
}

#[derive(Args)]
pub struct CalibrateArgs {
    /// Labeled JSON Lines file to fit on (never score the same records with the result); repeat
    /// to fit on several files together.
    #[arg(long, short = 'i', required = true)]
    pub input: Vec<PathBuf>,
    /// Where to write the calibration [default: $GAVEL_HOME/calibration/<model fingerprint>.json,
    /// which `--calibration auto` picks up].
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Records judged together.
    #[arg(long, default_value_t = VerifyOptions::default().batch_records, value_parser = positive)]
    pub batch: usize,
    /// Use only one half of the file (`a` or `b`, split by query/article); fit on one half and
    /// score the other with `gavel eval --part`.
    #[arg(long, value_enum)]
    pub part: Option<PartArg>,
    /// The stacked judge's features: `auto` chooses among the sets (and the L2 penalty and the
    /// head) by leaving each input file out in turn, so the choice is what carries to a source
    /// the fit has not seen; or one set; or `none` (contextual calibration and thresholds).
    #[arg(long, value_enum, default_value_t = StackArg::Auto)]
    pub stack: StackArg,
    /// Also print how the long-form stack's held-out macro-F1 grows with the number of labels
    /// (100, 300, 1,000, all): how many labels are worth collecting.
    #[arg(long)]
    pub learning_curve: bool,
    /// Also write every labeled verdict's features (all of them, model and lexical) with its gold
    /// label to this CSV file, for your own analysis.
    #[arg(long)]
    pub features_out: Option<PathBuf>,
    /// Grading to optimise: `auto` (3-grade when the file has partial_support gold), `2`, `3`.
    #[arg(long, value_enum, default_value_t = GradesArg::Auto)]
    pub grades: GradesArg,
    /// Read the raw model outputs for the labeled records from this verdicts file (written by
    /// an earlier eval or verify of the same --input) instead of running the model on them;
    /// with several --input, one --from per input, in the same order.
    #[arg(long)]
    pub from: Vec<PathBuf>,
    #[command(flatten)]
    pub score: ScoreArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Input JSON Lines file.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Records from the start of the file.
    #[arg(long, default_value_t = 200, value_parser = positive)]
    pub records: usize,
    /// Records per judge call.
    #[arg(long, default_value_t = VerifyOptions::default().batch_records, value_parser = positive)]
    pub batch: usize,
    /// Length of the raw prefill measured for comparison, in tokens. It is measured up to five
    /// times across the run (before the first batch, between batches, after the last) and the
    /// median is compared: a machine's speed drifts.
    #[arg(long, default_value_t = 2048)]
    pub prefill_tokens: usize,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one (the address is printed on stderr).
    #[arg(long, default_value_t = ServeConfig::default().addr)]
    pub addr: String,
    /// Requests that may wait for the model (an OpenRLHF burst is rollout_batch x n_samples
    /// requests); one more is answered 503 with Retry-After.
    #[arg(long, default_value_t = ServeConfig::default().queue, value_parser = positive)]
    pub queue: usize,
    /// Records judged together per model call, taken from all waiting requests.
    #[arg(long, default_value_t = ServeConfig::default().batch_records, value_parser = positive)]
    pub batch: usize,
    /// Largest request body in MiB (413 above).
    #[arg(long, default_value_t = ServeConfig::default().max_body_bytes >> 20)]
    pub max_body_mb: usize,
    /// Most records (queries) in one request (413 above).
    #[arg(long, default_value_t = ServeConfig::default().max_request_records, value_parser = positive)]
    pub max_request_records: usize,
    /// Seconds a request may wait for its verdicts (504 after).
    #[arg(long, default_value_t = ServeConfig::default().timeout.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Open connections served at once; more wait in the listen backlog until one closes.
    #[arg(long, default_value_t = ServeConfig::default().max_connections)]
    pub max_connections: usize,
    /// Seconds a client may take to send a request's headers (or to start its next request on
    /// a kept-alive connection) before the connection is closed.
    #[arg(long, default_value_t = ServeConfig::default().header_timeout.as_secs())]
    pub header_timeout: u64,
    /// Seconds a client may take to send a request's body (408 after).
    #[arg(long, default_value_t = ServeConfig::default().body_timeout.as_secs())]
    pub body_timeout: u64,
    /// Name of an environment variable holding the API key; requests then need
    /// `Authorization: Bearer <key>` (GET /health stays open).
    #[arg(long)]
    pub api_key_env: Option<String>,
    /// Folder of rubric files (.json, .toml) that labels select with {"rubric": "<id>"}.
    #[arg(long)]
    pub rubrics: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// A count that must be at least 1 (a batch, threads, a line number).
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// `--block-tokens`: a block must hold a few sentences' worth of tokens.
fn block_tokens(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n < gavel::judge::MIN_BLOCK_TOKENS => {
            Err(format!("must be at least {} (a block holds a few sentences)", gavel::judge::MIN_BLOCK_TOKENS))
        }
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn every_subcommand_parses_its_flags_without_clashes() {
        // Flattened argument groups share one namespace; a clash shows as a parse error.
        for args in [
            &["gavel", "verify", "--input", "x.jsonl", "--cache", "--short-form", "em-llm"][..],
            &["gavel", "serve", "--addr", "127.0.0.1:0", "--api-key-env", "K", "--openai-key-env", "O"],
            &["gavel", "eval", "--input", "x.jsonl", "--out", "d", "--part", "b", "--calibration", "none"],
            &["gavel", "calibrate", "--input", "x.jsonl", "--grades", "3", "--stack", "no-model"],
            &["gavel", "bench", "--input", "x.jsonl", "--backend", "openai", "--base-url", "http://h/v1"],
            &["gavel", "extract", "--input", "x.jsonl", "--attach"],
            &["gavel", "render", "--input", "x.jsonl", "--mode", "reasoned"],
        ] {
            if let Err(e) = super::Cli::try_parse_from(args) {
                panic!("{args:?}: {e}");
            }
        }
    }

    #[test]
    fn flags_a_subcommand_does_not_honour_are_refused() {
        for args in [
            &["gavel", "eval", "--input", "x", "--out", "d", "--rubric", "r.toml"][..],
            &["gavel", "eval", "--input", "x", "--out", "d", "--short-form", "em"],
            &["gavel", "calibrate", "--input", "x", "--calibration", "none"],
            &["gavel", "calibrate", "--input", "x", "--two-grade"],
            &["gavel", "eval", "--input", "x", "--out", "d", "--part", "c"],
            &["gavel", "calibrate", "--input", "x", "--grades", "4"],
            &["gavel", "verify", "--backend", "vllm"],
        ] {
            assert!(super::Cli::try_parse_from(args).is_err(), "{args:?} was accepted");
        }
    }
}
