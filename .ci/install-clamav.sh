#!/bin/sh
# Install Debian's clamd when it is missing (the antivirus tests start their own clamd).
# Runs as root. Only the daemon: no freshclam run, no official signature database.
set -eu
if command -v clamd >/dev/null 2>&1 || [ -x /usr/sbin/clamd ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends clamav-daemon
