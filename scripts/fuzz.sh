#!/usr/bin/env bash
# make fuzz: runs every fuzz target of fuzz/ (cargo-fuzz, libFuzzer, nightly
# toolchain) one after another, each for FUZZ_RUNS executions (default
# 1000000) with a FUZZ_MAX_TIME safety bound per target (default 600 s),
# and fails if any target crashes, panics, times out on one input
# (FUZZ_TIMEOUT, default 10 s) or runs out of memory. See docs/fuzzing.md.
#
#   FUZZ_TARGETS="counter hlc" make fuzz    only these targets
#   FUZZ_RUNS=100000 make fuzz              a shorter run
#
# The corpus grows in fuzz/corpus/<target> (not in git; seeds are in
# fuzz/seeds/<target>), crashes land in fuzz/artifacts/<target>/, and each
# target's libFuzzer log in fuzz/artifacts/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

RUNS=${FUZZ_RUNS:-1000000}
MAX_TIME=${FUZZ_MAX_TIME:-600}
TIMEOUT=${FUZZ_TIMEOUT:-10}
RSS_MB=${FUZZ_RSS_LIMIT_MB:-2048}

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: needs the nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io (takes a few minutes)"
    cargo install cargo-fuzz --locked
fi

cd fuzz
# Release build with debug assertions and overflow checks. No sanitizer by
# default: sync_core has no unsafe code, and without ASan the targets run
# 2-4 times faster (panics, overflows, hangs, stack overflows and running
# out of memory are caught either way). FUZZ_SANITIZER=address to add it.
# `run` below reuses this build.
FUZZ_FLAGS=(--debug-assertions --sanitizer "${FUZZ_SANITIZER:-none}")
cargo +nightly fuzz build "${FUZZ_FLAGS[@]}"

targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
mkdir -p artifacts
failed=()
summary=()
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    dirs=("corpus/$t")
    [ -d "seeds/$t" ] && dirs+=("seeds/$t")
    log="artifacts/$t.log"
    echo "fuzz: $t ($RUNS runs, at most ${MAX_TIME}s)"
    start=$(date +%s)
    set +e
    cargo +nightly fuzz run "${FUZZ_FLAGS[@]}" "$t" "${dirs[@]}" -- \
        -runs="$RUNS" -max_total_time="$MAX_TIME" -timeout="$TIMEOUT" \
        -rss_limit_mb="$RSS_MB" -dict=wire.dict -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    secs=$(($(date +%s) - start))
    done_line=$(grep -E '^Done [0-9]+ runs' "$log" | tail -1 || true)
    runs=$(sed -E 's/^Done ([0-9]+) runs.*/\1/' <<<"$done_line")
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        summary+=("$(printf '%-18s FAILED (exit %s) after %ss; see fuzz/%s' "$t" "$rc" "$secs" "$log")")
        echo "fuzz: $t FAILED; the end of its log:" >&2
        grep -E 'panicked|ERROR|SUMMARY|Test unit written|Base64|timeout' "$log" | head -20 >&2 || true
        tail -5 "$log" >&2
    else
        note=""
        if [ -n "$runs" ] && [ "$runs" -lt "$RUNS" ]; then
            note=" (stopped by the ${MAX_TIME}s bound before $RUNS runs)"
        fi
        summary+=("$(printf '%-18s ok  %9s runs in %4ss%s' "$t" "${runs:-?}" "$secs" "$note")")
    fi
done

echo
echo "fuzz summary:"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: crashed: ${failed[*]} (inputs in fuzz/artifacts/<target>/; docs/fuzzing.md says how to reproduce)" >&2
    exit 1
fi
