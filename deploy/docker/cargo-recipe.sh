#!/usr/bin/env bash
# Splits a Cargo workspace into what the image build caches in two layers (the idea of
# cargo-chef, in a few lines of shell, since the build runs without BuildKit cache mounts):
#
#   RECIPE   every Cargo.toml, Cargo.lock and build.rs, with stub sources at each target path,
#            so `cargo build` on it compiles exactly the dependencies. It changes only when a
#            manifest or the lock file does, so the dependency layer stays cached across edits.
#   SOURCES  the Rust sources (no static pages, scripts or models), for the second layer.
#
# Usage: cargo-recipe.sh SRC_DIR RECIPE_DIR SOURCES_DIR
set -euo pipefail

readonly SRC="$1" RECIPE="$2" SOURCES="$3"
mkdir -p "$RECIPE" "$SOURCES"
cd "$SRC"

stub() {
    local path="$1"
    [[ -e "$RECIPE/$path" ]] && return 0
    mkdir -p "$(dirname "$RECIPE/$path")"
    # Valid both as a crate root of a library (an unused function) and of a binary.
    printf '#[allow(dead_code)]\nfn main() {}\n' >"$RECIPE/$path"
}

cp Cargo.lock "$RECIPE/"
while IFS= read -r manifest; do
    dir="$(dirname "$manifest")"
    mkdir -p "$RECIPE/$dir"
    cp "$manifest" "$RECIPE/$manifest"
    [[ -f "$dir/build.rs" ]] && cp "$dir/build.rs" "$RECIPE/$dir/build.rs"
    stub "$dir/src/lib.rs"
    stub "$dir/src/main.rs"
    # Explicitly declared targets ([[bin]], [[test]], [[bench]], [lib] with a path) must exist.
    while IFS= read -r target; do
        stub "$dir/$target"
    done < <(sed -nE 's/^[[:space:]]*path[[:space:]]*=[[:space:]]*"([^"]+\.rs)".*/\1/p' "$manifest")
done < <(find . -name Cargo.toml -not -path '*/target/*' | sed 's|^\./||' | sort)

# The sources: everything cargo reads, nothing the runtime stage copies on its own.
tar -c --exclude=./static --exclude=./scripts --exclude=./models --exclude=./deploy \
    --exclude='*/target' . | tar -x -C "$SOURCES"
