#!/usr/bin/env bash
# make bench: release builds, the sync_core merge bench, then the pg_sync /
# sqlite_sync benchmarks against a throwaway tuned Postgres 15 cluster.
# Writes docs/benchmarks.md and docs/bench-*.png.
#
# Environment (all optional): BENCH_SCALE (1; 0.1 for a quick try),
# BENCH_RUNS (3), BENCH_PGBENCH_SECS (4), BENCH_ONLY (e.g. P1,P9),
# BENCH_OUT_DIR (docs), BENCH_SKIP_BUILD=1 (use the artifacts as they are),
# and for the load figure P10: BENCH_LOAD_SECS (120 per topology, times
# BENCH_SCALE), BENCH_LOAD_DEVICES (100), BENCH_LOAD_INTERVAL_MS (2000),
# BENCH_LOAD_POOL (4). P10 needs pgbouncer (scripts/deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PG_CONFIG=${PG_CONFIG:-/usr/bin/pg_config}
export PATH="$HOME/.cargo/bin:$PATH"
start=$(date +%s)

# The charts' font.
if [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    echo "bench: installing fonts-dejavu-core (chart labels)"
    $SUDO apt-get update -qq || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq fonts-dejavu-core >/dev/null || \
        echo "bench: no font; charts will be skipped"
fi

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    echo "bench: building pg_sync (release) and installing it into $($PG_CONFIG --pkglibdir)"
    (cd pg_sync && cargo pgrx install --release --pg-config "$PG_CONFIG" >/dev/null)
    echo "bench: building sqlite_sync (release)"
    if ! cargo build -q --manifest-path sqlite_sync/Cargo.toml --release; then
        echo "bench: sqlite_sync does not build; its figures will read 'not measured'"
    fi
    echo "bench: building the bench binary (release)"
    cargo build -q -p sync_bench --release --bin bench
    cargo test -q -p sync_bench --release
fi

work=$(mktemp -d /tmp/pg_sync_bench_run.XXXXXX)
export BENCH_CLUSTER_FILE="$work/cluster"
cleanup() {
    # A cluster left behind by a killed bench binary.
    if [ -f "$BENCH_CLUSTER_FILE" ]; then
        dir=$(cat "$BENCH_CLUSTER_FILE")
        if [ -d "$dir/data" ]; then
            as_pg=(); [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
            # The load figure's standby first, then the primary.
            for d in "$dir"/standby_*/data "$dir/data"; do
                [ -d "$d" ] || continue
                "${as_pg[@]}" /usr/lib/postgresql/15/bin/pg_ctl -D "$d" -m immediate -w stop \
                    >/dev/null 2>&1 || true
            done
            rm -rf "$dir"
        fi
    fi
    rm -rf "$work"
}
trap cleanup EXIT

echo "bench: sync_core merge throughput"
MERGE_BENCH_OUT="$work/merge.json" cargo bench -q -p sync_core --bench merge 2>/dev/null
export BENCH_MERGE_JSON="$work/merge.json"

export BENCH_RUSTC="$(rustc --version)"
export SQLITE_SYNC_LIB="${SQLITE_SYNC_LIB:-$ROOT/target/release/libsqlite_sync.so}"
echo "bench: running target/release/bench (about 15 minutes at BENCH_SCALE=1)"
RUST_BACKTRACE=1 target/release/bench
echo "bench: done in $(( $(date +%s) - start ))s; see docs/benchmarks.md"
