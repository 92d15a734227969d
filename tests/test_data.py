"""Tests of l2l_tf.data: offline, on the embedded MNIST sample and files written here."""

import gzip
import os
import shutil

import numpy as np
import pytest

from l2l_tf.data import (
  DataError,
  load_cifar10,
  load_mnist,
  read_cifar10_binary,
  read_idx,
  split_train_validation,
)
from l2l_tf.data import cifar
from l2l_tf.data.mnist import EMBEDDED_DIR

MNIST_FILES = (
  "train-images-idx3-ubyte",
  "train-labels-idx1-ubyte",
  "t10k-images-idx3-ubyte",
  "t10k-labels-idx1-ubyte",
)


def _assert_mnist(images, labels, n=None):
  assert images.dtype == np.float32 and labels.dtype == np.int32
  assert images.ndim == 2 and images.shape[1] == 784
  assert labels.shape == (images.shape[0],)
  if n is not None:
    assert images.shape[0] == n
  assert images.min() >= 0.0 and images.max() <= 1.0
  assert labels.min() >= 0 and labels.max() <= 9


# ---------------------------------------------------------------- MNIST


@pytest.mark.parametrize("split,n", [("train", 3500), ("test", 500)])
def test_embedded_mnist(split, n):
  images, labels = load_mnist("embedded", split)
  _assert_mnist(images, labels, n)
  # The sample is balanced: every digit, n/10 times.
  np.testing.assert_array_equal(np.bincount(labels, minlength=10), [n // 10] * 10)
  # Scaled to [0, 1] (not 0..255, not left at 0..1/255): real digits use the full range
  # and have MNIST's mean intensity of about 0.13.
  assert images.min() == 0.0 and images.max() == 1.0
  assert 0.1 < images.mean() < 0.16


def test_train_and_test_differ():
  train, _ = load_mnist(split="train")
  test, _ = load_mnist(split="test")
  assert not np.array_equal(train[:500], test)


@pytest.fixture(name="idx_dir")
def fixture_idx_dir(tmp_path):
  """A copy of the package's gzip IDX sample, as a user would download it."""
  for name in MNIST_FILES:
    shutil.copy(os.path.join(EMBEDDED_DIR, name + ".gz"), tmp_path)
  return tmp_path


@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_source_matches_embedded(idx_dir, split):
  expected = load_mnist("embedded", split)
  got = load_mnist("idx", split, data_dir=str(idx_dir))
  np.testing.assert_array_equal(got[0], expected[0])
  np.testing.assert_array_equal(got[1], expected[1])


def test_idx_source_reads_uncompressed_files(idx_dir):
  for name in MNIST_FILES:
    gz = idx_dir / (name + ".gz")
    (idx_dir / name).write_bytes(gzip.decompress(gz.read_bytes()))
    gz.unlink()
  for split in ("train", "test"):
    expected = load_mnist("embedded", split)
    got = load_mnist("idx", split, data_dir=str(idx_dir))
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_idx_missing_files_are_named(idx_dir):
  (idx_dir / "train-labels-idx1-ubyte.gz").unlink()
  with pytest.raises(DataError) as info:
    load_mnist("idx", "train", data_dir=str(idx_dir))
  message = str(info.value)
  assert "train-labels-idx1-ubyte" in message and str(idx_dir) in message
  assert "train-images" not in message  # present files are not reported missing
  # The test split is still complete.
  _assert_mnist(*load_mnist("idx", "test", data_dir=str(idx_dir)), n=500)


def test_idx_missing_directory_names_both_files(tmp_path):
  with pytest.raises(DataError, match="t10k-images-idx3-ubyte.*t10k-labels-idx1-ubyte"):
    load_mnist("idx", "test", data_dir=str(tmp_path / "nowhere"))


def _write_idx(path, array, type_code=0x08):
  header = bytes([0, 0, type_code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
  path.write_bytes(header + array.tobytes())


def test_read_idx_roundtrip_non_uint8(tmp_path):
  # int16 is stored big-endian: checks byte order and multi-byte payload sizes.
  array = np.arange(-6, 6, dtype=">i2").reshape(3, 4)
  _write_idx(tmp_path / "a.idx", array, type_code=0x0B)
  got = read_idx(str(tmp_path / "a.idx"))
  assert got.shape == (3, 4) and got.dtype == np.int16
  np.testing.assert_array_equal(got, np.arange(-6, 6).reshape(3, 4))


def test_read_idx_bad_magic(tmp_path):
  path = tmp_path / "bad-magic-idx1-ubyte"
  path.write_bytes(b"\x01\x02\x08\x01" + np.array([3], ">u4").tobytes() + b"\x00\x01\x02")
  with pytest.raises(DataError, match="bad-magic-idx1-ubyte.*magic"):
    read_idx(str(path))


def test_read_idx_unknown_type_code(tmp_path):
  path = tmp_path / "bad-type"
  _write_idx(path, np.zeros(3, np.uint8), type_code=0x42)
  with pytest.raises(DataError, match="bad-type.*type code"):
    read_idx(str(path))


def test_read_idx_truncated_payload(tmp_path):
  raw = gzip.decompress((open(os.path.join(EMBEDDED_DIR, MNIST_FILES[0] + ".gz"), "rb").read()))
  path = tmp_path / "short-images-idx3-ubyte.gz"
  path.write_bytes(gzip.compress(raw[:-100]))  # valid gzip, payload 100 bytes short
  with pytest.raises(DataError, match="short-images-idx3-ubyte.gz.*truncated"):
    read_idx(str(path))


def test_read_idx_truncated_gzip_stream(tmp_path):
  data = open(os.path.join(EMBEDDED_DIR, MNIST_FILES[1] + ".gz"), "rb").read()
  path = tmp_path / "cut-labels-idx1-ubyte.gz"
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(DataError, match="cut-labels-idx1-ubyte.gz"):
    read_idx(str(path))


def test_corrupt_file_through_load_mnist(idx_dir):
  (idx_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08"))
  with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
    load_mnist("idx", "test", data_dir=str(idx_dir))


def _write_test_split(idx_dir, images=None, labels=None, labels_code=0x08):
  """Replaces the test split's IDX files (gzip-less) by the given arrays."""
  for name in MNIST_FILES[2:]:
    (idx_dir / (name + ".gz")).unlink()
  if images is None:
    images = np.zeros((3, 28, 28), np.uint8)
  if labels is None:
    labels = np.zeros(len(images), np.uint8)
  _write_idx(idx_dir / MNIST_FILES[2], images)
  _write_idx(idx_dir / MNIST_FILES[3], labels, type_code=labels_code)


@pytest.mark.parametrize(
  "labels,code,match",
  [
    (np.array([0, 10, 2], np.uint8), 0x08, "label 10 outside 0..9"),
    (np.array([0, -1, 2], np.int8), 0x09, "expected 3 uint8 labels, got int8"),
    (np.array([0, 1, 300], ">i4"), 0x0C, "expected 3 uint8 labels, got int32"),
    (np.array([0.0, 1.5, 2.0], ">f4"), 0x0D, "expected 3 uint8 labels, got float32"),
  ],
)
def test_idx_labels_out_of_range_are_refused_by_the_loader(idx_dir, labels, code, match):
  _write_test_split(idx_dir, labels=labels, labels_code=code)
  with pytest.raises(DataError, match=f"t10k-labels-idx1-ubyte: {match}"):
    load_mnist("idx", "test", data_dir=str(idx_dir))


@pytest.mark.parametrize("shape", [(3, 1, 1), (3, 28, 27), (3, 784)])
def test_idx_images_that_are_not_28x28_are_refused(idx_dir, shape):
  _write_test_split(idx_dir, images=np.zeros(shape, np.uint8))
  with pytest.raises(
    DataError,
    match=r"t10k-images-idx3-ubyte: expected uint8 MNIST images "
    r"\[N, 28, 28\]",
  ):
    load_mnist("idx", "test", data_dir=str(idx_dir))


@pytest.mark.parametrize("dims", [[65536] * 4, [2**32 - 1] * 3, [60000, 2**31, 2**31]])
def test_idx_header_dimensions_that_overflow_name_the_file(tmp_path, dims):
  # [65536] * 4 is 2**64 bytes: a numpy int64 product wraps to 0 and matched an empty payload.
  path = tmp_path / "huge-images-idx3-ubyte"
  path.write_bytes(bytes([0, 0, 0x08, len(dims)]) + np.array(dims, ">u4").tobytes())
  with pytest.raises(DataError, match=f"{path.name}: IDX header shape .* declares .* over the"):
    read_idx(str(path))


def test_gzip_idx_is_read_no_further_than_its_header_allows(tmp_path):
  # 10 MB of zeros compress to ~10 KB; the header declares 3 bytes, so reading stops early.
  path = tmp_path / "bomb-labels-idx1-ubyte.gz"
  path.write_bytes(
    gzip.compress(bytes([0, 0, 0x08, 1]) + np.array([3], ">u4").tobytes() + bytes(10_000_000))
  )
  with pytest.raises(DataError, match=f"{path.name}: IDX file is longer than its header"):
    read_idx(str(path))


@pytest.mark.parametrize(
  "kwargs,choice",
  [({"source": "web"}, "embedded, idx, tfds"), ({"split": "validation"}, "train, test")],
)
def test_mnist_unknown_choices(kwargs, choice):
  with pytest.raises(ValueError, match=choice):
    load_mnist(**kwargs)


@pytest.mark.parametrize("split", ["train", "test"])
def test_tfds_mnist_under_mock(split):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):
    images, labels = load_mnist("tfds", split)
  _assert_mnist(images, labels, n=12)
  assert images.max() > 0.5  # scaled from random 0..255 content, not all zero


def test_split_train_validation():
  images, labels = load_mnist()
  (x_tr, y_tr), (x_va, y_va) = split_train_validation(images, labels, 0.1, seed=3)
  assert len(x_tr) == len(y_tr) == 3150 and len(x_va) == len(y_va) == 350
  # Together the parts are the original examples, each exactly once.
  merged = np.concatenate([x_tr, x_va])
  order = np.lexsort(merged.T)
  np.testing.assert_array_equal(merged[order], images[np.lexsort(images.T)])
  # Images stay paired with their labels.
  row = {images[i].tobytes(): labels[i] for i in range(len(images))}
  assert all(row[x.tobytes()] == y for x, y in zip(x_va, y_va))
  # Deterministic by seed, different across seeds.
  (_, _), (x_va2, _) = split_train_validation(images, labels, 0.1, seed=3)
  (_, _), (x_va3, _) = split_train_validation(images, labels, 0.1, seed=4)
  np.testing.assert_array_equal(x_va, x_va2)
  assert not np.array_equal(x_va, x_va3)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1e-6])
def test_split_train_validation_bad_fraction(fraction):
  with pytest.raises(ValueError, match="validation_fraction"):
    split_train_validation(np.zeros((10, 2)), np.zeros(10), fraction)


# ---------------------------------------------------------------- CIFAR-10


def _cifar_records(labels, seed):
  """Random CHW images with the given labels, and their CIFAR-10 binary encoding."""
  chw = np.random.default_rng(seed).integers(0, 256, (len(labels), 3, 32, 32), np.uint8)
  raw = np.concatenate([np.array(labels, np.uint8)[:, None], chw.reshape(len(labels), -1)], axis=1)
  return chw, raw.tobytes()


def test_read_cifar10_binary_layout(tmp_path):
  chw, raw = _cifar_records([3, 0, 9], seed=0)
  (tmp_path / "b.bin").write_bytes(raw)
  images, labels = read_cifar10_binary(str(tmp_path / "b.bin"))
  assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
  assert labels.dtype == np.int32
  np.testing.assert_array_equal(labels, [3, 0, 9])
  np.testing.assert_array_equal(images, chw.transpose(0, 2, 3, 1))
  # Explicitly: pixel (row 1, col 2) of image 0 takes one byte from each colour plane;
  # the first 1,024 image bytes are the red plane, in row-major order.
  record = np.frombuffer(raw, np.uint8)[:3073]
  np.testing.assert_array_equal(images[0, 1, 2], record[1 + 32 + 2 :: 1024])


def test_read_cifar10_binary_bad_size(tmp_path):
  _, raw = _cifar_records([1, 2], seed=1)
  (tmp_path / "short_batch.bin").write_bytes(raw[:-1])
  with pytest.raises(DataError, match="short_batch.bin.*3073"):
    read_cifar10_binary(str(tmp_path / "short_batch.bin"))


def test_read_cifar10_binary_too_large_is_refused_unread(tmp_path, monkeypatch):
  monkeypatch.setattr(cifar, "MAX_BATCH_BYTES", 2 * 3073)
  path = tmp_path / "data_batch_1.bin"
  path.write_bytes(bytes(3 * 3073))
  with pytest.raises(DataError, match="data_batch_1.bin: 9219 bytes, over the 6146-byte"):
    read_cifar10_binary(str(path))


def test_read_cifar10_binary_bad_label(tmp_path):
  _, raw = _cifar_records([1, 10], seed=2)
  (tmp_path / "c100.bin").write_bytes(raw)
  with pytest.raises(DataError, match="c100.bin.*label 10"):
    read_cifar10_binary(str(tmp_path / "c100.bin"))


@pytest.fixture(name="cifar_dir")
def fixture_cifar_dir(tmp_path):
  """Small official-layout batches; returns (data_dir, {file: (chw, labels)})."""
  folder = tmp_path / "cifar-10-batches-bin"
  folder.mkdir()
  content = {}
  names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
  for i, name in enumerate(names):
    labels = [(i + j) % 10 for j in range(10)]
    chw, raw = _cifar_records(labels, seed=10 + i)
    (folder / name).write_bytes(raw)
    content[name] = (chw, np.array(labels))
  return tmp_path, content


def test_load_cifar10_binary(cifar_dir):
  data_dir, content = cifar_dir
  for directory in (data_dir, data_dir / "cifar-10-batches-bin"):  # both layouts
    images, labels = load_cifar10("binary", "train", data_dir=str(directory))
    assert images.shape == (50, 32, 32, 3) and images.dtype == np.float32
    assert labels.dtype == np.int32
    chw = np.concatenate([content[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    np.testing.assert_allclose(images, chw.transpose(0, 2, 3, 1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(
      labels, np.concatenate([content[f"data_batch_{i}.bin"][1] for i in range(1, 6)])
    )
  images, labels = load_cifar10("binary", "test", data_dir=str(data_dir))
  np.testing.assert_array_equal(labels, content["test_batch.bin"][1])


def test_load_cifar10_binary_label_subset(cifar_dir):
  data_dir, content = cifar_dir
  chw, original = content["test_batch.bin"]  # labels 5, 6, ..., 9, 0, ..., 4
  images, labels = load_cifar10("binary", "test", data_dir=str(data_dir), labels=[7, 2])
  # Only classes 7 and 2 are kept, renumbered in the given order: 7 -> 0, 2 -> 1.
  kept = np.flatnonzero(np.isin(original, [7, 2]))
  np.testing.assert_array_equal(labels, np.where(original[kept] == 7, 0, 1))
  np.testing.assert_allclose(images, chw[kept].transpose(0, 2, 3, 1) / 255.0, rtol=1e-6)
  assert labels.dtype == np.int32


def test_load_cifar10_binary_missing_files(cifar_dir):
  data_dir, _ = cifar_dir
  (data_dir / "cifar-10-batches-bin" / "data_batch_4.bin").unlink()
  with pytest.raises(DataError) as info:
    load_cifar10("binary", "train", data_dir=str(data_dir))
  assert "data_batch_4.bin" in str(info.value)
  assert "data_batch_3.bin" not in str(info.value)
  with pytest.raises(DataError, match="test_batch.bin"):
    load_cifar10("binary", "test", data_dir=str(data_dir / "empty"))


@pytest.mark.parametrize(
  "subset,match",
  [
    ([], "empty"),
    ([1, 1], "duplicates"),
    ([3, 10], "0..9"),
    ([-1], "0..9"),
    (["a"], "0..9"),
    ([True], "0..9"),
  ],
)
def test_load_cifar10_bad_label_subsets(cifar_dir, subset, match):
  data_dir, _ = cifar_dir
  with pytest.raises(ValueError, match=match) as info:
    load_cifar10("binary", "test", data_dir=str(data_dir), labels=subset)
  assert not isinstance(info.value, DataError)


@pytest.mark.parametrize(
  "kwargs,choice", [({"source": "pickle"}, "tfds, binary"), ({"split": "valid"}, "train, test")]
)
def test_cifar10_unknown_choices(kwargs, choice):
  with pytest.raises(ValueError, match=choice):
    load_cifar10(**kwargs)


def test_tfds_cifar10_under_mock():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=40):
    images, labels = load_cifar10("tfds", "train")
    sub_images, sub_labels = load_cifar10("tfds", "test", labels=[4, 1])
  assert images.shape == (40, 32, 32, 3) and images.dtype == np.float32
  assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() <= 9
  assert images.min() >= 0.0 and 0.5 < images.max() <= 1.0
  # mock_data yields the same examples for train and test, so the subset is checkable.
  kept = np.isin(labels, [4, 1])
  assert kept.any() and not kept.all()
  np.testing.assert_array_equal(sub_labels, np.where(labels[kept] == 4, 0, 1))
  np.testing.assert_array_equal(sub_images, images[kept])


def test_read_idx_detects_gzip_by_content(tmp_path):
  # Compression is recognised from the gzip magic bytes, not from the file name.
  path = tmp_path / "labels-without-suffix"
  path.write_bytes(open(os.path.join(EMBEDDED_DIR, MNIST_FILES[3] + ".gz"), "rb").read())
  np.testing.assert_array_equal(read_idx(str(path)), load_mnist(split="test")[1])
