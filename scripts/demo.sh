#!/usr/bin/env bash
# The main job on the embedded defaults: the mock EKS server behind the gateway, enforcing the
# seed's policy on a runaway agent that cancels HealthOmics run batches as fast as it can.
# Then the audit log: every decision, verified. Needs only a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked --bin tollgate
tollgate=$(pwd)/target/debug/tollgate
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== the policy: examples/policies/seed.json (CancelAHORunBatch: 10 per minute per grant; default deny)"
"$tollgate" check examples/policies/seed.json

echo
echo "== a runaway agent (grant ci-bot) sends 15 CancelAHORunBatch calls at once, and one DeleteEKSCluster,"
echo "   through: tollgate gateway --policy seed.json --audit audit.jsonl -- tollgate mock-eks --allow-write"
{
    echo '{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"runaway-agent","version":"1"}}}'
    echo '{"jsonrpc":"2.0","method":"notifications/initialized"}'
    for i in $(seq 1 15); do
        printf '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"CancelAHORunBatch","arguments":{"batchId":"rb-%04d"}}}\n' "$i" "$(( (i - 1) % 12 + 1 ))"
    done
    echo '{"jsonrpc":"2.0","id":16,"method":"tools/call","params":{"name":"DeleteEKSCluster","arguments":{"name":"prod-eks"}}}'
    sleep 1
} | "$tollgate" gateway --policy examples/policies/seed.json --grant ci-bot --audit "$work/audit.jsonl" \
      -- "$tollgate" mock-eks --tools full --allow-write --journal "$work/journal.jsonl" > "$work/answers.jsonl"

echo
echo "== what the agent read for its 11th cancel and for the delete:"
grep -o '"text":"Tollgate rate-limited[^"]*"' "$work/answers.jsonl" | head -1 | sed 's/^"text":/  /'
grep -o '"text":"Tollgate denied[^"]*"' "$work/answers.jsonl" | head -1 | sed 's/^"text":/  /'

echo
echo "== calls that reached the mock EKS server (its journal): $(grep -c '"method":"tools/call"' "$work/journal.jsonl")"

echo
echo "== the audit log: tollgate audit query audit.jsonl"
"$tollgate" audit query "$work/audit.jsonl"

echo
echo "== tollgate audit verify audit.jsonl"
"$tollgate" audit verify "$work/audit.jsonl"

echo
echo "== the same incident as a regression test, in virtual time (3 minutes of agent, no waiting):"
echo "   tollgate test scenarios/runaway-agent.yaml"
"$tollgate" test scenarios/runaway-agent.yaml
