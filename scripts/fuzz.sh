#!/usr/bin/env bash
# The long fuzzing run (the suite runs the same properties briefly, tests/test_fuzz_parsers.py):
#   1. hypothesis: tests/test_fuzz_parsers.py with the "fuzz-long" profile
#      (FUZZ_EXAMPLES examples per property, default 20000);
#   2. atheris (coverage-guided, libFuzzer): bench/atheris_parsers.py, each target for
#      ATHERIS_SECONDS seconds (default 120), corpus kept in $FUZZ_DIR/corpus/<target>,
#      crash inputs written to $FUZZ_DIR. Skipped with a note if atheris is not installed
#      (pip install atheris; a wheel exists for CPython 3.11 on x86-64 Linux).
# Exit status: 0 no property violated, 1 otherwise.
#
#   scripts/fuzz.sh                          # ~20-40 min on 2 cores
#   FUZZ_EXAMPLES=2000 ATHERIS_SECONDS=30 scripts/fuzz.sh
#   scripts/fuzz.sh stream range             # atheris targets to run (default: all)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
PY="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
FUZZ_DIR="${FUZZ_DIR:-$ROOT/.fuzz}"
SECONDS_PER_TARGET="${ATHERIS_SECONDS:-120}"
TARGETS=("$@")
[ "${#TARGETS[@]}" -gt 0 ] || TARGETS=(header stream keyfile masterfile propfind xmlbody range)
failed=0

echo "== hypothesis: ${FUZZ_EXAMPLES:=20000} examples per property"
HYPOTHESIS_PROFILE=fuzz-long FUZZ_EXAMPLES="$FUZZ_EXAMPLES" \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_fuzz_parsers.py || failed=1

if "$PY" -c "import atheris" 2>/dev/null; then
    mkdir -p "$FUZZ_DIR"
    for t in "${TARGETS[@]}"; do
        echo "== atheris: $t for ${SECONDS_PER_TARGET}s"
        mkdir -p "$FUZZ_DIR/corpus/$t"
        (cd "$FUZZ_DIR" && "$PY" "$ROOT/bench/atheris_parsers.py" --target "$t" \
            -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -print_final_stats=1 \
            "corpus/$t") > "$FUZZ_DIR/$t.log" 2>&1
        rc=$?
        grep -E "^Done|Uncaught|Error|crash-" "$FUZZ_DIR/$t.log" | head -20
        if [ "$rc" -ne 0 ]; then
            failed=1
            echo "   FAILED (exit $rc); log: $FUZZ_DIR/$t.log"
        fi
    done
else
    echo "== atheris: not installed (pip install atheris); only the hypothesis run was made"
fi

if [ "$failed" = 0 ]; then echo "== fuzz: no property violated"; else echo "== fuzz: FAILED"; fi
exit "$failed"
