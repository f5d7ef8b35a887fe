#!/usr/bin/env bash
# The ONE test command (CI runs exactly this via .ci/run):
#   1. install test dependencies (Debian packages + pip install -e '.[test]')
#   2. lint:  ruff check davserver tests bench; lint-imports (the layer contracts in
#             pyproject.toml [tool.importlinter])
#   3. tests: python -m pytest -q tests
# Exits non-zero if any phase fails. "No tests collected" (pytest exit code 5)
# counts as a failure. Extra arguments are passed on to pytest, e.g.
#   bash scripts/test.sh -k litmus
#
# Environment:
#   SKIP_DEPS=1         skip phase 1 (for quick local re-runs)
#   PYTHON=...          interpreter to use (default: $ROOT/.venv/bin/python if
#                       present, else python3)
#   TEST_TIME_BUDGET=N  seconds the whole script may take before pytest is
#                       interrupted (default 2400 = 40 min, under CI's 45 min target,
#                       so a hang fails with a clear message instead of
#                       being killed silently); 0 disables the limit.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

START=$SECONDS
BUDGET="${TEST_TIME_BUDGET:-2400}"

phase() { printf '\n===== [%s] %s =====\n' "$(date +%H:%M:%S)" "$*"; }
fail() {
    printf '\n===== FAILED: %s =====\n' "$*" >&2
    exit 1
}

# ---------------------------------------------------------------- 1. dependencies
if [ "${SKIP_DEPS:-0}" = 1 ]; then
    phase "1/3 install test dependencies: SKIPPED (SKIP_DEPS=1)"
else
    phase "1/3 install test dependencies (scripts/install-test-deps.sh)"
    bash "$ROOT/scripts/install-test-deps.sh" || fail "installing test dependencies (exit $?)"
fi

if [ -n "${PYTHON:-}" ]; then
    PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then
    PY="$ROOT/.venv/bin/python"
else
    PY=python3
fi
echo "python: $(command -v "$PY") ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"

# ---------------------------------------------------------------- 2. lint
phase "2/3 lint: ruff check davserver tests bench"
"$PY" -m ruff check davserver tests bench || fail "ruff check (exit $?)"
phase "2/3 lint: lint-imports (layer contracts, pyproject.toml [tool.importlinter])"
# lint-imports of the interpreter's own environment (the script may not be on PATH)
"$PY" -c 'import sys; from importlinter.cli import lint_imports_command
sys.exit(lint_imports_command())' --no-cache || fail "lint-imports (exit $?)"

# ---------------------------------------------------------------- 3. tests
timeout_cmd=()
if [ "$BUDGET" -gt 0 ]; then
    remaining=$((BUDGET - (SECONDS - START)))
    [ "$remaining" -gt 60 ] || remaining=60
    # SIGINT (not SIGTERM) so pytest raises KeyboardInterrupt and still runs
    # fixture teardown (stops the servers/slapd the tests started);
    # --foreground keeps Ctrl-C working when run from a terminal.
    timeout_cmd=(timeout --foreground --signal=INT --kill-after=60 "$remaining")
    phase "3/3 tests: $PY -m pytest -q tests${*:+ $*} (time limit ${remaining}s)"
else
    phase "3/3 tests: $PY -m pytest -q tests${*:+ $*}"
fi

"${timeout_cmd[@]}" "$PY" -m pytest -q tests "$@"
rc=$?
case "$rc" in
    0) ;;
    5) fail "pytest collected no tests (exit 5)" ;;
    124) fail "pytest exceeded the time budget (TEST_TIME_BUDGET=${BUDGET}s) and was interrupted" ;;
    *) fail "pytest (exit $rc)" ;;
esac

phase "ALL PASSED in $((SECONDS - START))s"
