//! `gavel serve`: the HTTP reward server for RL loops. It keeps one [`Judge`] loaded and batches
//! the records of concurrent requests into shared judge calls.
//!
//! ```text
//! HTTP (axum, tokio)           bounded queue            engine thread (std::thread)
//! /get_reward, /v1/verify  ->  one Job per request  ->  take every waiting job (<= --batch
//! parse + label -> Task        full: 503 Retry-After    records), Judge::judge once, answer
//! await reply (--timeout)  <-  oneshot reply per job <- each job on its own channel
//! ```
//!
//! Nothing blocking runs on the async runtime: model work is on the engine thread, and parsing
//! or serialising a large body goes to tokio's blocking pool. Endpoints: `POST /get_reward`
//! (OpenRLHF's remote reward model, see [`wire`] for how a label becomes a rubric),
//! `POST /slime` (slime's `--rm-type remote_rm`), `POST /v1/verify` (the records and output records of `gavel verify`), `GET /health`,
//! `GET /metrics` (Prometheus text). `docs/serve.md` has the trainer set-up.

mod engine;
pub mod metrics;
pub mod text;
pub mod wire;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::judge::Judge;
use crate::record::{ShortForm, Task};
use crate::rubric::Rubric;
pub use metrics::Metrics;
pub use wire::{LabelRules, Outcome, Refused};

/// Requests that may wait by default: OpenRLHF's rollout_batch 1024 x n_samples 16.
pub const DEFAULT_QUEUE: usize = 16384;

/// Settings of the server.
#[derive(Clone)]
pub struct ServeConfig {
    /// Address to listen on; port 0 picks a free port (see [`Server::local_addr`]).
    pub addr: String,
    /// Requests that may wait for the engine; one more gets 503 with `Retry-After`. OpenRLHF
    /// (>= 0.9.1) sends rollout_batch x n_samples one-sample requests at once and gives up on a
    /// sample after 5 tries 1 s apart, so a burst must be queued, not turned away.
    pub queue: usize,
    /// Connections the listening socket holds before they are accepted (a burst connects at once).
    pub backlog: u32,
    /// Records the engine aims to judge per call (a larger request goes alone).
    pub batch_records: usize,
    /// Largest request body in bytes; a larger one gets 413.
    pub max_body_bytes: usize,
    /// Most records (queries) in one request; more gets 413.
    pub max_request_records: usize,
    /// How long a request may wait for its verdicts before it gets 504.
    pub timeout: Duration,
    /// Seconds sent in `Retry-After` with a 503.
    pub retry_after_secs: u64,
    /// Required `Authorization: Bearer` token, when set (`/health` stays open).
    pub api_key: Option<String>,
    /// How short-form labels and records are judged.
    pub short_form: ShortForm,
    /// Rubric for labels and records that bring no criteria of their own.
    pub rubric: Option<Rubric>,
    /// Rubrics a label or record selects by id (`{"rubric": "<id>"}`).
    pub rubrics: Vec<Rubric>,
    /// Threads of the async runtime (HTTP only; the model has its own).
    pub http_threads: usize,
    /// Open connections served at once; past it the server accepts no more until one closes
    /// (they wait in the backlog), so connections can never exhaust file descriptors.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, and to start the next request
    /// on a kept-alive connection; past it the connection is closed (slow or idle clients).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body once its headers are in; past it
    /// the request gets 408.
    pub body_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: "127.0.0.1:8000".into(),
            queue: DEFAULT_QUEUE,
            backlog: 4096,
            batch_records: 64,
            max_body_bytes: 32 << 20,
            max_request_records: 8192,
            timeout: Duration::from_secs(150),
            retry_after_secs: 1,
            api_key: None,
            short_form: ShortForm::Hybrid,
            rubric: None,
            rubrics: Vec::new(),
            http_threads: 2,
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
        }
    }
}

impl ServeConfig {
    /// Set the listen address.
    pub fn with_addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = addr.into();
        self
    }

    /// Set the queue size (requests).
    pub fn with_queue(mut self, requests: usize) -> Self {
        self.queue = requests;
        self
    }

    /// Set the records per engine call.
    pub fn with_batch_records(mut self, records: usize) -> Self {
        self.batch_records = records;
        self
    }

    /// Set the body size limit.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Set the connection limit.
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Set the header and body read timeouts.
    pub fn with_read_timeouts(mut self, header: Duration, body: Duration) -> Self {
        self.header_timeout = header;
        self.body_timeout = body;
        self
    }

    /// Set the records-per-request limit.
    pub fn with_max_request_records(mut self, records: usize) -> Self {
        self.max_request_records = records;
        self
    }

    /// Set the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Require this bearer token.
    pub fn with_api_key(mut self, key: Option<String>) -> Self {
        self.api_key = key.filter(|k| !k.is_empty());
        self
    }

    /// Set the short-form policy.
    pub fn with_short_form(mut self, policy: ShortForm) -> Self {
        self.short_form = policy;
        self
    }

    /// Set the default rubric.
    pub fn with_rubric(mut self, rubric: Option<Rubric>) -> Self {
        self.rubric = rubric;
        self
    }

    /// Set the rubrics selectable by id.
    pub fn with_rubrics(mut self, rubrics: Vec<Rubric>) -> Self {
        self.rubrics = rubrics;
        self
    }
}

/// Load every `.json` and `.toml` rubric in `dir`, in file-name order; ids must be unique.
pub fn load_rubrics(dir: &Path) -> Result<Vec<Rubric>> {
    let paths = crate::rubric::rubric_files(dir)?;
    let mut seen = BTreeMap::new();
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let r = Rubric::load(&p)?;
        if let Some(first) = seen.insert(r.id.clone(), p.clone()) {
            return Err(Error::field(
                p.display().to_string(),
                "id",
                format!("`{}` is also the id of {}", r.id, first.display()),
            ));
        }
        out.push(r);
    }
    Ok(out)
}

/// A bound server: the listener is open and the engine thread runs; [`Server::run`] serves.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    engine: std::thread::JoinHandle<()>,
}

struct App {
    queue: engine::Queue,
    metrics: Arc<Metrics>,
    rules: LabelRules,
    max_body_bytes: usize,
    max_request_records: usize,
    timeout: Duration,
    retry_after_secs: u64,
    api_key: Option<String>,
    model: String,
    started: Instant,
    max_connections: usize,
    header_timeout: Duration,
    body_timeout: Duration,
}

impl Server {
    /// Open the listener on `config.addr` and start the engine thread over `judge`.
    pub fn bind(judge: Arc<Judge>, config: ServeConfig) -> Result<Server> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.http_threads.max(1))
            .thread_name("gavel-serve-http")
            .enable_all()
            .build()
            .map_err(|e| Error::io("the async runtime", e))?;
        let listener = runtime
            .block_on(listen(&config.addr, config.backlog))
            .map_err(|e| Error::io(format!("--addr {}", config.addr), e))?;
        let metrics = Arc::new(Metrics::default());
        // /health is open without a key: it names the model file, not where it lives.
        let model = judge.backend().info().model;
        let model =
            std::path::Path::new(&model).file_name().map_or_else(|| model.clone(), |f| f.to_string_lossy().to_string());
        let (queue, engine) = engine::start(judge, config.queue, config.batch_records, Arc::clone(&metrics))?;
        let rules = LabelRules {
            default_rubric: config.rubric,
            rubrics: config.rubrics.into_iter().map(|r| (r.id.clone(), r)).collect(),
            short_form: config.short_form,
        };
        let app = Arc::new(App {
            queue,
            metrics,
            rules,
            max_body_bytes: config.max_body_bytes,
            max_request_records: config.max_request_records.max(1),
            timeout: config.timeout,
            retry_after_secs: config.retry_after_secs,
            api_key: config.api_key,
            model,
            started: Instant::now(),
            max_connections: config.max_connections.max(1),
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
        });
        Ok(Server { runtime, listener, app, engine })
    }

    /// The address the server listens on (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(|e| Error::io("the listening socket", e))
    }

    /// The server's metrics (shared with `/metrics`).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.app.metrics)
    }

    /// A future that completes on SIGTERM or SIGINT (Ctrl-C). The handlers are installed now,
    /// so a signal that arrives before [`Server::run`] starts is not lost.
    pub fn shutdown_signal(&self) -> Result<impl Future<Output = ()> + Send + 'static> {
        let _in_runtime = self.runtime.enter();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate()).map_err(|e| Error::io("SIGTERM handler", e))?;
            let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::io("SIGINT handler", e))?;
            Ok(async move {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: draining"),
                    _ = int.recv() => tracing::info!("SIGINT: draining"),
                }
            })
        }
        #[cfg(not(unix))]
        {
            Ok(async move {
                let _ = tokio::signal::ctrl_c().await;
            })
        }
    }

    /// Serve until `shutdown` completes; then stop accepting, finish every request in flight
    /// and everything queued, stop the engine thread and return.
    pub fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server { runtime, listener, app, engine } = self;
        // Every request is answered within its timeout, so after the stop signal a connection
        // still open past that (a client that connected and never sent a whole request) has
        // nothing to wait for: it must not hold the shutdown forever.
        let grace = app.timeout + SHUTDOWN_SLACK;
        let (limit, header_timeout) = (app.max_connections, app.header_timeout);
        let router = router(app);
        let served = runtime.block_on(serve_connections(listener, router, limit, header_timeout, shutdown, grace));
        // Every handler has answered; dropping the runtime drops the last queue senders, so
        // the engine thread sees the queue close once it has answered what is left in it.
        runtime.shutdown_timeout(Duration::from_secs(5));
        if engine.join().is_err() {
            return Err(Error::Internal("the engine thread panicked".into()));
        }
        served.map_err(|e| Error::io("serving HTTP", e))
    }
}

/// Accept and serve HTTP/1 connections until `shutdown`, then stop accepting and let the open
/// ones finish (at most `grace`). At most `limit` connections are open at once; each must send
/// a request's headers within `header_timeout` (also between kept-alive requests).
async fn serve_connections(
    listener: tokio::net::TcpListener,
    router: Router,
    limit: usize,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(limit));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Wait for a free slot before accepting: past the limit, connections wait in the backlog.
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => p.map_err(|e| std::io::Error::other(e.to_string()))?,
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection closed: {e}");
            }
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!("connections still open {grace:?} after the stop signal: closed");
        }
    }
    Ok(())
}

/// How long past the request timeout a stopping server waits for connections to close.
const SHUTDOWN_SLACK: Duration = Duration::from_secs(5);

/// Bind `addr` with a listen backlog of `backlog` connections (tokio's default is 1024, less
/// than one OpenRLHF burst of new connections).
async fn listen(addr: &str, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(backlog)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last
        .unwrap_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "the address resolves to nothing")))
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/get_reward", post(get_reward))
        .route("/slime", post(slime))
        .route("/v1/verify", post(verify))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(app.max_body_bytes))
        .layer(middleware::from_fn_with_state(Arc::clone(&app), front))
        .with_state(app)
}

/// An error reply: `{"error": {"kind", "message"}}`.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, kind, message: message.into(), retry_after: None }
    }
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::BadRequest(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m),
            Refused::TooManyRecords { got, limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_records",
                format!("the request has {got} records; the limit is {limit} (--max-request-records)"),
            ),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        let kind = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "bad_request" };
        ApiError::new(status, kind, r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            kind: &'a str,
            message: &'a str,
        }
        let mut resp = json(self.status, &Body { error: Inner { kind: self.kind, message: &self.message } });
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot serialise the reply: {e}")).into_response(),
    }
}

/// Bodies above this size are parsed on the blocking pool rather than on the runtime.
const INLINE_BYTES: usize = 64 << 10;

/// Run CPU work inline when small, on tokio's blocking pool when not.
async fn cpu<T: Send + 'static>(
    small: bool,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, ApiError> {
    if small {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("a worker task failed: {e}")))
}

/// Counts a work request as in flight for as long as it lives (also when the client leaves).
struct InFlight(Arc<Metrics>);

impl InFlight {
    fn new(m: &Arc<Metrics>) -> Self {
        m.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(m))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl App {
    /// Send the valid items to the engine and wait; invalid ones stay as they are, order kept.
    async fn judge(&self, items: Vec<(Option<String>, Result<Task>)>) -> std::result::Result<Vec<Outcome>, ApiError> {
        let mut tasks = Vec::new();
        let mut slots = Vec::with_capacity(items.len());
        for (id, item) in items {
            match item {
                Ok(t) => {
                    tasks.push(t);
                    slots.push(None);
                }
                Err(error) => slots.push(Some((id, error))),
            }
        }
        self.metrics.record_errors(slots.iter().filter(|s| s.is_some()).count());
        let (tasks, results) = if tasks.is_empty() { (Vec::new(), Vec::new()) } else { self.wait(tasks).await? };
        let mut judged = tasks.into_iter().zip(results);
        Ok(slots
            .into_iter()
            .map(|slot| match slot {
                Some((id, error)) => Outcome::Invalid { id, error },
                None => match judged.next() {
                    Some((t, r)) => Outcome::Judged(t, r),
                    None => Outcome::Invalid {
                        id: None,
                        error: Error::Internal("the engine returned too few results".into()),
                    },
                },
            })
            .collect())
    }

    async fn wait(&self, tasks: Vec<Task>) -> std::result::Result<engine::Judged, ApiError> {
        let rx = match self.queue.submit(tasks, Instant::now() + self.timeout) {
            Ok(rx) => rx,
            Err(engine::Rejected::Full) => {
                self.metrics.rejected_full();
                let mut e = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "queue_full",
                    "the queue is full (--queue); retry after the Retry-After delay",
                );
                e.retry_after = Some(self.retry_after_secs);
                return Err(e);
            }
            Err(engine::Rejected::Closed) => {
                let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the engine has stopped");
                e.retry_after = Some(self.retry_after_secs);
                return Err(e);
            }
        };
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(engine::Reply::Judged(judged))) => Ok(judged),
            Ok(Ok(engine::Reply::Expired)) => {
                self.metrics.timed_out();
                Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!(
                        "the verdicts would not be ready within {:.0} s (--timeout): the requests queued ahead of \
                         this one take longer; retry",
                        self.timeout.as_secs_f64()
                    ),
                ))
            }
            Ok(Err(_)) => {
                Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the engine dropped the request"))
            }
            Err(_) => {
                self.metrics.timed_out();
                Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    format!("the verdicts were not ready within {:.0} s (--timeout)", self.timeout.as_secs_f64()),
                ))
            }
        }
    }
}

/// Metrics, the cheap size check and the API key, in front of every route.
async fn front(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let endpoint = metrics::endpoint_label(req.uri().path());
    let resp = match precheck(&app, &req) {
        Some(e) => e.into_response(),
        None => match read_body(&app, req).await {
            Ok(req) => next.run(req).await,
            Err(e) => e.into_response(),
        },
    };
    app.metrics.request(endpoint, resp.status().as_u16(), start.elapsed());
    resp
}

/// Read the whole body within the body timeout (a client that sends its headers and then
/// trickles or withholds the body gets 408 instead of holding the request open), bounded by
/// the body limit (413).
async fn read_body(app: &App, req: Request) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(app.body_timeout, axum::body::to_bytes(body, app.max_body_bytes)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within {:?}", app.body_timeout),
        )),
        Ok(Err(e)) if e.to_string().contains("length limit") => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than the limit of {} bytes (--max-body-mb)", app.max_body_bytes),
        )),
        Ok(Err(e)) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("reading the body: {e}"))),
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, axum::body::Body::from(bytes))),
    }
}

fn precheck(app: &App, req: &Request) -> Option<ApiError> {
    if let Some(key) = &app.api_key {
        if req.uri().path() != "/health" {
            let given = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                // The scheme is case-insensitive (RFC 9110): "bearer KEY" as well.
                .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
                .map(|(_, key)| key.trim());
            if !given.is_some_and(|g| same_secret(g.as_bytes(), key.as_bytes())) {
                return Some(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong `Authorization: Bearer <key>` header",
                ));
            }
        }
    }
    // Refuse a declared oversize body before reading it, so the client gets the 413 instead
    // of a reset connection while it is still sending.
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > app.max_body_bytes as u64) {
        return Some(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the body is {} bytes; the limit is {} (--max-body-mb)",
                declared.unwrap_or_default(),
                app.max_body_bytes
            ),
        ));
    }
    None
}

/// Compare without an early exit, so response time does not leak how much of a key matched.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parse a request body with `parse`, on a blocking thread when the body is large, so that the
/// HTTP workers (and `/health`) are not held up by a big body.
async fn parse_body<T: Send + 'static>(
    app: &Arc<App>,
    body: std::result::Result<Bytes, BytesRejection>,
    parse: impl FnOnce(&[u8], &App) -> std::result::Result<T, Refused> + Send + 'static,
) -> std::result::Result<T, ApiError> {
    let body = body?;
    let small = body.len() <= INLINE_BYTES;
    let app = Arc::clone(app);
    Ok(cpu(small, move || parse(&body, &app)).await??)
}

async fn get_reward(State(app): State<Arc<App>>, body: std::result::Result<Bytes, BytesRejection>) -> Response {
    let _busy = InFlight::new(&app.metrics);
    let run = async {
        let items =
            parse_body(&app, body, |b, a| wire::parse_reward_request(b, &a.rules, a.max_request_records)).await?;
        let outcomes = app.judge(items.into_iter().map(|t| (None, t)).collect()).await?;
        let small = outcomes.len() <= 256;
        let reply = cpu(small, move || json(StatusCode::OK, &wire::reward_response(outcomes))).await?;
        Ok::<_, ApiError>(reply)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn slime(State(app): State<Arc<App>>, body: std::result::Result<Bytes, BytesRejection>) -> Response {
    let _busy = InFlight::new(&app.metrics);
    let run = async {
        let item = parse_body(&app, body, |b, a| wire::parse_slime_request(b, &a.rules)).await?;
        let outcome = app.judge(vec![(None, item)]).await?.pop().ok_or_else(|| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the engine returned no result")
        })?;
        // An item the server could not judge is an error status, never a silent reward of 0.
        match wire::slime_response(outcome) {
            Ok(reply) => Ok::<_, ApiError>(json(StatusCode::OK, &reply)),
            Err(e) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, item_kind(&e.kind), e.message)),
        }
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

/// An item error's kind, as the `&'static str` the error body takes: one of [`Error::KINDS`].
fn item_kind(kind: &str) -> &'static str {
    Error::KINDS.iter().find(|k| **k == kind).copied().unwrap_or("internal")
}

async fn verify(State(app): State<Arc<App>>, body: std::result::Result<Bytes, BytesRejection>) -> Response {
    let _busy = InFlight::new(&app.metrics);
    let run = async {
        let items =
            parse_body(&app, body, |b, a| wire::parse_verify_request(b, &a.rules, a.max_request_records)).await?;
        let outcomes = app.judge(items).await?;
        let small = outcomes.len() <= 256;
        let reply = cpu(small, move || json(StatusCode::OK, &wire::verify_response(outcomes))).await?;
        Ok::<_, ApiError>(reply)
    };
    run.await.unwrap_or_else(IntoResponse::into_response)
}

async fn health(State(app): State<Arc<App>>) -> Response {
    #[derive(Serialize)]
    struct Health<'a> {
        status: &'a str,
        model: &'a str,
        queue_requests: i64,
        in_flight: i64,
        uptime_s: f64,
    }
    json(
        StatusCode::OK,
        &Health {
            status: "ok",
            model: &app.model,
            queue_requests: app.metrics.queued_requests.load(Ordering::Relaxed),
            in_flight: app.metrics.in_flight.load(Ordering::Relaxed),
            uptime_s: app.started.elapsed().as_secs_f64(),
        },
    )
}

async fn metrics_text(State(app): State<Arc<App>>) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render()).into_response()
}

/// A known route asked with the wrong method (`GET /get_reward`): a JSON error, as every other.
async fn wrong_method(req: Request) -> Response {
    let path = req.uri().path();
    let method = if matches!(path, "/health" | "/metrics") { "GET" } else { "POST" };
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} {path}: this route takes {method}", req.method()),
    )
    .into_response()
}

async fn not_found(req: Request) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route {} {}; the routes are POST /get_reward, POST /slime, POST /v1/verify, GET /health, GET /metrics",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }

    #[test]
    fn rubric_folders_load_by_id() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/rubrics");
        let rubrics = load_rubrics(Path::new(dir)).unwrap();
        assert!(rubrics.iter().any(|r| r.id == "shortform-qa"));
        let tmp = tempfile::tempdir().unwrap();
        for name in ["a.json", "b.json"] {
            std::fs::write(tmp.path().join(name), r#"{"id":"same","nuggets":["x"]}"#).unwrap();
        }
        let e = load_rubrics(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("b.json") && e.contains("same"), "{e}");
    }
}
