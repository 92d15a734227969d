"""Entry point for Bazel py_test targets: runs the given test files with pytest.

Usage (from tests/BUILD): main = "bazel_pytest_main.py", args = ["$(location test_x.py)"].
"""

import os
import sys

import pytest


def _drop_source_tree_from_path():
  # Python puts the symlink-resolved directory of this script (the source
  # tree's tests/) on sys.path; keep imports inside Bazel's runfiles tree.
  here = os.path.dirname(os.path.abspath(__file__))
  real = os.path.dirname(os.path.realpath(__file__))
  if real != here and sys.path and sys.path[0] == real:
    del sys.path[0]


def main(argv):
  _drop_source_tree_from_path()
  args = list(argv) or [os.path.dirname(os.path.abspath(__file__))]
  # The runfiles tree is not a place to write pytest's cache into.
  args = ["-q", "-p", "no:cacheprovider"] + args
  # Bazel's JUnit XML location, so test results show up in the test logs.
  xml = os.environ.get("XML_OUTPUT_FILE")
  if xml:
    args.append("--junitxml=" + xml)
  return pytest.main(args)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
