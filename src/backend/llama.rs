//! The embedded llama.cpp backend. Every llama-cpp-2 import lives in this file: the crate keeps
//! no stable API, so an upgrade touches only here.
//!
//! The model is shared; the context (not `Send`) lives on one engine thread that receives jobs
//! over a channel. Scoring packs many prompts into one `decode`: each group's prefix tokens are
//! added once, tagged with the sequence ids of all its suffixes (the same as copying the prefix's
//! KV cache into each sequence), and each suffix runs in its own sequence.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

use super::{log_sum_exp, Backend, BackendInfo, LabelScore, PromptGroup, TokenBudget, Usage};
use crate::aggregate::HiddenRead;
use crate::error::{Error, Result};
use crate::prompt::Message;

/// Settings of the embedded backend.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// GGUF file.
    pub model_path: PathBuf,
    /// Context size in tokens (KV cells shared by all sequences of one decode).
    pub n_ctx: u32,
    /// Decode threads; default: all cores.
    pub n_threads: Option<usize>,
    /// Most sequences (prompts) in one decode. Each prompt asks for a row of logits (the whole
    /// vocabulary) per nugget token it reads, and llama.cpp keeps the largest decode's rows: 64
    /// prompts per decode held 100 MB more than 32 for the same verdicts/s (200 REALSumm
    /// records, 2 threads: 178 s and 589,508 KiB max RSS at 64, 178 s and 487,612 KiB at 32).
    pub n_seq_max: u32,
    /// Physical batch size.
    pub n_ubatch: u32,
    /// Most tokens packed into one decode of prompts; a single prompt longer than this still runs
    /// alone (up to `n_ctx`).
    pub wave_tokens: usize,
    /// Batch-invariant scoring (off by default: it costs about 60% of verdicts/s on 2 cores): a
    /// prompt's raw outputs are bit-identical whatever else shares its decode. llama.cpp's CPU attention switches to a tiled kernel for physical
    /// batches of [`FA_TILE_Q`] or more query tokens, and to a thread-split kernel for one-token
    /// batches over 512 or more cells; both sum in an order that depends on where a sequence's
    /// cells sit in the shared cache. Invariant mode keeps physical batches between 2 and
    /// `FA_TILE_Q - 1` tokens, so every token takes the one kernel whose sums follow the
    /// sequence's own cells only.
    pub batch_invariant: bool,
    /// Read the model's final hidden state (after the output norm) at the label position and
    /// its mean over the positions that read the nugget, and the same two of a middle layer's
    /// output (through llama.cpp's eval callback) into [`LabelScore::hidden`], for a head fitted
    /// on them (`gavel calibrate --stack transfer-hidden`).
    pub hidden: bool,
}

/// Query tokens from which llama.cpp's CPU flash attention takes its tiled kernel
/// (`GGML_FA_TILE_Q` in ggml-cpu).
pub const FA_TILE_Q: u32 = 64;

impl EmbeddedConfig {
    /// Defaults for `model_path`.
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            model_path: model_path.into(),
            n_ctx: 8192,
            n_threads: None,
            n_seq_max: 32,
            n_ubatch: 512,
            wave_tokens: 2048,
            batch_invariant: false,
            hidden: false,
        }
    }

    /// Hidden-state reads on or off (see [`EmbeddedConfig::hidden`]).
    pub fn with_hidden(mut self, yes: bool) -> Self {
        self.hidden = yes;
        self
    }

    /// Batch-invariant scoring on or off (see [`EmbeddedConfig::batch_invariant`]).
    pub fn with_batch_invariant(mut self, yes: bool) -> Self {
        self.batch_invariant = yes;
        self
    }

    /// Set the context size.
    pub fn with_n_ctx(mut self, n_ctx: u32) -> Self {
        self.n_ctx = n_ctx;
        self
    }

    /// Set the thread count.
    pub fn with_threads(mut self, n: Option<usize>) -> Self {
        self.n_threads = n;
        self
    }

    /// Set the tokens per decode.
    pub fn with_wave_tokens(mut self, n: usize) -> Self {
        self.wave_tokens = n;
        self
    }

    /// Set the most sequences per decode.
    pub fn with_n_seq_max(mut self, n: u32) -> Self {
        self.n_seq_max = n;
        self
    }
}

fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Llama { op: "init", reason: e.to_string() })
}

struct TokGroup {
    prefix: Vec<LlamaToken>,
    suffixes: Vec<Vec<LlamaToken>>,
    /// Per suffix, the token range of its item span (start 0: the first item token is read
    /// from the prefix's last position, which then always comes with the suffix); empty for none.
    spans: Vec<Option<(usize, usize)>>,
    /// A content-free baseline group (counted apart in the token budget).
    baseline: bool,
}

impl TokGroup {
    /// How many of its prefix tokens a shared head of `head` tokens (see [`Engine::hold_head`])
    /// already holds: all of the head, or none for a group without a prefix.
    fn in_head(&self, head: usize) -> usize {
        if self.prefix.is_empty() {
            0
        } else {
            head
        }
    }
}

enum Job {
    Score {
        groups: Vec<TokGroup>,
        labels: Arc<Vec<Vec<LlamaToken>>>,
        reply: mpsc::Sender<Vec<Vec<Result<LabelScore>>>>,
    },
    Generate {
        groups: Vec<TokGroup>,
        grammar: Option<String>,
        max_tokens: usize,
        reply: mpsc::Sender<Vec<Vec<Result<String>>>>,
    },
    Prefill {
        tokens: Vec<LlamaToken>,
        reply: mpsc::Sender<Result<Duration>>,
    },
}

/// Label words -> their first tokens, per label.
type LabelTokenCache = HashMap<Vec<Vec<String>>, Arc<Vec<Vec<LlamaToken>>>>;

/// llama.cpp running in this process.
pub struct EmbeddedBackend {
    model: Arc<LlamaModel>,
    config: EmbeddedConfig,
    n_threads: usize,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    label_tokens: Mutex<LabelTokenCache>,
    usage: Arc<Mutex<Usage>>,
    chat: ChatFormat,
}

enum ChatFormat {
    /// llama.cpp's built-in implementation of the model's template.
    Builtin(llama_cpp_2::model::LlamaChatTemplate),
    /// The model's Jinja template rendered with minijinja (templates llama.cpp does not know).
    Jinja(String),
    /// No template in the file: plain role-prefixed text.
    Plain,
}

/// Smallest context a judge prompt fits in (llama.cpp itself aborts below about 64).
pub const MIN_N_CTX: u32 = 256;

/// A GGUF file starts with the bytes `GGUF`; anything else is not one, whatever its name.
fn check_gguf(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic));
    match read {
        Ok(()) if &magic == b"GGUF" => Ok(()),
        Ok(()) => Err(Error::ModelLoad {
            path: path.to_path_buf(),
            reason: format!(
                "not a GGUF model file (it starts with {:?}, not \"GGUF\")",
                String::from_utf8_lossy(&magic)
            ),
        }),
        Err(e) => Err(Error::ModelLoad { path: path.to_path_buf(), reason: format!("not a GGUF model file: {e}") }),
    }
}

impl EmbeddedBackend {
    /// Load the model and start the engine thread.
    pub fn load(config: EmbeddedConfig) -> Result<Self> {
        let be = backend()?;
        let path = &config.model_path;
        if !path.is_file() {
            return Err(Error::ModelLoad { path: path.clone(), reason: "no such file".into() });
        }
        if config.n_ctx < MIN_N_CTX {
            return Err(Error::field(
                "command line",
                "--n-ctx",
                format!("{} tokens is too small; the context needs at least {MIN_N_CTX}", config.n_ctx),
            ));
        }
        check_gguf(path)?;
        let model = LlamaModel::load_from_file(be, path, &LlamaModelParams::default()).map_err(|e| Error::ModelLoad {
            path: path.clone(),
            reason: format!("llama.cpp could not load it ({e}): the file is truncated, or a GGUF this llama.cpp does not support"),
        })?;
        let model = Arc::new(model);
        let n_threads = config
            .n_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
            .max(1);
        let chat = pick_chat_format(&model);
        let usage = Arc::new(Mutex::new(Usage::default()));

        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let worker_model = Arc::clone(&model);
        let worker_cfg = config.clone();
        let worker_usage = Arc::clone(&usage);
        let worker = std::thread::Builder::new()
            .name("gavel-engine".into())
            .spawn(move || engine_thread(worker_model, worker_cfg, n_threads, rx, ready_tx, worker_usage))
            .map_err(|e| Error::Internal(format!("cannot start engine thread: {e}")))?;
        ready_rx.recv().map_err(|_| Error::Internal("engine thread exited during start".into()))??;
        Ok(EmbeddedBackend {
            model,
            config,
            n_threads,
            jobs: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
            label_tokens: Mutex::new(HashMap::new()),
            usage,
            chat,
        })
    }

    /// The model file.
    pub fn model_path(&self) -> &Path {
        &self.config.model_path
    }

    fn tokenize(&self, text: &str, add_bos: bool) -> Vec<LlamaToken> {
        self.model.vocab().tokenize(text.as_bytes(), add_bos, true)
    }

    fn tok_groups(&self, groups: &[PromptGroup]) -> Vec<TokGroup> {
        groups
            .iter()
            .map(|g| {
                let prefix = if g.prefix.is_empty() { Vec::new() } else { self.tokenize(&g.prefix, true) };
                let add_bos = prefix.is_empty();
                let suffixes: Vec<Vec<LlamaToken>> = g.suffixes.iter().map(|s| self.tokenize(s, add_bos)).collect();
                // Token boundaries of the span, from the token counts of the text before its
                // start (trailing spaces trimmed: they join the next word's token) and end. A span
                // may start at the suffix's first token when there is a prefix: that token is read
                // from the prefix's last position.
                let spans = (0..g.suffixes.len())
                    .map(|i| {
                        let (a, b) = g.span(i)?;
                        let text = &g.suffixes[i];
                        let start = self.tokenize(text[..a].trim_end(), add_bos).len().max(usize::from(add_bos));
                        let end = self.tokenize(&text[..b], add_bos).len().min(suffixes[i].len());
                        (start < end).then_some((start, end))
                    })
                    .collect();
                TokGroup { prefix, suffixes, spans, baseline: g.baseline }
            })
            .collect()
    }

    fn resolve_labels(&self, choices: &[Vec<String>]) -> Result<Arc<Vec<Vec<LlamaToken>>>> {
        let mut cache = self.label_tokens.lock().map_err(|_| Error::Internal("label cache poisoned".into()))?;
        if let Some(t) = cache.get(choices) {
            return Ok(Arc::clone(t));
        }
        let mut seen: HashMap<LlamaToken, usize> = HashMap::new();
        let mut out = Vec::with_capacity(choices.len());
        for (i, forms) in choices.iter().enumerate() {
            let mut toks = Vec::new();
            for form in forms {
                let Some(&first) = self.model.vocab().tokenize(form.as_bytes(), false, false).first() else {
                    continue;
                };
                match seen.get(&first) {
                    Some(&j) if j != i => {
                        return Err(Error::Template {
                            name: "labels.toml".into(),
                            reason: format!(
                                "label words `{form}` and another label's word start with the same token; pick words with different first tokens"
                            ),
                        })
                    }
                    Some(_) => {}
                    None => {
                        seen.insert(first, i);
                        toks.push(first);
                    }
                }
            }
            if toks.is_empty() {
                return Err(Error::Template {
                    name: "labels.toml".into(),
                    reason: format!("label choice {i} has no word that tokenizes"),
                });
            }
            out.push(toks);
        }
        let out = Arc::new(out);
        cache.insert(choices.to_vec(), Arc::clone(&out));
        Ok(out)
    }

    fn send(&self, job: Job) -> Result<()> {
        let guard = self.jobs.lock().map_err(|_| Error::Internal("job queue poisoned".into()))?;
        guard
            .as_ref()
            .ok_or_else(|| Error::Internal("engine stopped".into()))?
            .send(job)
            .map_err(|_| Error::Internal("engine thread has stopped".into()))
    }
}

impl Drop for EmbeddedBackend {
    fn drop(&mut self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Ok(mut worker) = self.worker.lock() {
            if let Some(w) = worker.take() {
                let _ = w.join();
            }
        }
    }
}

fn pick_chat_format(model: &LlamaModel) -> ChatFormat {
    let Ok(tmpl) = model.chat_template(None) else {
        return ChatFormat::Plain;
    };
    let probe = [LlamaChatMessage::new("user".into(), "x".into())];
    match probe {
        [Ok(ref m)] if model.apply_chat_template(&tmpl, std::slice::from_ref(m), true).is_ok() => {
            ChatFormat::Builtin(tmpl)
        }
        _ => match tmpl.to_string() {
            Ok(s) => ChatFormat::Jinja(s),
            Err(_) => ChatFormat::Plain,
        },
    }
}

pub(crate) fn render_jinja_chat(template: &str, messages: &[Message], bos: &str, eos: &str) -> Result<String> {
    let mut env = minijinja::Environment::new();
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template)
        .map_err(|e| Error::Template { name: "model chat template".into(), reason: e.to_string() })?;
    let ctx =
        minijinja::context! { messages => messages, add_generation_prompt => true, bos_token => bos, eos_token => eos };
    env.get_template("chat")
        .and_then(|t| t.render(ctx))
        .map_err(|e| Error::Template { name: "model chat template".into(), reason: e.to_string() })
}

impl Backend for EmbeddedBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: "llama.cpp (embedded)".into(),
            model: self.config.model_path.display().to_string(),
            n_ctx: self.config.n_ctx as usize,
            n_threads: self.n_threads,
            batch_invariant: self.config.batch_invariant,
        }
    }

    fn format_chat(&self, messages: &[Message]) -> Result<String> {
        match &self.chat {
            ChatFormat::Builtin(tmpl) => {
                let chat = messages
                    .iter()
                    // A NUL inside real text (seen in scraped pages) cannot cross into C; a space
                    // keeps the text judged instead of failing the record.
                    .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.replace('\0', " ")))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::Llama { op: "chat message", reason: e.to_string() })?;
                self.model
                    .apply_chat_template(tmpl, &chat, true)
                    .map_err(|e| Error::Llama { op: "chat template", reason: e.to_string() })
            }
            ChatFormat::Jinja(t) => {
                let piece = |tok: LlamaToken| {
                    String::from_utf8_lossy(&self.model.vocab().token_to_piece(tok, true, None)).to_string()
                };
                let vocab = self.model.vocab();
                let (bos, eos) = (piece(vocab.bos()), piece(vocab.eos()));
                let rendered = render_jinja_chat(t, messages, &bos, &eos)?;
                // The BOS is added by the tokenizer; a template that writes it must not double it.
                if t.contains("bos_token") {
                    Ok(rendered.strip_prefix(bos.as_str()).map(str::to_string).unwrap_or(rendered))
                } else {
                    Ok(rendered)
                }
            }
            ChatFormat::Plain => {
                let mut s = String::new();
                for m in messages {
                    s.push_str(&format!("{}: {}\n\n", capitalise(&m.role), m.content));
                }
                s.push_str("Assistant:");
                Ok(s)
            }
        }
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.tokenize(text, true).len())
    }

    fn score(&self, groups: &[PromptGroup], choices: &[Vec<String>]) -> Vec<Vec<Result<LabelScore>>> {
        let fail_all = |e: &Error| groups.iter().map(|g| g.suffixes.iter().map(|_| Err(e.clone())).collect()).collect();
        let labels = match self.resolve_labels(choices) {
            Ok(l) => l,
            Err(e) => return fail_all(&e),
        };
        let (reply, rx) = mpsc::channel();
        if let Err(e) = self.send(Job::Score { groups: self.tok_groups(groups), labels, reply }) {
            return fail_all(&e);
        }
        rx.recv().unwrap_or_else(|_| fail_all(&Error::Internal("engine thread died".into())))
    }

    fn generate(&self, groups: &[PromptGroup], grammar: Option<&str>, max_tokens: usize) -> Vec<Vec<Result<String>>> {
        let fail_all = |e: &Error| groups.iter().map(|g| g.suffixes.iter().map(|_| Err(e.clone())).collect()).collect();
        let (reply, rx) = mpsc::channel();
        let job =
            Job::Generate { groups: self.tok_groups(groups), grammar: grammar.map(str::to_string), max_tokens, reply };
        if let Err(e) = self.send(job) {
            return fail_all(&e);
        }
        rx.recv().unwrap_or_else(|_| fail_all(&Error::Internal("engine thread died".into())))
    }

    fn reads_spans(&self) -> bool {
        true
    }

    fn reads_hidden(&self) -> bool {
        self.config.hidden
    }

    fn check_labels(&self, choices: &[Vec<String>]) -> Result<()> {
        self.resolve_labels(choices).map(|_| ())
    }

    fn usage(&self) -> Usage {
        self.usage.lock().map(|u| *u).unwrap_or_default()
    }

    fn prefill(&self, text: &str) -> Result<(usize, Duration)> {
        let tokens = self.tokenize(text, true);
        let n = tokens.len();
        if n == 0 {
            return Err(Error::Llama { op: "prefill", reason: "no tokens to evaluate (empty text)".into() });
        }
        if n > self.config.n_ctx as usize {
            return Err(Error::TooLong { tokens: n, n_ctx: self.config.n_ctx as usize });
        }
        let (reply, rx) = mpsc::channel();
        self.send(Job::Prefill { tokens, reply })?;
        let elapsed = rx.recv().map_err(|_| Error::Internal("engine thread died".into()))??;
        Ok((n, elapsed))
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Engine thread

struct Engine<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_ctx: usize,
    n_seq_max: usize,
    wave_tokens: usize,
    /// Physical batch size when scoring is batch-invariant (a decode is padded so that its
    /// last physical batch never holds a single token); `None` otherwise.
    invariant_ubatch: Option<usize>,
    usage: Arc<Mutex<Usage>>,
    /// Tokens held in the KV cache under [`Engine::head_seq`] at positions 0.., shared by every
    /// prompt of a scoring call (the system prompt, demonstrations, ...): evaluated once and
    /// reused by the next call when that call shares exactly the same head.
    head: Vec<LlamaToken>,
    /// The middle layer's tap, there exactly when hidden states are read
    /// ([`EmbeddedConfig::hidden`]; boxed: llama.cpp holds its address;
    /// declared after the context, so it outlives it).
    tap: Option<Box<LayerTap>>,
}

fn engine_thread(
    model: Arc<LlamaModel>,
    cfg: EmbeddedConfig,
    n_threads: usize,
    rx: mpsc::Receiver<Job>,
    ready: mpsc::Sender<Result<()>>,
    usage: Arc<Mutex<Usage>>,
) {
    let be = match backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let n_ctx = cfg.n_ctx.max(64);
    // One sequence more than the prompts of a decode: the last holds the shared head.
    let n_seq_max = cfg.n_seq_max.clamp(1, 254);
    let n_ubatch = if cfg.batch_invariant { cfg.n_ubatch.clamp(2, FA_TILE_Q - 1) } else { cfg.n_ubatch };
    // Two sequences more than the prompts of a decode: the shared head, and the padding token.
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(n_ctx)
        .with_n_ubatch(n_ubatch.min(n_ctx))
        .with_n_seq_max(n_seq_max + 2)
        .with_kv_unified(true)
        .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED)
        .with_n_threads(n_threads as i32)
        .with_n_threads_batch(n_threads as i32);
    // Hidden states are copied out of each scoring decode by the eval callback, not through
    // llama.cpp's embeddings: an embeddings context outputs every token of every decode (a
    // vocabulary-wide logit row per token: about 400 MB more for a 2,048-token decode).
    // The rows are read in batch order, which holds where llama.cpp splits a decode in order
    // (an attention cache unified across sequences). Sliding-window models keep that order:
    // their window cache is full size by default (`swa_full`), and with a unified cache
    // llama.cpp tries the in-order split first, falling back to the regrouping one only when
    // the in-order split does not fit, which at equal sizes the regrouping one does not either.
    // Recurrent and hybrid models' memory regroups tokens by sequence, so they get no reads
    // rather than misplaced ones.
    let in_order = !model.is_recurrent() && !model.is_hybrid();
    if cfg.hidden && !in_order {
        tracing::warn!(
            "--hidden: this model's memory (recurrent or hybrid) reorders a decode's tokens; no hidden states are read"
        );
    }
    let mut tap = (cfg.hidden && in_order).then(|| Box::new(LayerTap::new(&model)));
    let params = match tap.as_mut() {
        Some(t) => with_eval_callback(params, &mut **t),
        None => params,
    };
    let ctx = match model.new_context(be, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(Error::Llama { op: "context", reason: e.to_string() }));
            return;
        }
    };
    let mut engine = Engine {
        model: &model,
        ctx,
        batch: LlamaBatch::new(n_ctx as usize + 1, n_seq_max as i32),
        // One cell stays free for the padding token.
        n_ctx: n_ctx as usize - usize::from(cfg.batch_invariant),
        n_seq_max: n_seq_max as usize,
        invariant_ubatch: cfg.batch_invariant.then_some(n_ubatch as usize),
        wave_tokens: cfg.wave_tokens.clamp(1, n_ctx as usize),
        usage,
        head: Vec::new(),
        tap,
    };
    let _ = ready.send(Ok(()));
    while let Ok(job) = rx.recv() {
        match job {
            Job::Score { groups, labels, reply } => {
                let _ = reply.send(engine.score(&groups, &labels));
            }
            Job::Generate { groups, grammar, max_tokens, reply } => {
                let _ = reply.send(engine.generate(&groups, grammar.as_deref(), max_tokens));
            }
            Job::Prefill { tokens, reply } => {
                let _ = reply.send(engine.prefill(&tokens));
            }
        }
    }
}

/// The graph's name for the final layer's output after the output norm (what llama.cpp's
/// embeddings give, and what the logits are computed from).
const FINAL_NORM: &str = "result_norm";

/// Copies hidden states out of each scoring decode through llama.cpp's eval callback: the final
/// layer after its norm (`result_norm`, one row per output token: the last layer keeps only
/// the rows whose logits are read) and a middle layer's output (`l_out-N`, one row per token of
/// the decode). A model whose graph does not name them gets no such read.
struct LayerTap {
    /// The middle layer's tensor name, `l_out-N`.
    name: String,
    /// The width of both (the model's embedding width).
    n_embd: usize,
    /// The middle layer's rows, in batch order (the physical batches of a decode run in order,
    /// each appending its rows).
    mid: TapRows,
    /// The final norm's rows, in the order of the decode's output tokens.
    last: TapRows,
    /// Whether the running decode is read (scoring decodes only; generation and the head's
    /// prefill are not, and do not even stop the graph at the layer).
    active: bool,
}

/// One tensor's rows over a decode.
#[derive(Default)]
struct TapRows {
    data: Vec<f32>,
    /// A read that did not have the expected shape: this decode has no such read.
    broken: bool,
}

impl TapRows {
    /// Row `i` of a decode that should have given `n` rows of `width`, when the read is whole.
    fn row(&self, i: usize, n: usize, width: usize) -> Option<&[f32]> {
        if self.broken || width == 0 || self.data.len() != n * width {
            return None;
        }
        self.data.get(i * width..(i + 1) * width)
    }
}

impl LayerTap {
    fn new(model: &LlamaModel) -> LayerTap {
        let layer = model.n_layer() / 2;
        LayerTap {
            name: format!("l_out-{layer}"),
            n_embd: usize::try_from(model.n_embd()).unwrap_or(0),
            mid: TapRows::default(),
            last: TapRows::default(),
            active: false,
        }
    }

    fn clear(&mut self) {
        self.mid = TapRows::default();
        self.last = TapRows::default();
    }

    /// The middle layer's row of batch position `i` after a decode of `n_tokens`.
    fn mid_row(&self, i: usize, n_tokens: usize) -> Option<&[f32]> {
        self.mid.row(i, n_tokens, self.n_embd)
    }

    /// The final layer's row of the decode's `k`-th output token, of `n_outputs`.
    fn last_row(&self, k: usize, n_outputs: usize) -> Option<&[f32]> {
        self.last.row(k, n_outputs, self.n_embd)
    }
}

/// llama.cpp's eval callback: asked first whether a tensor is wanted, then called with it
/// computed. Returning true lets the computation go on.
///
/// # Safety
/// `user` is the `LayerTap` the context was created with, alive as long as the context, and
/// only touched by the thread that decodes.
unsafe extern "C" fn tap_layer(t: *mut llama_cpp_sys_2::ggml_tensor, ask: bool, user: *mut std::ffi::c_void) -> bool {
    // SAFETY: llama.cpp passes a valid tensor and our user data (see above).
    let (t, tap) = unsafe { (&*t, &mut *user.cast::<LayerTap>()) };
    if !tap.active {
        return !ask;
    }
    // SAFETY: a tensor's name is a NUL-terminated string in its fixed buffer.
    let name = unsafe { std::ffi::CStr::from_ptr(t.name.as_ptr()) }.to_bytes();
    let wanted = name == tap.name.as_bytes() || name == FINAL_NORM.as_bytes();
    if ask || !wanted {
        return wanted || !ask;
    }
    let n_embd = tap.n_embd;
    let rows = if name == FINAL_NORM.as_bytes() { &mut tap.last } else { &mut tap.mid };
    let (ne0, ne1) = (usize::try_from(t.ne[0]).unwrap_or(0), usize::try_from(t.ne[1]).unwrap_or(0));
    let contiguous = t.nb[0] == 4 && t.nb[1] == 4 * ne0;
    if t.type_ != llama_cpp_sys_2::GGML_TYPE_F32 || ne0 != n_embd || !contiguous || t.ne[2] != 1 || t.ne[3] != 1 {
        rows.broken = true;
        return true;
    }
    let at = rows.data.len();
    rows.data.resize(at + ne0 * ne1, 0.0);
    if ne1 > 0 {
        // SAFETY: the destination holds exactly the tensor's ne0 * ne1 f32 values.
        unsafe {
            llama_cpp_sys_2::ggml_backend_tensor_get(t, rows.data[at..].as_mut_ptr().cast(), 0, 4 * ne0 * ne1);
        }
    }
    true
}

/// `params` with llama.cpp's eval callback set: llama-cpp-2 has no setter for it, and its
/// `LlamaContextParams` is a wrapper of the C struct and nothing else (the transmute checks
/// that the sizes agree).
fn with_eval_callback(params: LlamaContextParams, tap: *mut LayerTap) -> LlamaContextParams {
    // SAFETY: same size (checked by transmute), and the wrapper's one field is the C struct.
    let mut raw: llama_cpp_sys_2::llama_context_params = unsafe { std::mem::transmute(params) };
    raw.cb_eval = Some(tap_layer);
    raw.cb_eval_user_data = tap.cast();
    // SAFETY: as above.
    unsafe { std::mem::transmute::<llama_cpp_sys_2::llama_context_params, LlamaContextParams>(raw) }
}

/// A slice of one group's suffixes that shares one copy of the prefix in a decode.
struct Chunk {
    group: usize,
    suffixes: Vec<usize>,
    cells: usize,
}

impl Engine<'_> {
    /// Read the middle layer's rows of the next decodes (`on`, its rows of before dropped) or
    /// stop reading them (`off`, rows kept until the next start).
    fn tap_reads(&mut self, on: bool) {
        if let Some(t) = self.tap.as_mut() {
            if on {
                t.clear();
            }
            t.active = on;
        }
    }

    /// Count prompt tokens (by part, `budget`, when scoring), generated tokens and model time.
    fn add_usage(&self, prompt_tokens: usize, generated: usize, elapsed: Duration, budget: TokenBudget) {
        if let Ok(mut u) = self.usage.lock() {
            u.prompt_tokens += prompt_tokens;
            u.generated_tokens += generated;
            u.elapsed += elapsed;
            u.budget += budget;
        }
    }

    /// Chunks of suffixes packed into decodes. `head` prefix tokens of every group with a prefix
    /// are already in the cache (shared, see [`Engine::hold_head`]): they take no new cells, and
    /// each decode leaves room for them.
    fn plan(&self, groups: &[TokGroup], head: usize, errors: &mut [Vec<Option<Error>>]) -> Vec<Vec<Chunk>> {
        let wave_tokens = self.wave_tokens.min(self.n_ctx - head).max(1);
        let mut chunks = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            let skip = group.in_head(head);
            let p = group.prefix.len() - skip;
            let mut cur = Chunk { group: g, suffixes: Vec::new(), cells: p };
            for (s, suffix) in group.suffixes.iter().enumerate() {
                let need = p + suffix.len();
                if suffix.is_empty() {
                    errors[g][s] =
                        Some(Error::Template { name: "judge".into(), reason: "the rendered prompt is empty".into() });
                    continue;
                }
                if need + skip > self.n_ctx {
                    errors[g][s] = Some(Error::TooLong { tokens: need + skip, n_ctx: self.n_ctx });
                    continue;
                }
                let full = cur.suffixes.len() >= self.n_seq_max || cur.cells + suffix.len() > wave_tokens.max(need);
                if full && !cur.suffixes.is_empty() {
                    chunks.push(std::mem::replace(&mut cur, Chunk { group: g, suffixes: Vec::new(), cells: p }));
                }
                cur.suffixes.push(s);
                cur.cells += suffix.len();
            }
            if !cur.suffixes.is_empty() {
                chunks.push(cur);
            }
        }
        // Pack chunks into decodes in input order.
        let mut waves: Vec<Vec<Chunk>> = Vec::new();
        let (mut cells, mut seqs) = (0usize, 0usize);
        for chunk in chunks {
            let fits = cells + chunk.cells <= wave_tokens && seqs + chunk.suffixes.len() <= self.n_seq_max;
            if waves.is_empty() || !fits {
                if waves.last().is_some_and(|w| w.is_empty()) {
                    waves.pop();
                }
                waves.push(Vec::new());
                cells = 0;
                seqs = 0;
            }
            cells += chunk.cells;
            seqs += chunk.suffixes.len();
            if let Some(w) = waves.last_mut() {
                w.push(chunk);
            }
        }
        waves
    }

    /// The sequence that holds the shared head.
    fn head_seq(&self) -> i32 {
        self.n_seq_max as i32
    }

    /// In invariant mode, a decode whose tokens would leave a one-token physical batch at its
    /// end gets one padding token (its own sequence, no output) so that none does.
    fn pad_batch(&mut self) -> Result<()> {
        let Some(ub) = self.invariant_ubatch else { return Ok(()) };
        if self.batch.n_tokens() as usize % ub == 1 {
            self.batch
                .add(self.model.vocab().bos(), 0, &[self.n_seq_max as i32 + 1], false)
                .map_err(|e| Error::Llama { op: "batch", reason: e.to_string() })?;
        }
        Ok(())
    }

    /// Put the longest token prefix that every prompt group with a prefix shares in the cache,
    /// under [`Engine::head_seq`], unless it is there already; its length (0: nothing shared, the
    /// cache cleared). The head depends only on this call's groups, so a call computes the same
    /// numbers whatever ran before it.
    fn hold_head(&mut self, groups: &[TokGroup]) -> usize {
        let mut prefixes = groups.iter().map(|g| g.prefix.as_slice()).filter(|p| !p.is_empty());
        let Some(first) = prefixes.next() else {
            self.head.clear();
            return 0;
        };
        let len = prefixes.fold(first.len(), |n, p| n.min(first.iter().zip(p).take_while(|(a, b)| a == b).count()));
        // Prompts without a prefix still need room beside the head.
        let bare = groups.iter().filter(|g| g.prefix.is_empty()).flat_map(|g| g.suffixes.iter().map(Vec::len)).max();
        if len == 0 || len >= self.n_ctx || len + bare.unwrap_or(0) > self.n_ctx {
            self.head.clear();
            return 0;
        }
        // Each group keeps its last prefix token out of the head, so that its logits can be read
        // in the group's own decode (a nugget that starts its suffix is read from there).
        let shortest = groups.iter().map(|g| g.prefix.len()).filter(|&n| n > 0).min().unwrap_or(0);
        let len = len.min(shortest.saturating_sub(1));
        if len == 0 {
            self.head.clear();
            return 0;
        }
        let head = &first[..len];
        if self.head != head {
            self.ctx.clear_kv_cache();
            self.head.clear();
            let start = Instant::now();
            if self.feed(head, self.head_seq(), 0).is_err() {
                self.ctx.clear_kv_cache();
                return 0;
            }
            self.add_usage(len, 0, start.elapsed(), TokenBudget { head: len, ..TokenBudget::default() });
            self.head = head.to_vec();
        }
        len
    }

    fn score(&mut self, groups: &[TokGroup], labels: &[Vec<LlamaToken>]) -> Vec<Vec<Result<LabelScore>>> {
        let mut errors: Vec<Vec<Option<Error>>> =
            groups.iter().map(|g| g.suffixes.iter().map(|_| None).collect()).collect();
        let mut scores: Vec<Vec<Option<LabelScore>>> =
            groups.iter().map(|g| g.suffixes.iter().map(|_| None).collect()).collect();
        let head = self.hold_head(groups);
        for wave in self.plan(groups, head, &mut errors) {
            let start = Instant::now();
            if head > 0 {
                // Drop the last decode's prompts, keep the head's cells.
                self.ctx.llama_kv_cache_seq_keep(self.head_seq());
            } else {
                self.ctx.clear_kv_cache();
            }
            self.batch.clear();
            let mut outputs = Vec::new();
            // Batch positions whose logits are read, in order: the final layer's tapped rows
            // (listed only when hidden states are read).
            let tapping = self.tap.is_some();
            let mut out_at: Vec<i32> = Vec::new();
            let mut seq = 0i32;
            let mut n_tokens = 0usize;
            let mut budget = TokenBudget::default();
            let mut add_failed = None;
            for chunk in &wave {
                let group = &groups[chunk.group];
                let seq_ids: Vec<i32> = (seq..seq + chunk.suffixes.len() as i32).collect();
                seq += chunk.suffixes.len() as i32;
                let p = group.prefix.len();
                let skip = group.in_head(head);
                if skip > 0 {
                    for &s in &seq_ids {
                        if let Err(e) = self.ctx.copy_kv_cache_seq(self.head_seq(), s, None, None) {
                            add_failed = Some(e.to_string());
                        }
                    }
                }
                // The prefix's last logits predict the first suffix token: kept when a nugget
                // starts its suffix.
                let first_read =
                    chunk.suffixes.iter().any(|&s| group.spans.get(s).copied().flatten().is_some_and(|(a, _)| a == 0));
                let mut prefix_out = None;
                for (i, &t) in group.prefix.iter().enumerate().skip(skip) {
                    let out = first_read && i + 1 == p;
                    if out {
                        prefix_out = Some(self.batch.n_tokens());
                        if tapping {
                            out_at.push(self.batch.n_tokens());
                        }
                    }
                    if let Err(e) = self.batch.add(t, i as i32, &seq_ids, out) {
                        add_failed = Some(e.to_string());
                    }
                }
                for (k, &s) in chunk.suffixes.iter().enumerate() {
                    let suffix = &group.suffixes[s];
                    let span = group.spans.get(s).copied().flatten();
                    let mut span_at = Vec::new();
                    if let (Some((0, _)), Some(at), Some(&first)) = (span, prefix_out, suffix.first()) {
                        span_at.push((at, first));
                    }
                    for (i, &t) in suffix.iter().enumerate() {
                        let last = i + 1 == suffix.len();
                        let in_span = span.is_some_and(|(a, b)| i + 1 >= a && i + 1 < b);
                        if in_span {
                            span_at.push((self.batch.n_tokens(), suffix[i + 1]));
                        }
                        if tapping && (last || in_span) {
                            out_at.push(self.batch.n_tokens());
                        }
                        if let Err(e) = self.batch.add(t, (p + i) as i32, &[seq_ids[k]], last || in_span) {
                            add_failed = Some(e.to_string());
                        }
                    }
                    outputs.push((chunk.group, s, self.batch.n_tokens() - 1, span_at));
                }
                n_tokens += chunk.cells;
                let own = p - skip;
                let suffixes = chunk.cells - own;
                if group.baseline {
                    budget.baseline += chunk.cells;
                } else {
                    budget.prefix += own;
                    budget.suffix += suffixes;
                }
            }
            self.tap_reads(true);
            let result = match add_failed {
                Some(e) => Err(Error::Llama { op: "batch", reason: e.to_string() }),
                None => self.pad_batch().and_then(|()| {
                    self.ctx.decode(&mut self.batch).map_err(|e| Error::Llama { op: "decode", reason: e.to_string() })
                }),
            };
            self.tap_reads(false);
            match result {
                Ok(()) => {
                    for (g, s, idx, span_at) in outputs {
                        let mut score = label_score(self.ctx.get_logits_ith(idx), labels);
                        if !span_at.is_empty() {
                            let lps = span_at
                                .iter()
                                .map(|&(i, next)| token_logprob(self.ctx.get_logits_ith(i), next) as f32)
                                .collect();
                            score.span_logprobs = Some(lps);
                        }
                        if let Some(tap) = self.tap.as_deref() {
                            let n = self.batch.n_tokens() as usize;
                            let last = |i: i32| tap.last_row(out_at.binary_search(&i).ok()?, out_at.len());
                            let mid = |i: i32| tap.mid_row(i as usize, n);
                            score.hidden = last(idx).map(|row| HiddenRead {
                                last: row.to_vec(),
                                nugget_mean: mean_rows(span_at.iter().filter_map(|&(i, _)| last(i))),
                                mid: mid(idx).map(<[f32]>::to_vec),
                                mid_nugget_mean: mean_rows(span_at.iter().filter_map(|&(i, _)| mid(i))),
                            });
                        }
                        scores[g][s] = Some(score);
                    }
                }
                Err(e) => {
                    for (g, s, _, _) in outputs {
                        errors[g][s] = Some(e.clone());
                    }
                }
            }
            self.add_usage(n_tokens, 0, start.elapsed(), budget);
        }
        scores
            .into_iter()
            .zip(errors)
            .map(|(sc, er)| {
                sc.into_iter()
                    .zip(er)
                    .map(|(s, e)| match (s, e) {
                        (_, Some(e)) => Err(e),
                        (Some(s), None) => Ok(s),
                        (None, None) => Err(Error::Internal("prompt was not evaluated".into())),
                    })
                    .collect()
            })
            .collect()
    }

    /// Decode `tokens` into sequence `seq` from position `pos0`, in slices of the batch size,
    /// with logits for the last token only. Returns the batch index of that last token (a
    /// padding token of batch-invariant mode may follow it, without logits).
    fn feed(&mut self, tokens: &[LlamaToken], seq: i32, pos0: usize) -> Result<i32> {
        let cap = self.n_ctx;
        let mut last = 0;
        for (c, slice) in tokens.chunks(cap).enumerate() {
            self.batch.clear();
            let n_slices = tokens.len().div_ceil(cap);
            for (i, &t) in slice.iter().enumerate() {
                let is_last = c + 1 == n_slices && i + 1 == slice.len();
                self.batch
                    .add(t, (pos0 + c * cap + i) as i32, &[seq], is_last)
                    .map_err(|e| Error::Llama { op: "batch", reason: e.to_string() })?;
            }
            last = self.batch.n_tokens() - 1;
            self.pad_batch()?;
            self.ctx.decode(&mut self.batch).map_err(|e| Error::Llama { op: "decode", reason: e.to_string() })?;
        }
        Ok(last)
    }

    /// Greedy generation for every (group, suffix), many sequences decoded together: each
    /// wave evaluates its groups' prefixes once (shared by their suffixes' sequences), then
    /// adds one token per live sequence per decode, each under its own grammar state.
    fn generate(&mut self, groups: &[TokGroup], grammar: Option<&str>, max_tokens: usize) -> Vec<Vec<Result<String>>> {
        let mut out: Vec<Vec<Option<Result<String>>>> =
            groups.iter().map(|g| g.suffixes.iter().map(|_| None).collect()).collect();
        // Plan waves of whole groups where possible, bounded by cells and sequences.
        let mut waves: Vec<Vec<(usize, Vec<usize>)>> = vec![Vec::new()];
        let (mut cells, mut seqs) = (0usize, 0usize);
        for (g, group) in groups.iter().enumerate() {
            let p = group.prefix.len();
            for (s, suffix) in group.suffixes.iter().enumerate() {
                let need = p + suffix.len() + max_tokens;
                if suffix.is_empty() {
                    out[g][s] = Some(Err(Error::Internal("generation needs a non-empty suffix".into())));
                    continue;
                }
                if need > self.n_ctx {
                    out[g][s] = Some(Err(Error::TooLong { tokens: need, n_ctx: self.n_ctx }));
                    continue;
                }
                let same_group = waves.last().and_then(|w| w.last()).is_some_and(|(wg, _)| *wg == g);
                let add = suffix.len() + max_tokens + if same_group { 0 } else { p };
                let full = cells + add > self.n_ctx || seqs + 1 > self.n_seq_max;
                if full && waves.last().is_some_and(|w| !w.is_empty()) {
                    waves.push(Vec::new());
                    cells = 0;
                    seqs = 0;
                }
                let wave = waves.last_mut().expect("one wave");
                match wave.last_mut() {
                    Some((wg, list)) if *wg == g => {
                        list.push(s);
                        cells += suffix.len() + max_tokens;
                    }
                    _ => {
                        wave.push((g, vec![s]));
                        cells += p + suffix.len() + max_tokens;
                    }
                }
                seqs += 1;
            }
        }
        for wave in waves.into_iter().filter(|w| !w.is_empty()) {
            let start = Instant::now();
            let jobs: Vec<(usize, usize)> = wave.iter().flat_map(|(g, ss)| ss.iter().map(move |&s| (*g, s))).collect();
            let results = self.generate_wave(groups, &wave, grammar, max_tokens);
            let prompt_tokens: usize = wave
                .iter()
                .map(|(g, ss)| {
                    groups[*g].prefix.len() + ss.iter().map(|&s| groups[*g].suffixes[s].len()).sum::<usize>()
                })
                .sum();
            let generated: usize = results.iter().map(|r| r.as_ref().map_or(0, |(_, n)| *n)).sum();
            self.add_usage(prompt_tokens, generated, start.elapsed(), TokenBudget::default());
            for ((g, s), r) in jobs.into_iter().zip(results) {
                out[g][s] = Some(r.map(|(text, _)| text));
            }
        }
        out.into_iter()
            .map(|row| {
                row.into_iter().map(|r| r.unwrap_or_else(|| Err(Error::Internal("not generated".into())))).collect()
            })
            .collect()
    }

    /// One wave of [`Self::generate`]: (text, tokens generated) per sequence, in wave order.
    fn generate_wave(
        &mut self,
        groups: &[TokGroup],
        wave: &[(usize, Vec<usize>)],
        grammar: Option<&str>,
        max_tokens: usize,
    ) -> Vec<Result<(String, usize)>> {
        let n: usize = wave.iter().map(|(_, ss)| ss.len()).sum();
        let fail = |e: Error| (0..n).map(|_| Err(e.clone())).collect::<Vec<_>>();
        self.ctx.clear_kv_cache();
        self.head.clear();
        let mut samplers = Vec::with_capacity(n);
        for _ in 0..n {
            match grammar {
                Some(g) => match LlamaSampler::grammar(self.model, g, "root") {
                    Ok(s) => samplers.push(Some(s)),
                    Err(e) => return fail(Error::Llama { op: "grammar", reason: e.to_string() }),
                },
                None => samplers.push(None),
            }
        }
        // Prompts: each prefix once, tagged with its suffixes' sequences; logits at each end.
        self.batch.clear();
        let mut pos = vec![0usize; n];
        let mut idx = vec![0i32; n];
        let mut seq = 0usize;
        for (g, ss) in wave {
            let group = &groups[*g];
            let p = group.prefix.len();
            let ids: Vec<i32> = (seq..seq + ss.len()).map(|k| k as i32).collect();
            for (i, &t) in group.prefix.iter().enumerate() {
                if let Err(e) = self.batch.add(t, i as i32, &ids, false) {
                    return fail(Error::Llama { op: "batch", reason: e.to_string() });
                }
            }
            for (k, &s) in ss.iter().enumerate() {
                let suffix = &group.suffixes[s];
                for (i, &t) in suffix.iter().enumerate() {
                    if let Err(e) = self.batch.add(t, (p + i) as i32, &[ids[k]], i + 1 == suffix.len()) {
                        return fail(Error::Llama { op: "batch", reason: e.to_string() });
                    }
                }
                pos[seq + k] = p + suffix.len();
                idx[seq + k] = self.batch.n_tokens() - 1;
            }
            seq += ss.len();
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            return fail(Error::Llama { op: "decode", reason: e.to_string() });
        }
        let vocab = self.model.vocab();
        let mut bytes: Vec<Vec<u8>> = vec![Vec::new(); n];
        let mut generated = vec![0usize; n];
        let mut live = vec![true; n];
        for _ in 0..max_tokens {
            let mut next = Vec::new();
            for k in 0..n {
                if !live[k] {
                    continue;
                }
                let tok = greedy_under(self.ctx.get_logits_ith(idx[k]), samplers[k].as_mut());
                if vocab.is_eog(tok) {
                    live[k] = false;
                    continue;
                }
                if let Some(g) = samplers[k].as_mut() {
                    g.accept(tok);
                }
                bytes[k].extend(vocab.token_to_piece(tok, false, None));
                generated[k] += 1;
                next.push((k, tok));
            }
            if next.is_empty() {
                break;
            }
            self.batch.clear();
            for (k, tok) in next {
                if let Err(e) = self.batch.add(tok, pos[k] as i32, &[k as i32], true) {
                    return fail(Error::Llama { op: "batch", reason: e.to_string() });
                }
                idx[k] = self.batch.n_tokens() - 1;
                pos[k] += 1;
            }
            if let Err(e) = self.ctx.decode(&mut self.batch) {
                return fail(Error::Llama { op: "decode", reason: e.to_string() });
            }
        }
        (0..n).map(|k| Ok((String::from_utf8_lossy(&bytes[k]).into_owned(), generated[k]))).collect()
    }

    fn prefill(&mut self, tokens: &[LlamaToken]) -> Result<Duration> {
        self.ctx.clear_kv_cache();
        self.head.clear();
        let start = Instant::now();
        let last = self.feed(tokens, 0, 0)?;
        let _ = self.ctx.get_logits_ith(last);
        Ok(start.elapsed())
    }
}

/// The greedy token, under the grammar when there is one. The unconstrained argmax is checked
/// against the grammar first (one token, cheap) and only when it is rejected is the grammar run
/// over the whole vocabulary, as llama.cpp's common sampler does: the same token either way.
fn greedy_under(logits: &[f32], grammar: Option<&mut LlamaSampler>) -> LlamaToken {
    let argmax = |it: &mut dyn Iterator<Item = (LlamaToken, f32)>| {
        it.fold((LlamaToken(0), f32::NEG_INFINITY), |best, (t, l)| if l > best.1 { (t, l) } else { best }).0
    };
    let best = argmax(&mut logits.iter().enumerate().map(|(i, &l)| (LlamaToken(i as i32), l)));
    let Some(g) = grammar else { return best };
    let mut one = LlamaTokenDataArray::new(vec![LlamaTokenData::new(best, 1.0, 0.0)], false);
    g.apply(&mut one);
    if one.data[0].logit() != f32::NEG_INFINITY {
        return best;
    }
    let mut all = LlamaTokenDataArray::from_iter(
        logits.iter().enumerate().map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0)),
        false,
    );
    g.apply(&mut all);
    argmax(&mut all.data.iter().map(|d| (d.id(), d.logit())))
}

/// Log-softmax over the vocabulary, then each choice's log-probability (its forms summed) and
/// the distribution renormalised over the choices.
/// The element-wise mean of equally long rows; `None` for none.
fn mean_rows<'a>(rows: impl Iterator<Item = &'a [f32]>) -> Option<Vec<f32>> {
    let mut sum: Vec<f64> = Vec::new();
    let mut n = 0usize;
    for r in rows {
        if sum.is_empty() {
            sum = vec![0.0; r.len()];
        }
        for (s, &v) in sum.iter_mut().zip(r) {
            *s += f64::from(v);
        }
        n += 1;
    }
    (n > 0).then(|| sum.into_iter().map(|s| (s / n as f64) as f32).collect())
}

fn label_score(logits: &[f32], labels: &[Vec<LlamaToken>]) -> LabelScore {
    let lse = logits_lse(logits);
    let logprobs: Vec<f64> = labels
        .iter()
        .map(|toks| {
            let lps: Vec<f64> = toks.iter().filter_map(|t| logits.get(t.0 as usize)).map(|&l| l as f64 - lse).collect();
            log_sum_exp(&lps)
        })
        .collect();
    LabelScore::from_logprobs(logprobs)
}

/// log P(`token`) under the log-softmax of `logits`.
fn token_logprob(logits: &[f32], token: LlamaToken) -> f64 {
    logits.get(token.0 as usize).map_or(f64::NEG_INFINITY, |&l| l as f64 - logits_lse(logits))
}

/// log Σ exp(logits): the log-softmax normaliser over the vocabulary.
fn logits_lse(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_score_renormalises() {
        let logits = vec![0.0f32, 2.0, 1.0, -1.0, 3.0];
        let labels = vec![vec![LlamaToken(1)], vec![LlamaToken(2), LlamaToken(3)], vec![LlamaToken(4)]];
        let s = label_score(&logits, &labels);
        assert!((s.probs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        let e: Vec<f64> = [2.0f64, 1.0, -1.0, 3.0].iter().map(|x| x.exp()).collect();
        let want = [e[0], e[1] + e[2], e[3]];
        let total: f64 = want.iter().sum();
        for (p, w) in s.probs.iter().zip(want) {
            assert!((p - w / total).abs() < 1e-9);
        }
        assert!(s.logprobs.iter().all(|&lp| lp < 0.0));
    }
}
