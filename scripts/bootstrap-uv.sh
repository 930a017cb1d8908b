#!/usr/bin/env bash
# Prints a command that runs uv, installing uv first when needed. Tries, in order:
# uv on PATH; `python -m uv`; pip; pip with --break-system-packages (Debian's externally
# managed Python); a private bootstrap venv (.venv-uv); and, as root on Debian, the
# python3-pip / python3-venv packages that a minimal image may lack.
set -uo pipefail
PY=${1:-python3}
BOOT=${2:-.venv-uv}
quiet=(--quiet --disable-pip-version-check)

if command -v uv >/dev/null 2>&1; then command -v uv; exit 0; fi
if "$PY" -m uv --version >/dev/null 2>&1; then echo "$PY -m uv"; exit 0; fi
if [ -x "$BOOT/bin/uv" ]; then echo "$BOOT/bin/uv"; exit 0; fi

try_pip() {
  "$PY" -m pip install "${quiet[@]}" uv >/dev/null 2>&1 ||
    "$PY" -m pip install "${quiet[@]}" --user --break-system-packages uv >/dev/null 2>&1
}
try_venv() {
  "$PY" -m venv "$BOOT" >/dev/null 2>&1 && "$BOOT/bin/pip" install "${quiet[@]}" uv >/dev/null 2>&1
}

if try_pip && "$PY" -m uv --version >/dev/null 2>&1; then echo "$PY -m uv"; exit 0; fi
if try_venv; then echo "$BOOT/bin/uv"; exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq python3-pip python3-venv >/dev/null
  rm -rf "$BOOT"
  if try_venv; then echo "$BOOT/bin/uv"; exit 0; fi
fi
echo "cannot install uv: need pip or venv for $PY (Debian: apt-get install python3-pip python3-venv)" >&2
exit 1
