//! The `gavel` command line: a thin shell over the library.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use gavel::backend::{Backend, EmbeddedBackend, EmbeddedConfig, RemoteBackend, RemoteConfig};
use gavel::cache::{model_fingerprint, model_key, VerdictCache};
use gavel::calibrate::Calibrator;
use gavel::judge::{Judge, JudgeConfig};
use gavel::pipeline::{self, VerifyOptions};
use gavel::prompt::{JudgeMode, PromptSet};
use gavel::record::{parse_record, ShortForm};
use gavel::rubric::Rubric;
use gavel::{model_store, Error};

const AFTER_HELP: &str = "\
Examples:
  gavel verify --input examples/longform.jsonl
  gavel verify --input answers.jsonl --rubric rubrics/research-answer.json --output verdicts.jsonl
  cat examples/shortform.jsonl | gavel verify --short-form hybrid
  gavel render --input examples/longform.jsonl --line 1
  gavel bench --input data.jsonl --records 200

Exit codes: 0 all records verified; 1 some records failed (error records were written);
2 the run could not start (bad flags, model, rubric or template).";

/// Rubric-based verifier for search-augmented LLM answers, with an embedded llama.cpp judge.
#[derive(Parser)]
#[command(name = "gavel", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Log more (-v info, -vv debug, including llama.cpp's own logs).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Verify answers: JSON Lines in, one JSON line of verdicts and scores out per record.
    #[command(after_help = AFTER_HELP)]
    Verify(VerifyArgs),
    /// Print the exact prompts the model would see for a record (no model run).
    Render(RenderArgs),
    /// Measure scored-mode throughput against raw prefill speed on the same backend.
    Bench(BenchArgs),
    /// Run the verifier over a labeled file and report agreement with the gold labels
    /// (Markdown on stdout; report.md, report.html, metrics.json and verdicts.jsonl in --out).
    Eval(EvalArgs),
    /// Fit a calibration for the current model on a labeled file (contextual calibration and
    /// macro-F1 thresholds); verify, eval and serve apply it automatically.
    Calibrate(CalibrateArgs),
    /// Extract nugget rubrics from queries (and retrieved passages): JSON Lines in
    /// (`query`, optional `passages`), one line of nuggets per query out.
    Extract(ExtractArgs),
    /// Fetch (once) and print the path of the embedded default model.
    FetchModel,
    /// Serve rewards over HTTP for RL trainers (OpenRLHF, verl, TRL); see docs/serve.md.
    Serve(ServeArgs),
    /// Validate rubric files and print a summary of each.
    Check {
        /// Rubric files (.json or .toml).
        #[arg(required = true)]
        rubrics: Vec<PathBuf>,
    },
}

const REMOTE: &str = "Remote backend (--backend openai)";

#[derive(Args, Clone)]
struct ModelArgs {
    /// Where the model runs: `embedded` (llama.cpp in this process) or `openai` (an
    /// OpenAI-compatible server: vLLM, SGLang, llama-server; see --base-url).
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "openai"])]
    backend: String,
    /// GGUF model file [default: the embedded default model, SmolLM2-135M-Instruct Q4_1, fetched
    /// once]. With --backend openai: the file the server serves, if you have it here (its
    /// calibration and cache entries then apply).
    #[arg(long, short = 'm')]
    model: Option<PathBuf>,
    /// Context size in tokens; prompts longer than this fail (see --truncate)
    /// [default: 8192 embedded; the server's with --backend openai].
    #[arg(long)]
    n_ctx: Option<u32>,
    /// Decode threads [default: number of cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Most prompt tokens packed into one decode.
    #[arg(long, default_value_t = 2048)]
    wave_tokens: usize,
    /// Most prompts (sequences) in one decode.
    #[arg(long, default_value_t = 64)]
    seqs: u32,
    /// Server base URL ending in /v1; repeat (or comma-separate) to spread
    /// requests round-robin over several servers.
    #[arg(long, value_delimiter = ',', help_heading = REMOTE)]
    base_url: Vec<String>,
    /// Model name sent in requests [default: the first of /v1/models].
    #[arg(long, help_heading = REMOTE)]
    model_name: Option<String>,
    /// Environment variable holding the server's API key (sent as a Bearer token).
    #[arg(long, default_value = "OPENAI_API_KEY", help_heading = REMOTE)]
    openai_key_env: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4, help_heading = REMOTE)]
    in_flight: usize,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 120, help_heading = REMOTE)]
    request_timeout: u64,
    /// Retries (with backoff) on 429, 5xx, timeouts and connection errors.
    #[arg(long, default_value_t = 4, help_heading = REMOTE)]
    retries: u32,
    /// The model's Jinja chat template [default: the server's, from /props].
    #[arg(long, help_heading = REMOTE)]
    chat_template: Option<PathBuf>,
    /// Alternatives asked for in top_logprobs (vLLM allows 20 by default).
    #[arg(long, default_value_t = 20, help_heading = REMOTE)]
    top_logprobs: usize,
}

#[derive(Args, Clone)]
struct JudgeArgs {
    /// Judge mode: `scored` (label-token probabilities, one forward pass) or `reasoned`
    /// (grammar-constrained rationale, quote and label).
    #[arg(long, default_value = "scored", value_parser = parse_mode)]
    mode: JudgeMode,
    /// 2-grade verdicts: fold partial_support into not_support.
    #[arg(long)]
    two_grade: bool,
    /// Scored mode without reading the nugget's likelihood and its content-free baseline (PMI):
    /// about 30% more verdicts/s; a stacked calibration then reads those features as missing.
    #[arg(long)]
    no_likelihood: bool,
    /// Cut judged texts that do not fit the context (reported as `"truncated": true`)
    /// instead of writing an error record.
    #[arg(long)]
    truncate: bool,
    /// Folder of template files overriding the built-in ones (same names as `prompts/`).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Rubric file applied to every record (replaces the records' own nuggets).
    #[arg(long)]
    rubric: Option<PathBuf>,
    /// Short-form records (`gold_answers`): `hybrid` (exact match, then containment of a gold
    /// answer, then the model when both miss), `em-llm` (the paper's EM + verifier), `em`, `llm`.
    #[arg(long, default_value = "hybrid")]
    short_form: ShortForm,
    /// Cache raw model outputs on disk ($GAVEL_HOME/cache/verdicts.redb), keyed by model file,
    /// mode and exact prompt; re-runs of the same work are instant.
    #[arg(long)]
    cache: bool,
    /// Calibration: `auto` (the file fitted by `gavel calibrate` for this model, if any),
    /// `none`, or a path to a calibration file.
    #[arg(long, default_value = "auto")]
    calibration: String,
}

#[derive(Args)]
struct ExtractArgs {
    /// Input JSON Lines file (`query`, optional `passages: [str]`, optional `id`); `-` or absent
    /// reads stdin.
    #[arg(long, short = 'i')]
    input: Option<PathBuf>,
    /// Output JSON Lines file; absent writes stdout.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Write the input records with a `nuggets` field added (pipe into `gavel verify`), instead
    /// of one line of nuggets per query.
    #[arg(long)]
    attach: bool,
    /// Also write one rubric file per query (`<id>.json`, the format of `rubrics/`) here.
    #[arg(long)]
    rubric_dir: Option<PathBuf>,
    /// Most nuggets per query.
    #[arg(long, default_value_t = 30)]
    max_nuggets: usize,
    /// Fewest items the model must write per window (duplicates are merged afterwards).
    #[arg(long, default_value_t = 5)]
    min_nuggets: usize,
    /// Most words per nugget.
    #[arg(long, default_value_t = 12)]
    max_words: usize,
    /// Passages per window; the list is updated after each window.
    #[arg(long, default_value_t = 8)]
    window: usize,
    /// Most characters of one passage shown to the model.
    #[arg(long, default_value_t = 1500)]
    passage_chars: usize,
    /// Merge nuggets whose word sets overlap at least this much (1 = exact duplicates only).
    #[arg(long, default_value_t = 0.8)]
    dedup: f64,
    /// Token budget of one generated list (a list cut by it keeps its complete items).
    #[arg(long, default_value_t = 400)]
    max_tokens: usize,
    /// Queries processed together (their windows are generated in parallel).
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Folder of template files overriding the built-in ones (same names as `prompts/`).
    #[arg(long)]
    prompts: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct VerifyArgs {
    /// Input JSON Lines file; `-` or absent reads stdin.
    #[arg(long, short = 'i')]
    input: Option<PathBuf>,
    /// Output JSON Lines file; absent writes stdout. Lines are flushed as each batch completes.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Records judged together; their prompts share decode calls.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Print the prompts of the first record instead of running the model.
    #[arg(long)]
    dry_run: bool,
    /// Skip the records already in --output (by id, else line) and append the rest: continues
    /// a run that was killed or interrupted; an incomplete last line is redone.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    judge: JudgeArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct RenderArgs {
    /// Input JSON Lines file.
    #[arg(long, short = 'i')]
    input: PathBuf,
    /// 1-based line to render.
    #[arg(long, default_value_t = 1)]
    line: usize,
    #[command(flatten)]
    judge: JudgeArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct EvalArgs {
    /// Labeled JSON Lines file (long-form nuggets with `gold`, or short-form with `gold`).
    #[arg(long, short = 'i')]
    input: PathBuf,
    /// Folder for verdicts.jsonl, report.md, report.html and metrics.json.
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Continue a killed run: keep the verdicts already in --out.
    #[arg(long)]
    resume: bool,
    /// Do not use the verdict cache (on by default for eval).
    #[arg(long)]
    no_cache: bool,
    /// Records judged together.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Report on one half of the file only (`a` or `b`, split by query/article).
    #[arg(long)]
    part: Option<char>,
    /// Do not run the model: re-decide from the raw model outputs in this verdicts file
    /// (written by an earlier eval, or verify), under --calibration. Instant.
    #[arg(long)]
    from: Option<PathBuf>,
    #[command(flatten)]
    judge: JudgeArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct CalibrateArgs {
    /// Labeled JSON Lines file to fit on (never score the same records with the result); repeat
    /// to fit on several files together.
    #[arg(long, short = 'i', required = true)]
    input: Vec<PathBuf>,
    /// Where to write the calibration [default: $GAVEL_HOME/calibration/<model fingerprint>.json,
    /// which `--calibration auto` picks up].
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Records judged together.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Use only one half of the file (`a` or `b`, split by query/article); fit on one half and
    /// score the other with `gavel eval --part`.
    #[arg(long)]
    part: Option<char>,
    /// Fit the stacked judge over model and lexical features (`all`: label votes and the
    /// nugget's likelihood/PMI), over the likelihood and lexical features (`likelihood`), over
    /// the lexical features only (`no-model`, the ablation), or not at all (`none`: contextual
    /// calibration and thresholds).
    #[arg(long, default_value = "all")]
    stack: String,
    /// Also write every labeled verdict's features (all of them, model and lexical) with its gold
    /// label to this CSV file, for your own analysis.
    #[arg(long)]
    features_out: Option<PathBuf>,
    /// Grading to optimise: `auto` (3-grade when the file has partial_support gold), `2`, `3`.
    #[arg(long, default_value = "auto")]
    grades: String,
    /// Read the raw model outputs for the labeled records from this verdicts file (written by
    /// an earlier eval or verify of the same --input) instead of running the model on them;
    /// with several --input, one --from per input, in the same order.
    #[arg(long)]
    from: Vec<PathBuf>,
    #[command(flatten)]
    judge: JudgeArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct BenchArgs {
    /// Input JSON Lines file.
    #[arg(long, short = 'i')]
    input: PathBuf,
    /// Records from the start of the file.
    #[arg(long, default_value_t = 200)]
    records: usize,
    /// Records per judge call.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Length of the raw prefill measured for comparison, in tokens.
    #[arg(long, default_value_t = 2048)]
    prefill_tokens: usize,
    #[command(flatten)]
    judge: JudgeArgs,
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free one (the address is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: String,
    /// Requests that may wait for the model (an OpenRLHF burst is rollout_batch x n_samples
    /// requests); one more is answered 503 with Retry-After.
    #[arg(long, default_value_t = gavel::server::DEFAULT_QUEUE)]
    queue: usize,
    /// Records judged together per model call, taken from all waiting requests.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Largest request body in MiB (413 above).
    #[arg(long, default_value_t = 32)]
    max_body_mb: usize,
    /// Most records (queries) in one request (413 above).
    #[arg(long, default_value_t = 8192)]
    max_request_records: usize,
    /// Seconds a request may wait for its verdicts (504 after).
    #[arg(long, default_value_t = 150)]
    timeout: u64,
    /// Name of an environment variable holding the API key; requests then need
    /// `Authorization: Bearer <key>` (GET /health stays open).
    #[arg(long)]
    api_key_env: Option<String>,
    /// Folder of rubric files (.json, .toml) that labels select with {"rubric": "<id>"}.
    #[arg(long)]
    rubrics: Option<PathBuf>,
    #[command(flatten)]
    judge: JudgeArgs,
    #[command(flatten)]
    model: ModelArgs,
}

fn parse_mode(s: &str) -> Result<JudgeMode, String> {
    match s {
        "scored" => Ok(JudgeMode::Scored),
        "reasoned" => Ok(JudgeMode::Reasoned),
        other => Err(format!("`{other}` is not scored or reasoned")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "warn,llama_cpp_2=off,llama-cpp-2=off",
        1 => "info,llama_cpp_2=warn",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("GAVEL_LOG").unwrap_or_else(|_| filter.into()))
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gavel: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<ExitCode, Error> {
    match command {
        Command::Verify(args) => verify(args),
        Command::Render(args) => render(args),
        Command::Bench(args) => bench(args),
        Command::Eval(args) => eval(args),
        Command::Calibrate(args) => calibrate(args),
        Command::Serve(args) => serve(args),
        Command::Extract(a) => extract(a),
        Command::FetchModel => {
            println!("{}", model_store::ensure_default_model()?.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { rubrics } => {
            let mut bad = false;
            for path in rubrics {
                match Rubric::load(&path) {
                    Ok(r) => {
                        let model = r.nuggets.iter().filter(|n| n.needs_model()).count();
                        println!(
                            "{}: ok, id `{}`, {} nuggets ({} need the model)",
                            path.display(),
                            r.id,
                            r.nuggets.len(),
                            model
                        );
                    }
                    Err(e) => {
                        eprintln!("gavel: {e}");
                        bad = true;
                    }
                }
            }
            Ok(if bad { ExitCode::from(1) } else { ExitCode::SUCCESS })
        }
    }
}

fn load_backend(m: &ModelArgs) -> Result<Arc<dyn Backend>, Error> {
    if m.backend == "openai" {
        let mut cfg = RemoteConfig::new("");
        cfg.base_urls = m.base_url.iter().map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect();
        if cfg.base_urls.is_empty() {
            return Err(Error::field(
                "--backend openai",
                "--base-url",
                "give the server's URL, e.g. http://127.0.0.1:8080/v1",
            ));
        }
        cfg.model_name = m.model_name.clone();
        cfg.api_key = std::env::var(&m.openai_key_env).ok().filter(|k| !k.trim().is_empty());
        cfg.in_flight = m.in_flight.max(1);
        cfg.timeout = std::time::Duration::from_secs(m.request_timeout.max(1));
        cfg.retries = m.retries;
        cfg.top_logprobs = m.top_logprobs.max(1);
        cfg.n_ctx = m.n_ctx.map(|n| n as usize);
        cfg.model_file = m.model.clone();
        cfg.chat_template = match &m.chat_template {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| Error::io(p, e))?),
            None => None,
        };
        return Ok(Arc::new(RemoteBackend::connect(cfg)?));
    }
    let path = match &m.model {
        Some(p) => p.clone(),
        None => model_store::ensure_default_model()?,
    };
    let cfg = EmbeddedConfig::new(path)
        .with_n_ctx(m.n_ctx.unwrap_or(8192))
        .with_threads(m.threads)
        .with_wave_tokens(m.wave_tokens)
        .with_n_seq_max(m.seqs);
    Ok(Arc::new(EmbeddedBackend::load(cfg)?))
}

fn build_judge(j: &JudgeArgs, m: &ModelArgs) -> Result<Judge, Error> {
    let prompts = match &j.prompts {
        Some(dir) => PromptSet::with_overrides(dir)?,
        None => PromptSet::builtin(),
    };
    let cfg = JudgeConfig::default()
        .with_mode(j.mode)
        .with_two_grade(j.two_grade)
        .with_truncate(j.truncate)
        .with_likelihood(!j.no_likelihood);
    let backend = load_backend(m)?;
    let fingerprint = model_key(&backend.info().model)?;
    let mut judge = Judge::new(backend, prompts, cfg);
    if j.cache {
        let path = VerdictCache::default_path();
        match VerdictCache::open(&path) {
            Ok(c) => judge = judge.with_cache(Arc::new(c), fingerprint.clone()),
            Err(e) => tracing::warn!("{e}; running without the verdict cache"),
        }
    }
    let calibrator = load_calibrator(&j.calibration, &fingerprint, judge.prompts().version())?;
    if let Some(c) = &calibrator {
        if c.prompts != judge.prompts().version() {
            tracing::warn!(
                "calibration was fitted with templates {} but these are {}",
                c.prompts,
                judge.prompts().version()
            );
        }
        eprintln!("gavel: calibration: {}", c.describe());
    }
    Ok(judge.with_calibrator(calibrator))
}

/// `none`, `auto` (the file fitted by `gavel calibrate` for this model if any, else the one
/// shipped for the default model and templates) or a path; checked against the model.
fn load_calibrator(spec: &str, fingerprint: &str, prompts: &str) -> Result<Option<Calibrator>, Error> {
    let calibrator = match spec {
        "none" => None,
        "auto" => {
            let path = Calibrator::path_for(fingerprint);
            if path.is_file() {
                Some(Calibrator::load(&path)?)
            } else {
                match Calibrator::shipped() {
                    Some(c) if c.model == fingerprint && c.prompts == prompts => Some(c),
                    Some(c) if c.model == fingerprint => {
                        tracing::warn!(
                            "the shipped calibration was fitted with the built-in templates {}; these are {}: \
                             not applied (fit one with `gavel calibrate`)",
                            c.prompts,
                            prompts
                        );
                        None
                    }
                    _ => None,
                }
            }
        }
        file => Some(Calibrator::load(Path::new(file))?),
    };
    if let Some(c) = &calibrator {
        if c.model != fingerprint {
            return Err(Error::field(spec, "model", "calibration was fitted for another model file"));
        }
    }
    Ok(calibrator)
}

fn load_rubric(j: &JudgeArgs) -> Result<Option<Rubric>, Error> {
    j.rubric.as_ref().map(Rubric::load).transpose()
}

/// Reader, display name, number of non-blank lines when known.
type Input = (Box<dyn BufRead>, String, Option<u64>);

fn open_input(path: &Option<PathBuf>) -> Result<Input, Error> {
    match path {
        None => Ok((Box::new(BufReader::new(std::io::stdin())), "stdin".into(), None)),
        Some(p) if p.as_os_str() == "-" => Ok((Box::new(BufReader::new(std::io::stdin())), "stdin".into(), None)),
        Some(p) => {
            let f = File::open(p).map_err(|e| Error::io(p, e))?;
            let lines = BufReader::new(File::open(p).map_err(|e| Error::io(p, e))?)
                .lines()
                .map_while(Result::ok)
                .filter(|l| !l.trim().is_empty())
                .count() as u64;
            Ok((Box::new(BufReader::new(f)), p.display().to_string(), Some(lines)))
        }
    }
}

fn verify(args: VerifyArgs) -> Result<ExitCode, Error> {
    let rubric = load_rubric(&args.judge)?;
    let (input, input_name, total) = open_input(&args.input)?;
    if args.dry_run {
        let judge = build_judge(&args.judge, &args.model)?;
        let mut first = None;
        for (i, line) in input.lines().enumerate() {
            let line = line.map_err(|e| Error::io(&input_name, e))?;
            if !line.trim().is_empty() {
                first = Some((i + 1, line));
                break;
            }
        }
        let Some((n, line)) = first else {
            return Ok(ExitCode::SUCCESS);
        };
        let task = parse_record(&line, &format!("{input_name}:{n}"), rubric.as_ref(), args.judge.short_form)?;
        print_prompts(&judge, &task)?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.resume && args.output.is_none() {
        return Err(Error::field("command line", "--resume", "needs --output FILE to resume into"));
    }
    let judge = build_judge(&args.judge, &args.model)?;
    let opts = VerifyOptions {
        input_name,
        rubric,
        short_form: args.judge.short_form,
        batch_records: args.batch,
        skip: Default::default(),
    };
    let summary = run_verify(&judge, input, total, args.output.as_deref(), args.resume, opts)?;
    Ok(if summary.errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Verify `input` into `output` (stdout when absent) with a progress bar on a terminal and a
/// summary line; with `resume`, records already in `output` are skipped and the rest appended.
fn run_verify(
    judge: &Judge,
    input: Box<dyn BufRead>,
    total: Option<u64>,
    output: Option<&Path>,
    resume: bool,
    mut opts: VerifyOptions,
) -> Result<pipeline::Summary, Error> {
    let mut output: Box<dyn Write> = match output {
        Some(p) if resume => {
            let state = pipeline::prepare_resume(p)?;
            if state.kept > 0 || state.dropped_bytes > 0 {
                eprintln!(
                    "gavel: resuming {}: {} records already done{}",
                    p.display(),
                    state.kept,
                    if state.dropped_bytes > 0 { ", an incomplete last line removed" } else { "" }
                );
            }
            opts.skip = state.done;
            let f = std::fs::OpenOptions::new().create(true).append(true).open(p).map_err(|e| Error::io(p, e))?;
            Box::new(BufWriter::new(f))
        }
        Some(p) => Box::new(BufWriter::new(File::create(p).map_err(|e| Error::io(p, e))?)),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let already = opts.skip.len() as u64;
    let bar = if std::io::stderr().is_terminal() {
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} records  {per_sec}  eta {eta}  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_position(already);
        bar.reset_eta();
        Some(bar)
    } else {
        None
    };
    let summary = pipeline::verify_stream(judge, input, &mut output, &opts, |s| {
        if let Some(bar) = &bar {
            bar.set_position((s.records + s.skipped) as u64);
            bar.set_message(format!("{:.1} verdicts/s, {} errors", s.verdicts_per_sec(), s.errors));
        }
    })?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let usage = judge.backend().usage();
    eprintln!(
        "gavel: {} records, {} verdicts ({} by the model) in {:.1}s: {:.2} verdicts/s, {:.0} prompt tokens/s; {} errors{}{}{}",
        summary.records,
        summary.verdicts,
        summary.model_verdicts,
        summary.elapsed.as_secs_f64(),
        summary.verdicts_per_sec(),
        usage.prompt_tokens as f64 / summary.elapsed.as_secs_f64().max(1e-9),
        summary.errors,
        if summary.truncated > 0 { format!(", {} truncated", summary.truncated) } else { String::new() },
        if summary.skipped > 0 { format!(", {} skipped (already done)", summary.skipped) } else { String::new() },
        match judge.calibrator() {
            Some(_) => ", calibrated",
            None => "",
        },
    );
    Ok(summary)
}

fn print_prompts(judge: &Judge, task: &gavel::Task) -> Result<(), Error> {
    let prompts = judge.render(task)?;
    if prompts.is_empty() {
        println!("(no nugget of this record needs the model)");
    }
    let mut out = std::io::stdout().lock();
    for (k, p) in prompts.iter().enumerate() {
        if k == 0 {
            let _ = writeln!(out, "===== shared prefix (evaluated once per record) =====\n{}", p.prefix);
        }
        let _ = writeln!(out, "===== nugget {} suffix =====\n{}", p.nugget, p.suffix);
    }
    Ok(())
}

fn render(args: RenderArgs) -> Result<ExitCode, Error> {
    let rubric = load_rubric(&args.judge)?;
    let text = std::fs::read_to_string(&args.input).map_err(|e| Error::io(&args.input, e))?;
    let line = text.lines().nth(args.line.saturating_sub(1)).ok_or_else(|| {
        Error::field(args.input.display().to_string(), "--line", format!("the file has fewer than {} lines", args.line))
    })?;
    let location = format!("{}:{}", args.input.display(), args.line);
    let task = parse_record(line, &location, rubric.as_ref(), args.judge.short_form)?;
    let judge = build_judge(&args.judge, &args.model)?;
    print_prompts(&judge, &task)?;
    Ok(ExitCode::SUCCESS)
}

fn bench(args: BenchArgs) -> Result<ExitCode, Error> {
    let rubric = load_rubric(&args.judge)?;
    let text = std::fs::read_to_string(&args.input).map_err(|e| Error::io(&args.input, e))?;
    let name = args.input.display().to_string();
    let tasks: Vec<gavel::Task> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .take(args.records)
        .map(|(i, l)| parse_record(l, &format!("{name}:{}", i + 1), rubric.as_ref(), args.judge.short_form))
        .collect::<Result<_, _>>()?;
    let judge = build_judge(&args.judge, &args.model)?;
    let info = judge.backend().info();
    eprintln!("gavel bench: {} records of {name}, model {}, {} threads", tasks.len(), info.model, info.n_threads);
    let r = pipeline::bench(&judge, &tasks, args.batch, args.prefill_tokens)?;
    println!("records            {}", r.records);
    println!("model verdicts     {}", r.verdicts);
    println!("errors             {}", r.errors);
    println!("wall time          {:.2} s", r.seconds);
    println!("verdicts/s         {:.2}", r.verdicts_per_sec);
    println!("prompt tokens      {} (unique: each shared prefix counted once)", r.prompt_tokens);
    println!("prompt tokens/s    {:.1}", r.prompt_tokens_per_sec);
    println!(
        "raw prefill        {} tokens in one sequence: {:.1} tokens/s",
        r.prefill_tokens, r.prefill_tokens_per_sec
    );
    println!("ratio              {:.1}% of raw prefill speed", r.ratio * 100.0);
    println!("{}", serde_json::to_string(&r).unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

fn serve(args: ServeArgs) -> Result<ExitCode, Error> {
    let api_key = match &args.api_key_env {
        None => None,
        Some(name) => match std::env::var(name) {
            Ok(key) if !key.trim().is_empty() => Some(key.trim().to_string()),
            _ => return Err(Error::field("--api-key-env", name, "the environment variable is not set or empty")),
        },
    };
    let rubrics = match &args.rubrics {
        Some(dir) => gavel::server::load_rubrics(dir)?,
        None => Vec::new(),
    };
    let config = gavel::server::ServeConfig::default()
        .with_addr(args.addr)
        .with_queue(args.queue)
        .with_batch_records(args.batch)
        .with_max_body_bytes(args.max_body_mb << 20)
        .with_max_request_records(args.max_request_records)
        .with_timeout(std::time::Duration::from_secs(args.timeout))
        .with_api_key(api_key)
        .with_short_form(args.judge.short_form)
        .with_rubric(load_rubric(&args.judge)?)
        .with_rubrics(rubrics);
    let judge = Arc::new(build_judge(&args.judge, &args.model)?);
    let server = gavel::server::Server::bind(judge, config)?;
    let stop = server.shutdown_signal()?;
    eprintln!("gavel serve: listening on http://{}", server.local_addr()?);
    server.run(stop)?;
    eprintln!("gavel serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Labeled tasks of a file, with parse failures kept as (line, message).
/// Labeled tasks with their line numbers, and (line, message) of records that failed to parse.
type Labeled = (Vec<(usize, gavel::Task)>, Vec<(usize, String)>);

fn read_labeled(path: &Path, short_form: ShortForm) -> Result<Labeled, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let name = path.display().to_string();
    let (mut tasks, mut failures) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_record(line, &format!("{name}:{}", i + 1), None, short_form) {
            Ok(t) => tasks.push((i + 1, t)),
            Err(e) => failures.push((i + 1, e.to_string())),
        }
    }
    Ok((tasks, failures))
}

fn eval(mut args: EvalArgs) -> Result<ExitCode, Error> {
    // The model judges every short-form answer, so EM, model and hybrid can be compared.
    args.judge.short_form = ShortForm::Llm;
    args.judge.cache = !args.no_cache;
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    let mut setup = Vec::new();
    let mut rescore = None;
    let verdicts_path = match &args.from {
        Some(from) => {
            // No model run: re-decide from the raw model outputs of an earlier eval or verify.
            let model_path = match &args.model.model {
                Some(p) => p.clone(),
                None => model_store::default_model_path(),
            };
            let prompts = match &args.judge.prompts {
                Some(dir) => PromptSet::with_overrides(dir)?,
                None => PromptSet::builtin(),
            };
            let calibrator =
                load_calibrator(&args.judge.calibration, &model_fingerprint(&model_path)?, prompts.version())?;
            setup.push((
                "model".to_string(),
                format!("{} (raw outputs read from {})", model_path.display(), from.display()),
            ));
            setup.push((
                "calibration".to_string(),
                calibrator.as_ref().map(|c| c.describe()).unwrap_or_else(|| "none".into()),
            ));
            rescore = Some(calibrator);
            from.clone()
        }
        None => {
            let judge = build_judge(&args.judge, &args.model)?;
            let verdicts_path = args.out.join("verdicts.jsonl");
            let (input, input_name, total) = open_input(&Some(args.input.clone()))?;
            let opts = VerifyOptions {
                input_name,
                rubric: None,
                short_form: ShortForm::Llm,
                batch_records: args.batch,
                skip: Default::default(),
            };
            run_verify(&judge, input, total, Some(&verdicts_path), args.resume, opts)?;
            let info = judge.backend().info();
            setup = vec![
                ("model".into(), info.model.clone()),
                ("backend".into(), format!("{}, {} threads, context {}", info.kind, info.n_threads, info.n_ctx)),
                ("mode".into(), format!("{:?}, templates {}", args.judge.mode, judge.prompts().version())),
                ("calibration".into(), judge.calibrator().map(|c| c.describe()).unwrap_or_else(|| "none".into())),
            ];
            verdicts_path
        }
    };

    let (mut tasks, parse_failures) = read_labeled(&args.input, ShortForm::Llm)?;
    if let Some(part) = args.part {
        tasks.retain(|(_, t)| gavel::eval::part_of(t) == part);
    }
    let mut outputs = gavel::eval::read_outputs(&verdicts_path)?;
    if let Some(calibrator) = &rescore {
        gavel::eval::rescore_outputs(&tasks, &mut outputs, calibrator.as_ref());
    }
    let name = match args.part {
        Some(p) => format!("{} (part {p})", args.input.display()),
        None => args.input.display().to_string(),
    };
    let mut input = gavel::eval::collect(&name, &tasks, &outputs, parse_failures);
    input.setup = setup;
    let report = gavel::eval::build_report(&input);
    let md = gavel::report::to_markdown(&report);
    let write = |name: &str, body: &str| -> Result<(), Error> {
        let p = args.out.join(name);
        std::fs::write(&p, body).map_err(|e| Error::io(&p, e))
    };
    write("report.md", &md)?;
    write("report.html", &gavel::report::to_html(&report))?;
    write("metrics.json", &serde_json::to_string_pretty(&report).unwrap_or_default())?;
    print!("{md}");
    eprintln!("gavel: reports in {}", args.out.display());
    Ok(if report.failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn calibrate(mut args: CalibrateArgs) -> Result<ExitCode, Error> {
    use gavel::calibrate::CONTENT_FREE_ANSWERS;
    use gavel::eval::Grades;
    use gavel::stack::{features, FeatureInput, FeatureSet, Stack};
    args.judge.calibration = "none".into();
    args.judge.cache = true;
    args.judge.short_form = ShortForm::Llm;
    let stack_set = match args.stack.as_str() {
        "all" => Some(FeatureSet::All),
        "no-model" => Some(FeatureSet::NoModel),
        "likelihood" => Some(FeatureSet::Likelihood),
        "none" => None,
        other => {
            return Err(Error::field(
                "command line",
                "--stack",
                format!("`{other}` is not all, likelihood, no-model or none"),
            ))
        }
    };
    if !args.from.is_empty() && args.from.len() != args.input.len() {
        return Err(Error::field(
            "command line",
            "--from",
            format!("{} --from for {} --input: give one per input, in order", args.from.len(), args.input.len()),
        ));
    }
    let judge = build_judge(&args.judge, &args.model)?;
    let mut tasks = Vec::new();
    let mut file_of = Vec::new();
    for (f, path) in args.input.iter().enumerate() {
        let (mut t, _) = read_labeled(path, ShortForm::Llm)?;
        if let Some(part) = args.part {
            t.retain(|(_, t)| gavel::eval::part_of(t) == part);
        }
        if t.is_empty() {
            return Err(Error::field(path.display().to_string(), "records", "no labeled record"));
        }
        file_of.extend(std::iter::repeat_n(f, t.len()));
        tasks.extend(t);
    }
    let input_names: Vec<String> =
        args.input.iter().map(|p| p.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default()).collect();
    let mut items: Vec<([f64; 3], gavel::Label)> = Vec::new();
    let mut feats: Vec<Vec<f64>> = Vec::new();
    let mut item_file: Vec<usize> = Vec::new();
    let mut item_short: Vec<bool> = Vec::new();
    let mut item_fold: Vec<usize> = Vec::new();
    let want_dump = args.features_out.is_some();
    let mut dump: Vec<String> = Vec::new();
    let total = tasks.len();
    let mut add = |task: &gavel::Task, f: usize, i: usize, raw: gavel::aggregate::RawScore| {
        let gold = if task.is_short_form() { task.gold } else { task.nuggets[i].gold };
        let Some(gold) = gold else { return };
        items.push((raw.probs.to_array(), gold));
        item_file.push(f);
        item_short.push(task.is_short_form());
        item_fold.push(gavel::eval::fold_of(task, 4));
        let x = FeatureInput {
            logprobs: Some(raw.logprobs),
            nugget_lp: raw.nugget_lp,
            nugget: &task.nuggets[i].text,
            answer: &task.answer,
            gold_answers: &task.gold_answers,
        };
        if let Some(set) = stack_set {
            feats.push(features(set, &x));
        }
        if want_dump {
            dump.push(format!(
                "{},{},{},{},{},{}",
                input_names[f],
                task.id.as_deref().unwrap_or("").replace(',', ";"),
                gavel::eval::part_of(task),
                i,
                gold.as_str(),
                features(FeatureSet::All, &x).iter().map(|v| format!("{v}")).collect::<Vec<_>>().join(",")
            ));
        }
    };
    if args.from.is_empty() {
        let batch_size = args.batch.max(1);
        for (k, chunk) in tasks.chunks(batch_size).enumerate() {
            let batch: Vec<gavel::Task> = chunk.iter().map(|(_, t)| t.clone()).collect();
            for (b, (task, r)) in batch.iter().zip(judge.judge(&batch)).enumerate() {
                let Ok(j) = r else { continue };
                for (i, v) in j.verdicts.iter().enumerate() {
                    if let Some(raw) = v.raw {
                        add(task, file_of[k * batch_size + b], i, raw);
                    }
                }
            }
            eprint!("\rgavel: calibrate: {}/{} records", ((k + 1) * args.batch).min(total), total);
        }
        eprintln!();
    } else {
        // Raw model outputs of an earlier eval/verify: no model run for the labeled records.
        let outputs = args.from.iter().map(|f| gavel::eval::read_outputs(f)).collect::<Result<Vec<_>, _>>()?;
        for ((line, task), &f) in tasks.iter().zip(&file_of) {
            let Some(out) = outputs[f].get(&pipeline::record_key(task.id.as_deref(), *line)) else { continue };
            let Some(vs) = out.get("verdicts").and_then(|v| v.as_array()) else { continue };
            for (i, v) in vs.iter().enumerate().take(task.nuggets.len()) {
                let raw = v.get("raw");
                let (Some(p), Some(lp)) = (
                    raw.and_then(|r| r.get("probs")).and_then(gavel::eval::label_triple),
                    raw.and_then(|r| r.get("logprobs")).and_then(gavel::eval::label_triple),
                ) else {
                    continue;
                };
                add(
                    task,
                    f,
                    i,
                    gavel::aggregate::RawScore {
                        probs: gavel::aggregate::LabelProbs::from_array(p),
                        logprobs: lp,
                        nugget_lp: raw.and_then(gavel::eval::raw_nugget_lp),
                    },
                );
            }
        }
    }
    if let Some(path) = &args.features_out {
        let header = format!("file,id,part,nugget,gold,{}", gavel::stack::feature_names(FeatureSet::All).join(","));
        let body = std::iter::once(header).chain(dump).collect::<Vec<_>>().join("\n") + "\n";
        std::fs::write(path, body).map_err(|e| Error::io(path, e))?;
    }
    if items.is_empty() {
        return Err(Error::field(input_names.join(", "), "gold", "no labeled verdict to fit on"));
    }
    // Content-free answers judged against a sample of the file's own nuggets.
    let mut sample: Vec<gavel::Nugget> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (_, t) in &tasks {
        for n in &t.nuggets {
            if n.needs_model() && seen.insert(n.text.clone()) && sample.len() < 48 {
                sample.push(gavel::Nugget::new(n.text.clone()));
            }
        }
    }
    let cf_tasks: Vec<gavel::Task> =
        CONTENT_FREE_ANSWERS.iter().map(|a| gavel::Task::new(None, *a, sample.clone())).collect();
    let mut cf = [0.0; 3];
    let mut n_cf = 0.0;
    for j in judge.judge(&cf_tasks).into_iter().flatten() {
        for v in j.verdicts {
            if let Some(raw) = v.raw {
                let p = raw.probs.to_array();
                for k in 0..3 {
                    cf[k] += p[k];
                }
                n_cf += 1.0;
            }
        }
    }
    if n_cf > 0.0 {
        cf = [cf[0] / n_cf, cf[1] / n_cf, cf[2] / n_cf];
    } else {
        cf = [1.0 / 3.0; 3];
    }
    let grades = match args.grades.as_str() {
        "2" => Grades::Two,
        "3" => Grades::Three,
        _ if items.iter().any(|(_, g)| *g == gavel::Label::PartialSupport) => Grades::Three,
        _ => Grades::Two,
    };
    let (bias, f1) = Calibrator::fit(&items, cf, grades);
    // One stack for long-form verdicts, one for short-form ones, each over its own items; each
    // input file weighs the same in a fit, however many verdicts it has.
    let fit_stack = |set: FeatureSet, short: bool| -> Option<Stack> {
        let idx: Vec<usize> = (0..items.len()).filter(|&i| item_short[i] == short).collect();
        if idx.is_empty() {
            return None;
        }
        let mut per_file = vec![0usize; args.input.len()];
        for &i in &idx {
            per_file[item_file[i]] += 1;
        }
        let files = per_file.iter().filter(|&&c| c > 0).count().max(1) as f64;
        let xs: Vec<Vec<f64>> = idx.iter().map(|&i| feats[i].clone()).collect();
        let golds: Vec<gavel::Label> = idx.iter().map(|&i| items[i].1).collect();
        let w: Vec<f64> =
            idx.iter().map(|&i| idx.len() as f64 / (files * per_file[item_file[i]].max(1) as f64)).collect();
        Some(if short {
            // Short-form verdicts are correct or not: 2-grade.
            Stack::fit_weighted(set, &xs, &golds, &w, true, 1e-3)
        } else {
            // Long-form: multinomial or ordinal head, whichever cross-validates better here.
            let files: Vec<usize> = idx.iter().map(|&i| item_file[i]).collect();
            let folds: Vec<usize> = idx.iter().map(|&i| item_fold[i]).collect();
            let (stack, choice) = Stack::fit_long_form(set, &xs, &golds, &w, &files, &folds, 1e-3);
            println!(
                "long-form stack head: {} (mean macro-F1 over files, {}-fold cross-validation on the fitting \
                 records: multinomial {:.3}, ordinal {:.3})",
                if stack.ordinal.is_some() { "ordinal" } else { "multinomial" },
                choice.folds,
                choice.multinomial,
                choice.ordinal
            );
            stack
        })
    };
    let model_path = judge.backend().info().model;
    let c = Calibrator {
        model: model_key(&model_path)?,
        model_file: Path::new(&model_path).file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default(),
        prompts: judge.prompts().version().to_string(),
        fitted_on: {
            let f = input_names.join(" + ");
            match args.part {
                Some(p) => format!("{f} part {p}"),
                None => f,
            }
        },
        n: items.len(),
        grades,
        content_free: cf,
        bias,
        fit_macro_f1: f1,
        stack: stack_set.and_then(|set| fit_stack(set, false)),
        short_stack: stack_set.and_then(|set| fit_stack(set, true)),
    };
    let out = args.output.clone().unwrap_or_else(|| Calibrator::path_for(&c.model));
    c.save(&out)?;
    println!("content-free distribution  support {:.3}  partial {:.3}  not {:.3}", cf[0], cf[1], cf[2]);
    println!("log-biases                 support {:+.2}  partial {:+.2}  not {:+.2}", bias[0], bias[1], bias[2]);
    println!(
        "macro-F1 on {} ({} verdicts, {:?}-grade): raw {:.3}, contextual {:.3}, with thresholds {:.3}",
        c.fitted_on, c.n, grades, f1[0], f1[1], f1[2]
    );
    println!("saved {}  (score a different file to measure it)", out.display());
    Ok(ExitCode::SUCCESS)
}

fn extract(args: ExtractArgs) -> Result<ExitCode, Error> {
    use gavel::extract::{ExtractConfig, ExtractTask, Extractor};
    let prompts = match &args.prompts {
        Some(dir) => PromptSet::with_overrides(dir)?,
        None => PromptSet::builtin(),
    };
    let config = ExtractConfig {
        max_nuggets: args.max_nuggets,
        min_nuggets: args.min_nuggets,
        max_words: args.max_words,
        window: args.window,
        passage_chars: args.passage_chars,
        dedup_threshold: args.dedup,
        max_tokens: args.max_tokens,
    };
    if let Some(d) = &args.rubric_dir {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let (input, input_name, total) = open_input(&args.input)?;
    let extractor = Extractor::new(load_backend(&args.model)?, prompts, config)?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(BufWriter::new(File::create(p).map_err(|e| Error::io(p, e))?)),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let out_name = args.output.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "stdout".into());
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = total.map(indicatif::ProgressBar::new).unwrap_or_else(indicatif::ProgressBar::new_spinner);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} queries  {per_sec}  eta {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let start = std::time::Instant::now();
    let (mut queries, mut nuggets, mut errors) = (0usize, 0usize, 0usize);
    // (line, record or error)
    let mut pending: Vec<(usize, Result<ExtractInput, Error>)> = Vec::new();
    let mut lines = input.lines().enumerate().peekable();
    loop {
        let mut eof = false;
        match lines.next() {
            Some((i, line)) => {
                let line = line.map_err(|e| Error::io(&input_name, e))?;
                if !line.trim().is_empty() {
                    pending.push((i + 1, parse_extract_record(&line, &format!("{input_name}:{}", i + 1))));
                }
            }
            None => eof = true,
        }
        let ready = pending.iter().filter(|(_, r)| r.is_ok()).count() >= args.batch.max(1);
        if !(ready || (eof && !pending.is_empty())) {
            if eof {
                break;
            }
            continue;
        }
        let batch = std::mem::take(&mut pending);
        let tasks: Vec<ExtractTask> =
            batch.iter().filter_map(|(_, r)| r.as_ref().ok().map(|(_, t)| t.clone())).collect();
        let t0 = std::time::Instant::now();
        let mut results = extractor.extract(&tasks).into_iter();
        let per_query = t0.elapsed().as_secs_f64() / tasks.len().max(1) as f64;
        for (line, rec) in batch {
            queries += 1;
            let (mut record, task) = match rec {
                Ok(r) => r,
                Err(e) => {
                    errors += 1;
                    let v = serde_json::json!({"line": line, "error": {"kind": e.kind(), "message": e.to_string()}});
                    writeln!(out, "{v}").map_err(|e| Error::io(&out_name, e))?;
                    continue;
                }
            };
            let id = record.get("id").map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
            let v = match results.next().expect("one result per task") {
                Ok(x) => {
                    nuggets += x.nuggets.len();
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
                    if let Some(d) = &args.rubric_dir {
                        let name = id.clone().unwrap_or_else(|| format!("line-{line}"));
                        let file = d.join(format!("{}.json", sanitize(&name)));
                        let rubric = serde_json::json!({"id": name, "query": task.query, "nuggets": plain});
                        let text = serde_json::to_string_pretty(&rubric).unwrap_or_default();
                        std::fs::write(&file, text + "\n").map_err(|e| Error::io(&file, e))?;
                    }
                    if args.attach {
                        record.insert("nuggets".into(), serde_json::Value::Array(plain));
                        serde_json::Value::Object(record)
                    } else {
                        serde_json::json!({"line": line, "id": id, "query": task.query, "nuggets": list,
                            "windows": x.windows, "merged": x.merged, "seconds": per_query})
                    }
                }
                Err(e) => {
                    errors += 1;
                    serde_json::json!({"line": line, "id": id, "error": {"kind": e.kind(), "message": e.to_string()}})
                }
            };
            writeln!(out, "{v}").map_err(|e| Error::io(&out_name, e))?;
        }
        out.flush().map_err(|e| Error::io(&out_name, e))?;
        if let Some(b) = &bar {
            b.set_position(queries as u64);
        }
        if eof {
            break;
        }
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "gavel extract: {queries} queries, {nuggets} nuggets, {errors} errors, {secs:.1} s ({:.2} s/query)",
        secs / queries.max(1) as f64
    );
    Ok(if errors > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// An extraction input line: the record as given, and the task read from it.
type ExtractInput = (serde_json::Map<String, serde_json::Value>, gavel::extract::ExtractTask);

/// One extraction input line: the record as given, and the task read from it.
fn parse_extract_record(line: &str, location: &str) -> Result<ExtractInput, Error> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| Error::Parse { location: format!("{location}, column {}", e.column()), reason: e.to_string() })?;
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
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Error::field(location, "passages", "must be a list of strings")),
    };
    Ok((map, gavel::extract::ExtractTask { query, passages }))
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_alphanumeric() || c == '-' || c == '_' || c == '.' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn every_subcommand_parses_its_flags_without_clashes() {
        // Flattened argument groups share one namespace; a clash shows as a parse error.
        for args in [
            &["gavel", "verify", "--input", "x.jsonl"][..],
            &["gavel", "serve", "--addr", "127.0.0.1:0", "--api-key-env", "K", "--openai-key-env", "O"],
            &["gavel", "eval", "--input", "x.jsonl", "--out", "d"],
            &["gavel", "calibrate", "--input", "x.jsonl"],
            &["gavel", "bench", "--input", "x.jsonl", "--backend", "openai", "--base-url", "http://h/v1"],
            &["gavel", "extract", "--input", "x.jsonl", "--attach"],
            &["gavel", "render", "--input", "x.jsonl"],
        ] {
            if let Err(e) = super::Cli::try_parse_from(args) {
                panic!("{args:?}: {e}");
            }
        }
    }
}
