"""MNIST loaders: IDX files (the package's embedded sample or the official files) and tfds."""

import gzip
import math
import os
import zlib

import numpy as np

from l2l_tf.data.errors import DataError

# IDX type codes (third byte of the magic number) -> big-endian numpy dtypes.
_IDX_DTYPES = {
  0x08: np.dtype(">u1"),
  0x09: np.dtype(">i1"),
  0x0B: np.dtype(">i2"),
  0x0C: np.dtype(">i4"),
  0x0D: np.dtype(">f4"),
  0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
# The largest payload an IDX header may declare (the official train images are 47 MB).
MAX_IDX_BYTES = 1 << 30
_CHUNK_BYTES = 16 << 20
MNIST_IMAGE_SHAPE = (28, 28)

SOURCES = ("embedded", "idx", "tfds")
SPLITS = ("train", "test")
# Official MNIST file names; "test" is called t10k there.
_IDX_PREFIX = {"train": "train", "test": "t10k"}
EMBEDDED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist_sample")


def _read_exactly(f, size, path):
  """Reads `size` bytes in bounded chunks (a short file never makes one huge allocation)."""
  chunks, left = [], size
  while left:
    chunk = f.read(min(left, _CHUNK_BYTES))
    if not chunk:
      break
    chunks.append(chunk)
    left -= len(chunk)
  data = b"".join(chunks)
  if len(data) != size:
    raise DataError(
      f"{path}: IDX payload is {len(data)} bytes but the header needs {size} "
      "(truncated or corrupt file)"
    )
  return data


def _read_idx_stream(f, path):
  """Parses an IDX stream: header first, so that the payload size is known before it is read."""
  magic = f.read(4)
  if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
    raise DataError(
      f"{path}: bad IDX magic number {magic.hex() or '(empty)'}; "
      "expected 0x0000 followed by a type code and a dimension count"
    )
  dtype = _IDX_DTYPES.get(magic[2])
  if dtype is None:
    raise DataError(
      f"{path}: unknown IDX type code 0x{magic[2]:02x}; "
      f"expected one of {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}"
    )
  ndim = magic[3]
  if ndim == 0:
    raise DataError(f"{path}: IDX header declares no dimensions")
  dims = f.read(4 * ndim)
  if len(dims) < 4 * ndim:
    raise DataError(f"{path}: truncated IDX header ({ndim} dimensions, {4 + len(dims)} bytes)")
  # Python ints: a numpy product of corrupt dimensions would silently overflow.
  shape = tuple(int(d) for d in np.frombuffer(dims, ">u4"))
  size = math.prod(shape) * dtype.itemsize
  if size > MAX_IDX_BYTES:
    raise DataError(
      f"{path}: IDX header shape {shape} declares {size} bytes, over the "
      f"{MAX_IDX_BYTES}-byte limit (corrupt header?)"
    )
  data = _read_exactly(f, size, path)
  if f.read(1):
    raise DataError(
      f"{path}: IDX file is longer than its header shape {shape} (corrupt header or trailing data)"
    )
  return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path):
  """Reads an IDX file (gzip-compressed or plain) into a numpy array.

  The array has the file's shape and its native dtype (converted to the machine's byte
  order). Raises DataError, naming the file, for a bad magic number, an unknown type
  code, a header declaring more than MAX_IDX_BYTES, or a payload whose size does not
  match the header's dimensions. Nothing larger than the header allows is read.
  """
  try:
    with open(path, "rb") as raw:
      # Detect compression by content, not by name: renamed files are common.
      compressed = raw.read(2) == _GZIP_MAGIC
      raw.seek(0)
      if not compressed:
        return _read_idx_stream(raw, path)
      with gzip.GzipFile(fileobj=raw) as f:
        return _read_idx_stream(f, path)
  except (EOFError, OSError, zlib.error) as e:
    raise DataError(f"{path}: cannot read IDX file ({e})") from e


def _check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")


def _idx_paths(directory, split):
  """Returns (images_path, labels_path) in `directory`, accepting .gz or plain files."""
  prefix = _IDX_PREFIX[split]
  names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
  paths, missing = [], []
  for name in names:
    found = [
      p
      for p in (os.path.join(directory, name + ".gz"), os.path.join(directory, name))
      if os.path.isfile(p)
    ]
    paths.append(found[0] if found else None)
    if not found:
      missing.append(f"{name}[.gz]")
  if missing:
    raise DataError(f"MNIST {split} files missing in {directory}: {', '.join(missing)}")
  return paths


def _read_idx_split(directory, split):
  images_path, labels_path = _idx_paths(directory, split)
  images, labels = read_idx(images_path), read_idx(labels_path)
  if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1:] != MNIST_IMAGE_SHAPE:
    raise DataError(
      f"{images_path}: expected uint8 MNIST images [N, 28, 28], got {images.dtype} {images.shape}"
    )
  if labels.ndim != 1 or labels.dtype != np.uint8 or labels.shape[0] != images.shape[0]:
    raise DataError(
      f"{labels_path}: expected {images.shape[0]} uint8 labels, got {labels.dtype} {labels.shape}"
    )
  if labels.size and labels.max() > 9:
    raise DataError(f"{labels_path}: label {labels.max()} outside 0..9")
  if not images.shape[0]:
    raise DataError(f"{images_path}: no images")
  return images, labels


def load_tfds_numpy(name, split, data_dir=None):
  """Loads a whole tfds split as numpy arrays (images, labels), via as_supervised.

  tensorflow_datasets is imported here so that the other sources work without it.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  ds = tfds.load(name, split=split, data_dir=data_dir, as_supervised=True)
  # Same result as batch_size=-1, which batches by the split size recorded in the
  # dataset's metadata; without that metadata (tfds.testing.mock_data) it batches by
  # sys.maxsize and the process aborts. The dataset's own cardinality is always known.
  count = int(ds.cardinality())
  if count <= 0:
    raise DataError(f"tfds {name!r} split {split!r}: unknown or empty split ({count})")
  images, labels = tfds.as_numpy(ds.batch(count).get_single_element())
  return images, labels


def load_mnist(source="embedded", split="train", data_dir=None):
  """Loads MNIST as (images float32 [N, 784] in [0, 1], labels int32 [N] in 0..9).

  Args:
    source: "embedded" (the package's 3,500 train / 500 test sample), "idx" (a directory
      `data_dir` holding the official IDX files, gzip-compressed or not) or "tfds"
      (tensorflow_datasets, downloading to `data_dir` if needed).
    split: "train" or "test".
    data_dir: directory for "idx" (required) and "tfds" (optional).
  """
  _check_choice("source", source, SOURCES)
  _check_choice("split", split, SPLITS)
  if source == "tfds":
    images, labels = load_tfds_numpy("mnist", split, data_dir)
  else:
    if source == "idx" and data_dir is None:
      raise ValueError("source='idx' needs data_dir, the directory of the IDX files")
    directory = EMBEDDED_DIR if source == "embedded" else data_dir
    images, labels = _read_idx_split(directory, split)
  images = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
  return images, labels.astype(np.int32)


def split_train_validation(images, labels, validation_fraction=0.1, seed=0):
  """Splits arrays into ((train_images, train_labels), (val_images, val_labels)).

  The split is a random permutation drawn from `seed`, so it is the same on every run
  with the same seed. `validation_fraction` must leave both parts non-empty.
  """
  n = len(images)
  if len(labels) != n:
    raise ValueError(f"images ({n}) and labels ({len(labels)}) differ in length")
  if not 0.0 < validation_fraction < 1.0:
    raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
  n_val = int(round(n * validation_fraction))
  if not 0 < n_val < n:
    raise ValueError(
      f"validation_fraction {validation_fraction} of {n} examples leaves "
      "an empty train or validation part"
    )
  order = np.random.default_rng(seed).permutation(n)
  val, train = order[:n_val], order[n_val:]
  return (images[train], labels[train]), (images[val], labels[val])


def load_problem_split(load, split, seed=0, validation_fraction=0.1):
  """(images, labels) of a problem's split: the test set, or part of the training set.

  "test" is load("test"); "train" and "validation" are the two parts of load("train") that
  split_train_validation draws from `seed` (90% / 10% by default), so that validation
  examples are never trained on.

  Args:
    load: a function of a dataset split ("train" or "test") -> (images, labels).
    split: "train", "validation" or "test".
  """
  if split == "test":
    return load("test")
  train, validation = split_train_validation(
    *load("train"), validation_fraction=validation_fraction, seed=seed
  )
  return train if split == "train" else validation
