#!/bin/bash
# Run SyTest against Axon (embedded mode) and print the "are we synapse yet" summary.
#
#   scripts/sytest.sh [OUTDIR] [test files relative to the SyTest tree ...]
#   e.g. scripts/sytest.sh .run/sytest 'tests/10apidoc/*' 'tests/30rooms/*'
#
# Needs the shared SyTest recipe (SYTEST_RECIPE, default ../shared/sytest) and a
# SyTest work tree (SYTEST_DIR, default /work/sytest), made from the fetched bare
# repo (SYTEST_GITDIR) when missing. SyTest's code never enters this repository.
# Installs SyTest's Perl deps (Debian packages) once when they are missing (root).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RECIPE=${SYTEST_RECIPE:-$ROOT/../shared/sytest}
SYTEST_DIR=${SYTEST_DIR:-/work/sytest}
SYTEST_GITDIR=${SYTEST_GITDIR:-/work/.mirror/matrix-org+sytest/repo}
PY=${PY:-$ROOT/.venv/bin/python}
OUT=${1:-$ROOT/.run/sytest}; [ $# -gt 0 ] && shift
REF=${SYTEST_REFERENCE:-$RECIPE/reference/synapse-1.139.2-generic.tap}

[ -d "$RECIPE" ] || { echo "sytest.sh: no SyTest recipe at $RECIPE (set SYTEST_RECIPE)" >&2; exit 2; }

if ! perl -I"$RECIPE/perl5" -MIO::Async -MNet::Async::HTTP -MCrypt::Ed25519 -e1 2>/dev/null; then
  echo "sytest.sh: installing SyTest's Perl dependencies" >&2
  sh "$RECIPE/install-deps.sh"
fi

if [ ! -x "$SYTEST_DIR/run-tests.pl" ]; then
  [ -d "$SYTEST_GITDIR" ] || { echo "sytest.sh: no SyTest tree at $SYTEST_DIR and no mirror at $SYTEST_GITDIR" >&2; exit 2; }
  mkdir -p "$SYTEST_DIR"
  git --git-dir="$SYTEST_GITDIR" archive HEAD | tar x -C "$SYTEST_DIR"
fi

# Test-file arguments are globs relative to the SyTest tree (quote them).
TESTS=()
for a in "$@"; do
  if [[ "$a" == -* ]]; then TESTS+=("$a"); else
    while IFS= read -r f; do TESTS+=("$f"); done < <(cd "$SYTEST_DIR" && compgen -G "$a" | sort)
  fi
done
rm -rf "$OUT"; mkdir -p "$OUT"
set +e
SYTEST_DIR="$SYTEST_DIR" HS_CMD="$PY $ROOT/tests/sytest/adapter.py" \
  IMPL_NAME=generic EXCLUDE_DEPRECATED=1 BLACKLIST="$ROOT/tests/sytest/blacklist" \
  PERL5LIB="${PERL5LIB:-}" \
  "$RECIPE/run-sytest.sh" "$OUT" --hs-client-http ${TESTS[@]+"${TESTS[@]}"}
rc=$?
set -e
python3 "$RECIPE/awsy_summary.py" "$OUT/results.tap" --reference "$REF" | tee "$OUT/awsy.txt"
echo "sytest: run-tests.pl rc=$rc; results in $OUT (results.tap, summary.txt, awsy.txt)"
