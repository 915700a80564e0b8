#!/usr/bin/env python3
"""Peer benchmark: gavel against the plain llama-server scoring loop a user would write.

The loop: one /completion request per (answer, nugget), cache_prompt on (the answer prefix is
reused for the answer's consecutive nuggets), n_predict 1, n_probs 50, a user turn of two fixed
demonstrations + "Passage: {answer}\\nStatement: {nugget}\\nDoes the passage support the
statement? Answer:", yes/no read from the first token. `gavel verify` (default configuration,
or the flags given after --) judges the same records. Both run in this process's run, on the
same machine, each over all the records twice, in the order loop, gavel, gavel, loop, so that a
machine whose speed drifts during the run favours neither. Each leg judges every record in one
run, as a user would: gavel pays a rubric's content-free baseline once per run, and a rubric
judged against several answers shares it (splitting the records between two gavel processes
would pay it twice). The script prints each leg, both rates and their ratio. `--legs 2` runs
each side once (loop, gavel): half the time, no drift correction.

    scripts/peer-bench.py --input realsumm.jsonl --records 200 [--threads 2] [-- --batch-invariant]

The llama-server is the one `make test` builds ($GAVEL_LLAMA_SERVER, else
scripts/build-llama-server.sh prints its path); the model is gavel's default (`gavel fetch-model`).
Standard library only.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMOS = (
    "Passage: The Eiffel Tower was completed in 1889 in Paris.\n"
    "Statement: The Eiffel Tower is in Paris.\n"
    "Does the passage support the statement? Answer: yes\n\n"
    "Passage: Canberra is the capital of Australia.\n"
    "Statement: Sydney is the capital of Australia.\n"
    "Does the passage support the statement? Answer: no\n\n"
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body):
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True)
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--legs", type=int, choices=(2, 4), default=4,
                    help="4: loop, gavel, gavel, loop (default); 2: loop, gavel")
    ap.add_argument("--gavel", default=os.path.join(ROOT, "target", "release", "gavel"))
    ap.add_argument("gavel_flags", nargs="*", help="extra flags for gavel verify (after --)")
    args = ap.parse_args()

    records = []
    with open(args.input, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
            if len(records) == args.records:
                break

    server_bin = os.environ.get("GAVEL_LLAMA_SERVER") or subprocess.check_output(
        [os.path.join(ROOT, "scripts", "build-llama-server.sh")], text=True
    ).strip()
    model = subprocess.check_output([args.gavel, "fetch-model"], text=True).strip()
    port = free_port()
    server = subprocess.Popen(
        [server_bin, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-np", "1", "-c", "8192",
         "-t", str(args.threads), "--no-webui"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    legs = {"loop": [0, 0.0], "gavel": [0, 0.0]}  # verdicts, seconds
    yes = 0
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except Exception:
                time.sleep(0.2)
        else:
            sys.exit("llama-server did not come up")
        order = ["loop", "gavel", "gavel", "loop"][: args.legs]
        for name in order:
            part = records
            if name == "loop":
                n, took, y = run_loop(base, part)
                yes = y
            else:
                n, took = run_gavel(args, part)
            legs[name][0] += n
            legs[name][1] += took
            print(f"  {name:<5} {len(part)} records: {n} verdicts in {took:.1f} s, {n / took:.2f} verdicts/s", flush=True)
    finally:
        server.terminate()
        server.wait()

    pairs = sum(len(r.get("nuggets", [])) for r in records)
    loop_rate = legs["loop"][0] / legs["loop"][1]
    gavel_rate = legs["gavel"][0] / legs["gavel"][1]
    print(f"records {len(records)}, verdicts {pairs} per leg (gavel wrote {legs['gavel'][0]} in all), threads {args.threads}")
    print(f"llama-server loop  {loop_rate:.2f} verdicts/s ({legs['loop'][1]:.1f} s, {yes} of {pairs} judged yes)")
    print(f"gavel verify       {gavel_rate:.2f} verdicts/s ({legs['gavel'][1]:.1f} s, model load included)")
    print(f"ratio              {gavel_rate / loop_rate:.2f}x")


def run_loop(base, records):
    """The plain loop over `records`: (verdicts, seconds, judged yes)."""
    pairs = [(r["answer"], n if isinstance(n, str) else n["text"]) for r in records for n in r.get("nuggets", [])]
    yes = 0
    t0 = time.time()
    for answer, nugget in pairs:
        prompt = (
            "<|im_start|>user\n" + DEMOS + f"Passage: {answer}\nStatement: {nugget}\n"
            "Does the passage support the statement? Answer:<|im_end|>\n<|im_start|>assistant\n"
        )
        r = post(base + "/completion", {"prompt": prompt, "n_predict": 1, "n_probs": 50, "cache_prompt": True,
                                        "temperature": 0})
        probs = r.get("completion_probabilities", [{}])[0]
        alts = probs.get("top_logprobs") or probs.get("probs") or []
        p = {}
        for a in alts:
            tok = (a.get("token") or a.get("tok_str") or "").strip().lower()
            v = a.get("logprob", a.get("prob"))
            if tok in ("yes", "no") and tok not in p:
                p[tok] = v
        yes += int(p.get("yes", -1e9) > p.get("no", -1e9))
    return len(pairs), time.time() - t0, yes


def run_gavel(args, records):
    """`gavel verify` over `records` (model load included): (verdicts written, seconds)."""
    subset = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"gavel-peer-{os.getpid()}.jsonl")
    with open(subset, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    try:
        t0 = time.time()
        out = subprocess.run([args.gavel, "verify", "--input", subset, "--threads", str(args.threads)]
                             + args.gavel_flags, capture_output=True, text=True)
        took = time.time() - t0
    finally:
        os.unlink(subset)
    if out.returncode not in (0, 1):
        sys.exit(out.stderr)
    return sum(len(json.loads(l).get("verdicts", [])) for l in out.stdout.splitlines() if l.strip()), took


if __name__ == "__main__":
    main()
