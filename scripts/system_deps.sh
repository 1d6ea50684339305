#!/usr/bin/env bash
# Optional system packages for some test modules: Debian's Chromium (the web page's browser test),
# podman + runc + debootstrap (the container test) and PostgreSQL (the store conformance suite's
# postgres backend and the e2e tests on --store postgresql://, tests/postgres.py). Installed only
# where we are root with apt (CI, the dev machines); elsewhere those tests skip and say why.
set -uo pipefail
want=()
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v podman >/dev/null 2>&1 || want+=(podman)
command -v runc >/dev/null 2>&1 || want+=(runc)
command -v debootstrap >/dev/null 2>&1 || want+=(debootstrap)
# Debian keeps initdb/pg_ctl in /usr/lib/postgresql/<version>/bin, off $PATH.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null 2>&1 || want+=(postgresql)
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system_deps: not root with apt; tests needing ${want[*]} will skip"
    exit 0
fi
echo "system_deps: installing ${want[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! timeout 900 bash -c "apt-get update -qq && apt-get install -y -qq ${want[*]} >/dev/null"; then
    echo "system_deps: could not install ${want[*]}; tests needing them will skip"
fi
exit 0
