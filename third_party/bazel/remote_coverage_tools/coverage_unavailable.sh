#!/bin/bash
# Placeholder for Bazel's downloaded coverage tools (not available offline).
echo "remote_coverage_tools: coverage tools are not available in this offline setup" >&2
exit 0
