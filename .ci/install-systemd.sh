#!/bin/sh
# Install Debian's systemd for `systemd-analyze verify` of deploy/systemd/mailgate.service
# (tests/integration/test_deploy_files.py). Runs as root. Nothing is started: only the tool.
set -eu
if command -v systemd-analyze >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends systemd
