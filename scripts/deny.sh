#!/usr/bin/env bash
# Supply-chain check with cargo-deny (deny.toml): licences, bans (wildcards; duplicate
# versions are warnings) and sources, always. Security advisories need the RustSec database,
# cloned from GitHub: they are checked in GitHub Actions or with DENY_ADVISORIES=1, and
# skipped (said so below) elsewhere, e.g. on a builder that may reach crates.io only.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deny >/dev/null 2>&1; then
    echo "installing cargo-deny (once; a few minutes of compiling)"
    cargo install --locked cargo-deny
fi
cargo deny check licenses bans sources
if [[ "${GITHUB_ACTIONS:-}" == "true" || "${DENY_ADVISORIES:-0}" == "1" ]]; then
    cargo deny check advisories
else
    echo "cargo deny: advisories SKIPPED (the RustSec database is on GitHub, not reachable" \
         "from this builder); set DENY_ADVISORIES=1 where it is"
fi
