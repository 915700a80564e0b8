//! From flags to the library's configs: the backend, the judge (templates, mode, cache,
//! calibration) and the rubric.

use std::path::PathBuf;
use std::sync::Arc;

use gavel::backend::{Backend, EmbeddedBackend, EmbeddedConfig, RemoteBackend, RemoteConfig};
use gavel::cache::{model_key, VerdictCache};
use gavel::calibrate::{CalibrationSpec, Calibrator};
use gavel::judge::{Judge, JudgeConfig};
use gavel::prompt::{JudgeMode, PromptSet};
use gavel::rubric::Rubric;
use gavel::{model_store, Error};

use super::{BackendKind, DecideArgs, ModelArgs, RecordArgs, ScoreArgs};

/// The backend the flags ask for; a flag of the other backend is refused, not ignored.
pub fn load_backend(m: &ModelArgs) -> Result<Arc<dyn Backend>, Error> {
    let remote_only = [
        (!m.base_url.is_empty(), "--base-url"),
        (m.model_name.is_some(), "--model-name"),
        (m.chat_template.is_some(), "--chat-template"),
    ];
    let embedded_only =
        [(m.threads.is_some(), "--threads"), (m.batch_invariant, "--batch-invariant"), (m.hidden, "--hidden")];
    let (wrong, other) = match m.backend {
        BackendKind::Embedded => (&remote_only[..], "--backend openai"),
        BackendKind::Openai => (&embedded_only[..], "--backend embedded"),
    };
    if let Some((_, flag)) = wrong.iter().find(|(set, _)| *set) {
        return Err(Error::field("command line", *flag, format!("applies to {other} only")));
    }
    if m.backend == BackendKind::Openai {
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
        if m.top_logprobs < 3 {
            // With fewer alternatives than labels, every label not listed gets the listed one's
            // log-probability: the three tie, and every verdict is a uniform guess.
            return Err(Error::field(
                "--backend openai",
                "--top-logprobs",
                format!("{} is too few: ask for at least 3 (one per label; 20 is the default)", m.top_logprobs),
            ));
        }
        cfg.top_logprobs = m.top_logprobs;
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
        .with_n_ctx(m.n_ctx.unwrap_or(EmbeddedConfig::new("").n_ctx))
        .with_threads(m.threads)
        .with_wave_tokens(m.wave_tokens)
        .with_n_seq_max(m.seqs)
        .with_batch_invariant(m.batch_invariant)
        .with_hidden(m.hidden);
    Ok(Arc::new(EmbeddedBackend::load(cfg)?))
}

pub fn prompt_set(dir: &Option<PathBuf>) -> Result<PromptSet, Error> {
    match dir {
        Some(dir) => PromptSet::with_overrides(dir),
        None => Ok(PromptSet::builtin()),
    }
}

/// What a judge is built from, besides the model.
pub struct JudgeSpec<'a> {
    pub score: &'a ScoreArgs,
    pub mode: JudgeMode,
    pub two_grade: bool,
    pub cache: bool,
    pub calibration: CalibrationSpec,
}

impl<'a> JudgeSpec<'a> {
    pub fn new(score: &'a ScoreArgs, decide: &DecideArgs, cache: bool) -> Self {
        JudgeSpec {
            score,
            mode: decide.mode.into(),
            two_grade: decide.two_grade,
            cache,
            calibration: decide.calibration.clone(),
        }
    }

    /// Raw scored-mode reads, uncalibrated: what calibration fits on.
    pub fn raw(score: &'a ScoreArgs, cache: bool) -> Self {
        JudgeSpec { score, mode: JudgeMode::Scored, two_grade: false, cache, calibration: CalibrationSpec::None }
    }
}

pub fn build_judge(j: &JudgeSpec<'_>, m: &ModelArgs) -> Result<Judge, Error> {
    let prompts = prompt_set(&j.score.prompts)?;
    let cfg = JudgeConfig::default()
        .with_mode(j.mode)
        .with_two_grade(j.two_grade)
        .with_truncate(j.score.truncate)
        .with_blocks(!j.score.no_blocks, j.score.block_tokens, j.score.block_overlap)
        .with_likelihood(!j.score.no_likelihood);
    // An embedded model's calibration is known before it loads: one with a hidden-state head
    // needs the backend to read hidden states.
    // (The model file's fingerprint, which reads 8 MiB of it, is taken once.)
    let early = match m.backend {
        BackendKind::Embedded => {
            let path = match &m.model {
                Some(p) => p.clone(),
                None => model_store::ensure_default_model()?,
            };
            let fingerprint = model_key(&path.to_string_lossy())?;
            let calibrator = Calibrator::resolve(&j.calibration, &fingerprint, prompts.version())?;
            Some((fingerprint, calibrator))
        }
        BackendKind::Openai => None,
    };
    let wants_hidden = early.as_ref().and_then(|(_, c)| c.as_ref()).is_some_and(Calibrator::reads_hidden);
    let backend = if wants_hidden && !m.hidden {
        load_backend(&ModelArgs { hidden: true, ..m.clone() })?
    } else {
        load_backend(m)?
    };
    let (fingerprint, early) = match early {
        Some((f, c)) => (f, Some(c)),
        None => (model_key(&backend.info().model)?, None),
    };
    let mut judge = Judge::new(backend, prompts, cfg);
    judge.check()?;
    if j.cache {
        let path = VerdictCache::default_path();
        match VerdictCache::open(&path) {
            Ok(c) => judge = judge.with_cache(Arc::new(c), fingerprint.clone()),
            Err(e) => tracing::warn!("{e}; running without the verdict cache"),
        }
    }
    let calibrator = match early {
        Some(c) => c,
        None => Calibrator::resolve(&j.calibration, &fingerprint, judge.prompts().version())?,
    };
    if let Some(c) = calibrator.as_ref().filter(|c| c.reads_hidden() && !judge.backend().reads_hidden()) {
        tracing::warn!(
            "calibration {} reads hidden states, which this backend does not give: its head reads as absent",
            c.describe()
        );
    }
    if let Some(c) = &calibrator {
        let missing = c.likelihood_features();
        // The calibration decides scored-mode verdicts only.
        let why = if j.mode != JudgeMode::Scored {
            None
        } else if !judge.backend().reads_spans() {
            Some("this backend returns no prompt log-probabilities")
        } else if j.score.no_likelihood {
            Some("--no-likelihood skips them")
        } else {
            None
        };
        if let (Some(why), false) = (why, missing.is_empty()) {
            let reads: Vec<String> =
                missing.iter().map(|(kind, names)| format!("{kind}: {}", names.join(", "))).collect();
            eprintln!(
                "gavel: warning: the calibration reads the nugget's likelihood ({}), but {why}: they are read as their \
                 mean, so calibrated probabilities and labels differ from a run that reads them (docs/remote.md)",
                reads.join("; ")
            );
        }
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

pub fn load_rubric(r: &RecordArgs) -> Result<Option<Rubric>, Error> {
    r.rubric.as_ref().map(Rubric::load).transpose()
}
