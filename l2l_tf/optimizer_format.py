"""The on-disk format of trained optimizers: saving, and validated loading.

An optimizer directory holds:
  optimizer.json  {"format": "l2l_tf.optimizer", "version": 1, "cells": {group: cell config},
                   "groups": {group: regex}, "metadata": {...}}
  weights.npz     every cell weight, keyed "group/weight_name" (loaded with allow_pickle=False)
Directories are written next to their target and renamed into place, so a crash never leaves
a half-written optimizer at the target path.

Reading treats the files as hostile: nothing large is allocated before it is validated.
optimizer.json is read up to MAX_CONFIG_BYTES and MAX_JSON_DEPTH levels; each cell config must
name a registered l2l_tf cell, with known arguments of the right types inside the MAX_* bounds
below (so building the cells is cheap); weights.npz must hold exactly the cells' weights, each
member's declared size and .npy header are checked against the built cell before its data is
read, and every weight must be finite. For an exported SavedModel, the files TensorFlow loads
(saved_model.pb, fingerprint.pb, variables/) are verified against the assets too. Every
failure is an OptimizerFileError (a ValueError) whose one-line message names the file.
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
import os
import re
import struct
import zipfile
import zlib
from typing import Any

import keras
import numpy as np

from l2l_tf import atomic_files
from l2l_tf import cells as cells_lib
from l2l_tf import learned_rule

FORMAT = "l2l_tf.optimizer"
VERSION = 1
CONFIG_FILE = "optimizer.json"
WEIGHTS_FILE = "weights.npz"

# Bounds on what an optimizer file may ask for. The paper's cells are two layers of 20 units
# and the shipped optimizer.json files are about 20 KB (wc -c savedmodels/*/assets/*), so
# these leave room for much larger experiments while refusing a file that would take
# gigabytes or minutes to build.
MAX_CONFIG_BYTES = 4 << 20
MAX_JSON_DEPTH = 64
MAX_GROUPS = 16
MAX_LAYERS = 8
MAX_UNITS = 1024
MAX_HEADS = 64
MAX_WINDOW = 1024
MAX_DENSE_COORDINATES = 1 << 16
MAX_WEIGHTS = 1 << 24  # weight elements of all cells together (64 MiB in float32)
MAX_PATTERN_CHARS = 1000
MAX_NAME_CHARS = 128
MAX_SAVED_MODEL_BYTES = 256 << 20
# Group names become weight keys ("group/weight") and signature names: no path syntax.
_GROUP_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_DTYPE_NAMES = ("float16", "bfloat16", "float32", "float64", "mixed_float16", "mixed_bfloat16")
_LAYER_ARGUMENTS = ("name", "trainable", "dtype")  # what keras.layers.Layer.get_config adds
_NPY_HEADER_ALLOWANCE = 4096  # bytes a .npy member may hold beyond its data (its header)


class OptimizerFileError(ValueError):
  """A path that does not hold a readable l2l_tf optimizer."""


# -- writing -----------------------------------------------------------------------------------


def weight_arrays(rule):
  return {
    f"{group}/{w.name}": np.asarray(w.numpy())
    for group, cell in rule.cells.items()
    for w in cell.weights
  }


def rule_config(rule, metadata=None):
  """The optimizer.json content of a rule (everything but its weights)."""
  return {
    "format": FORMAT,
    "version": VERSION,
    "cells": {g: keras.saving.serialize_keras_object(c) for g, c in rule.cells.items()},
    "groups": dict(rule.groups.patterns),
    "metadata": metadata or {},
  }


def write_rule(rule, directory, metadata=None):
  """Writes the rule's configuration and weights into an existing directory."""
  config = rule_config(rule, metadata)
  with open(os.path.join(directory, CONFIG_FILE), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  np.savez(os.path.join(directory, WEIGHTS_FILE), **weight_arrays(rule))


def save_rule(
  rule: learned_rule.LearnedUpdateRule, path: str, metadata: dict[str, Any] | None = None
) -> None:
  """Saves a LearnedUpdateRule to `path` atomically."""
  with atomic_files.atomic_directory(path) as tmp:
    write_rule(rule, tmp, metadata)


# -- locating files ----------------------------------------------------------------------------


def resolve_path(path):
  """An optimizer directory, or a training output directory whose best/ holds one."""
  best = os.path.join(path, "best")
  if not os.path.isfile(os.path.join(path, CONFIG_FILE)) and os.path.isfile(
    os.path.join(best, CONFIG_FILE)
  ):
    return best
  return path


SAVED_MODEL_FILES = ("saved_model.pb", "saved_model.pbtxt")
SAVED_MODEL_ASSETS = "assets"


def is_saved_model(path):
  """Whether `path` is a TensorFlow SavedModel directory (by its saved_model.pb[txt])."""
  return any(os.path.isfile(os.path.join(path, f)) for f in SAVED_MODEL_FILES)


def files_directory(path):
  """Where an optimizer's files are: `path` itself, or a SavedModel's assets/ directory
  (l2l_tf.export.export_saved_model puts optimizer.json and weights.npz there)."""
  return os.path.join(path, SAVED_MODEL_ASSETS) if is_saved_model(path) else path


# -- bounded JSON ------------------------------------------------------------------------------

# A JSON string literal (escapes included): brackets inside strings do not nest.
_JSON_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET_RE = re.compile(r"[\[\]{}]")


def check_json_depth(text, max_depth, source):
  """Refuses JSON text nested deeper than max_depth (before json.loads would recurse)."""
  depth = 0
  for bracket in _JSON_BRACKET_RE.findall(_JSON_STRING_RE.sub("", text)):
    depth += 1 if bracket in "[{" else -1
    if depth > max_depth:
      raise OptimizerFileError(f"{source}: JSON nested deeper than {max_depth} levels")


def parse_json(text, source, max_depth=MAX_JSON_DEPTH):
  """json.loads with a depth bound and a one-line OptimizerFileError for bad JSON."""
  check_json_depth(text, max_depth, source)
  try:
    return json.loads(text)
  except (ValueError, RecursionError) as e:
    raise OptimizerFileError(f"{source}: unreadable JSON ({e})") from e


def read_json(path, max_bytes=MAX_CONFIG_BYTES, max_depth=MAX_JSON_DEPTH):
  """Reads a JSON file of at most max_bytes bytes and max_depth nesting levels."""
  try:
    with open(path, "rb") as f:
      raw = f.read(max_bytes + 1)
  except OSError as e:
    raise OptimizerFileError(f"{path}: unreadable ({e.strerror or e})") from e
  if len(raw) > max_bytes:
    raise OptimizerFileError(f"{path}: larger than {max_bytes} bytes; not an optimizer config")
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    raise OptimizerFileError(f"{path}: not UTF-8 text ({e})") from e
  return parse_json(text, path, max_depth)


# -- config validation -------------------------------------------------------------------------


def _is_int(value):
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
  return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(source, name, value, low, high):
  if not _is_int(value) or not low <= value <= high:
    raise OptimizerFileError(
      f"{source}: {name} must be an integer in [{low}, {high}], got {value!r}"
    )
  return int(value)


def _check_int_list(source, name, value, low, high):
  if not isinstance(value, list) or not 1 <= len(value) <= MAX_LAYERS:
    raise OptimizerFileError(
      f"{source}: {name} must be a list of 1 to {MAX_LAYERS} integers, got {str(value)[:80]}"
    )
  return [_check_int(source, f"{name}[{i}]", v, low, high) for i, v in enumerate(value)]


def _check_per_layer(source, name, value, check_one):
  """None, one value, or a list of values (one per layer) each passing check_one."""
  if value is None:
    return
  values = value if isinstance(value, list) else [value]
  if not 1 <= len(values) <= MAX_LAYERS:
    raise OptimizerFileError(f"{source}: {name} needs 1 to {MAX_LAYERS} entries")
  for v in values:
    check_one(v)


def _check_fraction(source, value):
  if not _is_number(value) or not 0.0 <= value <= 1.0:
    raise OptimizerFileError(
      f"{source}: global_averaging_fraction entries must be numbers in [0, 1], got {value!r}"
    )


def _check_preprocessing(source, value):
  if isinstance(value, str):
    value = {"name": value}
  if (
    not isinstance(value, dict)
    or not isinstance(value.get("name"), str)
    or not all(isinstance(k, str) and _is_number(v) for k, v in value.items() if k != "name")
  ):
    raise OptimizerFileError(
      f'{source}: preprocessing must be a name or {{"name": ..., '
      f"numeric parameters}}, got {str(value)[:80]}"
    )


def _dtype_name(source, value):
  """A cell's dtype entry (a name or a serialized DTypePolicy) as a policy name."""
  if isinstance(value, dict):
    if value.get("class_name") not in ("DTypePolicy", "FloatDTypePolicy") or not isinstance(
      value.get("config"), dict
    ):
      raise OptimizerFileError(f"{source}: dtype must be a DTypePolicy, got {str(value)[:80]}")
    value = value["config"].get("name")
  if value not in _DTYPE_NAMES:
    raise OptimizerFileError(
      f"{source}: dtype {str(value)[:40]!r} is not one of {', '.join(_DTYPE_NAMES)}"
    )
  return value


def _cell_class(source, cell_config):
  """The registered l2l_tf cell class a serialized cell names (no other class is built)."""
  name = cell_config.get("registered_name")
  cls = keras.saving.get_registered_object(name) if isinstance(name, str) else None
  if not (isinstance(cls, type) and issubclass(cls, cells_lib.LearnedOptimizerCell)):
    raise OptimizerFileError(
      f"{source}: {str(name)[:80]!r} is not a registered l2l_tf optimizer cell"
    )
  return cls


def _cell_arguments(cls):
  """Every constructor argument a cell class (and its l2l_tf bases) accepts by name."""
  names = set(_LAYER_ARGUMENTS)
  for klass in cls.__mro__:
    if isinstance(klass, type) and issubclass(klass, cells_lib.LearnedOptimizerCell):
      names.update(
        p.name
        for p in inspect.signature(klass.__init__).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
      )
  return names


def _lstm_weight_count(hidden_sizes, in_features):
  """Weights of a stacked LSTM (kernel, recurrent kernel, bias per layer): the cells' bulk."""
  total = 0
  for units in hidden_sizes:
    total += 4 * units * (in_features + units + 1)
    in_features = units
  return total


def _check_cell_arguments(source, args):
  """Type and bound checks of a cell's constructor arguments; returns its weight estimate."""
  hidden_sizes = _check_int_list(
    source, "hidden_sizes", args.get("hidden_sizes", [20, 20]), 1, MAX_UNITS
  )
  heads = 0
  for name, high in (
    ("num_read_heads", MAX_HEADS),
    ("num_write_heads", MAX_HEADS),
    ("window_size", MAX_WINDOW),
    ("max_dense_coordinates", MAX_DENSE_COORDINATES),
  ):
    if name in args:
      value = _check_int(source, name, args[name], 1, high)
      heads += value if name.startswith("num_") else 0
  _check_per_layer(
    source,
    "global_averaging_units",
    args.get("global_averaging_units"),
    lambda v: _check_int(source, "global_averaging_units", v, 0, MAX_UNITS),
  )
  _check_per_layer(
    source,
    "global_averaging_fraction",
    args.get("global_averaging_fraction"),
    lambda v: _check_fraction(source, v),
  )
  momenta = args.get("momentum_decays", [])  # rnnprop: one input per momentum
  if not isinstance(momenta, list) or len(momenta) > MAX_LAYERS:
    raise OptimizerFileError(
      f"{source}: momentum_decays must be a list of at most {MAX_LAYERS} numbers"
    )
  names = ("second_moment_decay", "epsilon", "initial_learning_rate")
  for value in [args.get(name, 0.0) for name in names] + momenta:
    if not _is_number(value):
      raise OptimizerFileError(f"{source}: rnnprop's arguments must be numbers, got {value!r}")
  if "output_scale" in args and not _is_number(args["output_scale"]):
    raise OptimizerFileError(
      f"{source}: output_scale must be a finite number, got {args['output_scale']!r}"
    )
  if "preprocessing" in args:
    _check_preprocessing(source, args["preprocessing"])
  name = args.get("name", "cell")
  if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
    raise OptimizerFileError(
      f"{source}: cell name must be a string of at most {MAX_NAME_CHARS} characters"
    )
  if "trainable" in args and not isinstance(args["trainable"], bool):
    raise OptimizerFileError(f"{source}: trainable must be true or false")
  # Inputs: two preprocessed features per input (rnnprop: up to 2 + momenta) plus read heads.
  return _lstm_weight_count(hidden_sizes, 2 * (2 + len(momenta)) + heads)


def _check_group_name(source, group):
  if not isinstance(group, str) or not _GROUP_NAME_RE.match(group) or ".." in group:
    raise OptimizerFileError(
      f"{source}: group name {str(group)[:80]!r} is not allowed (use up "
      "to 64 letters, digits, '_', '-' and single '.')"
    )


def _check_version(source, version):
  if not _is_int(version) or version != VERSION:
    raise OptimizerFileError(
      f"{source}: format version {version!r} "
      f"({type(version).__name__}) is not supported (expected the "
      f"integer {VERSION})"
    )


def validate_config(config, source):
  """Checks an optimizer config (optimizer.json's content) before anything is built.

  Refuses (OptimizerFileError naming `source`) a wrong format or version, group names that
  are not plain identifiers, patterns that are not short valid regexes, cells that are not
  registered l2l_tf cells or whose arguments are unknown, of the wrong type or outside the
  MAX_* bounds, and a metadata entry that is not a dict. Returns the config.
  """
  if not isinstance(config, dict) or config.get("format") != FORMAT:
    raise OptimizerFileError(f"{source}: not an l2l_tf optimizer config")
  _check_version(source, config.get("version"))
  cells, groups = config.get("cells"), config.get("groups")
  if not isinstance(cells, dict) or not 1 <= len(cells) <= MAX_GROUPS:
    raise OptimizerFileError(
      f"{source}: 'cells' must map 1 to {MAX_GROUPS} group names to cell configs"
    )
  if not isinstance(groups, dict) or set(groups) != set(cells):
    raise OptimizerFileError(f"{source}: 'groups' must give a pattern for each group of 'cells'")
  if not isinstance(config.get("metadata", {}), dict):
    raise OptimizerFileError(f"{source}: 'metadata' must be a JSON object")
  weights = 0
  for group, cell_config in cells.items():
    _check_group_name(source, group)
    pattern = groups[group]
    if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN_CHARS:
      raise OptimizerFileError(
        f"{source}: group {group!r} pattern must be a string of at most "
        f"{MAX_PATTERN_CHARS} characters"
      )
    try:
      re.compile(pattern)
    except re.error as e:
      raise OptimizerFileError(f"{source}: group {group!r} pattern is not a regex ({e})") from e
    where = f"{source}: cell {group!r}"
    if not isinstance(cell_config, dict) or not isinstance(cell_config.get("config"), dict):
      raise OptimizerFileError(f"{where} is not a serialized cell")
    cls = _cell_class(where, cell_config)
    args = cell_config["config"]
    unknown = sorted(str(k)[:40] for k in set(args) - _cell_arguments(cls))
    if unknown:
      raise OptimizerFileError(f"{where}: unknown {cls.__name__} arguments {unknown}")
    if "dtype" in args:
      _dtype_name(where, args["dtype"])
    weights += _check_cell_arguments(where, args)
  if weights > MAX_WEIGHTS:
    raise OptimizerFileError(
      f"{source}: the cells would hold about {weights} weights, over the limit of {MAX_WEIGHTS}"
    )
  return config


def build_rule(config, source):
  """The LearnedUpdateRule a config describes (validated first; weights freshly initialized).

  Only registered l2l_tf cell classes are constructed, from their checked arguments, so a
  hostile config can neither import code nor allocate beyond the MAX_* bounds.
  """
  validate_config(config, source)
  cells = {}
  try:
    for group, cell_config in config["cells"].items():
      args = dict(cell_config["config"])
      if "dtype" in args:
        args["dtype"] = _dtype_name(source, args["dtype"])
      cells[group] = _cell_class(source, cell_config).from_config(args)
    return learned_rule.LearnedUpdateRule(cells, config["groups"])
  except (KeyError, TypeError, ValueError) as e:
    if isinstance(e, OptimizerFileError):
      raise
    raise OptimizerFileError(f"{source}: invalid optimizer config ({first_line(e)})") from e


def read_config(path):
  """The optimizer.json of an optimizer directory (or exported SavedModel), validated."""
  path = resolve_path(path)
  config_path = os.path.join(files_directory(path), CONFIG_FILE)
  if not os.path.isdir(path):
    raise OptimizerFileError(f"{path}: not a directory (expected an l2l_tf optimizer directory)")
  if not os.path.isfile(config_path) and is_saved_model(path):
    raise OptimizerFileError(
      f"{path}: a SavedModel without {SAVED_MODEL_ASSETS}/{CONFIG_FILE}; "
      "it was not exported by l2l_tf.export_saved_model"
    )
  if not os.path.isfile(config_path):
    raise OptimizerFileError(
      f"{path}: no {CONFIG_FILE}; this is not an l2l_tf optimizer "
      "(train one with scripts/train.py --output_dir)"
    )
  return validate_config(read_json(config_path), config_path)


# -- weights -----------------------------------------------------------------------------------


def first_line(error):
  """The first line of an exception's message (its type's name when empty), for one-line errors."""
  lines = str(getattr(error, "message", None) or error).strip().splitlines()
  return lines[0] if lines else type(error).__name__


def expected_shapes(rule):
  """{"group/weight_name": shape} of a rule's weights, in the order weight_arrays uses."""
  return {f"{g}/{w.name}": tuple(w.shape) for g, cell in rule.cells.items() for w in cell.weights}


def _read_npy_member(archive, info, shape, source):
  """One .npy member of an .npz, its header checked against `shape` before its data is read."""
  limit = math.prod(shape) * 8 + _NPY_HEADER_ALLOWANCE
  if info.file_size > limit:
    raise OptimizerFileError(
      f"{source}: {info.filename} declares {info.file_size} bytes, more "
      f"than a float array of shape {shape} needs"
    )
  with archive.open(info) as f:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
      header = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
      header = np.lib.format.read_array_header_2_0(f)
    else:
      raise OptimizerFileError(f"{source}: {info.filename} has .npy version {version}")
    stored_shape, fortran_order, dtype = header
    if dtype.kind != "f" or dtype.itemsize > 8 or dtype.hasobject:
      raise OptimizerFileError(f"{source}: {info.filename} holds {dtype}, not floats")
    if tuple(stored_shape) != tuple(shape):
      raise OptimizerFileError(
        f"{source}: {info.filename[:-4]} has shape {tuple(stored_shape)}, expected {tuple(shape)}"
      )
    size = math.prod(shape) * dtype.itemsize
    data = f.read(size)
    if len(data) != size or f.read(1):  # reading to the end also checks the member's CRC
      raise OptimizerFileError(
        f"{source}: {info.filename} holds {len(data)} data bytes, "
        f"expected {size} (truncated or corrupt)"
      )
  return np.frombuffer(data, dtype).reshape(shape, order="F" if fortran_order else "C")


# What a damaged zip archive can raise while its directory or members are read.
_ZIP_ERRORS = (
  zipfile.BadZipFile,
  zipfile.LargeZipFile,
  zlib.error,
  EOFError,
  OSError,
  ValueError,
  NotImplementedError,
  RuntimeError,
  struct.error,
  UnicodeError,
)


def read_weights(weights_path, shapes):
  """{key: array} from an .npz that must hold exactly `shapes` ({key: shape}) as floats.

  The file's size, member names, declared member sizes and .npy headers are all checked
  before any member's data is read, and only the expected members are read.
  """
  limit = sum(math.prod(s) * 8 + _NPY_HEADER_ALLOWANCE for s in shapes.values()) + (64 << 10)
  try:
    size = os.path.getsize(weights_path)
  except OSError as e:
    raise OptimizerFileError(f"{weights_path}: unreadable weights ({e.strerror or e})") from e
  if size > limit:
    raise OptimizerFileError(
      f"{weights_path}: {size} bytes, more than the configured cells' "
      f"weights can take ({limit}); not this optimizer's weights"
    )
  try:
    with zipfile.ZipFile(weights_path) as archive:
      members = {info.filename: info for info in archive.infolist()}
      wanted = {f"{key}.npy": key for key in shapes}
      if set(members) != set(wanted):
        extra = sorted(set(members) - set(wanted))[:5]
        missing = sorted(set(wanted) - set(members))[:5]
        raise OptimizerFileError(
          f"{weights_path}: weights do not match the configured cells "
          f"(unexpected {extra}, missing {missing})"
        )
      return {
        key: _read_npy_member(archive, members[member], shapes[key], weights_path)
        for member, key in wanted.items()
      }
  except _ZIP_ERRORS as e:
    if isinstance(e, OptimizerFileError):
      raise
    raise OptimizerFileError(
      f"{weights_path}: unreadable weights ({type(e).__name__}: {first_line(e)})"
    ) from e


def assign_weights(rule, stored, source):
  """Sets the rule's weights from {"group/weight_name": array}; refuses any mismatch.

  Non-finite weights (NaN or Inf) are refused: such an optimizer only produces NaN updates.
  """
  expected = {f"{g}/{w.name}": w for g, cell in rule.cells.items() for w in cell.weights}
  if set(stored) != set(expected):
    raise OptimizerFileError(
      f"{source}: weights {sorted(stored)[:10]} do not match the "
      f"configured cells' {sorted(expected)[:10]}"
    )
  values = {}
  for key, w in expected.items():
    value = np.asarray(stored[key])
    if value.shape != tuple(w.shape):
      raise OptimizerFileError(
        f"{source}: {key} has shape {value.shape}, expected {tuple(w.shape)}"
      )
    if value.dtype.kind not in "fiu" or not np.all(np.isfinite(value)):
      raise OptimizerFileError(
        f"{source}: {key} holds non-finite or non-numeric values; refusing a poisoned optimizer"
      )
    values[key] = value
  for key, w in expected.items():  # only once all are checked: no half-assigned rule
    w.assign(values[key])


# -- SavedModel verification -------------------------------------------------------------------


def parse_saved_model(path):
  """The SavedModel proto of `path`/saved_model.pb, size-bounded; OptimizerFileError if bad."""
  from google.protobuf import message  # pylint: disable=g-import-not-at-top
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top

  pb_path = os.path.join(path, "saved_model.pb")
  proto = saved_model_pb2.SavedModel()
  try:
    with open(pb_path, "rb") as f:
      raw = f.read(MAX_SAVED_MODEL_BYTES + 1)
    if len(raw) > MAX_SAVED_MODEL_BYTES:
      raise OptimizerFileError(f"{pb_path}: larger than {MAX_SAVED_MODEL_BYTES} bytes")
    proto.ParseFromString(raw)
  except (OSError, message.DecodeError, RuntimeError) as e:
    raise OptimizerFileError(f"{pb_path}: corrupt SavedModel graph ({first_line(e)})") from e
  if not any("serve" in m.meta_info_def.tags for m in proto.meta_graphs):
    raise OptimizerFileError(f"{path}: corrupt or foreign SavedModel: no 'serve' tag-set")
  return proto


def _check_fingerprint(path):
  """Compares fingerprint.pb (when present) with the hashes of the files TF will load."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from google.protobuf import message  # pylint: disable=g-import-not-at-top
  from tensorflow.core.protobuf import fingerprint_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting  # pylint: disable=g-import-not-at-top

  fingerprint_path = os.path.join(path, "fingerprint.pb")
  if not os.path.isfile(fingerprint_path):
    return  # optional: exports by older TensorFlow versions have none
  stored, actual = fingerprint_pb2.FingerprintDef(), fingerprint_pb2.FingerprintDef()
  try:
    with open(fingerprint_path, "rb") as f:
      stored.ParseFromString(f.read(1 << 16))
    actual.ParseFromString(fingerprinting.CreateFingerprintDef(path))
  except (message.DecodeError, tf.errors.OpError, OSError, ValueError, RuntimeError) as e:
    raise OptimizerFileError(
      f"{fingerprint_path}: unreadable SavedModel fingerprint ({first_line(e)})"
    ) from e
  for field in ("saved_model_checksum", "checkpoint_hash"):
    if getattr(stored, field) != getattr(actual, field):
      raise OptimizerFileError(
        f"{path}: {field} differs from fingerprint.pb: saved_model.pb or "
        "variables/ were modified or damaged after export"
      )


def _saved_variables(path):
  """The exported cells' variable values, in export order (cell_variables/0, /1, ...)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  prefix = os.path.join(path, "variables", "variables")
  try:
    reader = tf.train.load_checkpoint(prefix)
    # Every entry is read (the object graph too): the reads verify each one's checksum.
    tensors = {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()}
    values = []
    while f"cell_variables/{len(values)}/.ATTRIBUTES/VARIABLE_VALUE" in tensors:
      values.append(tensors[f"cell_variables/{len(values)}/.ATTRIBUTES/VARIABLE_VALUE"])
    return values
  except (tf.errors.OpError, ValueError, OSError, IndexError, RuntimeError) as e:
    raise OptimizerFileError(f"{path}: unreadable SavedModel variables ({first_line(e)})") from e


def verify_saved_model(path, arrays):
  """Checks that a SavedModel's own files agree with its assets' weights `arrays`.

  evaluate.py and LearnedOptimizer rebuild the cells from assets/, while TF Serving runs
  saved_model.pb with variables/: the SavedModel is accepted only if saved_model.pb parses
  with a "serve" graph, fingerprint.pb (when present) matches the files, and the saved
  variables equal the asset weights (export order: the cells' weights, group by group).
  """
  parse_saved_model(path)
  _check_fingerprint(path)
  saved = _saved_variables(path)
  assets = list(arrays.values())
  if len(saved) != len(assets) or not all(
    np.shape(s) == np.shape(a) and np.array_equal(s, a) for s, a in zip(saved, assets)
  ):
    raise OptimizerFileError(
      f"{path}: the SavedModel's variables ({len(saved)}) differ from "
      f"its {SAVED_MODEL_ASSETS}/{WEIGHTS_FILE} ({len(assets)} weights); "
      "corrupt or modified export"
    )


def load_rule(path: str) -> tuple[learned_rule.LearnedUpdateRule, dict[str, Any]]:
  """Loads a LearnedUpdateRule (and its metadata) saved by save_rule (or a training run).

  `path` may also be a SavedModel written by l2l_tf.export; its graph and variables are
  verified against the assets the rule is built from. Raises OptimizerFileError (one line,
  naming the file) for anything unreadable, hostile or inconsistent.
  """
  path = resolve_path(path)
  config = read_config(path)
  rule = build_rule(config, os.path.join(files_directory(path), CONFIG_FILE))
  weights_path = os.path.join(files_directory(path), WEIGHTS_FILE)
  arrays = read_weights(weights_path, expected_shapes(rule))
  assign_weights(rule, arrays, weights_path)
  if is_saved_model(path):
    verify_saved_model(path, arrays)
  return rule, config.get("metadata", {})


def meta_training_problems(metadata: dict[str, Any]) -> list[dict[str, Any]]:
  """Every problem configuration an optimizer was meta-trained on, across its whole provenance.

  Walks the metadata written by train.py and export.py: a run's `problem` and `train_networks`,
  and those of every run it started from (`init_from`, `meta_trained_on`), so that evaluations
  can say whether a test network was inside the meta-training distribution.
  """
  found = []

  def visit(node):
    if isinstance(node, dict):
      if isinstance(node.get("problem"), dict) and "name" in node["problem"]:
        found.append(node["problem"])
      for entry in node.get("train_networks") or ():
        if isinstance(entry, dict):
          found.append(entry)
      for value in node.values():
        if isinstance(value, dict):
          visit(value)

  visit(metadata)
  return found
