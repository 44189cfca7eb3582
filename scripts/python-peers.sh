#!/usr/bin/env bash
# Installs the independent Python peers used by the interoperability tests into a private
# virtual environment (once), and prints the path of its python interpreter on stdout.
#
#   gurux-dlms (+ gurux-net, gurux-common): a DLMS/COSEM client nobody here wrote
#   pymodbus: a Modbus TCP client nobody here wrote
#
# HES_PY_VENV overrides the location (default /var/tmp/headend-dev/venv). Versions are pinned
# so a test's outcome does not change under us.
set -euo pipefail
venv="${HES_PY_VENV:-/var/tmp/headend-dev/venv}"
want="gurux-dlms==1.0.203 gurux-net==1.0.23 gurux-common==1.0.13 pymodbus==3.16.1"
stamp="$venv/.peers"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$venv/bin/python"
  exit 0
fi
py="$(command -v python3 || true)"
if [[ -z "$py" ]]; then
  if command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >&2
    py="$(command -v python3)"
  else
    echo "python3 not found and no apt-get to install it" >&2
    exit 1
  fi
fi
mkdir -p "$(dirname "$venv")"
# A lock so parallel test processes do not build the venv twice.
exec 9>"$(dirname "$venv")/.venv.lock"
flock 9
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  "$py" -m venv "$venv" >&2
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install -q --disable-pip-version-check $want >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
