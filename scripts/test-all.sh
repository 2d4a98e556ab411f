#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine with a Rust toolchain, then
# runs every check: formatting, clippy (warnings are errors) and every test of the workspace.
# No test is skipped for a missing dependency: this script installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

# Python: the official MCP SDK, the independent client the mock server and gateway are tested with.
# And the real Amazon EKS MCP server (awslabs.eks-mcp-server 0.2.1), which runs offline for
# tools/list and refused calls: the gateway is tested in front of it.
# FastMCP (fastmcp 4.2.3) is the client matrix's third Python client and its typed upstream
# (tests/clients.rs).
# opentelemetry-proto (with protobuf) decodes the gateway's OTLP export in the traces' receiver
# (tests/otel/otlp_receiver.py).
step "python test environment (.venv: mcp==2.3.0, awslabs.eks-mcp-server==0.2.1, fastmcp==4.2.3, opentelemetry-proto==1.45.2, protobuf==7.36.2)"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import mcp, fastmcp, opentelemetry.proto' 2>/dev/null || [ ! -x .venv/bin/awslabs.eks-mcp-server ] \
    || [ "$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("fastmcp"))' 2>/dev/null)" != 4.2.3 ] \
    || [ "$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))' 2>/dev/null)" != 1.45.2 ]; then
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check 'mcp==2.3.0' 'awslabs.eks-mcp-server==0.2.1' 'fastmcp==4.2.3' \
        'opentelemetry-proto==1.45.2' 'protobuf==7.36.2'
fi
export TOLLGATE_TEST_PYTHON="$root/.venv/bin/python"
export TOLLGATE_TEST_EKS_SERVER="$root/.venv/bin/awslabs.eks-mcp-server"
# The OTLP receiver of the traces' tests (tests/gateway/telemetry.rs).
export TOLLGATE_TEST_OTLP_PYTHON="$root/.venv/bin/python"

# Node: the official MCP conformance suite. 0.1.13+ needs Node 22; 0.1.12 runs on Node 20.
step "node test environment (.ci/node: conformance 0.1.12, inspector 2.12.0, sdk 1.32.2, server-everything 2026.8.31, playwright-core 1.65.1, oidc-provider 9.13.3)"
if ! command -v npm >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d .ci/node/node_modules/@modelcontextprotocol/conformance ] || [ ! -d .ci/node/node_modules/@modelcontextprotocol/inspector ] || [ ! -d .ci/node/node_modules/@modelcontextprotocol/server-everything ] || [ ! -d .ci/node/node_modules/playwright-core ] || [ ! -d .ci/node/node_modules/@modelcontextprotocol/sdk ] || [ ! -d .ci/node/node_modules/oidc-provider ]; then
    npm ci --silent --no-audit --no-fund --prefix .ci/node
fi
export TOLLGATE_TEST_CONFORMANCE="$root/.ci/node/node_modules/.bin/conformance"
export TOLLGATE_TEST_INSPECTOR="$root/.ci/node/node_modules/.bin/mcp-inspector"
export TOLLGATE_TEST_PLAYWRIGHT="$root/.ci/node/node_modules/playwright-core"
# The authorization server of the OAuth tests (tests/oauth/idp.mjs).
export TOLLGATE_TEST_OIDC_PROVIDER="$root/.ci/node/node_modules/oidc-provider"

# Headless Chromium for the approvals console test (Debian's package; playwright-core drives it).
step "chromium (the approvals console test)"
if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
export TOLLGATE_TEST_CHROMIUM=/usr/bin/chromium
# One launch before the tests builds the browser's first-run caches (fonts, profile) on a quiet
# machine, instead of inside the console test while every other test loads both cores.
timeout 120 /usr/bin/chromium --headless --no-sandbox --disable-gpu --dump-dom about:blank >/dev/null 2>&1 \
    || echo "note: chromium's warm-up launch did not finish (the console test retries its own launch)"

# Redis: the shared counter store's tests start their own redis-server on a loopback port.
step "redis-server (Debian's, for the Redis counter store's tests)"
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
# The package's own service is not needed: each test runs its own server.
if command -v systemctl >/dev/null 2>&1; then systemctl stop redis-server >/dev/null 2>&1 || true; fi

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
# CI=true makes insta fail on a snapshot mismatch instead of writing a new one silently.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --all-targets --locked 2>&1 | tee "$log"
# One closing line over every test binary (cargo prints one `test result:` line per binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "\ntests: %d passed, %d failed\n", p, f }' "$log"
