#!/usr/bin/env bash
# Fuzz gavel's parsers with cargo-fuzz (libFuzzer), each target for SECONDS, and print one line
# per target: executions, seconds, corpus size, crashes (inputs saved under fuzz/artifacts/).
#
#   cargo install cargo-fuzz        # once; needs the nightly toolchain
#   scripts/fuzz.sh [SECONDS=600] [TARGET ...]
#
# Targets (fuzz/fuzz_targets/): record, rubric, templates, reasoned, openai, server_bodies.
# Seeds are in fuzz/corpus/<target>/seed-*; what the fuzzer adds there is not committed.
# Built without a sanitizer (safe Rust: panics, overflows with debug assertions, hangs and
# runaway memory are what it looks for). A crash becomes a regression test in the crate.
set -uo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-600}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(record rubric templates reasoned openai server_bodies)
cargo +nightly fuzz build -s none -a >/dev/null 2>&1 || { echo "fuzz build failed" >&2; exit 2; }
echo "| target | executions | seconds | exec/s | corpus | crashes |"
echo "|---|---|---|---|---|---|"
for t in "${targets[@]}"; do
  log=$(mktemp)
  before=$(ls artifacts/"$t" 2>/dev/null | wc -l)
  cargo +nightly fuzz run -s none -a "$t" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 >"$log" 2>&1
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)
  took=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | grep -oE 'in [0-9]+' | grep -oE '[0-9]+' | tail -1)
  after=$(ls artifacts/"$t" 2>/dev/null | wc -l)
  corpus=$(ls corpus/"$t" | wc -l)
  took=${took:-$secs}
  echo "| $t | ${runs:-?} | $took | $(( ${runs:-0} / (took > 0 ? took : 1) )) | $corpus | $((after - before)) |"
  if [ "$after" -gt "$before" ]; then grep -E "panicked|ERROR|SUMMARY" "$log" | head -5 >&2; fi
  rm -f "$log"
done
