#!/usr/bin/env bash
# Kill trials: run `gavel verify`, `gavel eval` and `gavel extract` (on EXTRACT.jsonl, query
# records) on a labeled file, SIGKILL each at a random
# moment, finish the run with --resume, and compare the output with an uninterrupted run, byte
# for byte (with --batch-invariant, a resumed run must equal the uninterrupted one exactly: every
# record once, same numbers). Prints one line per command: trials, identical, different.
#
#   scripts/kill-trials.sh LABELED.jsonl [TRIALS=20] [GAVEL=target/release/gavel] \
#       [EXTRACT=tests/fixtures/extract.jsonl] [COMMANDS="verify eval extract"]
#
# extract runs with --attach --batch 1 (each query generated alone, so a resumed run sees the
# same batches) and is compared byte for byte too.
#
# SIGNAL=INT sends Ctrl-C's signal instead of SIGKILL: each run then finishes and writes its
# batch in flight and exits 130 before --resume (the count of such exits is printed).
#
# Use a small file (a run of a few seconds): each trial runs it about twice.
set -euo pipefail
signal=${SIGNAL:-KILL}
# Job control: background runs get their own process group and SIGINT as by default (a
# script's background jobs otherwise start with SIGINT ignored, which gavel keeps).
[ "$signal" = INT ] && set -m
input=$1
trials=${2:-20}
gavel=${3:-target/release/gavel}
extract_input=${4:-tests/fixtures/extract.jsonl}
commands=${5:-verify eval extract}
xflags=(--attach --batch 1 --max-nuggets 4)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
flags=(--batch-invariant --batch 3 --calibration none)

# The reference runs, and their lengths, to place the kills inside them.
ms=0 xms=0
if [[ " $commands " == *" verify "* || " $commands " == *" eval "* ]]; then
  start=$(date +%s%N)
  "$gavel" verify --input "$input" --short-form llm --output "$work/ref.jsonl" "${flags[@]}" 2>/dev/null
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  "$gavel" eval --input "$input" --out "$work/ref-eval" --no-cache "${flags[@]}" >/dev/null 2>&1 || true
fi
if [[ " $commands " == *" extract "* ]]; then
  start=$(date +%s%N)
  "$gavel" extract --input "$extract_input" --output "$work/ref-extract.jsonl" "${xflags[@]}" 2>/dev/null || true
  xms=$(( ($(date +%s%N) - start) / 1000000 ))
fi

trial() { # command: verify or eval
  local cmd=$1 same=0 diff=0 killed_early=0 run_ms=$ms stopped=0
  [ "$cmd" = extract ] && run_ms=$xms
  for t in $(seq 1 "$trials"); do
    local out="$work/$cmd-$t"
    rm -rf "$out" "$out.jsonl"
    local delay_ms=$(( 300 + RANDOM % (run_ms > 400 ? run_ms - 300 : 100) ))
    if [ "$cmd" = extract ]; then
      "$gavel" extract --input "$extract_input" --output "$out.jsonl" "${xflags[@]}" 2>/dev/null &
    elif [ "$cmd" = verify ]; then
      "$gavel" verify --input "$input" --short-form llm --output "$out.jsonl" "${flags[@]}" 2>/dev/null &
    else
      "$gavel" eval --input "$input" --out "$out" --no-cache "${flags[@]}" >/dev/null 2>&1 &
    fi
    local pid=$!
    sleep "$(awk "BEGIN{print $delay_ms/1000}")"
    if kill -s "$signal" "$pid" 2>/dev/null; then :; else killed_early=$((killed_early + 1)); fi
    local rc=0
    wait "$pid" 2>/dev/null || rc=$?
    [ "$rc" = 130 ] && stopped=$((stopped + 1))
    if [ "$cmd" = extract ]; then
      "$gavel" extract --input "$extract_input" --output "$out.jsonl" --resume "${xflags[@]}" 2>/dev/null || true
      cmp -s "$out.jsonl" "$work/ref-extract.jsonl" && same=$((same + 1)) || diff=$((diff + 1))
    elif [ "$cmd" = verify ]; then
      "$gavel" verify --input "$input" --short-form llm --output "$out.jsonl" --resume "${flags[@]}" 2>/dev/null || true
      cmp -s "$out.jsonl" "$work/ref.jsonl" && same=$((same + 1)) || diff=$((diff + 1))
    else
      "$gavel" eval --input "$input" --out "$out" --resume --no-cache "${flags[@]}" >/dev/null 2>&1 || true
      cmp -s "$out/verdicts.jsonl" "$work/ref-eval/verdicts.jsonl" && same=$((same + 1)) || diff=$((diff + 1))
    fi
  done
  echo "$cmd: $trials trials (run ${run_ms} ms, SIG$signal at 0.3 s to the end; $killed_early had already finished; $stopped exited 130), identical $same, different $diff"
}
for c in $commands; do trial "$c"; done
