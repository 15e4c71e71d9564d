#!/usr/bin/env bash
# Debian packages the tests need: Docker Engine, Chromium for the wait-page test, debootstrap
# for the test images, iproute2 for `ss`, Node.js for the test identity provider. Installs only
# what is missing.
set -euo pipefail
needed=()
for pkg in docker.io chromium debootstrap iproute2 python3-venv make; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || needed+=("$pkg")
done
# Node.js and npm run the demo/test identity provider; any install that provides the commands will
# do (a machine may have them from elsewhere than Debian, so test the commands, not packages).
command -v npm >/dev/null 2>&1 || needed+=(nodejs npm)
if ((${#needed[@]})); then
  echo "installing: ${needed[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${needed[@]}" >/dev/null
fi
