#!/usr/bin/env bash
# A production install works: a clean venv from the production lock (hash-checked), then
# the project installed WITHOUT the dev extras, which must find every dependency already
# there; each console command's --help, and one real `concord sync kashflow --once` against
# the fake KashFlow (tests/support/install_check.py, run by the development venv).
# It also checks that the install ships no test or benchmark support: no simulator/, data
# generator, WHMCS fixture or scratch PostgreSQL, and no demo in `concord --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/concord-install.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
# pip builds in the source tree (build/, *.egg-info): build from a copy of the work tree's
# files as git sees them (tracked, and new ones not ignored; a deleted one is skipped).
mkdir "$scratch/src"
git ls-files -z --cached --others --exclude-standard \
  | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$scratch/src"
venv="$scratch/venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet --require-hashes -r requirements.lock
"$venv/bin/pip" freeze --all >"$scratch/locked"
"$venv/bin/pip" install --quiet "$scratch/src"
"$venv/bin/pip" freeze --all --exclude concord >"$scratch/installed"
if ! diff -u "$scratch/locked" "$scratch/installed"; then
  echo "pip install . changed what requirements.lock installed: run make lock" >&2
  exit 1
fi
make --quiet .venv/.installed
.venv/bin/python -m tests.support.install_check "$venv"  # not exec: the trap removes the scratch
