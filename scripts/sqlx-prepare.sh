#!/usr/bin/env bash
# Regenerates the offline query data in .sqlx/ (what `cargo sqlx prepare`
# does), or with --check verifies that the committed .sqlx/ is current.
#
# It needs a PostgreSQL server (ADMIN_DATABASE_URL, default the local one),
# creates a scratch database, applies migrations/ with psql, and lets the
# sqlx macros describe every query against it (SQLX_OFFLINE_DIR makes them
# write their data). No sqlx-cli install is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-write}
admin=${ADMIN_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db=mobile_backend_sqlx_prepare_$$
base=${admin%/*}
url="$base/$db"

psql "$admin" -qAt -c "CREATE DATABASE $db" >/dev/null
cleanup() { psql "$admin" -qAt -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; rm -rf "${out:-}"; }
trap cleanup EXIT
for f in migrations/*.sql; do
  psql "$url" -q -1 -v ON_ERROR_STOP=1 -f "$f" >/dev/null
done

out=$(mktemp -d)
# Force the macros to run again for this crate only.
touch src/lib.rs src/main.rs
find tests -name '*.rs' -exec touch {} +
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out" DATABASE_URL="$url" cargo check --all-targets --quiet

if [ "$mode" = "--check" ]; then
  if ! diff -r "$out" .sqlx >/dev/null 2>&1; then
    echo "error: .sqlx/ is out of date; run scripts/sqlx-prepare.sh and commit .sqlx/" >&2
    diff -r "$out" .sqlx | head -20 >&2 || true
    exit 1
  fi
  echo ".sqlx/ is current ($(ls "$out" | wc -l) queries)"
else
  rm -rf .sqlx && mkdir -p .sqlx && cp "$out"/*.json .sqlx/ 2>/dev/null || true
  echo "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
fi
