#!/usr/bin/env bash
# The main job on the embedded defaults: `tollgate demo` starts the mock EKS server in process,
# a real `tollgate gateway` process in front of it with the seed's policy, and replays a runaway
# agent live through it (scenarios/runaway-burst.yaml, on a gateway clock 20x the wall clock);
# then the audit log, verified, what reached the upstream, and the same scenario in virtual time.
# Needs only a Rust toolchain. Flags go to `tollgate demo` (e.g. --keep DIR, --time-scale F).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked --bin tollgate
exec target/debug/tollgate demo "$@"
