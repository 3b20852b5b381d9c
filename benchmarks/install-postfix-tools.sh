#!/bin/sh
# Postfix's load tools for bench_scaling.py (smtp-source, smtp-sink), from Debian's postfix
# package. "No configuration": no main.cf is written and no mail server is set up or kept
# running. Needs root; does nothing when the tools are there.
set -eu
if [ -x /usr/sbin/smtp-source ] && [ -x /usr/sbin/smtp-sink ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
apt-get update
apt-get install -y --no-install-recommends postfix
# A host whose init system started it anyway: the benchmark needs only the two tools.
if command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now postfix >/dev/null 2>&1 || true
fi
