#!/usr/bin/env bash
# Instructions per call of the virtual-time replay benchmark, for each executable given
# (default: target/release/tollgate): `bench replay` of 40,000 calls under cachegrind, less the
# same run with 2 calls (loading the catalogue and the scenario), divided by 40,000. Counting
# instructions is exact where wall-clock timing on a shared machine is not; it does not see
# memory costs (page faults, cache misses), which the wall-clock benchmark does.
# Needs valgrind (`apt-get install valgrind`). Used for docs/PERFORMANCE.md.
set -euo pipefail
calls=40000
refs() {
    valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
        "$1" bench replay --rounds 1 --replay-calls "$2" 2>&1 >/dev/null \
        | sed -nE 's/.*I +refs: +([0-9,]+).*/\1/p' | tr -d ,
}
for bin in "${@:-target/release/tollgate}"; do
    full=$(refs "$bin" "$calls")
    fixed=$(refs "$bin" 2)
    echo "$bin: $(( (full - fixed) / calls )) instructions a call ($full total, $fixed fixed)"
done
