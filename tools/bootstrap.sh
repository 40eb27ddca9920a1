#!/usr/bin/env bash
# Create or reuse the project's virtualenv (.venv) with the locked dependencies.
#
# Idempotent and cheap when nothing changed: the venv records a hash of
# requirements.lock + setup.py and is only (re)installed when that hash differs.
# Finds Python 3.10 by itself, because pyenv's `python3.10` shim refuses to run
# unless a version is selected. Override with PYTHON=/path/to/python3.10.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$root/.venv}
lock=$root/requirements.lock

log() { echo "[bootstrap] $*" >&2; }

is_py310() { [ -x "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; }

find_python() {
  local c
  if [ -n "${PYTHON:-}" ]; then
    is_py310 "$PYTHON" && { echo "$PYTHON"; return; }
    log "PYTHON=$PYTHON is not a Python 3.10 interpreter"; return 1
  fi
  local pyenv_root
  pyenv_root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  for c in $(ls -d "$pyenv_root"/versions/3.10.*/bin/python 2>/dev/null | sort -V -r) \
           "$(command -v python3.10 || true)" /usr/bin/python3.10 /usr/local/bin/python3.10; do
    [ -n "$c" ] && is_py310 "$c" && { echo "$c"; return; }
  done
  log "No Python 3.10 found. Install one (e.g. 'pyenv install 3.10.13') or set PYTHON=/path/to/python3.10."
  return 1
}

want=$(cat "$lock" "$root/setup.py" | sha256sum | cut -c1-16)
have=$(cat "$venv/.bootstrap-hash" 2>/dev/null || true)
if [ "$want" = "$have" ] && [ -x "$venv/bin/python" ]; then
  exit 0
fi

if [ ! -x "$venv/bin/python" ] || ! is_py310 "$venv/bin/python"; then
  py=$(find_python)
  log "creating $venv with $py"
  rm -rf "$venv"
  "$py" -m venv "$venv"
fi

start=$(date +%s)
log "installing locked dependencies (first time: ~2 minutes, ~3.5 GB)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade 'pip>=24'
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$lock"
# The project itself, editable and without touching the pins: every process
# (Beam workers, TFX executors, the user-module wheel) imports `pipeline` and
# `modules` from here.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$root"
"$venv/bin/python" -m pip check >&2 || log "warning: pip check reports conflicts (see above)"
echo "$want" > "$venv/.bootstrap-hash"
log "venv ready in $(( $(date +%s) - start ))s: $venv"
