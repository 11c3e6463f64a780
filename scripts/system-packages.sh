#!/usr/bin/env bash
# System packages the DICOM tests use: Orthanc with its DICOMweb plugin (a real PACS for the
# --dicomweb tests), dicom3tools (dciodvfy) and dcmtk (dsrdump) to validate the SR and images.
# Installs them with apt where it can (root, or sudo without a password, on Debian/Ubuntu);
# elsewhere it says so and returns 0: those tests then skip with a reason. Idempotent, and quiet
# when everything is installed.
set -euo pipefail
packages=(orthanc orthanc-dicomweb dicom3tools dcmtk)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-packages: no apt-get here; install ${missing[*]} yourself (the tests that need them skip)" >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  sudo=(sudo -n)
else
  echo "system-packages: not root; run 'sudo bash scripts/system-packages.sh' to install ${missing[*]}" \
       "(the tests that need them skip)" >&2
  exit 0
fi
echo "system-packages: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Debian's orthanc package also enables its own service (port 8042); the tests start their own.
if ! { "${sudo[@]}" apt-get update -qq && \
       "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
  echo "system-packages: apt-get could not install ${missing[*]} (the tests that need them skip)" >&2
fi
