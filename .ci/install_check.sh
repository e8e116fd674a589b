#!/usr/bin/env bash
# A production install works: the project installed into a clean venv WITHOUT the dev
# extras, each console command's --help, and one real `concord sync kashflow --once`
# against the fake KashFlow (tests/install_check.py, run by the development venv).
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
"$venv/bin/pip" install --quiet "$scratch/src"
make --quiet .venv/.installed
.venv/bin/python -m tests.support.install_check "$venv"  # not exec: the trap removes the scratch
