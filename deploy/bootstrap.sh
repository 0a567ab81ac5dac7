#!/usr/bin/env bash
# Install everything reelflow needs on a fresh Debian/Ubuntu machine with Python >= 3.11:
# system packages (ffmpeg, espeak-ng), then .venv with the exact locked dependencies.
#
# Idempotent: a second run only checks and re-syncs. Run as root or as a user with sudo
# (only apt needs it). Quiet on success; on failure it prints the failing step's output.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$(pwd)"
VENV="${REPO_ROOT}/.venv"
# Commands we need; chromium is the real browser the report pages are checked in.
APT_PACKAGES=(ffmpeg espeak-ng chromium)

log() { printf 'bootstrap: %s\n' "$*" >&2; }

# Run a command with its output kept aside; show it only if the command fails.
quiet() {
    local output status
    output="$(mktemp)"
    if "$@" >"${output}" 2>&1; then
        rm -f "${output}"
        return 0
    else
        status=$?
    fi
    log "failed (exit ${status}): $*"
    tail -n 60 "${output}" >&2
    rm -f "${output}"
    return "${status}"
}

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root for: $* (re-run as root or install sudo)"
        return 1
    fi
}

APT_UPDATED=0
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        log "apt-get not found: install $* yourself (this script targets Debian/Ubuntu)"
        return 1
    fi
    if [[ "${APT_UPDATED}" -eq 0 ]]; then
        log "apt-get update"
        quiet as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    quiet as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "$@"
}

# --- system packages -----------------------------------------------------------------------
missing=()
for package in "${APT_PACKAGES[@]}"; do
    command -v "${package}" >/dev/null 2>&1 || missing+=("${package}")
done
# Not a command: the font script PDFs are set in (without it, Helvetica and transliteration).
[[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || missing+=(fonts-dejavu-core)
if [[ "${#missing[@]}" -gt 0 ]]; then
    apt_install "${missing[@]}"
fi

# --- Python --------------------------------------------------------------------------------
PYTHON="${PYTHON:-python3}"
if ! command -v "${PYTHON}" >/dev/null 2>&1; then
    log "${PYTHON} not found: install Python >= 3.11 first"
    exit 1
fi
if ! "${PYTHON}" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    log "$("${PYTHON}" --version 2>&1) is too old: reelflow needs Python >= 3.11"
    exit 1
fi

# A venv is usable only if its interpreter runs and pip is in it; a half-made one
# (e.g. created before python3-venv was installed) is rebuilt.
if [[ ! -x "${VENV}/bin/python" ]] || ! "${VENV}/bin/python" -m pip --version >/dev/null 2>&1; then
    if ! "${PYTHON}" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        version="$("${PYTHON}" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        # Debian splits venv support out; the versioned package matches this interpreter.
        apt_install "python${version}-venv" || apt_install python3-venv
    fi
    log "creating ${VENV}"
    rm -rf "${VENV}"
    quiet "${PYTHON}" -m venv "${VENV}"
fi

if [[ ! -x "${VENV}/bin/uv" ]]; then
    log "installing uv into ${VENV}"
    quiet "${VENV}/bin/python" -m pip install --quiet --disable-pip-version-check uv
fi

# --inexact keeps pip and uv, which are not in uv.lock, so the next run still works.
log "uv sync --frozen"
quiet env UV_PROJECT_ENVIRONMENT="${VENV}" UV_PYTHON="${VENV}/bin/python" \
    UV_PYTHON_DOWNLOADS=never "${VENV}/bin/uv" sync --frozen --inexact

log "ready: ${VENV}"
