#!/usr/bin/env python3
"""Soak `gavel serve`: a steady mixed load on loopback for a fixed time, then lost replies,
RSS growth and latency per window. Standard library only.

    python3 scripts/soak.py --gavel target/release/gavel --data nq-shortform.jsonl \\
        --minutes 30 --clients 4 --json soak.json

The script starts the server itself (`gavel serve --addr 127.0.0.1:0`, default model and flags,
plus anything after `--`) so that it can read the server's RSS from /proc, and stops it at the
end (also on Ctrl-C). Each client loops: pick a request kind in turn, send it on a new
connection, check the reply, think for `--think` seconds. The kinds:

- `get_reward`: OpenRLHF's shape, one short-form sample from `--data` (query/answer/gold_answers);
- `slime`: slime's shape, the same kind of sample;
- `verify`: `/v1/verify` with one long-form record from `--longform` (nuggets judged by the model);
- `bad`: a malformed body (must get 400, naming the problem);
- `health`: `GET /health` (must answer 200 while the model works).

A reply counts as lost when the connection fails, the status is not the expected one (200, or
400 for `bad`; a 503 with Retry-After is retried after it and counted apart), or a 200 body does
not parse or lacks its reward. RSS is sampled every 10 s; the first window's median is the
baseline (after warm-up), growth is the last window's median against it. Latency is reported per
window (p50/p99 over the model-judged kinds) so a drift shows.
"""

import argparse
import http.client
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time

KINDS = ["get_reward", "verify", "slime", "bad", "get_reward", "health"]
TEMPLATE = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"


def load(path, n):
    out = []
    with open(path) as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
            if len(out) >= n:
                break
    return out


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


class Soak:
    def __init__(self, host, port, short, longform):
        self.host, self.port = host, port
        self.short, self.longform = short, longform
        self.lock = threading.Lock()
        self.events = []  # (t_end, kind, ok, latency, status, note)
        self.retried_503 = 0
        self.counter = itertools.count()

    def request(self, method, path, body):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        try:
            data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
            headers = {"Content-Type": "application/json", "Connection": "close"}
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            return r.status, r.getheader("Retry-After"), r.read()
        finally:
            conn.close()

    def one(self, kind):
        i = next(self.counter)
        s = self.short[i % len(self.short)]
        if kind == "get_reward":
            prompt = TEMPLATE.format(q=s["query"])
            label = json.dumps({"query": s["query"], "gold_answers": s["gold_answers"]})
            req, want = ("POST", "/get_reward", {"query": [prompt + s["answer"]], "prompts": [prompt], "labels": [label]}), 200
        elif kind == "slime":
            label = json.dumps({"query": s["query"], "gold_answers": s["gold_answers"]})
            req, want = ("POST", "/slime", {"prompt": [{"role": "user", "content": s["query"]}], "response": s["answer"], "label": label}), 200
        elif kind == "verify":
            rec = dict(self.longform[i % len(self.longform)])
            rec["id"] = f"soak-{i}"
            req, want = ("POST", "/v1/verify", {"records": [rec]}), 200
        elif kind == "bad":
            req, want = ("POST", "/get_reward", b'{"query": ["x"], "labels": [1, 2'), 400
        else:
            req, want = ("GET", "/health", None), 200
        t0 = time.monotonic()
        while True:
            try:
                status, retry_after, body = self.request(*req)
            except Exception as e:  # a failed connection is a lost reply
                return t0, False, None, f"{type(e).__name__}: {e}"
            if status == 503 and retry_after:
                with self.lock:
                    self.retried_503 += 1
                time.sleep(float(retry_after))
                continue
            break
        if status != want:
            return t0, False, status, body[:200].decode(errors="replace")
        if want == 200:
            try:
                v = json.loads(body)
            except ValueError:
                return t0, False, status, "200 body is not JSON"
            ok = {
                "get_reward": lambda: isinstance(v.get("rewards"), list) and len(v["rewards"]) == 1,
                "slime": lambda: isinstance(v.get("reward"), (int, float)),
                "verify": lambda: v["records"][0].get("error") is None and "scores" in v["records"][0],
                "health": lambda: v.get("status") == "ok",
            }[kind]()
            if not ok:
                return t0, False, status, body[:200].decode(errors="replace")
        return t0, True, status, ""

    def client(self, offset, stop_at, think):
        kinds = KINDS[offset % len(KINDS):] + KINDS[: offset % len(KINDS)]
        for kind in itertools.cycle(kinds):
            if time.monotonic() >= stop_at:
                return
            t0, ok, status, note = self.one(kind)
            t1 = time.monotonic()
            with self.lock:
                self.events.append((t1, kind, ok, t1 - t0, status, note))
            time.sleep(think)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gavel", default="target/release/gavel")
    ap.add_argument("--data", required=True, help="short-form records (query, answer, gold_answers)")
    ap.add_argument("--longform", default=os.path.join(os.path.dirname(__file__), "..", "examples", "longform.jsonl"))
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--think", type=float, default=0.5, help="seconds between a client's requests")
    ap.add_argument("--window", type=float, default=300, help="seconds per report window")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("serve_args", nargs="*", help="after --: more `gavel serve` flags")
    a = ap.parse_args()

    short = [r for r in load(a.data, 2000) if r.get("gold_answers")]
    longform = load(a.longform, 100)
    server = subprocess.Popen(
        [a.gavel, "serve", "--addr", "127.0.0.1:0", *a.serve_args],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        port = None
        for line in server.stderr:
            if "listening on http://" in line:
                port = int(line.strip().rsplit(":", 1)[1])
                break
        if port is None:
            sys.exit("gavel serve exited before listening")
        threading.Thread(target=lambda: [None for _ in server.stderr], daemon=True).start()
        soak = Soak("127.0.0.1", port, short, longform)
        start = time.monotonic()
        stop_at = start + a.minutes * 60
        clients = [threading.Thread(target=soak.client, args=(k, stop_at, a.think)) for k in range(a.clients)]
        for c in clients:
            c.start()
        rss = []  # (t, KiB)
        while any(c.is_alive() for c in clients):
            rss.append((time.monotonic() - start, rss_kib(server.pid)))
            time.sleep(10)
        for c in clients:
            c.join()
        alive = server.poll() is None
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    ev = [(t - start, *rest) for (t, *rest) in soak.events]
    lost = [e for e in ev if not e[2]]
    windows = []
    n_win = max(1, int(round(a.minutes * 60 / a.window)))
    for w in range(n_win):
        lo, hi = w * a.window, (w + 1) * a.window
        judged = [e[3] for e in ev if lo <= e[0] < hi and e[1] in ("get_reward", "slime", "verify") and e[2]]
        health = [e[3] for e in ev if lo <= e[0] < hi and e[1] == "health" and e[2]]
        r = [k for (t, k) in rss if lo <= t < hi and k]
        windows.append({
            "from_s": lo, "to_s": hi, "requests": sum(1 for e in ev if lo <= e[0] < hi),
            "p50_s": pct(judged, 50), "p99_s": pct(judged, 99), "health_p99_s": pct(health, 99),
            "rss_mib": statistics.median(r) / 1024 if r else None,
        })
    base, last = windows[0]["rss_mib"], windows[-1]["rss_mib"]
    out = {
        "minutes": a.minutes, "clients": a.clients, "think_s": a.think,
        "requests": len(ev), "by_kind": {k: sum(1 for e in ev if e[1] == k) for k in sorted(set(KINDS))},
        "lost": len(lost), "lost_examples": [e[1:] for e in lost[:5]], "retried_503": soak.retried_503,
        "server_alive_at_end": alive,
        "rss_first_window_mib": base, "rss_last_window_mib": last,
        "rss_growth": (last - base) / base if base and last else None,
        "rss_max_mib": max(k for (_, k) in rss if k) / 1024,
        "windows": windows,
    }
    print(f"{out['requests']} requests in {a.minutes:g} min, {a.clients} clients; lost {out['lost']}; "
          f"503 retried {out['retried_503']}; server alive at end: {alive}")
    print(f"RSS first window {base:.0f} MiB, last {last:.0f} MiB ({100 * out['rss_growth']:+.1f}%), max {out['rss_max_mib']:.0f} MiB")
    print("| window | requests | p50 s | p99 s | /health p99 s | RSS MiB |")
    print("|---|---|---|---|---|---|")
    for w in windows:
        print(f"| {w['from_s'] / 60:g}-{w['to_s'] / 60:g} min | {w['requests']} | {w['p50_s']:.2f} | "
              f"{w['p99_s']:.2f} | {w['health_p99_s']:.3f} | {w['rss_mib']:.0f} |")
    for e in lost[:5]:
        print("lost:", e, file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    sys.exit(1 if lost or not alive else 0)


if __name__ == "__main__":
    main()
