#!/bin/sh
# Install the Debian packages the gateway and its tests need when they are missing: clamd
# (the antivirus tests start their own clamd) and libarchive13 (libarchive-c lists tar, gz,
# bz2, xz, 7z and rar attachments through it). Runs as root. Only the daemon: no freshclam
# run, no official signature database.
set -eu
missing=""
if ! command -v clamd >/dev/null 2>&1 && [ ! -x /usr/sbin/clamd ]; then
    missing="$missing clamav-daemon"
fi
if ! dpkg -s libarchive13 >/dev/null 2>&1; then
    missing="$missing libarchive13"
fi
if [ -z "$missing" ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $missing
