#!/usr/bin/env bash
# Runs every test of tickcast, on a fresh machine or a warm one:
#
#   1. Python venv (.venv) with tests/python/requirements.txt, and
#      nats-server from Debian's packages (the cluster tests run one)
#   2. cargo fmt --all -- --check
#   3. cargo clippy --workspace --all-targets -- -D warnings
#   4. cargo test --workspace --all-targets (the server, crates/client and
#      crates/loadgen)
#   5. cargo build (the binary the Python suites and the browser tests run)
#   6. the JavaScript client (clients/js): npm ci, the committed bundle
#      against a fresh esbuild build, unit tests (node --test), and the
#      trading page in headless Chromium (Debian's chromium, driven by
#      playwright-core) against a real tickcast
#   7. the independent-client suite: python -m pytest -q tests/python
#   8. the Python client package: pip install "./clients/python[pandas,arrow]"
#      into the venv, then python -m pytest -q clients/python/tests
#
# Works from any directory. Needs a Rust toolchain (rustup) and Python >= 3.10
# with the venv module; installs everything else itself (Node.js, npm and
# Chromium from Debian's packages when missing and run as root). Extra
# arguments go to the independent-client suite's pytest (e.g.
# `scripts/test.sh -k sigterm -x`).
#
# Environment:
#   PYTHON        interpreter to build the venv with (default: the first of
#                 python3, python3.13 .. python3.10 that is >= 3.10)
#   VENV          venv directory (default: .venv in the repo root)
#   TICKCAST_BIN  server binary for the Python suite (default: the debug
#                 binary in cargo's target directory)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$(pwd)"

started=$SECONDS
section() {
    printf '\n\033[1m==== %s ====\033[0m\n' "$*"
}
die() {
    printf '\033[31mtest.sh: %s\033[0m\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------
section "Python environment"

python_ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1
}

if [[ -z "${PYTHON:-}" ]]; then
    for candidate in python3 python3.13 python3.12 python3.11 python3.10; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            PYTHON="$candidate"
            break
        fi
    done
    [[ -n "${PYTHON:-}" ]] || die "no Python >= 3.10 found (tried python3, python3.13 .. python3.10); set PYTHON"
fi
python_ok "$PYTHON" || die "$PYTHON is not Python >= 3.10"

VENV="${VENV:-$REPO_ROOT/.venv}"
VENV_PY="$VENV/bin/python"
if [[ ! -x "$VENV_PY" ]] || ! python_ok "$VENV_PY"; then
    echo "creating venv $VENV with $("$PYTHON" --version 2>&1)"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV"; then
        # Debian ships venv separately; install it when we may.
        if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
            echo "installing python3-venv with apt-get"
            apt-get update -qq && apt-get install -y -qq python3-venv
            rm -rf "$VENV"
            "$PYTHON" -m venv "$VENV" || die "python -m venv failed even after installing python3-venv"
        else
            die "python -m venv failed (on Debian/Ubuntu: apt-get install python3-venv)"
        fi
    fi
fi
echo "using $("$VENV_PY" --version 2>&1) in $VENV"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV_PY" -m pip install --quiet -r tests/python/requirements.txt

# ---------------------------------------------------------------------------
section "nats-server (the cluster tests run a real one)"
if ! command -v nats-server >/dev/null 2>&1 && [[ ! -x /usr/sbin/nats-server ]]; then
    if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
        echo "installing nats-server with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
    else
        die "nats-server not found (on Debian/Ubuntu: apt-get install nats-server)"
    fi
fi
export PATH="$PATH:/usr/sbin"
echo "using $(nats-server --version 2>&1)"

# ---------------------------------------------------------------------------
# rustfmt and clippy are rustup components a minimal toolchain may lack.
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs)"
for component in rustfmt clippy; do
    probe="fmt"
    [[ $component == clippy ]] && probe="clippy"
    if ! cargo "$probe" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 || die "cargo $probe is missing and rustup is not available to add $component"
        echo "installing rustup component $component"
        rustup component add "$component"
    fi
done

section "cargo fmt --all -- --check"
cargo fmt --all -- --check

section "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

section "cargo test --workspace --all-targets"
cargo test --workspace --all-targets

section "cargo build"
cargo build

if [[ -z "${TICKCAST_BIN:-}" ]]; then
    target_dir="$(cargo metadata --format-version 1 --no-deps |
        "$VENV_PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    TICKCAST_BIN="$target_dir/debug/tickcast"
fi
[[ -x "$TICKCAST_BIN" ]] || die "server binary not found at $TICKCAST_BIN"
export TICKCAST_BIN

# ---------------------------------------------------------------------------
section "JavaScript client and trading page (clients/js)"
apt_install() {
    if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
        echo "installing $* with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        die "$* not found (on Debian/Ubuntu: apt-get install $*)"
    fi
}
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm
CHROMIUM="${CHROMIUM:-$(command -v chromium || true)}"
if [[ -z "$CHROMIUM" ]]; then
    apt_install chromium
    CHROMIUM="$(command -v chromium)"
fi
export CHROMIUM
echo "using node $(node --version), npm $(npm --version), $("$CHROMIUM" --version 2>/dev/null | tail -1)"
(
    cd clients/js
    npm ci --no-audit --no-fund --loglevel=error
    node scripts/build.mjs --check
    node --test test/
    ARTIFACTS="$REPO_ROOT/target/browser-artifacts" node --test --test-concurrency=1 browser-test/
    echo "screenshots: $REPO_ROOT/target/browser-artifacts"
)

# ---------------------------------------------------------------------------
section "independent-client suite (pytest tests/python, server $TICKCAST_BIN)"
"$VENV_PY" -m pytest -q tests/python "$@"

# ---------------------------------------------------------------------------
section "Python client package (clients/python, server $TICKCAST_BIN)"
"$VENV_PY" -m pip install --quiet "./clients/python[pandas,arrow]"
"$VENV_PY" -m pytest -q clients/python/tests

section "all tests passed in $((SECONDS - started)) s"
