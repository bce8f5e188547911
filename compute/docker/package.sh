#!/bin/sh
# Rebuild the docker base image raptiformica-base:bookworm from scratch.
set -eu
SCRIPT_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
exec sh "$SCRIPT_DIR/ensure_image.sh" --force
