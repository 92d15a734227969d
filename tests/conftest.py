"""Shared test settings and fixtures: quiet TensorFlow, synthetic CIFAR-10 files."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
  # Tiers: `pytest -m "not slow" tests` skips the subprocess end-to-end files; CI runs all.
  config.addinivalue_line("markers", "slow: end-to-end tests through subprocesses (minutes)")


def _write_cifar_binary(directory, per_file=20):
  """Official-format batches: 1 label byte + 3,072 pixel bytes; pixels encode the class."""
  os.makedirs(directory, exist_ok=True)
  names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
  for f, name in enumerate(names):
    labels = (np.arange(per_file) + f) % 10
    pixels = np.repeat((labels * 20 + 5)[:, None], 3072, axis=1)
    records = np.concatenate([labels[:, None], pixels], axis=1).astype(np.uint8)
    with open(os.path.join(directory, name), "wb") as out:
      out.write(records.tobytes())


@pytest.fixture(autouse=True, scope="session")
def _kernel_cache(tmp_path_factory):
  """Native kernels (l2l_tf/kernels) build into one cache per session, inherited by the
  scripts the tests start: built once, and never into the user's ~/.cache. A cache named by
  L2L_TF_KERNEL_CACHE is kept (CI shares one between pytest and the Bazel targets)."""
  if not os.environ.get("L2L_TF_KERNEL_CACHE"):
    os.environ["L2L_TF_KERNEL_CACHE"] = str(tmp_path_factory.mktemp("kernel_cache"))


@pytest.fixture(name="cifar_dir", scope="session")
def fixture_cifar_dir(tmp_path_factory):
  """A directory of CIFAR-10 binary batches (20 records each) for dataset_source="binary"."""
  directory = str(tmp_path_factory.mktemp("cifar"))
  _write_cifar_binary(directory)
  return directory
