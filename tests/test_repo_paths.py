"""repo_paths.ROOT holds the files tests read outside the package, under pytest and Bazel.

Under `bazel test` this checks that tests/BUILD declares them as data (//:repo_files).
"""

import os

import pytest

import repo_paths


@pytest.mark.parametrize(
  "relative_path",
  [
    "README.md",
    "setup.py",
    "ruff.toml",
    "scripts/train.py",
    "scripts/make_results.py",
    "benchmarks/throughput.py",
    "savedmodels/mnist",
    "results/quadratic.json",
    "docs/RESULTS.md",
    "l2l_tf/__init__.py",
  ],
)
def test_root_holds_the_repository_files_tests_use(relative_path):
  assert os.path.exists(os.path.join(repo_paths.ROOT, relative_path))
