//! OpenAI-compatible HTTP backend: vLLM, SGLang, llama.cpp's llama-server, or anything that
//! serves `/v1/completions` with `logprobs`.
//!
//! gavel renders the prompt itself (its templates wrapped in the model's chat template, taken
//! from `--chat-template` or the server's `/props`), so the same text reaches either backend.
//! Where the server can tokenize (`/tokenize`), prompts go as token ids, the shared prefix and
//! each suffix tokenized apart exactly as the embedded backend does; the prefix comes first in
//! every request so server-side prefix caching (`cache_prompt`, vLLM's automatic prefix caching)
//! applies.
//!
//! Scored mode reads the first generated token's `top_logprobs`; generation sends the GBNF
//! grammar as `grammar` (llama-server) and `guided_grammar` (vLLM). Requests run on a bounded
//! pool of worker threads, spread round-robin over the base URLs, retried with backoff on 429,
//! 5xx and transport errors; a server that stays down turns into per-prompt errors, never a crash.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{log_sum_exp, Backend, BackendInfo, LabelScore, PromptGroup, Usage};
use crate::error::{Error, Result};
use crate::prompt::Message;

/// How to reach the servers.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Base URLs ending in `/v1`, used round-robin.
    pub base_urls: Vec<String>,
    /// Model name sent in requests; the first of `/v1/models` when absent.
    pub model_name: Option<String>,
    /// Bearer token.
    pub api_key: Option<String>,
    /// Requests in flight at once.
    pub in_flight: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Retries after the first try, on 429, 5xx, timeouts and connection errors.
    pub retries: u32,
    /// How many alternatives to ask for in `top_logprobs`.
    pub top_logprobs: usize,
    /// The model's Jinja chat template; taken from the server's `/props` when absent.
    pub chat_template: Option<String>,
    /// Context size; taken from the server when absent, else 8192.
    pub n_ctx: Option<usize>,
    /// The GGUF file the server serves, when known locally (for calibration and cache keys).
    pub model_file: Option<PathBuf>,
}

impl RemoteConfig {
    /// Defaults for one base URL.
    pub fn new(base_url: impl Into<String>) -> Self {
        RemoteConfig {
            base_urls: vec![base_url.into()],
            model_name: None,
            api_key: None,
            in_flight: 4,
            timeout: Duration::from_secs(120),
            retries: 4,
            top_logprobs: 20,
            chat_template: None,
            n_ctx: None,
            model_file: None,
        }
    }
}

/// A label's first token: the id when the server tokenizes, and its text.
#[derive(Debug, Clone)]
struct LabelToken {
    id: Option<i64>,
    piece: String,
}

/// Prompt as sent: token ids when the server tokenizes, else text.
#[derive(Debug, Clone)]
enum Prompt {
    Ids(Vec<i64>),
    Text(String),
}

impl Prompt {
    fn to_json(&self) -> Value {
        match self {
            Prompt::Ids(ids) => json!(ids),
            Prompt::Text(t) => json!(t),
        }
    }
}

/// Label words -> their first tokens, per set of choices.
type LabelCache = HashMap<Vec<Vec<String>>, Vec<Vec<LabelToken>>>;

/// An OpenAI-compatible server (or several) behind the [`Backend`] trait.
pub struct RemoteBackend {
    cfg: RemoteConfig,
    agent: ureq::Agent,
    model_name: String,
    chat_template: Option<String>,
    bos: String,
    eos: String,
    n_ctx: usize,
    tokenizes: bool,
    next_url: AtomicUsize,
    /// Completion requests sent to each base URL.
    sent: Vec<AtomicUsize>,
    /// Per base URL: its last request reached no server (connections refused after every
    /// retry). The next request there gives up after one such attempt (one that reaches the
    /// server is retried as usual): a server that died mid-run costs one failed connection per
    /// request, not the whole backoff (about 3 s) each.
    down: Vec<AtomicBool>,
    labels: Mutex<LabelCache>,
    usage: Mutex<Usage>,
}

fn root_of(base: &str) -> &str {
    let b = base.trim_end_matches('/');
    b.strip_suffix("/v1").unwrap_or(b)
}

/// What a completion reply is said to come from in errors (the server is one of --base-url).
const COMPLETIONS: &str = "/v1/completions";

fn remote(url: &str, status: Option<u16>, reason: String) -> Error {
    Error::Remote { url: url.to_string(), status, reason }
}

impl RemoteBackend {
    /// Reach the server, learn the model name, chat template and context size.
    pub fn connect(cfg: RemoteConfig) -> Result<Self> {
        if cfg.base_urls.is_empty() {
            return Err(Error::field("--backend openai", "--base-url", "is required"));
        }
        let agent = ureq::AgentBuilder::new().timeout(cfg.timeout).build();
        let mut me = RemoteBackend {
            model_name: String::new(),
            chat_template: cfg.chat_template.clone(),
            bos: String::new(),
            eos: String::new(),
            n_ctx: cfg.n_ctx.unwrap_or(8192),
            tokenizes: false,
            next_url: AtomicUsize::new(0),
            sent: cfg.base_urls.iter().map(|_| AtomicUsize::new(0)).collect(),
            down: cfg.base_urls.iter().map(|_| AtomicBool::new(false)).collect(),
            labels: Mutex::new(HashMap::new()),
            usage: Mutex::new(Usage::default()),
            agent,
            cfg,
        };
        let base = me.cfg.base_urls[0].trim_end_matches('/').to_string();
        let models = me.request_at(&format!("{base}/models"), None).map_err(|e| match e {
            Error::Remote { url, status, reason } => {
                Error::Remote { url, status, reason: format!("cannot reach the OpenAI-compatible server: {reason}") }
            }
            other => other,
        })?;
        let first = models.pointer("/data/0");
        me.model_name = match &me.cfg.model_name {
            Some(n) => n.clone(),
            None => first.and_then(|m| m.get("id")).and_then(Value::as_str).unwrap_or("default").to_string(),
        };
        if let Some(n) = first.and_then(|m| m.get("max_model_len")).and_then(Value::as_u64) {
            me.n_ctx = me.cfg.n_ctx.unwrap_or(n as usize);
        }
        // llama-server: chat template, special tokens and per-slot context.
        if let Ok(props) = me.request_at(&format!("{}/props", root_of(&base)), None) {
            if me.chat_template.is_none() {
                me.chat_template = props.get("chat_template").and_then(Value::as_str).map(str::to_string);
            }
            me.bos = props.get("bos_token").and_then(Value::as_str).unwrap_or_default().to_string();
            me.eos = props.get("eos_token").and_then(Value::as_str).unwrap_or_default().to_string();
            if let Some(n) = props.pointer("/default_generation_settings/n_ctx").and_then(Value::as_u64) {
                me.n_ctx = me.cfg.n_ctx.unwrap_or(n as usize);
            }
        }
        me.tokenizes = me.tokenize_at(0, "yes", false).is_ok();
        if !me.tokenizes {
            tracing::warn!("{base}: no /tokenize endpoint; prompts go as text and token counts are estimates");
        }
        Ok(me)
    }

    /// The model name sent in requests.
    pub fn model_name(&self) -> &str {
        &self.model_name
    }

    /// Completion requests sent to each base URL so far, in `--base-url` order.
    pub fn requests_per_url(&self) -> Vec<usize> {
        self.sent.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    fn pick_url(&self) -> usize {
        self.next_url.fetch_add(1, Ordering::Relaxed) % self.cfg.base_urls.len()
    }

    /// GET (body `None`) or POST JSON, with retries and backoff.
    fn request_at(&self, url: &str, body: Option<&Value>) -> Result<Value> {
        self.request_tries(url, body, false).0
    }

    /// As [`RemoteBackend::request_at`]; with whether no attempt reached a server (each one's
    /// connection refused, or its host not found: not a timeout, which a slow server gives too).
    /// `once_if_unreachable`: give up after a first attempt that reaches nothing.
    fn request_tries(&self, url: &str, body: Option<&Value>, once_if_unreachable: bool) -> (Result<Value>, bool) {
        let mut delay = Duration::from_millis(200);
        let mut last: (Option<u16>, String) = (None, String::new());
        let mut unreachable = true;
        for attempt in 0..=self.cfg.retries {
            if attempt > 0 {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            let mut req = match body {
                Some(_) => self.agent.post(url).set("Content-Type", "application/json"),
                None => self.agent.get(url),
            };
            if let Some(key) = &self.cfg.api_key {
                req = req.set("Authorization", &format!("Bearer {key}"));
            }
            let res = match body {
                Some(b) => req.send_string(&b.to_string()),
                None => req.call(),
            };
            match res {
                Ok(r) => {
                    let read = r.into_string().map_err(|e| remote(url, None, format!("reading reply: {e}"))).and_then(
                        |text| {
                            serde_json::from_str(&text)
                                .map_err(|e| remote(url, None, format!("reply is not JSON ({e}): {}", clip(&text))))
                        },
                    );
                    return (read, false);
                }
                Err(ureq::Error::Status(code, r)) => {
                    unreachable = false;
                    let text = r.into_string().unwrap_or_default();
                    last = (Some(code), clip(&text));
                    if code != 429 && code < 500 {
                        break;
                    }
                }
                Err(ureq::Error::Transport(t)) => {
                    unreachable &= matches!(t.kind(), ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns);
                    // ureq starts its text with the URL, which the error names already.
                    let text = t.to_string();
                    last = (None, text.strip_prefix(&format!("{url}: ")).map(str::to_string).unwrap_or(text));
                    if once_if_unreachable && unreachable {
                        break;
                    }
                }
            }
        }
        (Err(remote(url, last.0, last.1)), unreachable)
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let i = self.pick_url();
        if let Some(c) = self.sent.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let base = self.cfg.base_urls[i].trim_end_matches('/');
        self.request_watching(i, &format!("{base}{path}"), body)
    }

    /// POST to `url`, a path of base URL `i`, retried unless that server could not be reached
    /// the last time (see `down`).
    fn request_watching(&self, i: usize, url: &str, body: &Value) -> Result<Value> {
        let was_down = self.down.get(i).is_some_and(|d| d.load(Ordering::Relaxed));
        // Down: no attempt reached a server. Any reply, even an error status or broken JSON,
        // or a timeout (a slow server), means it is there.
        let (res, down_now) = self.request_tries(url, Some(body), was_down);
        if let Some(d) = self.down.get(i) {
            d.store(down_now, Ordering::Relaxed);
        }
        res.map_err(|e| match e {
            Error::Remote { url, status: None, reason } if was_down && down_now => Error::Remote {
                url,
                status: None,
                reason: format!("{reason} (tried once: the server did not answer the request before either)"),
            },
            other => other,
        })
    }

    fn tokenize_at(&self, url: usize, text: &str, add_special: bool) -> Result<Vec<(i64, Option<String>)>> {
        let i = url % self.cfg.base_urls.len();
        let root = root_of(&self.cfg.base_urls[i]).to_string();
        // Field names of llama-server and vLLM side by side; each ignores the other's.
        let body = json!({
            "content": text, "prompt": text, "model": self.model_name,
            "add_special": add_special, "add_special_tokens": add_special, "with_pieces": true,
        });
        let v = self.request_watching(i, &format!("{root}/tokenize"), &body)?;
        let toks = v
            .get("tokens")
            .and_then(Value::as_array)
            .ok_or_else(|| remote(&format!("{root}/tokenize"), None, "no `tokens` in reply".into()))?;
        toks.iter()
            .map(|t| match t {
                Value::Number(n) => n.as_i64().map(|id| (id, None)),
                Value::Object(o) => o.get("id").and_then(Value::as_i64).map(|id| {
                    let piece = match o.get("piece") {
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(Value::Array(bytes)) => {
                            let b: Vec<u8> = bytes.iter().filter_map(|x| x.as_u64().map(|x| x as u8)).collect();
                            Some(String::from_utf8_lossy(&b).to_string())
                        }
                        _ => None,
                    };
                    (id, piece)
                }),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| remote(&format!("{root}/tokenize"), None, "unexpected token shape".into()))
    }

    fn tokens(&self, text: &str, add_special: bool) -> Result<Vec<i64>> {
        Ok(self.tokenize_at(self.pick_url(), text, add_special)?.into_iter().map(|(id, _)| id).collect())
    }

    fn resolve_labels(&self, choices: &[Vec<String>]) -> Result<Vec<Vec<LabelToken>>> {
        if let Some(l) = self.labels.lock().ok().and_then(|c| c.get(choices).cloned()) {
            return Ok(l);
        }
        let mut out = Vec::with_capacity(choices.len());
        for forms in choices {
            let mut toks: Vec<LabelToken> = Vec::new();
            for form in forms {
                let tok = if self.tokenizes {
                    let Some((id, piece)) = self.tokenize_at(0, form, false)?.into_iter().next() else { continue };
                    LabelToken { id: Some(id), piece: piece.unwrap_or_else(|| form.clone()) }
                } else {
                    LabelToken { id: None, piece: form.clone() }
                };
                if !toks.iter().any(|t| t.id == tok.id && t.piece == tok.piece) {
                    toks.push(tok);
                }
            }
            out.push(toks);
        }
        if let Ok(mut c) = self.labels.lock() {
            c.insert(choices.to_vec(), out.clone());
        }
        Ok(out)
    }

    /// Token ids (or text) for each group's prefix + each suffix, tokenized apart like the
    /// embedded backend does.
    fn prompts(&self, groups: &[PromptGroup]) -> Vec<Vec<Result<Prompt>>> {
        if !self.tokenizes {
            return groups
                .iter()
                .map(|g| g.suffixes.iter().map(|s| Ok(Prompt::Text(format!("{}{s}", g.prefix)))).collect())
                .collect();
        }
        // Every distinct string once, in parallel.
        let mut owned: Vec<(String, bool)> = Vec::new();
        let mut index: HashMap<(String, bool), usize> = HashMap::new();
        let mut plan: Vec<(Option<usize>, Vec<usize>)> = Vec::new();
        for g in groups {
            let mut add = |text: &str, special: bool| -> usize {
                *index.entry((text.to_string(), special)).or_insert_with(|| {
                    owned.push((text.to_string(), special));
                    owned.len() - 1
                })
            };
            let prefix = (!g.prefix.is_empty()).then(|| add(&g.prefix, true));
            let suffixes = g.suffixes.iter().map(|s| add(s, prefix.is_none())).collect();
            plan.push((prefix, suffixes));
        }
        let tokenized: Vec<Result<Vec<i64>>> =
            self.parallel(owned.len(), |i| self.tokens(&owned[i].0, owned[i].1)).into_iter().collect();
        plan.into_iter()
            .map(|(prefix, suffixes)| {
                suffixes
                    .into_iter()
                    .map(|s| {
                        let mut ids = match prefix {
                            Some(p) => tokenized[p].as_ref().map_err(Error::clone)?.clone(),
                            None => Vec::new(),
                        };
                        ids.extend(tokenized[s].as_ref().map_err(Error::clone)?);
                        Ok(Prompt::Ids(ids))
                    })
                    .collect()
            })
            .collect()
    }

    /// Run `f(0..n)` on at most `in_flight` threads; results in index order.
    fn parallel<T: Send>(&self, n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
        let next = AtomicUsize::new(0);
        let out: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
        let workers = self.cfg.in_flight.clamp(1, n.max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let r = f(i);
                    if let Ok(mut o) = out.lock() {
                        o[i] = Some(r);
                    }
                });
            }
        });
        out.into_inner().unwrap_or_default().into_iter().map(|r| r.expect("every index is run")).collect()
    }

    fn completion(&self, prompt: &Prompt, extra: Value) -> Result<Value> {
        let mut body = json!({
            "model": self.model_name,
            "prompt": prompt.to_json(),
            "temperature": 0.0,
            "cache_prompt": true,
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        let start = Instant::now();
        let v = self.post("/completions", &body)?;
        if let Ok(mut u) = self.usage.lock() {
            // llama-server reports what it actually evaluated (after its prompt cache).
            let prompt_n = v
                .pointer("/timings/prompt_n")
                .or_else(|| v.pointer("/usage/prompt_tokens"))
                .and_then(Value::as_u64)
                .unwrap_or(0);
            u.prompt_tokens += prompt_n as usize;
            u.generated_tokens += v.pointer("/usage/completion_tokens").and_then(Value::as_u64).unwrap_or(0) as usize;
            u.elapsed += start.elapsed();
        }
        Ok(v)
    }

    fn flat<T>(&self, groups: &[PromptGroup], f: impl Fn(&Prompt) -> Result<T> + Sync) -> Vec<Vec<Result<T>>>
    where
        T: Send,
    {
        let prompts = self.prompts(groups);
        let flat: Vec<&Result<Prompt>> = prompts.iter().flatten().collect();
        let mut results = self
            .parallel(flat.len(), |i| match flat[i] {
                Ok(p) => f(p),
                Err(e) => Err(e.clone()),
            })
            .into_iter();
        groups
            .iter()
            .map(|g| g.suffixes.iter().map(|_| results.next().expect("one result per prompt")).collect())
            .collect()
    }
}

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.len() <= 300 {
        return s.to_string();
    }
    let mut end = 300;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// (token id, token text, logprob) of the first generated token's alternatives, from any of
/// the reply shapes in use: OpenAI chat-style `logprobs.content` (llama-server's
/// `/v1/completions`), OpenAI legacy `logprobs.top_logprobs` (vLLM), llama-server's native
/// `completion_probabilities`.
pub fn first_token_alternatives(v: &Value) -> Option<Vec<(Option<i64>, String, f64)>> {
    let list = |arr: &Vec<Value>| -> Vec<(Option<i64>, String, f64)> {
        arr.iter()
            .filter_map(|t| {
                let lp = t.get("logprob").and_then(Value::as_f64)?;
                let tok = t.get("token").and_then(Value::as_str).unwrap_or_default().to_string();
                Some((t.get("id").and_then(Value::as_i64), tok, lp))
            })
            .collect()
    };
    let choice = v.pointer("/choices/0/logprobs");
    if let Some(arr) = choice.and_then(|l| l.pointer("/content/0/top_logprobs")).and_then(Value::as_array) {
        return Some(list(arr));
    }
    if let Some(map) = choice.and_then(|l| l.pointer("/top_logprobs/0")).and_then(Value::as_object) {
        return Some(map.iter().filter_map(|(k, lp)| Some((None, k.clone(), lp.as_f64()?))).collect());
    }
    if let Some(arr) = v.pointer("/completion_probabilities/0/top_logprobs").and_then(Value::as_array) {
        return Some(list(arr));
    }
    None
}

/// Label distribution from the alternatives. A label token missing from the top-k gets the
/// smallest listed log-probability (an upper bound on its true value). An error when no label
/// token is listed at all (every label would get the same bound: a uniform verdict that says
/// nothing) or a log-probability is not one (above 0, or NaN).
fn label_score_from(
    alts: &[(Option<i64>, String, f64)],
    labels: &[Vec<LabelToken>],
) -> std::result::Result<LabelScore, String> {
    if let Some(bad) = alts.iter().find(|a| a.2.is_nan() || a.2 > 1e-6) {
        return Err(format!("the reply's log-probability of {:?} is {}, not a log-probability", bad.1, bad.2));
    }
    let floor = alts.iter().map(|a| a.2).fold(f64::INFINITY, f64::min);
    let floor = if floor.is_finite() { floor } else { -50.0 };
    let mut listed = false;
    let logprobs: Vec<f64> = labels
        .iter()
        .map(|forms| {
            let lps: Vec<f64> = forms
                .iter()
                .map(|l| {
                    alts.iter()
                        .find(|(id, tok, _)| match (id, l.id) {
                            (Some(a), Some(b)) => *a == b,
                            _ => *tok == l.piece,
                        })
                        .map(|a| {
                            listed = true;
                            a.2
                        })
                        .unwrap_or(floor)
                })
                .collect();
            log_sum_exp(&lps)
        })
        .collect();
    if !listed {
        let shown: Vec<&str> = alts.iter().take(5).map(|a| a.1.as_str()).collect();
        return Err(format!(
            "none of the label tokens is among the reply's {} most likely first tokens ({shown:?}): the model does \
             not answer in the template's words (check the chat template and --prompts), or raise --top-logprobs",
            alts.len()
        ));
    }
    Ok(LabelScore::from_logprobs(logprobs))
}

impl Backend for RemoteBackend {
    fn info(&self) -> BackendInfo {
        BackendInfo {
            kind: format!("OpenAI-compatible HTTP ({})", self.cfg.base_urls.join(", ")),
            model: match &self.cfg.model_file {
                Some(p) => p.display().to_string(),
                None => self.model_name.clone(),
            },
            n_ctx: self.n_ctx,
            n_threads: self.cfg.in_flight,
            batch_invariant: false,
        }
    }

    fn format_chat(&self, messages: &[Message]) -> Result<String> {
        let Some(t) = &self.chat_template else {
            return Err(Error::Template {
                name: "chat template".into(),
                reason: "the server does not publish its chat template (/props); pass --chat-template FILE with the model's Jinja template".into(),
            });
        };
        let rendered = super::llama::render_jinja_chat(t, messages, &self.bos, &self.eos)?;
        // The server adds the BOS when it tokenizes; a template that writes it must not double
        // it. (Templates that start with the BOS text for other reasons, like ChatML models whose
        // BOS is `<|im_start|>`, do not mention `bos_token` and are left alone.)
        Ok(match self.bos.as_str() {
            bos if !bos.is_empty() && t.contains("bos_token") => {
                rendered.strip_prefix(bos).map(str::to_string).unwrap_or(rendered)
            }
            _ => rendered,
        })
    }

    fn count_tokens(&self, text: &str) -> Result<usize> {
        if self.tokenizes {
            Ok(self.tokens(text, true)?.len())
        } else {
            // About 4 characters per token in English; an estimate, said so at connect time.
            Ok(text.len().div_ceil(4))
        }
    }

    fn score(&self, groups: &[PromptGroup], choices: &[Vec<String>]) -> Vec<Vec<Result<LabelScore>>> {
        let labels = match self.resolve_labels(choices) {
            Ok(l) => l,
            Err(e) => return groups.iter().map(|g| g.suffixes.iter().map(|_| Err(e.clone())).collect()).collect(),
        };
        let k = self.cfg.top_logprobs;
        self.flat(groups, |p| {
            let v = self.completion(p, json!({ "max_tokens": 1, "logprobs": k, "n_probs": k }))?;
            let alts = first_token_alternatives(&v).ok_or_else(|| {
                remote(COMPLETIONS, None, format!("reply has no log-probabilities: {}", clip(&v.to_string())))
            })?;
            label_score_from(&alts, &labels).map_err(|why| remote(COMPLETIONS, None, why))
        })
    }

    fn generate(&self, groups: &[PromptGroup], grammar: Option<&str>, max_tokens: usize) -> Vec<Vec<Result<String>>> {
        self.flat(groups, |p| {
            let mut extra = json!({ "max_tokens": max_tokens });
            if let (Some(g), Value::Object(o)) = (grammar, &mut extra) {
                o.insert("grammar".into(), json!(g));
                o.insert("guided_grammar".into(), json!(g));
            }
            let v = self.completion(p, extra)?;
            v.pointer("/choices/0/text")
                .or_else(|| v.get("content"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| remote(COMPLETIONS, None, format!("reply has no text: {}", clip(&v.to_string()))))
        })
    }

    fn check_labels(&self, choices: &[Vec<String>]) -> Result<()> {
        self.resolve_labels(choices).map(|_| ())
    }

    fn usage(&self) -> Usage {
        self.usage.lock().map(|u| *u).unwrap_or_default()
    }

    fn prefill(&self, text: &str) -> Result<(usize, Duration)> {
        let prompt = if self.tokenizes { Prompt::Ids(self.tokens(text, true)?) } else { Prompt::Text(text.into()) };
        let n = match &prompt {
            Prompt::Ids(ids) => ids.len(),
            Prompt::Text(t) => t.len().div_ceil(4),
        };
        let start = Instant::now();
        self.completion(&prompt, json!({ "max_tokens": 1, "cache_prompt": false }))?;
        Ok((n, start.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_logprob_shape() {
        let chat_style = json!({"choices": [{"logprobs": {"content": [{"id": 1, "token": "yes", "logprob": -0.1,
            "top_logprobs": [{"id": 1, "token": "yes", "logprob": -0.1}, {"id": 2, "token": "no", "logprob": -2.5}]}]}}]});
        let legacy =
            json!({"choices": [{"logprobs": {"tokens": ["yes"], "top_logprobs": [{"yes": -0.1, "no": -2.5}]}}]});
        let native = json!({"completion_probabilities": [{"id": 1, "token": "yes", "logprob": -0.1,
            "top_logprobs": [{"id": 1, "token": "yes", "logprob": -0.1}, {"id": 2, "token": "no", "logprob": -2.5}]}]});
        for v in [chat_style, legacy, native] {
            let alts = first_token_alternatives(&v).unwrap();
            assert_eq!(alts.len(), 2, "{v}");
            assert!(alts.iter().any(|a| a.1 == "no" && (a.2 + 2.5).abs() < 1e-12));
        }
        assert!(first_token_alternatives(&json!({"choices": [{"text": "x"}]})).is_none());
    }

    #[test]
    fn label_scores_from_alternatives() {
        let labels = vec![
            vec![LabelToken { id: Some(1), piece: "yes".into() }],
            vec![LabelToken { id: Some(3), piece: "partly".into() }],
            vec![LabelToken { id: Some(2), piece: "no".into() }],
        ];
        let alts =
            vec![(Some(1), "yes".to_string(), -0.5), (Some(2), "no".to_string(), -1.5), (Some(9), "x".into(), -4.0)];
        let s = label_score_from(&alts, &labels).unwrap();
        assert!((s.probs.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(s.logprobs[0], -0.5);
        // Missing "partly" gets the smallest listed logprob.
        assert_eq!(s.logprobs[1], -4.0);
        assert!(s.probs[0] > s.probs[2] && s.probs[2] > s.probs[1]);
        // Without ids, tokens match by text.
        let by_text = vec![vec![LabelToken { id: None, piece: "no".into() }]];
        assert_eq!(label_score_from(&alts, &by_text).unwrap().logprobs[0], -1.5);
        // No label listed: an error, not a uniform verdict; nor a log-probability above 0.
        let none = vec![(Some(7), "foo".to_string(), -0.1), (Some(8), "bar".to_string(), -2.0)];
        let e = label_score_from(&none, &labels).unwrap_err();
        assert!(e.contains("none of the label tokens") && e.contains("foo"), "{e}");
        assert!(label_score_from(&[], &labels).is_err());
        let e = label_score_from(&[(Some(1), "yes".to_string(), 5.0)], &labels).unwrap_err();
        assert!(e.contains("not a log-probability"), "{e}");
    }

    #[test]
    fn root_strips_v1() {
        assert_eq!(root_of("http://h:1/v1"), "http://h:1");
        assert_eq!(root_of("http://h:1/v1/"), "http://h:1");
        assert_eq!(root_of("http://h:1"), "http://h:1");
    }
}
