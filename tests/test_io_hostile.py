"""optimizer_format on hostile and damaged files: refused with one line, before allocating.

Issue 13 items 5, 7 and 8 (and issue 12 item 5, file modes): each test edits one thing of a
small valid optimizer directory (or export) and checks the refusal and its message.
"""

import json
import os
import shutil
import stat
import zipfile

import numpy as np
import pytest

from l2l_tf import atomic_files
from l2l_tf import cells
from l2l_tf import export
from l2l_tf import learned_rule
from l2l_tf import optimizer_format


def _small_rule(hidden_sizes=(4,)):
  return learned_rule.LearnedUpdateRule(
    cells.CoordinatewiseLSTM(hidden_sizes=hidden_sizes, preprocessing="identity")
  )


@pytest.fixture
def opt_dir(tmp_path):
  path = tmp_path / "opt"
  optimizer_format.save_rule(_small_rule(), str(path), {"note": "test"})
  return path


def _edit_config(opt_dir, edit):
  config_path = opt_dir / optimizer_format.CONFIG_FILE
  config = json.loads(config_path.read_text())
  edit(config)
  config_path.write_text(json.dumps(config))


def _refused(path, match):
  with pytest.raises(optimizer_format.OptimizerFileError, match=match) as info:
    optimizer_format.load_rule(str(path))
  assert "\n" not in str(info.value)
  return str(info.value)


def _cell_args(config):
  return config["cells"]["all"]["config"]


def test_valid_directory_loads(opt_dir):
  rule, metadata = optimizer_format.load_rule(str(opt_dir))
  assert metadata == {"note": "test"}
  assert rule.cells["all"].hidden_sizes == (4,)


@pytest.mark.parametrize(
  "hidden_sizes,match",
  [
    ([30000, 30000], r"hidden_sizes\[0\] must be an integer in \[1, 1024\]"),
    ([20] * 100000, "hidden_sizes must be a list of 1 to 8 integers"),
    ([20.7], r"hidden_sizes\[0\] must be an integer"),
    ([True], r"hidden_sizes\[0\] must be an integer"),
    ("20", "hidden_sizes must be a list"),
    ([1024] * 8, "about .* weights, over the limit"),
  ],
)
def test_oversized_or_non_integer_hidden_sizes_are_refused(
  opt_dir, monkeypatch, hidden_sizes, match
):
  built = []
  monkeypatch.setattr(cells.CoordinatewiseLSTM, "build", lambda *a, **k: built.append(a))
  _edit_config(opt_dir, lambda c: _cell_args(c).update(hidden_sizes=hidden_sizes))
  _refused(opt_dir, match)
  assert not built  # refused before any weight was created


@pytest.mark.parametrize(
  "key,value,match",
  [
    ("window_size", 10**9, "window_size must be an integer in"),
    ("output_scale", "0.1", "output_scale must be a finite number"),
    ("preprocessing", {"name": "scale", "scale": [1]}, "preprocessing must be"),
    ("dtype", {"class_name": "Lambda", "config": {}}, "dtype must be a DTypePolicy"),
    ("activity_regularizer", {"class_name": "L2"}, "unknown CoordinatewiseLSTM arguments"),
    ("momentum_decays", [0.9] * 10**5, "momentum_decays must be a list of at most 8"),
    ("momentum_decays", ["0.9"], "rnnprop's arguments must be numbers"),
    ("epsilon", float("nan"), "rnnprop's arguments must be numbers"),
  ],
)
def test_bad_cell_arguments_are_refused(opt_dir, key, value, match):
  owners = {"window_size": "NTMLBFGS", "momentum_decays": "RNNprop", "epsilon": "RNNprop"}

  def edit(config):
    _cell_args(config)[key] = value
    if key in owners:  # another cell's argument
      config["cells"]["all"]["registered_name"] = f"l2l_tf>{owners[key]}"

  _edit_config(opt_dir, edit)
  _refused(opt_dir, match)


@pytest.mark.parametrize("registered_name", ["keras>Dense", "os>system", None, "nope"])
def test_only_registered_l2l_tf_cells_are_built(opt_dir, registered_name):
  _edit_config(opt_dir, lambda c: c["cells"]["all"].update(registered_name=registered_name))
  _refused(opt_dir, "is not a registered l2l_tf optimizer cell")


@pytest.mark.parametrize("group", ["..", "../x", "a/b", "", "a..b", "x" * 65, "a b"])
def test_unsafe_group_names_are_refused(opt_dir, group):

  def rename(config):
    config["cells"] = {group: config["cells"]["all"]}
    config["groups"] = {group: ".*"}

  _edit_config(opt_dir, rename)
  _refused(opt_dir, "group name .* is not allowed")


def test_bad_group_pattern_is_refused(opt_dir):
  _edit_config(opt_dir, lambda c: c["groups"].update(all="("))
  _refused(opt_dir, "pattern is not a regex")


@pytest.mark.parametrize("metadata", [[1, 2], "text", 3])
def test_non_dict_metadata_is_refused(opt_dir, metadata):
  _edit_config(opt_dir, lambda c: c.update(metadata=metadata))
  _refused(opt_dir, "'metadata' must be a JSON object")


@pytest.mark.parametrize(
  "version,shown", [("1", "'1' (str)"), (1.0, "1.0 (float)"), (True, "True (bool)"), (2, "2 (int)")]
)
def test_version_message_says_what_was_found(opt_dir, version, shown):
  _edit_config(opt_dir, lambda c: c.update(version=version))
  message = _refused(opt_dir, "is not supported")
  assert f"format version {shown} is not supported (expected the integer 1)" in message


def test_deeply_nested_json_is_refused_without_recursion_error(opt_dir):
  config = json.loads((opt_dir / optimizer_format.CONFIG_FILE).read_text())
  text = json.dumps(config)[:-1] + ', "deep": ' + "[" * 100000 + "]" * 100000 + "}"
  (opt_dir / optimizer_format.CONFIG_FILE).write_text(text)
  _refused(opt_dir, f"nested deeper than {optimizer_format.MAX_JSON_DEPTH} levels")


def test_brackets_inside_strings_do_not_count_as_nesting(opt_dir):
  _edit_config(opt_dir, lambda c: c["metadata"].update(note='[[[{{{"\\"' * 100))
  assert optimizer_format.load_rule(str(opt_dir))[1]["note"].startswith("[[[{{{")


def test_oversized_config_is_refused_unread(opt_dir):
  _edit_config(
    opt_dir, lambda c: c["metadata"].update(blob="x" * optimizer_format.MAX_CONFIG_BYTES)
  )
  _refused(opt_dir, f"larger than {optimizer_format.MAX_CONFIG_BYTES} bytes")


def _rewrite_weights(opt_dir, edit):
  weights_path = opt_dir / optimizer_format.WEIGHTS_FILE
  with np.load(weights_path) as arrays:
    stored = {k: arrays[k] for k in arrays.files}
  edit(stored)
  np.savez(weights_path, **stored)


def test_extra_weight_member_is_refused_without_reading_it(opt_dir, monkeypatch):
  _rewrite_weights(opt_dir, lambda w: w.update(extra=np.zeros(10, np.float32)))
  opened = []
  real_open = zipfile.ZipFile.open
  monkeypatch.setattr(
    zipfile.ZipFile,
    "open",
    lambda self, name, *a, **k: opened.append(name) or real_open(self, name, *a, **k),
  )
  _refused(opt_dir, r"unexpected \['extra.npy'\]")
  assert not opened


def test_weights_file_larger_than_the_cells_need_is_refused_unopened(opt_dir):
  _rewrite_weights(opt_dir, lambda w: w.update(extra=np.ones(100_000, np.float32)))
  _refused(opt_dir, "bytes, more than the configured cells' weights can take")


def test_compressed_member_inflating_beyond_its_shape_is_refused_unread(opt_dir):
  weights_path = opt_dir / optimizer_format.WEIGHTS_FILE
  with zipfile.ZipFile(weights_path) as archive:
    members = {name: archive.read(name) for name in archive.namelist()}
  header = members["all/output_bias.npy"][:-4]  # the .npy header of a (1,) float32 array
  members["all/output_bias.npy"] = header + bytes(20_000_000)  # deflates to ~20 KB
  with zipfile.ZipFile(weights_path, "w", zipfile.ZIP_DEFLATED) as archive:
    for name, data in members.items():
      archive.writestr(name, data)
  _refused(opt_dir, "output_bias.npy declares 20000128 bytes, more than a float array")


def test_wrong_declared_shape_is_refused(opt_dir):
  _rewrite_weights(opt_dir, lambda w: w.update({"all/output_bias": np.zeros(7, np.float32)}))
  _refused(opt_dir, r"all/output_bias has shape \(7,\), expected \(1,\)")


def test_non_float_weights_are_refused(opt_dir):
  _rewrite_weights(opt_dir, lambda w: w.update({"all/output_bias": np.zeros(1, np.int64)}))
  _refused(opt_dir, "holds int64, not floats")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_at_load(opt_dir, bad):
  _rewrite_weights(opt_dir, lambda w: w["all/output_kernel"].__setitem__((0, 0), bad))
  _refused(opt_dir, "all/output_kernel holds non-finite")


def test_assign_weights_is_all_or_nothing():
  rule = _small_rule()
  before = optimizer_format.weight_arrays(rule)
  stored = {k: np.ones_like(v) for k, v in before.items()}
  stored["all/output_bias"] = np.array([np.nan], np.float32)
  with pytest.raises(optimizer_format.OptimizerFileError, match="non-finite"):
    optimizer_format.assign_weights(rule, stored, "test")
  for key, value in optimizer_format.weight_arrays(rule).items():
    np.testing.assert_array_equal(value, before[key])


@pytest.mark.parametrize("keep", [0, 30, 0.5, -10])
def test_truncated_weights_file_is_one_line_error(opt_dir, keep):
  weights_path = opt_dir / optimizer_format.WEIGHTS_FILE
  data = weights_path.read_bytes()
  weights_path.write_bytes(data[: int(len(data) * keep) if isinstance(keep, float) else keep])
  _refused(opt_dir, "weights.npz: unreadable weights")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  path = tmp_path_factory.mktemp("export") / "sm"
  export.export_saved_model(_small_rule(), str(path))
  return path


@pytest.fixture
def export_copy(exported, tmp_path):
  return shutil.copytree(exported, tmp_path / "sm")


def test_intact_export_loads(export_copy):
  optimizer_format.load_rule(str(export_copy))


@pytest.mark.parametrize(
  "relative,match",
  [
    ("saved_model.pb", "corrupt SavedModel graph|saved_model_checksum differs"),
    ("variables/variables.index", "unreadable SavedModel variables|checkpoint_hash differs"),
    ("variables/variables.data-00000-of-00001", "unreadable SavedModel variables"),
    ("fingerprint.pb", "unreadable SavedModel fingerprint"),
  ],
)
def test_truncated_saved_model_files_are_refused(export_copy, relative, match):
  target = export_copy / relative
  target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
  _refused(export_copy, match)


def test_saved_model_variables_must_equal_the_assets(export_copy, tmp_path):
  # Same architecture, other weights: assets and the served variables disagree.
  other = tmp_path / "other"
  optimizer_format.save_rule(_small_rule(), str(other))
  shutil.copy(
    other / optimizer_format.WEIGHTS_FILE, export_copy / "assets" / optimizer_format.WEIGHTS_FILE
  )
  _refused(export_copy, "variables .* differ from its assets/weights.npz")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_respect_the_umask(tmp_path, umask):
  previous = os.umask(umask)
  try:
    atomic_files.atomic_write(str(tmp_path / "a.json"), "{}")
    atomic_files.atomic_write(str(tmp_path / "b.png"), b"\x89PNG")
    optimizer_format.save_rule(_small_rule(), str(tmp_path / "opt"))
  finally:
    os.umask(previous)
  for name in ("a.json", "b.png", "opt/optimizer.json", "opt/weights.npz"):
    assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~umask, name
  assert stat.S_IMODE(os.stat(tmp_path / "opt").st_mode) == 0o777 & ~umask
