#!/usr/bin/env bash
# Runs every test of the project, exactly as CI does (.ci/run calls this script):
# prerequisites, the real tiny.en model, format and lint checks, the Rust suites against the
# real server and model, then the browser and deployment suites.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
scripts/fetch-model.sh tiny.en

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets --quiet -- -D warnings
echo "== cargo deny (licences, bans, sources; advisories where the database is reachable)"
scripts/deny.sh
echo "== cargo test"
cargo test --release --workspace
echo "== transcript storage on a real PostgreSQL; files through the openai SDK"
scripts/test-storage.sh all
echo "== monitoring and Kubernetes: promtool rule tests, a real Prometheus scraping the server,"
echo "   the manifests rendered and validated offline"
scripts/test-scale.sh all
echo "== browser tests (headless Chromium)"
scripts/test-browser.sh
echo "== containers and deploy: lints, the production image on the real Docker engine, and a"
echo "   zero-downtime deploy over a real sshd with rollback"
scripts/test-deploy.sh all
echo "== several replicas: two app replicas behind nginx on the real Docker engine, live streams,"
echo "   one drained (reuses the image the container suite just built)"
scripts/test-scale.sh replicas
