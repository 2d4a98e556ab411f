#!/usr/bin/env bash
# The main job on the embedded defaults. At this stage of the project it checks the example
# policies, explains how two calls are decided, and replays the seed's runaway agent
# (CancelAHORunBatch, 10 per minute per grant) through the engine in virtual time. The mock EKS
# server, the gateway and `tollgate test` join this demo as their issues land.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked --bin tollgate
tollgate=target/debug/tollgate

echo "== tollgate check examples/policies/*.json"
"$tollgate" check examples/policies/*.json

echo
echo "== tollgate explain: a delete through manage_k8s_resource under eks-recommended.json"
"$tollgate" explain examples/policies/eks-recommended.json manage_k8s_resource \
  --args '{"operation": "delete", "cluster_name": "prod-eks", "kind": "Deployment", "api_version": "apps/v1", "name": "web", "namespace": "shop"}'

echo
echo "== the seed's runaway agent, replayed in virtual time"
cargo run --quiet --locked -p tollgate-policy --example runaway_agent
