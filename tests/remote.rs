//! The OpenAI-compatible backend against a real llama-server on a free loopback port, serving
//! the default GGUF. The server binary comes from `scripts/build-llama-server.sh` (run by
//! `make test`); set GAVEL_LLAMA_SERVER to use another. These tests fail, saying so, when it is
//! missing: they never pass without having talked to a real server.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use gavel::backend::{Backend, RemoteBackend, RemoteConfig};
use gavel::prompt::JudgeMode;
use gavel::record::{parse_record, ShortForm};
use gavel::server::{ServeConfig, Server};
use gavel::{Judge, JudgeConfig, Label, PromptSet};
use serde_json::{json, Value};

fn llama_server_binary() -> PathBuf {
    if let Ok(p) = std::env::var("GAVEL_LLAMA_SERVER") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("GAVEL_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/gavel"));
    let p = home.join("llama-server/11434.0.0/llama-server");
    assert!(
        p.is_file(),
        "llama-server not found at {} and GAVEL_LLAMA_SERVER is not set: run scripts/build-llama-server.sh \
         (make test does) to build it",
        p.display()
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct LlamaServer {
    child: Child,
    url: String,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LlamaServer {
    /// Own `child`: killed on drop, and, because a `static` is never dropped, also by a small
    /// watchdog when this test process exits however it exits (no orphaned server after the
    /// suite, also when a test fails).
    fn own(child: Child, url: String) -> Self {
        let watchdog = format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; kill {} 2>/dev/null",
            std::process::id(),
            child.id()
        );
        let _ = Command::new("sh").args(["-c", &watchdog]).stdin(Stdio::null()).stdout(Stdio::null()).spawn();
        LlamaServer { child, url }
    }
}

/// One llama-server for the whole test binary: 4 slots of 8192 tokens.
fn server() -> &'static str {
    static S: OnceLock<LlamaServer> = OnceLock::new();
    &S.get_or_init(|| {
        let model = gavel::model_store::ensure_default_model().expect("default model (run `make model`)");
        let port = free_port();
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).to_string();
        let child = Command::new(llama_server_binary())
            .args(["-m", model.to_str().unwrap(), "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["-np", "4", "-c", "32768", "-t", &threads, "--no-webui"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama-server");
        let s = LlamaServer::own(child, format!("http://127.0.0.1:{port}/v1"));
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
        let start = Instant::now();
        loop {
            if agent.get(&format!("http://127.0.0.1:{port}/health")).call().is_ok() {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "llama-server did not come up on port {port}");
            std::thread::sleep(Duration::from_millis(200));
        }
        s
    })
    .url
}

fn remote(config: impl FnOnce(&mut RemoteConfig)) -> Arc<dyn Backend> {
    let mut cfg = RemoteConfig::new(server());
    cfg.model_file = Some(gavel::model_store::ensure_default_model().unwrap());
    config(&mut cfg);
    Arc::new(RemoteBackend::connect(cfg).expect("connect to llama-server"))
}

const PASSAGE: &str = "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was designed by the \
engineering company of Gustave Eiffel and completed in 1889.";

fn tasks() -> Vec<gavel::Task> {
    let records = [
        json!({"query": "Where is the Eiffel Tower?", "answer": PASSAGE,
               "nuggets": ["The Eiffel Tower is in Paris", "The tower was completed in 1889",
                           "The tower is made of wood", "It was designed by Gustave Eiffel's company"]}),
        json!({"query": "What is the capital of Australia?", "answer": "The capital of Australia is Canberra.",
               "nuggets": ["Canberra is the capital", "Sydney is the capital"]}),
        json!({"answer": "Water boils at 100 degrees Celsius at sea level.",
               "nuggets": ["Water boils at 100 C at sea level", "Water freezes at 0 C"]}),
    ];
    records.iter().map(|r| parse_record(&r.to_string(), "fixture", None, ShortForm::Llm).unwrap()).collect()
}

fn verdicts(judge: &Judge) -> Vec<(Label, Vec<f64>)> {
    judge
        .judge(&tasks())
        .into_iter()
        .flat_map(|r| r.expect("record judged").verdicts)
        .map(|v| {
            let probs = v.raw.as_ref().map(|r| vec![r.probs.support, r.probs.partial_support, r.probs.not_support]);
            let probs = probs.unwrap_or_default();
            (v.label, probs)
        })
        .collect()
}

#[test]
fn remote_scored_mode_reproduces_the_embedded_backend() {
    // The remote backend reads no nugget likelihood, so the embedded one is asked for none
    // either: the same prompts in the same decodes, not a call with the baseline prompts too.
    let embedded = verdicts(&common::judge(JudgeConfig::default().with_likelihood(false)));
    let judge = Judge::new(remote(|_| {}), PromptSet::builtin(), JudgeConfig::default());
    // Same prompt text on both sides.
    let t = &tasks()[0];
    assert_eq!(
        format!("{:?}", judge.render(t).unwrap()),
        format!("{:?}", common::judge(JudgeConfig::default()).render(t).unwrap())
    );
    let remote = verdicts(&judge);
    assert_eq!(remote.len(), embedded.len());
    for (i, ((rl, rp), (el, ep))) in remote.iter().zip(&embedded).enumerate() {
        assert_eq!(rp.len(), 3, "verdict {i}: {rp:?}");
        assert!((rp.iter().sum::<f64>() - 1.0).abs() < 1e-6);
        // Within batch noise: two engines, two decode layouts (measured between --batch 1 and
        // --batch 20 of the embedded one alone, with the " Answer:" cue: |dP| max 0.068 for
        // support, 0.154 for partial, 0.106 for not; "Canberra is the capital" here moves its
        // partial share by up to 0.17 between the embedded engine's own layouts;
        // docs/reliability.md).
        for (a, b) in rp.iter().zip(ep) {
            assert!((a - b).abs() < 0.2, "verdict {i}: remote {rp:?} vs embedded {ep:?}");
        }
        let margin = {
            let mut p = ep.clone();
            p.sort_by(|a, b| b.total_cmp(a));
            p[0] - p[1]
        };
        // Labels agree wherever the two engines' noise cannot flip them (two probabilities
        // moving by that much move the margin by up to 0.35).
        if margin > 0.35 {
            assert_eq!(rl, el, "verdict {i}: remote {rp:?} vs embedded {ep:?}");
        }
    }
}

#[test]
fn remote_reasoned_mode_is_grammar_constrained() {
    let judge = Judge::new(remote(|_| {}), PromptSet::builtin(), JudgeConfig::default().with_mode(JudgeMode::Reasoned));
    for r in judge.judge(&tasks()[..2]) {
        let r = r.expect("record judged");
        for v in &r.verdicts {
            assert!(v.rationale.as_deref().is_some_and(|s| !s.is_empty()), "{v:?}");
        }
    }
}

#[test]
fn round_robin_over_several_urls_and_in_flight_requests() {
    let mut cfg = RemoteConfig::new(server());
    cfg.model_file = Some(gavel::model_store::ensure_default_model().unwrap());
    cfg.base_urls = vec![server().to_string(), format!("{}/", server())];
    cfg.in_flight = 8;
    let b = Arc::new(RemoteBackend::connect(cfg).expect("connect to llama-server"));
    let judge = Judge::new(b.clone(), PromptSet::builtin(), JudgeConfig::default());
    let results = judge.judge(&tasks());
    let vs: Vec<&gavel::Verdict> = results.iter().flat_map(|r| &r.as_ref().expect("record judged").verdicts).collect();
    assert_eq!(vs.len(), 8);
    assert!(b.usage().prompt_tokens > 0);
    // Both URLs took completions, about evenly.
    let sent = b.requests_per_url();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|&c| c >= 3), "requests per URL: {sent:?}");
    // A server gives no prompt-token log-probabilities, so no nugget likelihood is read and no
    // content-free baseline prompt is sent: one completion per verdict.
    assert_eq!(sent.iter().sum::<usize>(), vs.len(), "requests per URL: {sent:?}");
    assert!(vs.iter().all(|v| v.raw.as_ref().is_some_and(|r| r.nugget_lp.is_none())));
}

#[test]
fn a_server_that_stays_down_gives_error_records_not_a_crash() {
    // Connect while it is up, then point every request at a port where nothing listens.
    let port = free_port();
    let mut cfg = RemoteConfig::new(server());
    cfg.retries = 1;
    cfg.timeout = Duration::from_secs(5);
    let up = RemoteBackend::connect(cfg.clone()).unwrap();
    drop(up);
    let mut down = cfg.clone();
    down.base_urls = vec![format!("http://127.0.0.1:{port}/v1")];
    let err = RemoteBackend::connect(down).err().expect("nothing listens there");
    assert!(err.to_string().contains("cannot reach"), "{err}");

    // A live connection whose server then disappears: start a second llama-server and kill it.
    let port = free_port();
    let model = gavel::model_store::ensure_default_model().unwrap();
    let child = Command::new(llama_server_binary())
        .args(["-m", model.to_str().unwrap(), "--host", "127.0.0.1", "--port", &port.to_string(), "-np", "1"])
        .args(["-c", "4096", "--no-webui"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut second = LlamaServer::own(child, String::new());
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let start = Instant::now();
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
    while agent.get(&format!("http://{addr}/health")).call().is_err() {
        assert!(start.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut c = cfg;
    c.base_urls = vec![format!("http://{addr}/v1")];
    let b = Arc::new(RemoteBackend::connect(c).unwrap());
    let _ = second.child.kill();
    let _ = second.child.wait();
    let judge = Judge::new(b, PromptSet::builtin(), JudgeConfig::default());
    let results = judge.judge(&tasks()[..1]);
    let err = results[0].as_ref().expect_err("a dead server must give an error record").to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("tried once"), "the first failure is retried: {err}");
    // The next records do not wait out the whole backoff again, each: one try, and it says so.
    let results = judge.judge(&tasks()[..1]);
    let err = results[0].as_ref().expect_err("still down").to_string();
    assert!(err.contains("tried once"), "{err}");
}

#[test]
fn the_cli_says_a_remote_backend_misses_the_calibrations_likelihood_reads() {
    let longform = format!("{}/examples/longform.jsonl", env!("CARGO_MANIFEST_DIR"));
    let o = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["verify", "--backend", "openai", "--base-url", server(), "--input", &longform])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("this backend returns no prompt log-probabilities") && err.contains("pmi_low3"), "{err}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 3);
}

#[test]
fn reward_server_over_the_remote_backend() {
    let judge = Arc::new(Judge::new(remote(|_| {}), PromptSet::builtin(), JudgeConfig::default()));
    let server = Server::bind(judge, ServeConfig::default().with_addr("127.0.0.1:0")).expect("bind");
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        server
            .run(async move {
                let _ = stopped.await;
            })
            .unwrap()
    });
    let body = json!({
        "query": ["Canberra", PASSAGE, "Sydney"],
        "labels": ["Canberra", json!({"nuggets": ["The Eiffel Tower is in Paris", "The tower is made of wood"]}).to_string(),
                   "Canberra"],
    });
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(300)).build();
    let reply: Value = serde_json::from_str(
        &agent
            .post(&format!("http://{addr}/get_reward"))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .expect("reward request")
            .into_string()
            .unwrap(),
    )
    .unwrap();
    let rewards = reply["rewards"].as_array().expect("rewards");
    assert_eq!(rewards.len(), 3, "{reply}");
    assert_eq!(rewards[0], 1.0, "exact match needs no model");
    assert_eq!(reply["extra_logs"]["model_verdicts"][1], 2.0, "{reply}");
    assert_eq!(reply["extra_logs"]["error"], json!([0.0, 0.0, 0.0]), "{reply}");
    let _ = stop.send(());
    handle.join().unwrap();
}
