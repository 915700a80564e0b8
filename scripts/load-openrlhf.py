#!/usr/bin/env python3
"""Replay OpenRLHF v0.11's reward traffic against `gavel serve`, then judge the same records
with `gavel verify` for comparison. Standard library only.

OpenRLHF >= 0.9.1 (SingleTurnAgentExecutor) sends one `/get_reward` request per sample, all
samples of a rollout at once (rollout_batch x n_samples), each attempt on a new connection
with a 180 s total timeout, 5 attempts 1 s apart, Retry-After ignored; a sample whose 5
attempts fail has no reward. This script does exactly that for BURST samples and counts every
outcome.

    gavel serve --addr 127.0.0.1:8000 &
    python3 scripts/load-openrlhf.py --url http://127.0.0.1:8000 --data nq-shortform.jsonl \\
        --burst 150 --burst 600 --verify-bin target/release/gavel

Records are `gavel verify` short-form records (`query`, `answer`, `gold_answers`); the request
is the chat-templated prompt + answer as query, the prompt, and `{"query", "gold_answers"}` as
the label. Each burst takes the next records of the file, so no record is judged twice. After
each burst the script checks that `/health` still answers. With `--verify-bin`, the records of
the first burst go through `gavel verify` (one process, same model) and the rewards are
compared. Prints a Markdown table and writes JSON with `--json`.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

TRIES = 5  # OpenRLHF's try_max_times
TIMEOUT = 180.0  # aiohttp.ClientTimeout(total=180), per attempt
PAUSE = 1.0  # asyncio.sleep(1) between attempts

TEMPLATE = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"


def request_body(record):
    prompt = TEMPLATE.format(q=record["query"])
    label = json.dumps({"query": record["query"], "gold_answers": record["gold_answers"]})
    return {"query": [prompt + record["answer"] + "<|im_end|>"], "prompts": [prompt], "labels": [label]}


async def post_once(host, port, body):
    """One attempt on a new connection; returns (status, parsed JSON or None)."""
    data = json.dumps(body).encode()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(
            b"POST /get_reward HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (host.encode(), port, len(data)) + data
        )
        await writer.drain()
        raw = await reader.read()
    finally:
        writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    if not head:
        raise ConnectionError("the server closed the connection without a reply")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        payload = dechunk(payload)
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, None


def dechunk(payload):
    out, rest = b"", payload
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size.split(b";")[0] or b"0", 16)
        if n == 0:
            break
        out, rest = out + rest[:n], rest[n + 2 :]
    return out


async def sample(host, port, body, start_gate):
    """One OpenRLHF sample: up to 5 attempts; returns its outcome."""
    await start_gate.wait()
    t0 = time.monotonic()
    failures = []
    for attempt in range(TRIES):
        try:
            status, reply = await asyncio.wait_for(post_once(host, port, body), TIMEOUT)
            if status == 200 and reply and len(reply.get("rewards", [])) == 1:
                return {"reward": reply["rewards"][0], "latency": time.monotonic() - t0, "attempts": attempt + 1,
                        "failures": failures, "item_error": bool(reply.get("errors"))}
            failures.append(f"http {status}")
        except asyncio.TimeoutError:
            failures.append("client timeout 180 s")
        except (ConnectionError, OSError) as e:
            failures.append(f"connection: {type(e).__name__}")
        await asyncio.sleep(PAUSE)
    return {"reward": None, "latency": time.monotonic() - t0, "attempts": TRIES, "failures": failures}


def pct(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(p / 100 * len(values) + 0.5) - 1))]


def health(url):
    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as r:
            return json.load(r).get("status") == "ok"
    except OSError:
        return False


async def burst(url, records):
    u = urllib.parse.urlparse(url)
    gate = asyncio.Event()
    tasks = [asyncio.create_task(sample(u.hostname, u.port or 80, request_body(r), gate)) for r in records]
    t0 = time.monotonic()
    gate.set()
    results = await asyncio.gather(*tasks)
    wall = time.monotonic() - t0
    ok = [r for r in results if r["reward"] is not None]
    failures = {}
    for r in results:
        for f in r["failures"]:
            failures[f] = failures.get(f, 0) + 1
    lat = [r["latency"] for r in ok]
    return {
        "burst": len(records),
        "wall_s": round(wall, 1),
        "rewarded": len(ok),
        "missing": len(results) - len(ok),
        "item_errors": sum(1 for r in ok if r.get("item_error")),
        "requests_per_s": round(len(ok) / wall, 2) if wall else 0.0,
        "p50_s": round(pct(lat, 50), 1),
        "p99_s": round(pct(lat, 99), 1),
        "attempts": {str(k): sum(1 for r in results if r["attempts"] == k and r["reward"] is not None) for k in range(1, TRIES + 1)},
        "failed_attempts": failures,
        "health_after": health(url),
        "rewards": [r["reward"] for r in results],
    }


def verify(binary, records, extra_args):
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for r in records:
            f.write(json.dumps({k: r[k] for k in ("id", "query", "answer", "gold_answers") if k in r}) + "\n")
        path = f.name
    try:
        t0 = time.monotonic()
        out = subprocess.run([binary, "verify", "--input", path, *extra_args], capture_output=True, text=True, check=False)
        wall = time.monotonic() - t0
    finally:
        os.unlink(path)
    rewards = []
    for line in out.stdout.splitlines():
        rec = json.loads(line)
        rewards.append(None if rec.get("error") else float(bool(rec.get("correct"))))
    if len(rewards) != len(records):
        sys.exit(f"gavel verify gave {len(rewards)} records for {len(records)}: {out.stderr[-2000:]}")
    return {"records": len(records), "wall_s": round(wall, 1), "records_per_s": round(len(records) / wall, 2), "rewards": rewards}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--data", required=True, help="JSON Lines with query, answer, gold_answers")
    ap.add_argument("--burst", type=int, action="append", required=True, help="samples in a burst; repeat for more bursts")
    ap.add_argument("--skip", type=int, default=0, help="records of --data to skip first")
    ap.add_argument("--verify-bin", help="a gavel binary: judge the first burst's records with `gavel verify` too")
    ap.add_argument("--verify-arg", action="append", default=[], help="extra argument for gavel verify (repeat)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    with open(args.data) as f:
        records = [json.loads(line) for line in f if line.strip()]
    need = args.skip + sum(args.burst)
    if len(records) < need:
        sys.exit(f"--data has {len(records)} records; the bursts need {need}")
    if not health(args.url):
        sys.exit(f"no gavel serve answers at {args.url}/health")
    out, at = {"bursts": []}, args.skip
    for n in args.burst:
        batch = records[at : at + n]
        at += n
        r = asyncio.run(burst(args.url, batch))
        print(json.dumps({k: v for k, v in r.items() if k != "rewards"}), file=sys.stderr)
        out["bursts"].append(r)
    if args.verify_bin:
        first = records[args.skip : args.skip + args.burst[0]]
        v = verify(args.verify_bin, first, args.verify_arg)
        served = out["bursts"][0]["rewards"]
        v["agree"] = sum(1 for a, b in zip(served, v["rewards"]) if a is not None and a == b)
        v["compared"] = sum(1 for a in served if a is not None)
        out["verify"] = v
    print("| run | samples | wall | rewarded | missing | requests/s | p50 / p99 latency | attempts 1/2/3/4/5 | failed attempts | /health after |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for b in out["bursts"]:
        a = "/".join(str(b["attempts"][str(k)]) for k in range(1, TRIES + 1))
        f = ", ".join(f"{k}: {v}" for k, v in sorted(b["failed_attempts"].items())) or "none"
        print(f"| burst | {b['burst']} | {b['wall_s']} s | {b['rewarded']} | {b['missing']} | {b['requests_per_s']} | "
              f"{b['p50_s']} / {b['p99_s']} s | {a} | {f} | {'ok' if b['health_after'] else 'DOWN'} |")
    if "verify" in out:
        v = out["verify"]
        print(f"| `gavel verify`, first burst's records | {v['records']} | {v['wall_s']} s | {v['records']} | | "
              f"{v['records_per_s']} records/s | | | | |")
        print(f"\nrewards equal to gavel verify's: {v['agree']} of {v['compared']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
