#!/bin/sh
# The 1M-address figures of issue 13 as a user meets them, whole processes on a fresh store:
# `vec bulk FILE --wait` (instant provider), the store's size, the export's first bytes and
# whole run, `vec rebuild`, `vec audit`. Run it for two checkouts side by side (the baseline
# from `git worktree add /tmp/base REV`) and compare the lines; /usr/bin/time gives wall,
# user CPU and peak RSS. (`-P`: the code is SRC's, whatever the working directory.)
#   bench/million.sh SRC [ADDRESSES] [mixed]     SRC: the checkout whose code runs (with this repo's .venv)
# `mixed`: bench_engine's list (10 % unknown, each refunded; 5 % invalid, 5 % risky; the rest
# safe) instead of every address safe.
set -eu
SRC=$(cd "$1" && pwd); N=${2:-1000000}; MIX=${3:-safe}; D=$(mktemp -d /tmp/vec-million.XXXX)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY="$ROOT/.venv/bin/python"
VEC="$D/vec"  # `vec` from SRC's code
printf '#!/bin/sh\nPYTHONPATH=%s exec %s -P -c '"'"'import sys; sys.argv[0] = "vec"; from entrypoints.launcher import main; sys.exit(main())'"'"' "$@"\n' "$SRC" "$PY" >"$VEC"
chmod +x "$VEC"
timed() { label=$1; shift; /usr/bin/time -f "$label %e s wall, %U s user, %M KB peak" "$@"; }
export VEC_STORE="sqlite:///$D/vec.db" VEC_PROVIDER=instant
"$PY" -c "
kinds = ('unknown', 'unknown', 'invalid', 'risky') + ('user',) * 16 if '$MIX' == 'mixed' else ('user',)
with open('$D/list.csv', 'w') as f:
    f.writelines(f'{kinds[i % len(kinds)]}{i}@d{i % 50}.test\n' for i in range($N))"
"$VEC" account open acme >/dev/null
"$VEC" credits grant acme --payg "$N" >/dev/null
timed bulk "$VEC" bulk acme "$D/list.csv" --wait >/dev/null
echo "store $(du -cb "$D"/vec.db* | tail -1 | cut -f1) bytes"
task=$("$PY" -c "import sqlite3; print(sqlite3.connect('$D/vec.db').execute('SELECT task_id FROM rm_tasks').fetchone()[0])")
timed export-first-bytes sh -c "'$VEC' task results $task --format csv | head -c 200 >/dev/null"
timed export "$VEC" task results "$task" --format csv >/dev/null
timed rebuild "$VEC" rebuild >/dev/null
timed audit "$VEC" audit >/dev/null
rm -rf "$D"
