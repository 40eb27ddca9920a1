#!/usr/bin/env bash
# System packages the tests need beyond the venv: Debian's `chromium`, for the
# headless-browser test of the HTML report (tests/test_report.py).
#
# Idempotent and silent when chromium is already there. Installs with apt-get
# as root, or through `sudo -n` (never prompts). If it cannot install, it says
# why and exits 0: the browser test then skips with that reason instead of the
# whole test run failing on a machine without apt.
set -uo pipefail

browser=${CHROMIUM:-/usr/bin/chromium}
[ -x "$browser" ] && exit 0

log() { echo "[test-deps] $*" >&2; }

if [ "$(id -u)" = 0 ]; then
  sudo=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  log "chromium is missing and neither root nor passwordless sudo is available;"
  log "the headless-browser report test will skip (install: apt-get install chromium)"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  log "chromium is missing and there is no apt-get; the headless-browser report test will skip"
  exit 0
fi

log "installing Debian's chromium for the report's browser test (once, ~1 minute)"
export DEBIAN_FRONTEND=noninteractive
out=$(mktemp)
trap 'rm -f "$out"' EXIT
apt() { "${sudo[@]}" apt-get "$@" >>"$out" 2>&1; }
# A fresh container may have no package lists yet: update once and retry.
if ! apt install -y -q --no-install-recommends chromium; then
  if ! { apt update -q && apt install -y -q --no-install-recommends chromium; }; then
    tail -n 20 "$out" >&2
    log "apt-get could not install chromium; the headless-browser report test will skip"
  fi
fi
if [ -x "$browser" ]; then
  log "chromium ready: $("$browser" --version 2>/dev/null)"
else
  log "chromium is still not at $browser; the headless-browser report test will skip"
fi
exit 0
