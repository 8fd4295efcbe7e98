#!/usr/bin/env bash
# tests/gpu/check_budget_test.sh: tests/gpu/check.sh keeps to its budget. A GPU session's
# command that overruns loses everything it printed, so a part that hangs must be ended
# within what is left, the parts after it reported as not run, and the summary printed.
# Runs check.sh from a fake bundle whose `run` succeeds at once except where told to hang.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fail() { echo "check_budget_test: FAIL: $*" >&2; exit 1; }

FAKE=$TMP/bundle
mkdir -p "$FAKE"
cp "$ROOT/tests/gpu/check.sh" "$FAKE/check.sh"
echo 'echo "train_gpu.sh $*"' >"$FAKE/train_gpu.sh"
echo 'echo "train_multi_gpu.sh $*"' >"$FAKE/train_multi_gpu.sh"
cat >"$FAKE/run" <<'RUN'
#!/usr/bin/env bash
if [ "$1" = "${HANG:-}" ]; then sleep 60; fi
echo "fake $1: ok"
RUN
chmod +x "$FAKE/run"

# Everything passes: exit 0, one summary line per part, each part's output in its log.
env -u OUT CHECK_LOG_DIR="$TMP/logs1" bash "$FAKE/check.sh" >"$TMP/ok.txt" 2>&1 ||
  fail "check.sh failed with every part passing: $(tail -5 "$TMP/ok.txt")"
grep -q "check.sh: all parts passed" "$TMP/ok.txt" || fail "no pass line"
parts=$(grep -c '^==== ' "$TMP/ok.txt")
parts=$((parts - 3))  # not parts: the device, "not in this check", the summary
oks=$(grep -cE '^ok +[0-9]+ s  ' "$TMP/ok.txt")
[ "$oks" -eq "$parts" ] && [ "$parts" -ge 10 ] || fail "$oks ok lines for $parts parts"
grep -q "fake ops_gpu_test: ok" "$TMP/logs1/01.log" || fail "01.log lacks the op table's output"
[ "$(ls "$TMP/logs1" | wc -l)" -eq "$parts" ] || fail "not one log per part"

# The second part hangs: it is ended when the budget runs out, the rest are not run.
if env -u OUT HANG=attention_choice_test CHECK_BUDGET_S=4 CHECK_MIN_PART_S=2 \
  CHECK_LOG_DIR="$TMP/logs2" bash "$FAKE/check.sh" >"$TMP/hang.txt" 2>&1; then
  fail "check.sh passed with a part that hung"
fi
grep -qE "^---- attention.*FAILED \(timed out after [0-9]+ s\)" "$TMP/hang.txt" ||
  fail "the hung part is not reported as timed out: $(grep '^---- attention' "$TMP/hang.txt")"
grep -qE '^ok +[0-9]+ s  CUDA ops vs CPU reference' "$TMP/hang.txt" || fail "first part not ok"
not_run=$(grep -cE '^NOT RUN +- s  ' "$TMP/hang.txt")
[ "$not_run" -eq $((parts - 2)) ] || fail "$not_run parts not run, expected $((parts - 2))"
grep -q "check.sh: FAILED: $((parts - 1)) of $parts parts" "$TMP/hang.txt" || fail "no failure line"
grep -q "==== summary" "$TMP/hang.txt" || fail "no summary"
echo "check_budget_test: ok ($parts parts)"
