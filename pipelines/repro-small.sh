#!/usr/bin/env bash
# The small-scale reproduction study (issue "Evidence"); settings in pipelines/repro-small.json.
# Needs the CIFAR-10 JPEGs (path in the config) and Debian's dataset-fashion-mnist.
set -euo pipefail
cd "$(dirname "$0")/.."
python pipelines/repro_small.py "$@"
