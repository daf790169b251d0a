#!/usr/bin/env bash
# Installs one benchmark peer into a scratch directory (never system-wide):
#   install.sh litellm <dir>   a Python venv with litellm[proxy]
#   install.sh portkey <dir>   an npm prefix with @portkey-ai/gateway
# The harness runs this before measuring a peer (full runs, or with --install-peers; never
# with --smoke alone). It is idempotent: a finished install leaves <dir>/.installed naming the
# pinned version, and a second run does nothing until the pin below changes.
set -euo pipefail

LITELLM_VERSION=1.106.12
PORTKEY_VERSION=1.15.2

peer=${1:?usage: install.sh litellm|portkey DIR}
dir=${2:?usage: install.sh litellm|portkey DIR}

case "$peer" in
  litellm) want="litellm[proxy]==$LITELLM_VERSION" ;;
  portkey) want="@portkey-ai/gateway@$PORTKEY_VERSION" ;;
  *) echo "unknown peer $peer" >&2; exit 2 ;;
esac
if [[ -f "$dir/.installed" && "$(cat "$dir/.installed")" == "$want" ]]; then
  exit 0
fi
rm -rf "$dir"
mkdir -p "$dir"
case "$peer" in
  litellm)
    python=$(command -v python3 || true)
    [[ -n $python ]] || { echo "python3 is not installed" >&2; exit 1; }
    "$python" -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$want"
    LITELLM_LOCAL_MODEL_COST_MAP=True "$dir/bin/litellm" --version >/dev/null
    echo "$want" >"$dir/.installed"
    ;;
  portkey)
    command -v node >/dev/null || { echo "node is not installed" >&2; exit 1; }
    command -v npm >/dev/null || { echo "npm is not installed" >&2; exit 1; }
    # Runtime dependencies only.
    NODE_ENV=production npm install --prefix "$dir" --no-audit --no-fund --omit=dev \
      --loglevel=error "$want"
    [[ -f "$dir/node_modules/@portkey-ai/gateway/build/start-server.js" ]]
    echo "$want" >"$dir/.installed"
    ;;
esac
