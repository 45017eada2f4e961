#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./dev.sh run    create .venv (once), install tuneloop, open the TUI on the demo workspace
#   ./dev.sh test   same set-up, then run the test suite
# Set-up is idempotent: a second call reuses .venv and only reinstalls when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv
# CPU machines get the CPU build of torch, installed before anything else so that no
# dependency drags in the multi-GB CUDA build. CUDA users: TUNELOOP_TORCH="torch==2.13.0
# --index-url https://download.pytorch.org/whl/cu128" (or any torch already in .venv is kept).
TORCH_SPEC=${TUNELOOP_TORCH:-torch==2.13.0}

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "» creating $VENV"
        "$PY" -m venv "$VENV"
    fi
    local pip="$VENV/bin/python -m pip"
    if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        echo "» installing $TORCH_SPEC"
        # shellcheck disable=SC2086
        $pip install -q $TORCH_SPEC
    fi
    local stamp="$VENV/.tuneloop-installed"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "» installing tuneloop and its dependencies (first time: llama-cpp-python compiles, ~10 min on 2 cores)"
        # llama.cpp: portable build, no examples/tools — only the shared library is needed.
        CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF}" \
            $pip install -q -e ".[dev]"
        touch "$stamp"
    fi
    # llama.cpp's own HF -> GGUF converter, from the sdist of the installed llama-cpp-python
    # (one pip download, unpacked into ~/.cache/tuneloop). Offline it is only a warning: exports
    # then use tuneloop's own writer, and the next set-up tries again.
    local conv="$VENV/.tuneloop-converter"
    if [ ! -f "$conv" ] || [ "$stamp" -nt "$conv" ]; then
        echo "» setting up llama.cpp's GGUF converter"
        if "$VENV/bin/tuneloop" export setup-converter; then
            touch "$conv"
        else
            echo "warning: llama.cpp's converter is not set up (offline?); GGUF exports use" \
                 "tuneloop's own writer until \`tuneloop export setup-converter\` succeeds." >&2
        fi
    fi
}

cmd=${1:-run}
shift || true
case "$cmd" in
    setup) setup ;;
    run)   setup; exec "$VENV/bin/tuneloop" "$@" ;;
    test)  setup; exec "$VENV/bin/python" -m pytest -q "$@" ;;
    *) echo "usage: ./dev.sh run|test|setup [args...]" >&2; exit 2 ;;
esac
