#!/bin/sh
# Provisioning of a `headless` node, run on the node itself by `raptiformica slave`.
# Everything it needs was uploaded by the slaver (binary and artifacts on PATH), so it works
# without internet; it only checks that the node is complete and says what is missing.
set -eu
missing=""
for tool in raptiformica; do
  command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  echo "headless bootstrap: missing on PATH:$missing (slave this machine again to upload them)" >&2
  exit 1
fi
echo "headless bootstrap: $(raptiformica --version) ready"
