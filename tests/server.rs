//! `gavel serve` over real HTTP on loopback, against the real default model: the OpenRLHF and
//! native shapes, batching across concurrent clients, bad and oversize bodies, overload, the
//! API key, and SIGTERM with a request in flight (the binary).

mod common;

use common::start;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use gavel::pipeline::output_record;
use gavel::record::{parse_record, ShortForm};
use gavel::server::ServeConfig;
use gavel::JudgeConfig;
use serde_json::{json, Value};

const PASSAGE: &str = "The Eiffel Tower is a wrought-iron lattice tower in Paris, France. It was \
designed by the engineering company of Gustave Eiffel and completed in 1889.";

/// A `gavel serve` process on a free loopback port (stderr piped); killed when dropped, also
/// while a failing test unwinds.
struct ServeProcess {
    child: std::process::Child,
    stderr: BufReader<std::process::ChildStderr>,
    addr: SocketAddr,
}

impl ServeProcess {
    /// Start it with the default model and `args`, and wait until it says where it listens.
    fn start(args: &[&str]) -> Self {
        let model = gavel::model_store::ensure_default_model().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gavel"))
            .args(["serve", "--addr", "127.0.0.1:0", "--model"])
            .arg(&model)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut p = ServeProcess { child, stderr, addr: SocketAddr::from(([127, 0, 0, 1], 0)) };
        let mut line = String::new();
        p.addr = loop {
            line.clear();
            assert!(p.stderr.read_line(&mut line).unwrap() > 0, "server exited before listening");
            if let Some(a) = line.trim().strip_prefix("gavel serve: listening on http://") {
                break a.parse().unwrap();
            }
        };
        p
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(Duration::from_secs(600)).build()
}

fn request(addr: SocketAddr, method: &str, path: &str, body: Option<&str>, key: Option<&str>) -> Reply {
    let mut req = agent().request(method, &format!("http://{addr}{path}"));
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let res = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    Reply {
        status: resp.status(),
        retry_after: resp.header("Retry-After").map(str::to_string),
        body: resp.into_string().unwrap(),
    }
}

fn post(addr: SocketAddr, path: &str, body: &Value) -> Reply {
    request(addr, "POST", path, Some(&body.to_string()), None)
}

fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = request(addr, "GET", "/metrics", None, None).body;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .map(|v| v.parse().unwrap())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Wait until `cond` on the /health reply holds.
fn wait_health(addr: SocketAddr, cond: impl Fn(&Value) -> bool) {
    let start = Instant::now();
    loop {
        let h = request(addr, "GET", "/health", None, None).json();
        if cond(&h) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "health never got there: {h}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The same records through the library in one judge call, as `gavel verify` writes them.
/// The engine's verdicts depend (slightly) on which records share a decode batch, so the
/// comparisons below judge exactly the batch the server judged and expect identical output.
/// Both sides go through JSON text, as the server's reply does: the parser may round the last
/// digit, the same way on both.
fn direct(records: &[Value]) -> Vec<Value> {
    let judge = common::judge(JudgeConfig::default());
    let tasks: Vec<_> =
        records.iter().map(|r| parse_record(&r.to_string(), "direct", None, ShortForm::Hybrid).unwrap()).collect();
    tasks
        .iter()
        .zip(judge.judge(&tasks))
        .enumerate()
        .map(|(i, (t, r))| serde_json::from_str(&serde_json::to_string(&output_record(i + 1, t, r)).unwrap()).unwrap())
        .collect()
}

#[test]
fn openrlhf_shape_gives_rewards_scores_and_extra_logs() {
    let s = start(ServeConfig::default());
    let prompt = "<|im_start|>user\nWhat is the capital of Australia?<|im_end|>\n<|im_start|>assistant\n";
    let nuggets = json!({"query": "Where is the Eiffel Tower and who designed it?",
        "nuggets": ["The Eiffel Tower is in Paris", {"text": "The tower is made of wood", "importance": "okay"}]});
    let body = json!({
        "query": [
            format!("{prompt}Canberra<|im_end|><|endoftext|>"),
            format!("{prompt}Sydney<|im_end|>"),
            format!("{prompt}{PASSAGE}<|im_end|>"),
            format!("{prompt}whatever"),
        ],
        "prompts": [prompt, prompt, prompt, prompt],
        "labels": ["Canberra", "[\"Canberra\", \"Canberra, ACT\"]", nuggets.to_string(),
                   "{\"nuggets\": [{\"text\": \"x\", \"kind\": \"magic\"}]}"],
    });
    let r = post(s.addr, "/get_reward", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let rewards: Vec<f64> = serde_json::from_value(v["rewards"].clone()).unwrap();
    assert_eq!(rewards.len(), 4);
    assert_eq!(v["scores"], v["rewards"]);
    // The records the labels stand for, with the responses cut out of prompt + response.
    let want = direct(&[
        json!({"answer": "Canberra", "gold_answers": ["Canberra"]}),
        json!({"answer": "Sydney", "gold_answers": ["Canberra", "Canberra, ACT"]}),
        json!({"query": nuggets["query"], "answer": PASSAGE, "nuggets": nuggets["nuggets"]}),
    ]);
    // Short-form: exact match decides without the model, else the model; reward 1/0.
    assert_eq!(rewards[0], 1.0);
    assert_eq!(v["extra_logs"]["model_verdicts"][0], 0.0);
    assert_eq!(v["extra_logs"]["soft_reward"][0], 1.0);
    assert_eq!(want[1]["verdicts"][0]["by"], "llm");
    assert_eq!(rewards[1], if want[1]["correct"] == true { 1.0 } else { 0.0 });
    assert_eq!(v["extra_logs"]["model_verdicts"][1], 1.0);
    // Long-form: the weighted reward.
    assert_eq!(rewards[2], want[2]["scores"]["weighted_reward"]);
    assert_eq!(v["extra_logs"]["model_verdicts"][2], 2.0);
    for i in 0..3 {
        assert_eq!(v["extra_logs"]["soft_reward"][i], want[i]["scores"]["soft_reward"]);
        assert_eq!(v["extra_logs"]["all_score"][i], want[i]["scores"]["all_score"]);
    }
    // A bad label fails its own item only, with why.
    assert_eq!(rewards[3], 0.0);
    assert_eq!(v["extra_logs"]["error"], json!([0.0, 0.0, 0.0, 1.0]));
    assert_eq!(v["errors"][0]["index"], 3);
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("labels[3]") && msg.contains("nuggets[0].kind"), "{msg}");
    // Older clients send only `query`.
    let r = post(s.addr, "/get_reward", &json!({"query": ["Canberra"], "labels": ["canberra"]}));
    assert_eq!(r.json()["rewards"], json!([1.0]));
}

#[test]
fn native_verify_returns_gavel_verify_records() {
    let s = start(ServeConfig::default());
    let long = json!({"id": "l1", "query": "Where is the Eiffel Tower?", "answer": PASSAGE,
        "nuggets": ["The Eiffel Tower is in Paris", {"kind": "numeric", "text": "Completed in 1889", "value": 1889}]});
    let short = json!({"id": 7, "query": "what is the capital of australia", "answer": "It is Canberra.",
        "gold_answers": ["Canberra"], "gold": "correct"});
    let as_line = json!({"id": "as-line", "answer": "x", "gold_answers": ["x"]});
    let body = json!({"records": [long, {"id": "bad", "query": "q"}, short, as_line.to_string()]});
    let r = post(s.addr, "/v1/verify", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    let recs = v["records"].as_array().unwrap();
    assert_eq!(recs.len(), 4);
    assert_eq!(v["summary"]["records"], 4);
    assert_eq!(v["summary"]["errors"], 1);
    // The long record's first nugget; the short one is decided by containment.
    assert_eq!(v["summary"]["model_verdicts"], 1);
    for (i, rec) in recs.iter().enumerate() {
        assert_eq!(rec["line"], i + 1);
    }
    // An error record in the middle, the others judged.
    assert_eq!(recs[1]["id"], "bad");
    assert_eq!(recs[1]["error"]["kind"], "invalid_field");
    assert!(recs[1]["error"]["message"].as_str().unwrap().contains("records[1]"));
    // The others are exactly what gavel verify writes for them (but for `line`).
    let want = direct(&[long, short, as_line]);
    for (got, mut want) in [&recs[0], &recs[2], &recs[3]].into_iter().zip(want) {
        want["line"] = got["line"].clone();
        assert_eq!(got, &want);
    }
    assert_eq!(recs[0]["verdicts"][1]["by"], "numeric");
    // Containment decides the short one, exact match the last one.
    assert_eq!((&recs[2]["correct"], &recs[2]["verdicts"][0]["by"]), (&json!(true), &json!("contains")));
    assert_eq!((&recs[3]["correct"], &recs[3]["verdicts"][0]["by"]), (&json!(true), &json!("exact_match")));
}

#[test]
fn concurrent_clients_get_the_same_answers_as_one_at_a_time() {
    let questions = [
        // All but the last go to the model (no gold answer contained), so their rewards differ.
        ("where is the eiffel tower", "It stands in the French capital.", "Paris"),
        ("who designed the eiffel tower", "Eiffel's engineering company", "Gustave Eiffel"),
        ("when was the eiffel tower completed", "in the late 1880s", "1889"),
        ("what is the eiffel tower made of", "wrought iron", "wrought-iron lattice"),
        ("what is the capital of france", "Lyon", "Paris"),
        ("how tall is the eiffel tower", "about 330 metres", "330 m"),
        ("which river flows through paris", "It is the Seine", "River Seine"),
        ("what is the capital of australia", "Canberra", "Canberra"),
    ];
    let bodies: Vec<Value> = questions
        .iter()
        .map(|(q, a, gold)| json!({"query": [a], "labels": [json!({"query": q, "gold_answers": [gold]}).to_string()]}))
        .collect();
    let all_at_once = |addr: SocketAddr| -> Vec<Value> {
        let barrier = Arc::new(Barrier::new(bodies.len()));
        let threads: Vec<_> = bodies
            .iter()
            .cloned()
            .map(|b| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    post(addr, "/get_reward", &b)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                let r = t.join().unwrap();
                assert_eq!(r.status, 200, "{}", r.body);
                r.json()
            })
            .collect()
    };

    // One record per judge call: every client must get exactly its own one-at-a-time answer.
    // The first pass also reads the nuggets' content-free baselines (kept for later calls), so
    // its decodes differ from the later passes': compare the second one-at-a-time pass.
    let s = start(ServeConfig::default().with_batch_records(1));
    let one_at_a_time = || -> Vec<Value> {
        bodies
            .iter()
            .map(|b| {
                let r = post(s.addr, "/get_reward", b);
                assert_eq!(r.status, 200, "{}", r.body);
                r.json()
            })
            .collect()
    };
    let _warm = one_at_a_time();
    let alone = one_at_a_time();
    let soft: Vec<&Value> = alone.iter().map(|a| &a["extra_logs"]["soft_reward"][0]).collect();
    assert!(
        soft.iter().enumerate().all(|(i, x)| !soft[..i].contains(x)),
        "answers must differ to catch mix-ups: {soft:?}"
    );
    assert_eq!(all_at_once(s.addr), alone);

    // Default batching: the concurrent requests share judge calls and get the same rewards.
    let s = start(ServeConfig::default());
    let batched = all_at_once(s.addr);
    let calls = metric(s.addr, "gavel_engine_batches_total");
    assert!(calls < bodies.len() as f64, "{calls} judge calls for {} requests", bodies.len());
    for (got, want) in batched.iter().zip(&alone) {
        assert_eq!(got["rewards"], want["rewards"], "{got} vs {want}");
        assert_eq!(got["extra_logs"]["model_verdicts"], want["extra_logs"]["model_verdicts"]);
        // A record's label probabilities move a little with the other records in its decode
        // batch (the engine's behaviour, also seen in `gavel verify --batch 1` vs `--batch 8`).
        let (g, w) = (
            got["extra_logs"]["soft_reward"][0].as_f64().unwrap(),
            want["extra_logs"]["soft_reward"][0].as_f64().unwrap(),
        );
        assert!((g - w).abs() < 0.1, "soft reward {g} batched vs {w} alone");
    }
}

#[test]
fn malformed_bodies_get_400_naming_the_field() {
    let s = start(ServeConfig::default());
    let cases = [
        ("/get_reward", "{\"query\": [", "not valid JSON"),
        ("/get_reward", "[]", "JSON object"),
        ("/get_reward", "{\"prompts\": []}", "`query`"),
        ("/get_reward", "{\"query\": \"a\", \"labels\": [\"a\"]}", "`query` must be an array"),
        ("/get_reward", "{\"query\": [\"a\", 1], \"labels\": [\"a\", \"b\"]}", "`query[1]`"),
        ("/get_reward", "{\"query\": [\"a\"], \"labels\": [\"a\", \"b\"]}", "`labels` has 2"),
        ("/get_reward", "{\"query\": [\"a\"]}", "`labels` is missing"),
        ("/v1/verify", "{\"record\": []}", "`records` is missing"),
        ("/v1/verify", "{\"records\": 5}", "`records` must be an array"),
    ];
    for (path, body, want) in cases {
        let r = request(s.addr, "POST", path, Some(body), None);
        assert_eq!(r.status, 400, "{path} {body}: {}", r.body);
        let v = r.json();
        assert_eq!(v["error"]["kind"], "bad_request");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{body}: {msg}");
    }
    let r = request(s.addr, "GET", "/nope", None, None);
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("/get_reward"));
    // A known route asked with the wrong method: a JSON error too (it was an empty body).
    let r = request(s.addr, "GET", "/get_reward", None, None);
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["message"], "GET /get_reward: this route takes POST", "{}", r.body);
    // The server is still healthy, and its open /health names the model file, not its path.
    let h = request(s.addr, "GET", "/health", None, None).json();
    assert_eq!(h["status"], "ok");
    assert!(h["model"].as_str().is_some_and(|m| m.ends_with(".gguf") && !m.contains('/')), "{h}");
    assert!(metric(s.addr, "gavel_requests_total{endpoint=\"/get_reward\",status=\"400\"}") >= 7.0);
}

#[test]
fn oversize_bodies_get_413() {
    let s = start(ServeConfig::default().with_max_body_bytes(1024).with_max_request_records(2));
    // Declared too large: refused before the body is sent.
    let mut conn = TcpStream::connect(s.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        conn,
        "POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    )
    .unwrap();
    let mut head = String::new();
    BufReader::new(&conn).read_line(&mut head).unwrap();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    // Too many records in a small body.
    let body = json!({"query": ["a", "b", "c"], "labels": ["a", "b", "c"]});
    let r = post(s.addr, "/get_reward", &body);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["error"]["kind"], "too_many_records");
    // Within the limits it works.
    let r = post(s.addr, "/get_reward", &json!({"query": ["a"], "labels": ["a"]}));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn overload_gets_503_with_retry_after() {
    let s = start(ServeConfig::default().with_queue(1).with_batch_records(1));
    // Keep the engine busy with model work...
    let heavy = json!({"records": [{"query": "Where is the tower?", "answer": PASSAGE,
        "nuggets": ["The Eiffel Tower is in Paris", "It was completed in 1889", "It is made of wood"]}]});
    let addr = s.addr;
    let busy = std::thread::spawn(move || post(addr, "/v1/verify", &heavy));
    wait_health(s.addr, |h| h["in_flight"] == 1 && h["queue_requests"] == 0);
    // ...then one request fits in the queue and the rest are turned away.
    let barrier = Arc::new(Barrier::new(6));
    let threads: Vec<_> = (0..6)
        .map(|i| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                post(addr, "/get_reward", &json!({"query": [format!("a{i}")], "labels": [format!("a{i}")]}))
            })
        })
        .collect();
    let replies: Vec<Reply> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let rejected: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(rejected.len() >= 4, "{:?}", replies.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in &rejected {
        assert_eq!(r.retry_after.as_deref(), Some("1"));
        assert_eq!(r.json()["error"]["kind"], "queue_full");
    }
    for r in replies.iter().filter(|r| r.status != 503) {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["rewards"], json!([1.0]));
    }
    let b = busy.join().unwrap();
    assert_eq!(b.status, 200, "{}", b.body);
    assert!(metric(s.addr, "gavel_rejected_queue_full_total") >= 4.0);
}

#[test]
fn api_key_guards_everything_but_health() {
    let s = start(ServeConfig::default().with_api_key(Some("s3cret".into())));
    let body = r#"{"query": ["Paris"], "labels": ["Paris"]}"#;
    let r = request(s.addr, "POST", "/get_reward", Some(body), None);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["kind"], "unauthorized");
    assert_eq!(request(s.addr, "POST", "/get_reward", Some(body), Some("wrong")).status, 401);
    assert_eq!(request(s.addr, "GET", "/metrics", None, None).status, 401);
    assert_eq!(request(s.addr, "GET", "/health", None, None).status, 200);
    let r = request(s.addr, "POST", "/get_reward", Some(body), Some("s3cret"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["rewards"], json!([1.0]));
    // The scheme is case-insensitive.
    let lower = agent()
        .post(&format!("http://{}/get_reward", s.addr))
        .set("Authorization", "bearer s3cret")
        .set("Content-Type", "application/json")
        .send_string(body)
        .unwrap();
    assert_eq!(lower.status(), 200);
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let mut p = ServeProcess::start(&[]);
    let (addr, pid) = (p.addr, p.child.id());
    let records = json!({"records": [
        {"id": "a", "query": "Where is the tower?", "answer": PASSAGE, "nuggets": ["The Eiffel Tower is in Paris", "It is made of wood"]},
        {"id": "b", "answer": "It is Canberra.", "query": "capital of australia", "gold_answers": ["Sydney"]},
    ]});
    let client = std::thread::spawn(move || post(addr, "/v1/verify", &records));
    wait_health(addr, |h| h["in_flight"] == 1);
    let kill = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(kill.success());
    let reply = client.join().unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    let v = reply.json();
    assert_eq!(v["summary"]["records"], 2);
    assert_eq!(v["summary"]["errors"], 0);
    assert_eq!(v["summary"]["model_verdicts"], 3);
    let status = p.child.wait().unwrap();
    let mut rest = String::new();
    p.stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {rest}");
    assert!(rest.contains("gavel serve: stopped"), "{rest}");
    // Nothing listens any more.
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn an_empty_answer_earns_nothing_against_gold_that_normalises_to_nothing() {
    let s = start(ServeConfig::default());
    // Gold answers "." and "a" normalise to nothing; they used to match an empty or article-only
    // answer and pay 1.0.
    let body = json!({"query": ["", "The"], "labels": ["[\"Canberra\", \".\"]", "[\"Canberra\", \"a\"]"]});
    let r = post(s.addr, "/get_reward", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let rewards = r.json()["rewards"].as_array().unwrap().clone();
    assert_eq!(rewards.len(), 2);
    for v in rewards {
        assert!(v.as_f64().unwrap() < 0.5, "{}", r.body);
    }
}

/// Timing-based (a timeout of 1.5 record-judging times): run alone, not beside the other tests
/// of this file, whose servers would share the CPU; `make test` runs it on its own
/// (`cargo test --release --test server -- --ignored`).
#[test]
#[ignore = "timing-based: make test runs it alone"]
fn a_request_that_cannot_be_judged_in_time_gets_504_at_once_and_costs_no_model_time() {
    fn record(tag: &str) -> Value {
        json!({"query": "Where is the tower?", "answer": format!("{PASSAGE} ({tag})"),
            "nuggets": ["The Eiffel Tower is in Paris", "It was completed in 1889", "It is made of wood",
                        "It is in Rome", "It was designed by Gustave Eiffel"]})
    }
    fn one(tag: &str) -> Value {
        json!({ "records": [record(tag)] })
    }
    // How long one record takes here, warm (the faster of two calls).
    let probe = start(ServeConfig::default());
    assert_eq!(post(probe.addr, "/v1/verify", &one("probe 0")).status, 200);
    let h = (1..3)
        .map(|i| {
            let t0 = Instant::now();
            assert_eq!(post(probe.addr, "/v1/verify", &one(&format!("probe {i}"))).status, 200);
            t0.elapsed()
        })
        .min()
        .unwrap();
    drop(probe);
    // One record per call and a timeout of 1.5 calls: a request queued behind a busy call is
    // reached after about one call, with half a call left, and the next call (estimated from the
    // busy one) would end after two. The engine must not judge it for a client that will have gone: it answers 504 at
    // once (or, if the machine slowed down, the handler's own timeout does first).
    let s = start(ServeConfig::default().with_batch_records(1).with_timeout(h.mul_f64(1.5)));
    let addr = s.addr;
    let busy = std::thread::spawn(move || post(addr, "/v1/verify", &one("busy")));
    wait_health(s.addr, |h| h["in_flight"] == 1 && h["queue_requests"] == 0);
    let records_before = metric(s.addr, "gavel_records_total");
    let late = request(s.addr, "POST", "/v1/verify", Some(&one("late").to_string()), None);
    assert_eq!(late.status, 504, "{}", late.body);
    // The busy call is judged either way (answered 504 if this machine slowed down past the timeout).
    let busy = busy.join().unwrap();
    assert!(busy.status == 200 || busy.status == 504, "{}", busy.body);
    // Only the busy record was judged meanwhile, not the late one. A busy call answered 504 by
    // the handler's timeout can still be in the engine: wait for its count, then as long again
    // as a call takes, in which the late record, were it judged, would be counted too.
    let deadline = Instant::now() + h * 20;
    while metric(s.addr, "gavel_records_total") - records_before < 1.0 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(h);
    assert_eq!(metric(s.addr, "gavel_records_total") - records_before, 1.0);
    assert!(metric(s.addr, "gavel_request_timeouts_total") >= 1.0);
}

/// One request that took longer than the timeout (a long answer) must not make the server
/// refuse every later one: the engine estimates a call from the text it reads, not from its
/// count of records. Timing-based, run alone as the test above.
#[test]
#[ignore = "timing-based: make test runs it alone"]
fn a_slow_request_does_not_make_the_server_refuse_the_next_ones() {
    let one = |answer: String| {
        json!({"records": [{"query": "Where is the tower?", "answer": answer,
            "nuggets": ["The Eiffel Tower is in Paris", "It was completed in 1889"]}]})
    };
    // How long one short record takes here, warm.
    let probe = start(ServeConfig::default());
    assert_eq!(post(probe.addr, "/v1/verify", &one(format!("{PASSAGE} (probe 0)"))).status, 200);
    let t0 = Instant::now();
    assert_eq!(post(probe.addr, "/v1/verify", &one(format!("{PASSAGE} (probe 1)"))).status, 200);
    let h = t0.elapsed();
    drop(probe);
    let s = start(ServeConfig::default().with_timeout(h * 3));
    // Forty passages: many times the text of a short record, so many times longer than 3 short calls.
    let long: String = (0..40).map(|i| format!("{PASSAGE} (part {i}) ")).collect();
    let records_before = metric(s.addr, "gavel_records_total");
    let slow = post(s.addr, "/v1/verify", &one(long));
    assert_eq!(slow.status, 504, "the long record was judged within 3 short calls: {}", slow.body);
    // Wait until the engine has finished the long call (it goes on after the 504).
    let deadline = Instant::now() + h * 400;
    while metric(s.addr, "gavel_records_total") - records_before < 1.0 && Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(metric(s.addr, "gavel_records_total") - records_before, 1.0, "the long call never ended");
    for i in 0..3 {
        let r = post(s.addr, "/v1/verify", &one(format!("{PASSAGE} (after {i})")));
        assert_eq!(r.status, 200, "request {i} after the slow one: {}", r.body);
    }
}

#[test]
fn patterns_that_would_blow_up_are_refused_quickly_not_compiled() {
    let s = start(ServeConfig::default());
    let nuggets: Vec<Value> =
        (0..150).map(|i| json!({"kind": "regex", "pattern": format!("\\w{{100}}x{i}")})).collect();
    let body = json!({"records": [{"id": "r", "answer": "text", "nuggets": nuggets}]});
    let t0 = Instant::now();
    let r = post(s.addr, "/v1/verify", &body);
    assert!(t0.elapsed() < Duration::from_secs(3), "took {:?}", t0.elapsed());
    assert_eq!(r.status, 200, "{}", r.body);
    let rec = &r.json()["records"][0];
    assert_eq!(rec["error"]["kind"], "invalid_field", "{rec}");
    assert!(rec["error"]["message"].as_str().unwrap().contains("pattern"), "{rec}");
}

#[test]
fn a_half_open_connection_does_not_hold_sigterm() {
    let mut p = ServeProcess::start(&["--timeout", "2"]);
    let (addr, pid) = (p.addr, p.child.id());
    // One client that connects and never sends, one that sends half a request head.
    let idle = TcpStream::connect(addr).unwrap();
    let mut partial = TcpStream::connect(addr).unwrap();
    write!(partial, "POST /get_reward HTTP/1.1\r\nHost: x\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    // It stops within the request timeout plus a few seconds, not never.
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "serve still running 30 s after SIGTERM with a half-open connection"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut rest = String::new();
    p.stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {rest}");
    assert!(rest.contains("gavel serve: stopped"), "{rest}");
    drop((idle, partial));
}

/// Slow and idle clients cannot hold the server: a connection that sends no request head is
/// closed after the header timeout, one that sends its head but withholds the body gets 408
/// after the body timeout, and past the connection limit new connections wait until a slot
/// frees (here, when the idle ones are closed) instead of exhausting file descriptors.
#[test]
fn idle_and_slow_clients_are_timed_out_and_connections_are_bounded() {
    let server = common::start(
        ServeConfig::default()
            .with_max_connections(2)
            .with_read_timeouts(Duration::from_secs(2), Duration::from_secs(2)),
    );
    // Closed: the read ends (or the connection is reset) before `limit`; open: it times out.
    let closed_within = |mut s: TcpStream, limit: Duration| -> bool {
        s.set_read_timeout(Some(limit)).unwrap();
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    };
    // Two idle connections fill the limit.
    let idle_a = TcpStream::connect(server.addr).unwrap();
    let idle_b = TcpStream::connect(server.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // A third client's /health waits: no slot until the idle ones time out.
    let t0 = Instant::now();
    let mut third = TcpStream::connect(server.addr).unwrap();
    write!(third, "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    third.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reply = String::new();
    third.read_to_string(&mut reply).unwrap();
    let waited = t0.elapsed();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(waited >= Duration::from_millis(1500), "answered after {waited:?}: the limit did not hold");
    assert!(closed_within(idle_a, Duration::from_secs(5)), "idle connection not closed");
    assert!(closed_within(idle_b, Duration::from_secs(5)), "idle connection not closed");
    // Headers in, body withheld: 408 after the body timeout.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    write!(
        slow,
        "POST /get_reward HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reply = String::new();
    let _ = slow.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(reply.contains("body_timeout"), "{reply}");
}

/// The real default model, but scoring panics on any prompt that holds `PANIC_MARK`: the one
/// way to make the judge panic on demand (fault injection, not a stand-in for the model).
struct PanicsOn(Arc<dyn gavel::Backend>);

const PANIC_MARK: &str = "zzpanicmarkzz";

impl gavel::Backend for PanicsOn {
    fn info(&self) -> gavel::backend::BackendInfo {
        self.0.info()
    }
    fn format_chat(&self, messages: &[gavel::prompt::Message]) -> gavel::Result<String> {
        self.0.format_chat(messages)
    }
    fn count_tokens(&self, text: &str) -> gavel::Result<usize> {
        self.0.count_tokens(text)
    }
    fn score(
        &self,
        groups: &[gavel::backend::PromptGroup],
        choices: &[Vec<String>],
    ) -> Vec<Vec<gavel::Result<gavel::backend::LabelScore>>> {
        if groups.iter().flat_map(|g| &g.suffixes).any(|s| s.contains(PANIC_MARK)) {
            panic!("injected fault");
        }
        self.0.score(groups, choices)
    }
    fn generate(
        &self,
        groups: &[gavel::backend::PromptGroup],
        grammar: Option<&str>,
        max_tokens: usize,
    ) -> Vec<Vec<gavel::Result<String>>> {
        self.0.generate(groups, grammar, max_tokens)
    }
    fn reads_spans(&self) -> bool {
        self.0.reads_spans()
    }
    fn usage(&self) -> gavel::backend::Usage {
        self.0.usage()
    }
    fn check_labels(&self, choices: &[Vec<String>]) -> gavel::Result<()> {
        self.0.check_labels(choices)
    }
    fn prefill(&self, text: &str) -> gavel::Result<(usize, Duration)> {
        self.0.prefill(text)
    }
}

#[test]
fn an_engine_panic_fails_that_request_only_and_the_server_keeps_serving() {
    let judge =
        gavel::Judge::new(Arc::new(PanicsOn(common::backend())), gavel::PromptSet::builtin(), JudgeConfig::default());
    // Batches of up to 64 records: concurrent requests share one judge call.
    let s = common::start_with(judge, ServeConfig::default());
    let addr = s.addr;
    let record = |id: &str, nugget: &str| json!({"id": id, "query": "Where is the Eiffel Tower?", "answer": PASSAGE, "nuggets": [nugget]});
    let good = json!({"records": [record("good", "The Eiffel Tower is in Paris")]});
    let bad = json!({"records": [record("bad", &format!("The tower is {PANIC_MARK}"))]});
    // The two at once, many times, so that some rounds put them in the same judge call.
    for _ in 0..5 {
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = [good.clone(), bad.clone()]
            .into_iter()
            .map(|body| {
                let b = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    b.wait();
                    post(addr, "/v1/verify", &body)
                })
            })
            .collect();
        let replies: Vec<Reply> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let (g, b) = (replies[0].json(), replies[1].json());
        assert_eq!(replies[0].status, 200, "{}", replies[0].body);
        assert!(g["records"][0].get("error").is_none(), "a batch mate of the panic failed: {g}");
        assert_eq!(g["records"][0]["verdicts"][0]["by"], "llm");
        let err = b["records"][0]["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(err.contains("panicked"), "{}: {}", replies[1].status, replies[1].body);
    }
    // Still serving, and healthy.
    let again = post(addr, "/v1/verify", &good);
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["records"][0]["verdicts"][0]["by"], "llm");
    assert_eq!(request(addr, "GET", "/health", None, None).status, 200);
}

#[test]
fn a_client_that_disconnects_mid_request_costs_no_model_time_and_the_server_goes_on() {
    let record = |tag: &str| {
        json!({"records": [{"query": "Where is the tower?", "answer": format!("{PASSAGE} ({tag})"),
            "nuggets": ["The Eiffel Tower is in Paris", "It was completed in 1889", "It is made of wood",
                        "It is in Rome", "It was designed by Gustave Eiffel"]}]})
    };
    let s = start(ServeConfig::default().with_batch_records(1));
    let addr = s.addr;
    let busy = std::thread::spawn(move || post(addr, "/v1/verify", &record("busy")));
    wait_health(s.addr, |h| h["in_flight"] == 1 && h["queue_requests"] == 0);
    let before = metric(s.addr, "gavel_records_total");
    // A whole request, queued behind the busy one; the client then goes away.
    let body = record("gone").to_string();
    let mut c = TcpStream::connect(s.addr).unwrap();
    write!(
        c,
        "POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    wait_health(s.addr, |h| h["queue_requests"] == 1);
    // Half a request on another connection, then gone too.
    let mut half = TcpStream::connect(s.addr).unwrap();
    write!(half, "POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{}", body.len(), &body[..10])
        .unwrap();
    drop(c);
    drop(half);
    assert_eq!(busy.join().unwrap().status, 200);
    // The busy record was judged; the one whose client left was not.
    wait_health(s.addr, |h| h["queue_requests"] == 0 && h["in_flight"] == 0);
    assert_eq!(metric(s.addr, "gavel_records_total") - before, 1.0);
    // And the server answers the next client.
    assert_eq!(post(s.addr, "/v1/verify", &record("next")).status, 200);
}
