#!/usr/bin/env bash
# Runs the Bazel test targets offline with Debian's Bazel 4.2.3 (bazel-bootstrap).
# Installs bazel-bootstrap with apt-get when `bazel` is missing (needs root or sudo).
# py_test uses the python3 on PATH (or $PYTHON), which must have tensorflow and pytest.
#
# Usage: bash .ci/bazel_test.sh [bazel test flags and targets...]   (default: //tests:all)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v bazel >/dev/null 2>&1; then
    echo "bazel_test: bazel not found, installing Debian's bazel-bootstrap" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends bazel-bootstrap
fi

# Put the directory of the real interpreter first on PATH, so tests run with
# it even where python3 is a wrapper (pyenv shim) that depends on the caller's
# environment.
PYTHON="${PYTHON:-python3}"
PY_EXE="$("$PYTHON" -c 'import sys; print(sys.executable)')"
"$PY_EXE" -c 'import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ("pytest", "tensorflow")))' || {
    echo "bazel_test: $PY_EXE cannot import pytest and tensorflow" >&2
    exit 1
}
PY_DIR="$(dirname "$PY_EXE")"
if [ "$(basename "$PY_EXE")" != python3 ] && [ ! -x "$PY_DIR/python3" ]; then
    # Expose the interpreter as python3, which Bazel's Python toolchain looks for.
    PY_DIR="$(mktemp -d)"
    ln -s "$PY_EXE" "$PY_DIR/python3"
fi
export PATH="$PY_DIR:$PATH"

if [ "$#" -eq 0 ]; then
    set -- //tests:all
fi

# Stop the Bazel server afterwards so no daemon outlives the CI job.
trap 'bazel shutdown >/dev/null 2>&1 || true' EXIT

bazel test --test_output=errors --color=no --curses=no "$@"
