"""Saving and loading trained optimizers, with atomic writes.

An optimizer directory holds:
  optimizer.json  {"format": "l2l_tf.optimizer", "version": 1, "cells": {group: cell config},
                   "groups": {group: regex}, "metadata": {...}}
  weights.npz     every cell weight, keyed "group/weight_name" (loaded with allow_pickle=False)
Directories are written next to their target and renamed into place, so a crash never leaves
a half-written optimizer at the target path.
"""
import contextlib
import json
import os
import shutil
import tempfile

import keras
import numpy as np

from l2l_tf import learned_rule

FORMAT = "l2l_tf.optimizer"
VERSION = 1
CONFIG_FILE = "optimizer.json"
WEIGHTS_FILE = "weights.npz"


class OptimizerFileError(ValueError):
  """A path that does not hold a readable l2l_tf optimizer."""


@contextlib.contextmanager
def atomic_directory(path):
  """Yields a temporary directory that replaces `path` only if the block succeeds."""
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.tmp-", dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make shipped models private
  try:
    yield tmp
    if os.path.isdir(path):
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.old-", dir=parent)
      os.rename(path, os.path.join(old, "x"))
      os.rename(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, path)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(path, data):
  """Writes a file (str or bytes) through a temporary file and rename."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
  try:
    with os.fdopen(fd, "w" if isinstance(data, str) else "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def weight_arrays(rule):
  return {f"{group}/{w.name}": np.asarray(w.numpy()) for group, cell in rule.cells.items()
          for w in cell.weights}


def rule_config(rule, metadata=None):
  """The optimizer.json content of a rule (everything but its weights)."""
  return {"format": FORMAT, "version": VERSION,
          "cells": {g: keras.saving.serialize_keras_object(c) for g, c in rule.cells.items()},
          "groups": dict(rule.groups.patterns), "metadata": metadata or {}}


def write_rule(rule, directory, metadata=None):
  """Writes the rule's configuration and weights into an existing directory."""
  config = rule_config(rule, metadata)
  with open(os.path.join(directory, CONFIG_FILE), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  np.savez(os.path.join(directory, WEIGHTS_FILE), **weight_arrays(rule))


def save_rule(rule, path, metadata=None):
  """Saves a LearnedUpdateRule to `path` atomically."""
  with atomic_directory(path) as tmp:
    write_rule(rule, tmp, metadata)


def resolve_path(path):
  """An optimizer directory, or a training output directory whose best/ holds one."""
  best = os.path.join(path, "best")
  if not os.path.isfile(os.path.join(path, CONFIG_FILE)) and os.path.isfile(
      os.path.join(best, CONFIG_FILE)):
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


def read_config(path):
  """The optimizer.json of an optimizer directory (or exported SavedModel), validated."""
  path = resolve_path(path)
  config_path = os.path.join(files_directory(path), CONFIG_FILE)
  if not os.path.isdir(path):
    raise OptimizerFileError(f"{path}: not a directory (expected an l2l_tf optimizer directory)")
  if not os.path.isfile(config_path) and is_saved_model(path):
    raise OptimizerFileError(f"{path}: a SavedModel without {SAVED_MODEL_ASSETS}/{CONFIG_FILE}; "
                             "it was not exported by l2l_tf.export_saved_model")
  if not os.path.isfile(config_path):
    raise OptimizerFileError(f"{path}: no {CONFIG_FILE}; this is not an l2l_tf optimizer "
                             "(train one with scripts/train.py --output_dir)")
  try:
    with open(config_path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise OptimizerFileError(f"{config_path}: unreadable optimizer config ({e})") from e
  if not isinstance(config, dict) or config.get("format") != FORMAT:
    raise OptimizerFileError(f"{config_path}: not an l2l_tf optimizer config")
  if config.get("version") != VERSION:
    raise OptimizerFileError(f"{config_path}: format version {config.get('version')} is not "
                             f"supported (expected {VERSION})")
  return config


def assign_weights(rule, stored, source):
  """Sets the rule's weights from {"group/weight_name": array}; refuses any mismatch."""
  expected = {f"{g}/{w.name}": w for g, cell in rule.cells.items() for w in cell.weights}
  if set(stored) != set(expected):
    raise OptimizerFileError(f"{source}: weights {sorted(stored)} do not match the "
                             f"configured cells' {sorted(expected)}")
  for key, w in expected.items():
    value = np.asarray(stored[key])
    if value.shape != tuple(w.shape):
      raise OptimizerFileError(f"{source}: {key} has shape {value.shape}, expected "
                               f"{tuple(w.shape)}")
    w.assign(value)


def load_rule(path):
  """Loads a LearnedUpdateRule (and its metadata) saved by save_rule (or a training run)."""
  path = resolve_path(path)
  config = read_config(path)
  try:
    cells = {g: keras.saving.deserialize_keras_object(c) for g, c in config["cells"].items()}
    rule = learned_rule.LearnedUpdateRule(cells, config["groups"])
  except (KeyError, TypeError, ValueError) as e:
    raise OptimizerFileError(f"{path}: invalid optimizer config ({e})") from e
  weights_path = os.path.join(files_directory(path), WEIGHTS_FILE)
  try:
    with np.load(weights_path, allow_pickle=False) as arrays:
      stored = {k: arrays[k] for k in arrays.files}
  except (OSError, ValueError) as e:
    raise OptimizerFileError(f"{weights_path}: unreadable weights ({e})") from e
  assign_weights(rule, stored, weights_path)
  return rule, config["metadata"]
