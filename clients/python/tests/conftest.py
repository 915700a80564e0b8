"""A real `gavel serve` (the repository's release binary, default model) on a free loopback port
for the whole session, and a scriptable proxy in front of it that fails requests on demand.
Both are stopped at the end of the session, also when tests fail."""

import http.server
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
sys.path.insert(0, str(HERE.parent))
FIXTURES = REPO / "tests" / "fixtures" / "rl"


def _binary():
    if os.environ.get("GAVEL_BIN"):
        return os.environ["GAVEL_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
    return str(pathlib.Path(target) / "release" / "gavel")


def _start(*args):
    binary = _binary()
    if not os.path.exists(binary):
        pytest.fail(f"{binary} is missing: run `cargo build --release` first (or set GAVEL_BIN)")
    proc = subprocess.Popen(
        [binary, "serve", "--addr", "127.0.0.1:0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    lines = []
    try:
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                pytest.fail("gavel serve exited before listening:\n" + "".join(lines))
            lines.append(line)
            if "listening on http://" in line:
                url = "http://" + line.strip().split("http://", 1)[1]
                # Drain stderr so the server never blocks on a full pipe.
                threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
                return proc, url
        pytest.fail("gavel serve did not start within 300 s")
    except BaseException:
        _stop(proc)
        raise


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def server():
    proc, url = _start()
    try:
        yield url
    finally:
        _stop(proc)


class Proxy:
    """Forwards POST /get_reward to the server; `script` is a list of actions taken by the next
    requests, one each: an HTTP status to answer with (e.g. 503), "reset" (close the connection
    without a reply), or "forward". Records every request body."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.script = []
        self.bodies = []
        self.max_records = None
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(n)
                body = json.loads(raw or b"{}")
                with proxy.lock:
                    proxy.bodies.append(body)
                    action = proxy.script.pop(0) if proxy.script else "forward"
                if proxy.max_records is not None and len(body.get("query", [])) > proxy.max_records:
                    action = 413
                if action == "reset":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if action != "forward":
                    out = json.dumps({"error": {"kind": "test", "message": f"scripted {action}"}}).encode()
                    self.send_response(int(action))
                    if int(action) == 503:
                        self.send_header("Retry-After", "1")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                    return
                req = urllib.request.Request(
                    proxy.upstream + self.path, data=raw, headers={"Content-Type": "application/json"}
                )
                try:
                    with urllib.request.urlopen(req, timeout=600) as r:
                        status, out = r.status, r.read()
                except urllib.error.HTTPError as e:
                    status, out = e.code, e.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def proxy(server):
    p = Proxy(server)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def gavel_env(monkeypatch, server):
    """Point the clients at the real server, with a short deadline."""
    for k in ("GAVEL_API_KEY", "GAVEL_ON_ERROR", "GAVEL_DATA_SOURCES", "GAVEL_CHUNK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("GAVEL_URL", server)
    monkeypatch.setenv("GAVEL_TIMEOUT", "120")
    return server


def post(url, body, path="/get_reward"):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


def fixture(name):
    return json.loads((FIXTURES / name).read_text())
