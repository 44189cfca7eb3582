#!/usr/bin/env bash
# Renders, lints and validates helm/headend (helm/ci/check_chart.py) in a Python venv cached
# outside the checkout, created on first use with helm/ci/requirements.txt.
#
#   bash helm/ci/run.sh [check_chart.py options]       # e.g. --keep-rendered /tmp/rendered
#
# HEADEND_CACHE moves the cache (default ~/.cache/headend); the venv is named after the hash of
# requirements.txt, so a changed pin gets a fresh venv.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${HEADEND_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/headend}"
python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "helm/ci: $python not found (Python 3.10+ is needed)" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || { echo "helm/ci: $python is older than 3.10" >&2; exit 1; }
pins="$(sha256sum "$here/requirements.txt" | cut -c1-12)"
venv="$cache/helm-ci-$pins"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
  echo "helm/ci: installing the chart tools into $venv" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    # Debian's python3 comes without venv unless python3-venv is installed.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get install -y -q python3-venv >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null; }
      rm -rf "$venv"
      "$python" -m venv "$venv"
    else
      echo "helm/ci: '$python -m venv' failed: install python3-venv" >&2
      exit 1
    fi
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  touch "$venv/.complete"
fi
exec "$venv/bin/python" "$here/check_chart.py" "$@"
