#!/usr/bin/env bash
# Install what building, testing and demonstrating gdprcrm needs on Debian 12,
# from Debian's own packages.  Does nothing when everything is present.
set -euo pipefail

packages=(
    make gcc
    postgresql-15 postgresql-server-dev-15
    libsodium-dev
    libipc-run-perl
    clang-14 libclang-rt-14-dev
    chromium fonts-noto-color-emoji
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null; then
    sudo=(sudo)
else
    echo "these Debian packages are missing and this user cannot install them: ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
