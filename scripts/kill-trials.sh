#!/usr/bin/env bash
# Kill trials: run `gavel verify` and `gavel eval` on a labeled file, SIGKILL each at a random
# moment, finish the run with --resume, and compare the output with an uninterrupted run, byte
# for byte (with --batch-invariant, a resumed run must equal the uninterrupted one exactly: every
# record once, same numbers). Prints one line per command: trials, identical, different.
#
#   scripts/kill-trials.sh LABELED.jsonl [TRIALS=20] [GAVEL=target/release/gavel]
#
# Use a small file (a run of a few seconds): each trial runs it about twice.
set -euo pipefail
input=$1
trials=${2:-20}
gavel=${3:-target/release/gavel}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(--batch-invariant --batch 3 --calibration none)

# verify: the reference run, and its length, to place the kills inside it.
start=$(date +%s%N)
"$gavel" verify --input "$input" --short-form llm --output "$work/ref.jsonl" "${flags[@]}" 2>/dev/null
ms=$(( ($(date +%s%N) - start) / 1000000 ))
"$gavel" eval --input "$input" --out "$work/ref-eval" --no-cache "${flags[@]}" >/dev/null 2>&1 || true

trial() { # command: verify or eval
  local cmd=$1 same=0 diff=0 killed_early=0
  for t in $(seq 1 "$trials"); do
    local out="$work/$cmd-$t"
    rm -rf "$out" "$out.jsonl"
    local delay_ms=$(( 300 + RANDOM % (ms > 400 ? ms - 300 : 100) ))
    if [ "$cmd" = verify ]; then
      "$gavel" verify --input "$input" --short-form llm --output "$out.jsonl" "${flags[@]}" 2>/dev/null &
    else
      "$gavel" eval --input "$input" --out "$out" --no-cache "${flags[@]}" >/dev/null 2>&1 &
    fi
    local pid=$!
    sleep "$(awk "BEGIN{print $delay_ms/1000}")"
    if kill -9 "$pid" 2>/dev/null; then :; else killed_early=$((killed_early + 1)); fi
    wait "$pid" 2>/dev/null || true
    if [ "$cmd" = verify ]; then
      "$gavel" verify --input "$input" --short-form llm --output "$out.jsonl" --resume "${flags[@]}" 2>/dev/null
      cmp -s "$out.jsonl" "$work/ref.jsonl" && same=$((same + 1)) || diff=$((diff + 1))
    else
      "$gavel" eval --input "$input" --out "$out" --resume --no-cache "${flags[@]}" >/dev/null 2>&1 || true
      cmp -s "$out/verdicts.jsonl" "$work/ref-eval/verdicts.jsonl" && same=$((same + 1)) || diff=$((diff + 1))
    fi
  done
  echo "$cmd: $trials trials (run ${ms} ms, killed at 0.3 s to the end; $killed_early had already finished), identical $same, different $diff"
}
trial verify
trial eval
