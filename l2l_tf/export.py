"""Exporting trained optimizers as TensorFlow SavedModels (for serving and for other programs).

    export_saved_model(rule_or_cell, path, metadata=None)

writes a SavedModel with these signatures (tag "serve"):

  initial_state   num_coordinates: int32 scalar n
                  -> one float32 tensor [n, size] per state, keyed by the cell's state_names
                     (size from cell.state_size; a size of None means n, e.g. NTMBFGS's
                     [n, n] memory)
  step            gradients: float32 [n], plus every state tensor [n, size] by name
                  -> update: float32 [n] (add it to the parameters), plus the new states by
                     name (the same keys as the inputs, so a client feeds them straight back)
  serving_default the same function as `step`

A rule with several parameter groups gets one signature set per group instead:
`initial_state_<group>` and `step_<group>`; `serving_default` is then the step of the rule's
first group (in the order of rule.cells), and there is no plain `step`.

Inputs are declared with dtype only (float32 / int32; any other dtype is refused by the
signature itself) and shapes are checked at run time by assertions with messages: gradients
must be a vector, every state must be [n, size] for the n of the gradients. The checks run
inside the graph, so they also hold in the C++ loader (saved_model_cli, TensorFlow Serving),
where a statically declared [None] shape would not be enforced.

The SavedModel's `assets/` holds the optimizer in the l2l_tf.optimizer_format directory
format (optimizer.json with the cells' configs, parameter groups and metadata; weights.npz),
so `l2l_tf.optimizer_format.load_rule(path)` and `LearnedOptimizer.from_saved_model(path)`
rebuild the cells with Keras-native compute. The metadata gains an "export" entry describing
the signatures and each group's architecture, preprocessing, output scale and state layout.

XLA: the cells fuse their gate math with tf.function(jit_compile=True). A serving signature
must not require XLA (TensorFlow Serving disables its XLA:CPU JIT by default), so the export
clears the "_XlaMustCompile" marks in the saved graph: the same ops then run without XLA.
Outputs therefore match the in-memory cell to float rounding (tests use 1e-6), not bitwise.

Writes are atomic: the model is written into a temporary sibling directory that is renamed
into place only when complete (l2l_tf.atomic_files.atomic_directory). What a killed export leaves is
removed by the next export: the .<name>.tmp-*/.<name>.old-* siblings of its target (putting
the previous export back if the kill fell between the swap's renames) and the staging
directories l2l_tf_export_pid<PID>_* in the system temporary directory whose process is gone
(or older than a day; l2l_tf.leftovers).

Also here, for scripts/export.py and scripts/serve_check.py:
  export_optimizer_directory(optimizer_path, output_path, evaluation_json=None)
      an l2l_tf optimizer directory (train.py's output) -> SavedModel, with its metadata.
  inspect_saved_model(path)
      validates a path as an l2l_tf SavedModel without running it (SavedModelError otherwise).
  serve_request(path, signature=None, num_coordinates=8, seed=0)
      loads it in a TF1 Session as TensorFlow Serving does and runs one request.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from l2l_tf import atomic_files
from l2l_tf import learned_rule
from l2l_tf import leftovers
from l2l_tf import optimizer_format
from l2l_tf.cells import base as cells_base
from l2l_tf.cells import coordinatewise_lstm

SIGNATURE_INITIAL_STATE = "initial_state"
SIGNATURE_STEP = "step"
GRADIENTS_KEY = "gradients"
UPDATE_KEY = "update"
NUM_COORDINATES_KEY = "num_coordinates"
_XLA_ATTRS = ("_XlaMustCompile", "_XlaCompile")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Staging directories in the system temporary directory: <prefix>pid<PID>_XXXXXXXX.
_STAGING_PREFIX = "l2l_tf_export_"


def as_rule(rule_or_cell: learned_rule.RuleOrCell) -> learned_rule.LearnedUpdateRule:
  """A LearnedUpdateRule from a rule, a single cell, or a {group: cell} dict."""
  if isinstance(rule_or_cell, learned_rule.LearnedUpdateRule):
    return rule_or_cell
  if isinstance(rule_or_cell, (cells_base.LearnedOptimizerCell, dict)):
    return learned_rule.LearnedUpdateRule(rule_or_cell)
  raise TypeError(
    f"Expected a LearnedUpdateRule, a LearnedOptimizerCell or {{group: cell}}, "
    f"got {type(rule_or_cell).__name__}"
  )


def signature_names(rule):
  """{group: (initial_state signature key, step signature key)} for an exported rule."""
  groups = list(rule.cells)
  if len(groups) == 1:
    return {groups[0]: (SIGNATURE_INITIAL_STATE, SIGNATURE_STEP)}
  return {g: (f"{SIGNATURE_INITIAL_STATE}_{g}", f"{SIGNATURE_STEP}_{g}") for g in groups}


def _check_names(rule):
  for group, cell in rule.cells.items():
    if not _NAME_RE.match(group):
      raise ValueError(
        f"Group name {group!r} cannot be used in a signature name; use letters, "
        "digits and underscores"
      )
    names = list(cell.state_names)
    if len(names) != len(cell.state_size):
      raise ValueError(
        f"{type(cell).__name__}: {len(names)} state_names for {len(cell.state_size)} states"
      )
    for name in names:
      if not _NAME_RE.match(name) or name in (GRADIENTS_KEY, UPDATE_KEY):
        raise ValueError(f"{type(cell).__name__}: state name {name!r} cannot be a signature key")
    if len(set(names)) != len(names):
      raise ValueError(f"{type(cell).__name__}: duplicate state names {names}")


def _assert_shape(x, expected, label):
  """Runtime check that x has exactly the shape `expected` (list of int32 scalars)."""
  shape = tf.shape(x, out_type=tf.int32)
  rank = len(expected)
  padded = tf.slice(tf.concat([shape, tf.fill([rank], -1)], 0), [0], [rank])
  ok = tf.logical_and(
    tf.equal(tf.size(shape), rank), tf.reduce_all(tf.equal(padded, tf.stack(expected)))
  )
  return tf.debugging.Assert(
    ok, [f"{label}: expected shape", tf.stack(expected), "got shape", shape], summarize=8
  )


def _state_sizes(cell):
  """Trailing size of each state: an int, or None for a state whose trailing size is n."""
  sizes = list(cell.state_size)
  for name, size in zip(cell.state_names, sizes):
    if size is not None and (isinstance(size, bool) or int(size) != size or size < 0):
      raise ValueError(
        f"{type(cell).__name__}: state {name!r} has size {size!r}; export needs "
        "states of shape [n, size] (size an int, or None for [n, n])"
      )
  return [None if size is None else int(size) for size in sizes]


def _make_functions(cell, group):
  names = list(cell.state_names)
  sizes = _state_sizes(cell)
  compute_dtype = cell.compute_dtype

  @tf.function(input_signature=[tf.TensorSpec(None, tf.int32, name=NUM_COORDINATES_KEY)])
  def initial_state(num_coordinates):
    check = tf.debugging.Assert(
      tf.logical_and(tf.equal(tf.rank(num_coordinates), 0), tf.reduce_all(num_coordinates >= 0)),
      [
        f"initial_state[{group}]: num_coordinates must be a non-negative int32 scalar, got",
        num_coordinates,
      ],
    )
    with tf.control_dependencies([check]):
      n = tf.reshape(tf.identity(num_coordinates), [])
    states = cell.get_initial_state(n)
    return {
      name: tf.reshape(tf.cast(s, tf.float32), [-1, n if size is None else size])
      for name, s, size in zip(names, states, sizes)
    }

  specs = [tf.TensorSpec(None, tf.float32, name=GRADIENTS_KEY)]
  specs += [tf.TensorSpec(None, tf.float32, name=name) for name in names]

  @tf.function(input_signature=specs)
  def step(gradients, *states):
    rank_check = tf.debugging.Assert(
      tf.equal(tf.rank(gradients), 1),
      [f"step[{group}]: gradients must be a vector [n]; got shape", tf.shape(gradients)],
    )
    with tf.control_dependencies([rank_check]):
      n = tf.size(gradients, out_type=tf.int32)
    trailing = [n if size is None else tf.constant(size) for size in sizes]
    checks = [
      _assert_shape(s, [n, t], f"step[{group}]: state {name}")
      for s, name, t in zip(states, names, trailing)
    ]
    with tf.control_dependencies(checks + [rank_check]):
      g = tf.reshape(gradients, [-1, 1])
      states = [tf.reshape(s, tf.stack([n, t])) for s, t in zip(states, trailing)]
    g = tf.cast(g, compute_dtype)[None]
    states = [tf.cast(s, compute_dtype)[None] for s in states]
    updates, new_states = cell(g, states)
    outputs = {UPDATE_KEY: tf.reshape(tf.cast(updates, tf.float32), [-1])}
    for name, size, s in zip(names, sizes, new_states):
      outputs[name] = tf.reshape(tf.cast(s, tf.float32), [-1, n if size is None else size])
    return outputs

  return initial_state, step


class _OptimizerModule(tf.Module):
  """What gets saved: the cells' backing tf.Variables, the functions and the config assets."""


def _backing_variable(weight):
  value = getattr(weight, "value", weight)
  if not isinstance(value, tf.Variable):
    raise TypeError(f"weight {weight.name} is not backed by a tf.Variable")
  return value


def _strip_xla(saved_model_dir):
  """Clears the XLA must-compile marks in saved_model.pb (see the module docstring)."""
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top

  pb_path = os.path.join(saved_model_dir, "saved_model.pb")
  proto = saved_model_pb2.SavedModel()
  with open(pb_path, "rb") as f:
    proto.ParseFromString(f.read())
  changed = 0

  def clean_attrs(attrs):
    nonlocal changed
    for key in _XLA_ATTRS:
      if key in attrs:
        del attrs[key]
        changed += 1

  for meta_graph in proto.meta_graphs:
    for node in meta_graph.graph_def.node:
      clean_attrs(node.attr)
    for function in meta_graph.graph_def.library.function:
      clean_attrs(function.attr)
      for node in function.node_def:
        clean_attrs(node.attr)
    for function in meta_graph.object_graph_def.nodes:
      if function.WhichOneof("kind") == "function":
        spec = function.function.function_spec
        if spec.jit_compile:
          spec.jit_compile = 0  # DEFAULT
          changed += 1
  if changed:
    with open(pb_path, "wb") as f:
      f.write(proto.SerializeToString())
    # fingerprint.pb hashes saved_model.pb: rewrite it (or drop it; it is optional).
    try:
      from tensorflow.python.saved_model import fingerprinting_utils  # pylint: disable=g-import-not-at-top

      fingerprinting_utils.write_fingerprint(saved_model_dir)
    except Exception:  # pylint: disable=broad-except
      fingerprint = os.path.join(saved_model_dir, "fingerprint.pb")
      if os.path.exists(fingerprint):
        os.remove(fingerprint)
  return changed


def _export_metadata(rule, metadata):
  metadata = dict(metadata or {})
  info = {"groups": {}, "tensorflow_version": tf.__version__, "keras_version": keras.__version__}
  for group, (init_key, step_key) in signature_names(rule).items():
    cell = rule.cells[group]
    config = cell.get_config()
    info["groups"][group] = {
      "architecture": type(cell).__name__,
      "config": {
        k: v
        for k, v in config.items()
        if k not in ("name", "trainable", "dtype", "preprocessing", "output_scale")
      },
      "preprocessing": config.get("preprocessing"),
      "output_scale": config.get("output_scale"),
      "state_names": list(cell.state_names),
      "state_size": _state_sizes(cell),
      "num_weights": int(sum(np.prod(w.shape, dtype=np.int64) for w in cell.weights)),
      "signatures": {"initial_state": init_key, "step": step_key},
    }
  info["serving_default"] = signature_names(rule)[next(iter(rule.cells))][1]
  metadata["export"] = info
  return metadata


def _is_our_export(path):
  """Whether `path` holds a SavedModel written by export_saved_model (safe to replace)."""
  try:
    return optimizer_format.is_saved_model(path) and bool(optimizer_format.read_config(path))
  except optimizer_format.OptimizerFileError:
    return False


def check_replaceable(path, overwrite=False):
  """Refuses to replace a non-empty directory that is not an l2l_tf export (data loss)."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"{path}: exists and is not a directory")
  if overwrite or not os.path.isdir(path) or not os.listdir(path) or _is_our_export(path):
    return
  raise ValueError(
    f"{path}: a non-empty directory that is not an l2l_tf SavedModel; refusing "
    "to replace it (choose another path, or pass overwrite=True / --overwrite)"
  )


def remove_leftovers(path):
  """Removes what killed exports left: stale staging directories and `path`'s temporaries."""
  leftovers.remove_stale_staging(tempfile.gettempdir(), _STAGING_PREFIX)
  leftovers.clean_atomic_directory(path)


def export_saved_model(
  rule_or_cell: learned_rule.RuleOrCell,
  path: str,
  metadata: dict[str, Any] | None = None,
  overwrite: bool = False,
) -> str:
  """Writes `rule_or_cell` as a SavedModel at `path` (atomically); returns the path.

  Args:
    rule_or_cell: a LearnedUpdateRule, a LearnedOptimizerCell or {group: cell}.
    path: target directory. An earlier export there is replaced; any other non-empty
      directory is refused (ValueError) unless overwrite is True.
    metadata: JSON-serializable dict stored in assets/optimizer.json, e.g.
      {"meta_trained_on": {...}, "evaluation": {...}}.
    overwrite: replace `path` whatever it holds.
  """
  remove_leftovers(path)
  check_replaceable(path, overwrite)
  rule = as_rule(rule_or_cell)
  _check_names(rule)
  for cell in rule.cells.values():
    _state_sizes(cell)
  metadata = _export_metadata(rule, metadata)
  # A SavedModel must load wherever TensorFlow does: it is traced with the graph ops, never
  # the native kernels (a custom op other loaders do not have), whatever the caller chose.
  with coordinatewise_lstm.lstm_kernel("graph"):
    return _save(rule, path, metadata)


def _save(rule, path, metadata):
  """export_saved_model's tracing and atomic write, once the inputs are checked."""
  module = _OptimizerModule()
  signatures = {}
  functions = {}
  variables = []
  for group, (init_key, step_key) in signature_names(rule).items():
    cell = rule.cells[group]
    initial_state, step = _make_functions(cell, group)
    functions[init_key] = initial_state
    functions[step_key] = step
    signatures[init_key] = initial_state.get_concrete_function()
    signatures[step_key] = step.get_concrete_function()
    variables += [_backing_variable(w) for w in cell.weights]
  signatures["serving_default"] = signatures[metadata["export"]["serving_default"]]

  staging = tempfile.mkdtemp(prefix=leftovers.staging_prefix(_STAGING_PREFIX))
  try:
    optimizer_format.write_rule(rule, staging, metadata)
    # Tracked on the module, the tf.Variables are what the C++ loader restores by name: with
    # only the Keras 3 layers tracked, `saved_model_cli run` and TF Serving's loader fail
    # with "Could not find variable" (Python's loader does not; tested by test_export).
    module.cell_variables = variables
    for key, fn in functions.items():
      setattr(module, key, fn)
    module.optimizer_config = tf.saved_model.Asset(
      os.path.join(staging, optimizer_format.CONFIG_FILE)
    )
    module.optimizer_weights = tf.saved_model.Asset(
      os.path.join(staging, optimizer_format.WEIGHTS_FILE)
    )
    with atomic_files.atomic_directory(path) as tmp:
      tf.saved_model.save(module, tmp, signatures=signatures)
      _strip_xla(tmp)
      for name in (optimizer_format.CONFIG_FILE, optimizer_format.WEIGHTS_FILE):
        if not os.path.isfile(os.path.join(tmp, "assets", name)):
          raise RuntimeError(f"export: asset {name} missing from the SavedModel")
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return os.path.abspath(path)


def export_optimizer_directory(
  optimizer_path,
  output_path,
  evaluation_json=None,
  overwrite=False,
  load=optimizer_format.load_rule,
):
  """scripts/export.py: an l2l_tf optimizer directory -> SavedModel; returns the metadata.

  optimizer_path is an optimizer directory (scripts/train.py's <output_dir>/best, or
  <output_dir> itself). Its stored metadata (problem, training command and settings, best
  validation loss) becomes "meta_trained_on"; evaluation_json (scripts/evaluate.py's
  --output_json) becomes "evaluation". `load` reads (rule, metadata) from optimizer_path
  (meta_trainer.load_checkpoint_rule exports a checkpoint instead of best/). Raises ValueError
  (OptimizerFileError) on bad input.
  """
  if not optimizer_path:
    raise ValueError("--optimizer_path is required")
  if not output_path:
    raise ValueError("--output_path is required")
  if not os.path.exists(optimizer_path):
    raise optimizer_format.OptimizerFileError(
      f"{optimizer_path}: does not exist (expected an l2l_tf optimizer directory)"
    )
  check_replaceable(output_path, overwrite)
  source = os.path.abspath(optimizer_format.resolve_path(optimizer_path))
  if os.path.abspath(output_path) in (source, os.path.abspath(optimizer_path)):
    raise ValueError(f"{output_path}: the output would replace the optimizer being exported")
  rule, stored = load(optimizer_path)
  metadata = {"meta_trained_on": stored, "exported_from": stored.get("checkpoint", source)}
  if evaluation_json:
    try:
      with open(evaluation_json) as f:
        metadata["evaluation"] = json.load(f)
    except (OSError, ValueError) as e:
      raise ValueError(f"{evaluation_json}: unreadable evaluation JSON ({e})") from e
  export_saved_model(rule, output_path, metadata, overwrite=overwrite)
  return rule, metadata


class SavedModelError(optimizer_format.OptimizerFileError):
  """A path that is not a servable l2l_tf optimizer SavedModel (the message names the path)."""


def inspect_saved_model(path):
  """Validates `path` as an exported l2l_tf SavedModel without running it.

  Returns (the "serve" MetaGraphDef, the optimizer config from assets/optimizer.json); raises
  SavedModelError naming the path for a missing path, a non-SavedModel, a corrupt
  saved_model.pb, a SavedModel from another program or a missing/corrupt optimizer asset.
  """
  path = str(path)
  if not os.path.exists(path):
    raise SavedModelError(f"{path}: does not exist")
  if not os.path.isdir(path):
    raise SavedModelError(f"{path}: not a directory, so not a SavedModel")
  if not os.path.isfile(os.path.join(path, "saved_model.pb")):
    raise SavedModelError(f"{path}: not a SavedModel (no saved_model.pb)")
  try:
    proto = optimizer_format.parse_saved_model(path)  # size-bounded; requires a "serve" tag-set
  except optimizer_format.OptimizerFileError as e:
    raise SavedModelError(str(e)) from e
  serving = [m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags]
  signatures = set(serving[0].signature_def)
  if not any(k == "step" or k.startswith("step_") for k in signatures) or not any(
    k == "initial_state" or k.startswith("initial_state_") for k in signatures
  ):
    raise SavedModelError(
      f"{path}: a SavedModel from another program: it has signatures "
      f"{sorted(signatures)}, not l2l_tf's initial_state / step"
    )
  try:
    config = optimizer_format.read_config(path)
  except optimizer_format.OptimizerFileError as e:
    raise SavedModelError(str(e)) from e
  return serving[0], config


def _initial_state_key(step_key, config):
  if step_key == "serving_default":
    step_key = config.get("metadata", {}).get("export", {}).get("serving_default", "step")
  return "initial_state" + step_key[len("step") :]


def serve_request(path, signature=None, num_coordinates=8, seed=0):
  """Loads `path` as TensorFlow Serving does and runs one request; returns (request, response).

  The SavedModel is loaded in a TF1 Session with tf.compat.v1.saved_model.load (the C++
  loader), `initial_state` runs for num_coordinates, then `signature` (default "step", or
  "serving_default" for several-group exports) on a random normal gradient. Request and
  response are dicts in TensorFlow Serving's REST predict format (columnar inputs/outputs).
  """
  path = str(path)
  meta_graph, config = inspect_saved_model(path)
  keys = set(meta_graph.signature_def)
  if signature is None:
    signature = "step" if "step" in keys else "serving_default"
  if signature not in keys:
    raise SavedModelError(f"{path}: no signature {signature!r}; it has {sorted(keys)}")
  init_key = _initial_state_key(signature, config)
  if init_key not in keys:
    raise SavedModelError(f"{path}: no signature {init_key!r} to go with {signature!r}")
  gradients = np.random.default_rng(seed).normal(size=num_coordinates).astype(np.float32)
  logger = tf.get_logger()
  level = logger.level
  with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
    try:
      logger.setLevel("ERROR")  # tf.compat.v1.saved_model.load's deprecation notice
      try:
        loaded = tf.compat.v1.saved_model.load(sess, ["serve"], path)
      finally:
        logger.setLevel(level)
      init_sig, step_sig = loaded.signature_def[init_key], loaded.signature_def[signature]
      states = sess.run(
        {k: v.name for k, v in init_sig.outputs.items()},
        {init_sig.inputs["num_coordinates"].name: num_coordinates},
      )
      inputs = dict(states, gradients=gradients)
      missing = sorted(set(step_sig.inputs) - set(inputs))
      if missing:
        raise SavedModelError(
          f"{path}: signature {signature!r} needs inputs {missing} that "
          f"{init_key!r} does not provide"
        )
      outputs = sess.run(
        {k: v.name for k, v in step_sig.outputs.items()},
        {step_sig.inputs[k].name: inputs[k] for k in step_sig.inputs},
      )
    except (tf.errors.OpError, ValueError, RuntimeError, OSError, KeyError) as e:
      if isinstance(e, SavedModelError):
        raise
      first_line = (getattr(e, "message", None) or str(e)).strip().splitlines()
      raise SavedModelError(
        f"{path}: corrupt SavedModel, loading or running it in a Session "
        f"failed ({type(e).__name__}: "
        f"{first_line[0] if first_line else ''})"
      ) from e
  request = {
    "signature_name": signature,
    "inputs": {k: np.asarray(v).tolist() for k, v in sorted(inputs.items())},
  }
  response = {"outputs": {k: np.asarray(v).tolist() for k, v in sorted(outputs.items())}}
  return request, response
