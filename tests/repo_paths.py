"""Where the repository's files are for a test: the checkout, or Bazel's runfiles tree.

Tests read and run files outside the package (scripts/, benchmarks/, savedmodels/, results/,
docs/, README.md, ...) through ROOT, so that the same test works under `pytest tests` from a
checkout and under `bazel test //tests:all`, where only the files tests/BUILD declares as data
are present.
"""

import os


def _root():
  """The repository root: Bazel's runfiles tree of this workspace, or else the checkout."""
  # `bazel test` sets both; subprocesses of a test inherit them, so a test file run as a script
  # (from its symlink-resolved source directory) still finds the runfiles tree.
  runfiles, workspace = os.environ.get("TEST_SRCDIR"), os.environ.get("TEST_WORKSPACE")
  if runfiles and workspace:
    return os.path.join(runfiles, workspace)
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


ROOT = _root()
