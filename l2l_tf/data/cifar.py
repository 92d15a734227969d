"""CIFAR-10 loaders: the official binary batches and tfds, with optional class subsets."""

import os

import numpy as np

from l2l_tf.data.errors import DataError
from l2l_tf.data.mnist import load_tfds_numpy

SOURCES = ("tfds", "binary")
SPLITS = ("train", "test")
_RECORD = 1 + 3 * 32 * 32  # one label byte, then the red, green and blue 32x32 planes
MAX_BATCH_BYTES = 1 << 30  # refuse to read more than this from one batch file
_BINARY_FILES = {
  "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
  "test": ("test_batch.bin",),
}
# The official archive extracts to this folder; accept data_dir pointing above it too.
_BINARY_SUBDIR = "cifar-10-batches-bin"


def read_cifar10_binary(path):
  """Reads one CIFAR-10 binary batch file.

  Returns (images uint8 [N, 32, 32, 3] in HWC order, labels int32 [N]). Raises DataError,
  naming the file, when its size is not a whole number of 3,073-byte records or a label
  is outside 0..9.
  """
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    if size > MAX_BATCH_BYTES:
      raise DataError(
        f"{path}: {size} bytes, over the {MAX_BATCH_BYTES}-byte limit for one "
        "CIFAR-10 batch file (official batches are 30,730,000 bytes)"
      )
    raw = np.frombuffer(f.read(), np.uint8)
  if raw.size == 0 or raw.size % _RECORD:
    raise DataError(
      f"{path}: size {raw.size} bytes is not a positive multiple of the "
      f"{_RECORD}-byte CIFAR-10 record (truncated or not a CIFAR-10 file)"
    )
  records = raw.reshape(-1, _RECORD)
  labels = records[:, 0].astype(np.int32)
  if labels.max() > 9:
    raise DataError(
      f"{path}: label {labels.max()} outside 0..9 (not a CIFAR-10 file? "
      "CIFAR-100 records have two label bytes)"
    )
  # Records store channel-major planes (CHW); models expect channels last (HWC).
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), labels


def _check_label_subset(labels):
  """Validates a list of class ids to keep; returns it as a tuple of ints."""
  ids = tuple(labels)
  if not ids:
    raise ValueError("labels must name at least one CIFAR-10 class id, got an empty list")
  bad = [
    c for c in ids if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c <= 9
  ]
  if bad:
    raise ValueError(f"labels must be integer class ids in 0..9, got invalid {bad}")
  if len(set(ids)) != len(ids):
    dup = sorted({c for c in ids if ids.count(c) > 1})
    raise ValueError(f"labels must not repeat a class id, got duplicates {dup}")
  return tuple(int(c) for c in ids)


def _read_binary_split(data_dir, split):
  names = _BINARY_FILES[split]
  sub = os.path.join(data_dir, _BINARY_SUBDIR)
  directory = sub if os.path.isfile(os.path.join(sub, names[0])) else data_dir
  missing = [n for n in names if not os.path.isfile(os.path.join(directory, n))]
  if missing:
    raise DataError(f"CIFAR-10 {split} files missing in {directory}: {', '.join(missing)}")
  parts = [read_cifar10_binary(os.path.join(directory, n)) for n in names]
  return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar10(source="tfds", split="train", data_dir=None, labels=None):
  """Loads CIFAR-10 as (images float32 [N, 32, 32, 3] in [0, 1], labels int32 [N]).

  Args:
    source: "tfds" (tensorflow_datasets, downloading to `data_dir` if needed) or
      "binary" (the official binary batches in `data_dir`, or in its
      cifar-10-batches-bin/ subdirectory).
    split: "train" (data_batch_1..5) or "test" (test_batch).
    data_dir: directory for "binary" (required) and "tfds" (optional).
    labels: optional list of class ids to keep, e.g. [0, 1, 2, 3, 4] for CIFAR-5 or
      [3, 5] for a two-class problem. Kept classes are renumbered 0..k-1 in the order
      given, so labels=[5, 3] maps class 5 to 0 and class 3 to 1.
  """
  if source not in SOURCES:
    raise ValueError(f"unknown source {source!r}; valid choices: {', '.join(SOURCES)}")
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
  # Validate the subset before any (possibly slow) loading.
  keep = None if labels is None else _check_label_subset(labels)
  if source == "binary":
    if data_dir is None:
      raise ValueError("source='binary' needs data_dir, the directory of the .bin files")
    images, y = _read_binary_split(data_dir, split)
  else:
    images, y = load_tfds_numpy("cifar10", split, data_dir)
  y = y.astype(np.int32)
  if keep is not None:
    remap = np.full(10, -1, np.int32)
    remap[list(keep)] = np.arange(len(keep), dtype=np.int32)
    mask = remap[y] >= 0
    images, y = images[mask], remap[y[mask]]
  return images.astype(np.float32) / 255.0, y
