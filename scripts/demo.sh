#!/usr/bin/env bash
# The main job on the embedded defaults. At this stage of the project it replays the seed's
# runaway agent (CancelAHORunBatch, 10 per minute per grant) through the strict sliding-window
# limiter in virtual time and prints the transcript. The mock EKS server, the gateway and
# `tollgate test` join this demo as their issues land.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --locked -p tollgate-policy --example runaway_agent
