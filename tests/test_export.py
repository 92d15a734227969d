"""SavedModel export: signatures, serving loaders, assets, atomic writes and bad input.

Exported outputs are compared with the in-memory cell within ATOL/RTOL below, not bitwise: the
export runs the cells' gate math without XLA (serving must not require it), so the rounding of
tanh and of fused elementwise chains can differ in the last bits.
"""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import l2l_tf
from l2l_tf import export
from l2l_tf import optimizer_format
from l2l_tf.cells import CoordinatewiseLSTM
from l2l_tf.cells import GlobalAveragingLSTM
from l2l_tf.cells import NTMBFGS

import repo_paths

ROOT = repo_paths.ROOT
ATOL, RTOL = 1e-6, 1e-5
N = 7
METADATA = {
  "meta_trained_on": {"problem": "quadratic", "command": "python scripts/train.py"},
  "evaluation": {"final_loss": {"learned": 0.5, "adam": 1.5}},
}


def _env():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
  return env


@pytest.fixture(scope="module")
def cell():
  keras.utils.set_random_seed(0)
  c = CoordinatewiseLSTM(hidden_sizes=(6, 5))
  # Larger output weights than the init so that updates are not ~1e-5 and differences show.
  c.output_kernel.assign(np.random.default_rng(1).normal(size=(5, 1)).astype(np.float32))
  return c


@pytest.fixture(scope="module")
def exported(tmp_path_factory, cell):
  path = str(tmp_path_factory.mktemp("export") / "lstm")
  assert export.export_saved_model(cell, path, METADATA) == os.path.abspath(path)
  return path


@pytest.fixture(scope="module")
def foreign_saved_model(tmp_path_factory):
  """A SavedModel written by another program: a serving signature, no l2l_tf assets."""
  module = tf.Module()
  module.v = tf.Variable(2.0)
  module.f = tf.function(
    lambda x: {"y": x * module.v}, input_signature=[tf.TensorSpec([None], tf.float32)]
  )
  path = str(tmp_path_factory.mktemp("foreign") / "model")
  tf.saved_model.save(module, path, signatures={"serving_default": module.f})
  return path


def _random_states(cell, n, seed):
  rng = np.random.default_rng(seed)
  return [rng.normal(scale=0.5, size=s.shape).astype(np.float32) for s in cell.get_initial_state(n)]


def _cell_step(cell, gradients, states):
  """The in-memory cell on one instance of n coordinates: ([n], [state [n, size]])."""
  update, new_states = cell(
    tf.constant(gradients)[None, :, None], [tf.constant(s)[None] for s in states]
  )
  return update.numpy()[0, :, 0], [s.numpy()[0] for s in new_states]


def test_step_signature_matches_cell_over_several_steps(exported, cell):
  loaded = tf.saved_model.load(exported)
  assert {"initial_state", "step", "serving_default"} <= set(loaded.signatures)
  served = loaded.signatures["initial_state"](num_coordinates=tf.constant(N))
  assert sorted(served) == sorted(cell.state_names)
  for name, size in zip(cell.state_names, cell.state_size):
    np.testing.assert_array_equal(served[name].numpy(), np.zeros((N, size), np.float32))
  served = {k: v.numpy() for k, v in served.items()}
  states = [served[name] for name in cell.state_names]
  rng = np.random.default_rng(0)
  for step in range(3):
    gradients = (rng.normal(size=N) * 10.0 ** rng.integers(-6, 2, N)).astype(np.float32)
    out = loaded.signatures["step"](
      gradients=tf.constant(gradients), **{k: tf.constant(v) for k, v in served.items()}
    )
    update, states = _cell_step(cell, gradients, states)
    assert np.abs(update).max() > 1e-4  # the comparison is not of near-zero numbers
    np.testing.assert_allclose(
      out["update"].numpy(), update, atol=ATOL, rtol=RTOL, err_msg=f"update, step {step}"
    )
    for name, state in zip(cell.state_names, states):
      np.testing.assert_allclose(
        out[name].numpy(), state, atol=ATOL, rtol=RTOL, err_msg=f"state {name}, step {step}"
      )
    served = {k: v.numpy() for k, v in out.items() if k != "update"}
  default = loaded.signatures["serving_default"](
    gradients=tf.constant(gradients), **{k: tf.constant(v) for k, v in served.items()}
  )
  np.testing.assert_allclose(
    default["update"].numpy(), _cell_step(cell, gradients, states)[0], atol=ATOL, rtol=RTOL
  )


def test_several_groups_gac_and_ntm_memory(tmp_path):
  keras.utils.set_random_seed(3)
  cells = {
    "kernels": GlobalAveragingLSTM(hidden_sizes=(4, 4)),
    "biases": NTMBFGS(hidden_sizes=(4,), max_dense_coordinates=64),
  }
  rule = l2l_tf.LearnedUpdateRule(cells, {"kernels": "kernel", "biases": "bias"})
  path = export.export_saved_model(rule, str(tmp_path / "two"))
  loaded = tf.saved_model.load(path)
  assert {
    "initial_state_kernels",
    "step_kernels",
    "initial_state_biases",
    "step_biases",
    "serving_default",
  } <= set(loaded.signatures)
  assert "step" not in loaded.signatures
  for group, cell in cells.items():
    states = _random_states(cell, N, seed=len(group))
    gradients = np.random.default_rng(2).normal(size=N).astype(np.float32)
    out = loaded.signatures[f"step_{group}"](
      gradients=tf.constant(gradients),
      **{name: tf.constant(s) for name, s in zip(cell.state_names, states)},
    )
    update, new_states = _cell_step(cell, gradients, states)
    np.testing.assert_allclose(out["update"].numpy(), update, atol=ATOL, rtol=RTOL)
    for name, state in zip(cell.state_names, new_states):
      np.testing.assert_allclose(out[name].numpy(), state, atol=ATOL, rtol=RTOL, err_msg=name)
  # NTMBFGS's memory is [n, n]: its initial state and shape check follow n.
  init = loaded.signatures["initial_state_biases"](num_coordinates=tf.constant(5))
  assert init["memory"].shape == (5, 5)
  # serving_default is the first group's step (documented).
  config = optimizer_format.read_config(path)
  assert config["metadata"]["export"]["serving_default"] == "step_kernels"


def test_assets_hold_the_optimizer_and_load_rule_reads_them(exported, cell):
  assets = os.path.join(exported, "assets")
  assert sorted(os.listdir(assets)) == [optimizer_format.CONFIG_FILE, optimizer_format.WEIGHTS_FILE]
  with open(os.path.join(assets, optimizer_format.CONFIG_FILE)) as f:
    config = json.load(f)
  metadata = config["metadata"]
  assert metadata["meta_trained_on"] == METADATA["meta_trained_on"]
  assert metadata["evaluation"] == METADATA["evaluation"]
  info = metadata["export"]["groups"]["all"]
  assert info["architecture"] == "CoordinatewiseLSTM"
  assert info["preprocessing"] == {"name": "log_sign", "p": 10.0}
  assert info["output_scale"] == pytest.approx(0.1)
  assert info["state_names"] == list(cell.state_names)
  assert info["signatures"] == {"initial_state": "initial_state", "step": "step"}
  with open(os.path.join(exported, "saved_model.pb"), "rb") as f:
    assert b"_XlaMustCompile" not in f.read()  # serving must not require XLA
  fingerprint = tf.saved_model.experimental.read_fingerprint(exported)
  assert fingerprint.saved_model_checksum
  rule, loaded_metadata = optimizer_format.load_rule(exported)
  assert loaded_metadata == metadata
  for a, b in zip(rule.cells["all"].weights, cell.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_signatures_refuse_wrong_dtype_and_shape(exported, cell):
  step = tf.saved_model.load(exported).signatures["step"]
  states = {n: tf.zeros([N, s]) for n, s in zip(cell.state_names, cell.state_size)}
  with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError), match="float"):
    step(gradients=tf.zeros([N], tf.float64), **states)
  with pytest.raises(tf.errors.InvalidArgumentError, match="gradients must be a vector"):
    step(gradients=tf.zeros([1, N]), **states)
  bad = dict(states, lstm_1_c=tf.zeros([N - 1, cell.state_size[3]]))
  with pytest.raises(tf.errors.InvalidArgumentError, match="state lstm_1_c: expected shape"):
    step(gradients=tf.zeros([N]), **bad)
  bad = dict(states, lstm_0_h=tf.zeros([N, cell.state_size[0], 1]))  # would broadcast
  with pytest.raises(tf.errors.InvalidArgumentError, match="state lstm_0_h: expected shape"):
    step(gradients=tf.zeros([N]), **bad)
  init = tf.saved_model.load(exported).signatures["initial_state"]
  with pytest.raises(tf.errors.InvalidArgumentError, match="non-negative int32 scalar"):
    init(num_coordinates=tf.constant([3, 4]))


def test_tf1_session_load_runs_and_refuses_bad_shapes(exported, cell):
  gradients = np.random.default_rng(5).normal(size=N).astype(np.float32)
  states = _random_states(cell, N, seed=5)
  with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
    meta = tf.compat.v1.saved_model.load(sess, ["serve"], exported)
    sig = meta.signature_def["step"]
    feed = {sig.inputs["gradients"].name: gradients}
    feed.update({sig.inputs[n].name: s for n, s in zip(cell.state_names, states)})
    out = sess.run({k: v.name for k, v in sig.outputs.items()}, feed)
    feed[sig.inputs["gradients"].name] = gradients[:, None]  # [n, 1] instead of [n]
    with pytest.raises(tf.errors.InvalidArgumentError, match="gradients must be a vector"):
      sess.run(sig.outputs["update"].name, feed)
  update, new_states = _cell_step(cell, gradients, states)
  np.testing.assert_allclose(out["update"], update, atol=ATOL, rtol=RTOL)
  for name, state in zip(cell.state_names, new_states):
    np.testing.assert_allclose(out[name], state, atol=ATOL, rtol=RTOL)


def test_saved_model_cli_run(exported, cell, tmp_path):
  gradients = [0.3, -0.02, 1e-6, 0.0, -4.0, 2.5, 1e-3]
  zeros = lambda size: str([[0.0] * size] * N)
  exprs = ";".join(
    [f"gradients={gradients}"]
    + [f"{name}={zeros(size)}" for name, size in zip(cell.state_names, cell.state_size)]
  )
  out_dir = tmp_path / "cli_out"
  # The installed console script; where it is not on PATH (e.g. a Bazel sandbox), its module.
  cli = (
    [shutil.which("saved_model_cli")]
    if shutil.which("saved_model_cli")
    else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
  )
  result = subprocess.run(
    cli
    + [
      "run",
      "--dir",
      exported,
      "--tag_set",
      "serve",
      "--signature_def",
      "step",
      "--input_exprs",
      exprs,
      "--outdir",
      str(out_dir),
    ],
    capture_output=True,
    text=True,
    env=_env(),
    timeout=120,
    check=False,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  update, new_states = _cell_step(
    cell, np.asarray(gradients, np.float32), [s.numpy() for s in cell.get_initial_state(N)]
  )
  np.testing.assert_allclose(np.load(out_dir / "update.npy"), update, atol=ATOL, rtol=RTOL)
  for name, state in zip(cell.state_names, new_states):
    np.testing.assert_allclose(np.load(out_dir / f"{name}.npy"), state, atol=ATOL, rtol=RTOL)


def test_export_is_atomic(tmp_path, cell, monkeypatch):
  path = str(tmp_path / "model")
  export.export_saved_model(cell, path, {"version": "first"})
  before = sorted(os.listdir(tmp_path))

  def crash(directory):
    raise RuntimeError("simulated crash mid-export")

  monkeypatch.setattr(export, "_strip_xla", crash)
  with pytest.raises(RuntimeError, match="simulated crash"):
    export.export_saved_model(cell, path, {"version": "second"})
  assert sorted(os.listdir(tmp_path)) == before  # no half-written siblings left behind
  assert optimizer_format.read_config(path)["metadata"]["version"] == "first"
  with pytest.raises(RuntimeError, match="simulated crash"):
    export.export_saved_model(cell, str(tmp_path / "new"))
  assert not os.path.exists(tmp_path / "new")


def test_serve_request_and_bad_saved_models(exported, cell, foreign_saved_model, tmp_path):
  request, response = export.serve_request(exported, num_coordinates=4, seed=1)
  assert request["signature_name"] == "step"
  gradients = np.asarray(request["inputs"]["gradients"], np.float32)
  update, _ = _cell_step(cell, gradients, [s.numpy() for s in cell.get_initial_state(4)])
  np.testing.assert_allclose(response["outputs"]["update"], update, atol=ATOL, rtol=RTOL)
  json.dumps(request), json.dumps(response)

  optimizer_dir = str(tmp_path / "optimizer_dir")
  optimizer_format.save_rule(l2l_tf.LearnedUpdateRule(cell), optimizer_dir)
  a_file = tmp_path / "file.txt"
  a_file.write_text("hello")
  corrupt_graph = str(tmp_path / "corrupt_graph")
  shutil.copytree(exported, corrupt_graph)
  with open(os.path.join(corrupt_graph, "saved_model.pb"), "wb") as f:
    f.write(b"\x0a\xff\xff\xff\xff\x0fnot a protobuf")
  corrupt_variables = str(tmp_path / "corrupt_variables")
  shutil.copytree(exported, corrupt_variables)
  for name in os.listdir(os.path.join(corrupt_variables, "variables")):
    with open(os.path.join(corrupt_variables, "variables", name), "wb") as f:
      f.write(b"garbage")
  no_asset = str(tmp_path / "no_asset")
  shutil.copytree(exported, no_asset)
  os.remove(os.path.join(no_asset, "assets", optimizer_format.CONFIG_FILE))
  cases = {
    str(tmp_path / "missing"): "does not exist",
    str(a_file): "not a directory",
    optimizer_dir: "not a SavedModel",
    foreign_saved_model: "another program",
    corrupt_graph: "corrupt",
    corrupt_variables: "corrupt SavedModel, loading or running it",
    no_asset: "not exported by l2l_tf",
  }
  for path, phrase in cases.items():
    with pytest.raises(export.SavedModelError) as info:
      export.serve_request(path)
    message = str(info.value)
    assert path in message and phrase in message, message
    assert "\n" not in message


def test_scripts_export_serve_check_and_one_line_errors(cell, tmp_path, foreign_saved_model):
  optimizer_dir = tmp_path / "run" / "best"
  optimizer_format.save_rule(
    l2l_tf.LearnedUpdateRule(cell), str(optimizer_dir), {"problem": "quadratic"}
  )
  evaluation = tmp_path / "eval.json"
  evaluation.write_text(json.dumps({"results": {"learned": {"final_loss": 0.25}}}))
  output = tmp_path / "exported"
  start = lambda name, *args: subprocess.Popen(
    [sys.executable, os.path.join(ROOT, "scripts", name), *args],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=_env(),
  )

  def finish(process):
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)

  script = lambda name, *args: finish(start(name, *args))
  # Bad input, run alongside the export (independent): one line naming the path, no traceback.
  foreign = start("serve_check.py", f"--saved_model={foreign_saved_model}")
  result = script(
    "export.py",
    f"--optimizer_path={tmp_path / 'run'}",
    f"--output_path={output}",
    f"--evaluation_json={evaluation}",
  )
  assert result.returncode == 0, result.stderr[-2000:]
  metadata = optimizer_format.read_config(str(output))["metadata"]
  assert metadata["meta_trained_on"] == {"problem": "quadratic"}
  assert metadata["evaluation"]["results"]["learned"]["final_loss"] == 0.25

  result = script("serve_check.py", f"--saved_model={output}", "--num_coordinates=3")
  assert result.returncode == 0, result.stderr[-2000:]
  response = json.loads(result.stdout.split("response:", 1)[1].splitlines()[0])
  assert len(response["outputs"]["update"]) == 3

  result = finish(foreign)
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and foreign_saved_model in last and "another program" in last


def test_bad_export_input(tmp_path, cell):
  with pytest.raises(TypeError, match="LearnedUpdateRule"):
    export.export_saved_model("not a cell", str(tmp_path / "x"))
  rule = l2l_tf.LearnedUpdateRule({"bad group": cell}, {"bad group": ".*"})
  with pytest.raises(ValueError, match="signature name"):
    export.export_saved_model(rule, str(tmp_path / "x"))
  with pytest.raises(optimizer_format.OptimizerFileError, match="does not exist"):
    export.export_optimizer_directory(str(tmp_path / "none"), str(tmp_path / "y"))
  assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "y")


def test_export_refuses_a_foreign_directory_and_leaves_it_intact(tmp_path, cell):
  optimizer_dir = tmp_path / "run" / "best"
  optimizer_format.save_rule(l2l_tf.LearnedUpdateRule(cell), str(optimizer_dir))
  foreign = tmp_path / "precious"
  (foreign / "sub").mkdir(parents=True)
  (foreign / "notes.txt").write_text("do not lose me")
  (foreign / "sub" / "data.bin").write_bytes(b"\x00\x01")
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "scripts", "export.py"),
      f"--optimizer_path={optimizer_dir}",
      f"--output_path={foreign}",
    ],
    capture_output=True,
    text=True,
    env=_env(),
    timeout=120,
    check=False,
  )
  assert result.returncode != 0
  assert "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and str(foreign) in last and "--overwrite" in last
  assert (foreign / "notes.txt").read_text() == "do not lose me"
  assert (foreign / "sub" / "data.bin").read_bytes() == b"\x00\x01"
  assert sorted(os.listdir(foreign)) == ["notes.txt", "sub"]
  # An earlier export of ours is replaced without --overwrite; a foreign one only with it.
  export.export_optimizer_directory(str(optimizer_dir), str(tmp_path / "ours"))
  export.export_optimizer_directory(str(optimizer_dir), str(tmp_path / "ours"))
  export.export_optimizer_directory(str(optimizer_dir), str(foreign), overwrite=True)
  assert optimizer_format.is_saved_model(str(foreign)) and not (foreign / "notes.txt").exists()


def test_meta_training_problems_walks_the_whole_provenance():
  """Problems of every stage: exported (meta_trained_on), resumed (init_from), network mixes."""
  sigmoid_20 = {"name": "mnist", "hidden_sizes": [20], "activation": "sigmoid"}
  relu_20 = {"name": "mnist", "hidden_sizes": [20], "activation": "relu"}
  tanh_40 = {"name": "mnist", "hidden_sizes": [40], "activation": "tanh"}
  quadratic = {"name": "quadratic", "num_dims": 10}
  metadata = {
    "problem": sigmoid_20,
    "train_networks": [sigmoid_20, relu_20],
    "init_from": {
      "metadata": {"meta_trained_on": {"problem": tanh_40, "init_from": {"metadata": {}}}},
      "path": "somewhere",
    },
    "export": {"problem": quadratic},
  }
  found = optimizer_format.meta_training_problems(metadata)
  assert sorted(map(json.dumps, found)) == sorted(
    map(json.dumps, [sigmoid_20, sigmoid_20, relu_20, tanh_40, quadratic])
  )
  assert optimizer_format.meta_training_problems({"command": "x"}) == []


def test_export_of_a_checkpoint_needs_a_run_directory(tmp_path, cell):
  optimizer_dir = tmp_path / "run" / "best"
  optimizer_format.save_rule(l2l_tf.LearnedUpdateRule(cell), str(optimizer_dir))
  result = subprocess.run(
    [
      sys.executable,
      os.path.join(ROOT, "scripts", "export.py"),
      f"--optimizer_path={tmp_path / 'run'}",
      f"--output_path={tmp_path / 'out'}",
      "--checkpoint=latest",
    ],
    capture_output=True,
    text=True,
    env=_env(),
    timeout=120,
    check=False,
  )
  assert result.returncode != 0 and "Traceback" not in result.stderr
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "best/ and checkpoints/" in last
  assert not os.path.exists(tmp_path / "out")
