# pibridge tasks. `just setup` is safe to run again; every recipe that needs it runs it.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
bin := venv / "bin"

# List the recipes.
default:
    @just --list

# Install what a fresh Debian machine lacks (sudo when not root), then the venv and pi.
setup: system-packages python-packages pi

# Debian packages the server and its tests use: bubblewrap (the agent's sandbox), ripgrep and
# fd-find (pi's search tools), tmux (driving the attach client), chromium (the page's tests),
# OpenSSH (the benchmark peer), iproute2/nftables/ethtool (impaired-link tests).
system-packages:
    #!/usr/bin/env bash
    set -euo pipefail
    wanted="bubblewrap ripgrep fd-find tmux chromium openssh-server openssh-client procps iproute2 nftables ethtool"
    missing=$(for p in $wanted; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"; done)
    if [ -n "$missing" ]; then
        sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
        echo "installing Debian packages: $missing"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi

# The virtualenv with pibridge (editable) and its development tools.
python-packages:
    test -x {{bin}}/python || python3 -m venv {{venv}}
    {{bin}}/python -m pip install -q --upgrade pip
    {{bin}}/python -m pip install -q --config-settings editable_mode=compat -e '.[dev]'

# pi, pinned by package-lock.json.
pi:
    npm ci --no-audit --no-fund --loglevel=error

# Run the server in the foreground with working defaults (the offline model when no key is set).
serve *ARGS: setup
    {{bin}}/twistd -n --pidfile= pibridge {{ARGS}}

# Attach this terminal to a running pibridge: just attach [--token T] HOST[:PORT]
attach *ARGS:
    {{bin}}/pibridge-attach {{ARGS}}

# Mint a token for pibridge-attach: just token --user alice --group team
token *ARGS:
    {{bin}}/pibridge-token {{ARGS}}

# Set up, then run the whole test suite.
test *ARGS: setup
    {{bin}}/pytest {{ARGS}}

# Impaired links, cuts, rebinding and namespaces, long variants included.
faults *ARGS: setup
    {{bin}}/pytest tests/faults -m faults --faults-long {{ARGS}}

# Showboat document with Rodney screenshots of the chat page, from a fresh start.
evidence: setup
    bash evidence/build.sh

# ruff and mypy.
lint:
    {{bin}}/ruff check .
    {{bin}}/ruff format --check .
    {{bin}}/mypy

# Run every benchmark; results land in bench/results/.
bench *ARGS: setup
    {{bin}}/python bench/report.py {{ARGS}}
