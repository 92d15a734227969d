"""The absl scripts end to end: JSON shape, optimizer directories, one-line errors."""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import repo_paths

# End to end through subprocesses (a TensorFlow start each): the slow tier.
pytestmark = pytest.mark.slow

ROOT = repo_paths.ROOT
DURATION = r"[\d.]+ (s|min|h)"  # as evaluation.format_duration writes it


def _run(script, *args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
    [sys.executable, os.path.join(ROOT, "scripts", script), *args],
    capture_output=True,
    text=True,
    env=env,
    timeout=600,
  )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("runs") / "quadratic")
  result = _run(
    "train.py",
    f"--output_dir={out}",
    "--epochs=1",
    "--trajectories_per_epoch=2",
    "--num_steps=20",
    "--unroll_length=10",
    "--num_validation_problems=8",
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert "best optimizer in" in result.stdout
  return out


def test_evaluate_writes_the_documented_json_shape(trained, tmp_path):
  json_path, png_path = str(tmp_path / "eval.json"), str(tmp_path / "eval.png")
  result = _run(
    "evaluate.py",
    f"--optimizer_path={trained}",
    "--num_problems=5",
    "--num_steps=10",
    f"--output_json={json_path}",
    f"--output_plot={png_path}",
  )
  assert result.returncode == 0, result.stderr[-2000:]
  for name in ("sgd", "rmsprop", "adam", "nag"):  # progress of each tuning grid, then its rate
    assert re.search(
      rf"^tuning {name}: 21/21 learning rates, .*\ntuned {name}: learning_rate=",
      result.stdout,
      flags=re.MULTILINE,
    ), result.stdout
  with open(json_path) as f:
    data = json.load(f)
  assert set(data) == {"problem", "num_steps", "num_problems", "results", "provenance"}
  assert data["provenance"]["command"].startswith("python ")
  assert f"--output_json={json_path}" in data["provenance"]["command"]
  assert (data["problem"], data["num_steps"], data["num_problems"]) == ("quadratic", 10, 5)
  assert set(data["results"]) == {"learned", "sgd", "rmsprop", "adam", "nag"}
  for name, r in data["results"].items():
    assert set(r) == {
      "learning_rate",
      "mean_loss",
      "final_loss_mean",
      "final_loss_std",
      "final_losses",
    }
    assert len(r["mean_loss"]) == 11
    assert len(r["final_losses"]) == 5
    assert np.isclose(np.mean(r["final_losses"]), r["final_loss_mean"])
    assert np.isclose(np.std(r["final_losses"]), r["final_loss_std"])
    assert r["final_loss_mean"] == pytest.approx(r["mean_loss"][-1])
    assert (r["learning_rate"] is None) == (name == "learned")
  # Every optimizer starts from the same problems.
  assert len({r["mean_loss"][0] for r in data["results"].values()}) == 1
  with open(png_path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
  "args,message",
  [
    (["--problem=cubic"], "problem"),
    (["--num_steps=0"], "num_steps"),
    (["--optimizer_path=/does/not/exist"], "does not exist"),
    (["--optimizers=learned,adagrad", "--optimizer_path=x"], "adagrad"),
  ],
)
def test_evaluate_bad_input_fails_with_a_clear_message(args, message, tmp_path):
  result = _run("evaluate.py", *args, f"--output_json={tmp_path / 'out.json'}")
  assert result.returncode != 0
  assert message in result.stderr
  assert "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "out.json")


def test_evaluate_refuses_a_directory_that_is_not_an_optimizer(tmp_path):
  result = _run("evaluate.py", f"--optimizer_path={tmp_path}")
  assert result.returncode != 0 and "not an l2l_tf optimizer" in result.stderr
  assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
  "args,message",
  [
    (["--num_steps=50", "--unroll_length=30"], "multiple of unroll_length"),
    (["--unroll_length=0"], "unroll_length"),
    (["--optimizer=adam"], "optimizer"),
    (["--meta_learning_rate=0"], "meta_learning_rate"),
    (
      ["--problem=mnist_convnet", "--labels=0,1"],
      "--labels applies to --problem=cifar10|cifar5|cifar2 only, not --problem=mnist_convnet",
    ),
    (
      ["--problem=mnist_convnet", "--hidden_sizes=30", "--activation=relu", "--style=x.png"],
      "--hidden_sizes, --activation apply to --problem=mnist only; --style applies to "
      "--problem=neural_art only, not --problem=mnist_convnet",
    ),
    (["--problem=mnist_convnet", "--init_from=x"], "not supported yet for mnist_convnet"),
    (["--imitate=adagrad:0.1", "--imitation_trajectories=1"], "Unknown baseline optimizer"),
    (["--imitate=adam", "--imitation_trajectories=1"], "NAME:LEARNING_RATE"),
    (["--imitate=adam:-0.1", "--imitation_trajectories=1"], "NAME:LEARNING_RATE"),
    (["--imitation_trajectories=2"], "imitate and imitation_trajectories"),
    (["--cell_config={"], "--cell_config: unreadable JSON"),
    (["--cell_config=" + "[" * 100 + "]" * 100], "--cell_config: JSON nested deeper than"),
    (["--cell_config=[40]"], "--cell_config must be a JSON object"),
    (['--cell_config={"hiden_sizes": [4]}'], "hiden_sizes"),
    (["--init_from=x", "--grow_from=y"], "--init_from keeps its optimizer's cell"),
  ],
)
def test_train_bad_input_fails_without_touching_the_output(args, message, tmp_path):
  out = tmp_path / "run"
  result = _run("train.py", f"--output_dir={out}", *args)
  assert result.returncode != 0 and message in result.stderr
  assert "Traceback" not in result.stderr
  assert not out.exists()


def test_train_refuses_a_directory_holding_another_run(trained):
  result = _run("train.py", f"--output_dir={trained}", "--epochs=3")
  assert result.returncode != 0 and "holds another run" in result.stderr
  assert os.path.isfile(os.path.join(trained, "best", "optimizer.json"))


def _one_epoch_from(trained, out, *flags):
  """One short epoch of train.py started from `trained` (by the given flags); checks that
  before any meta-update its validation loss (same problems and metric as the trained run) is
  the trained optimizer's best. Returns (the run's result, the trained optimizer's metadata)."""
  from l2l_tf import optimizer_format  # pylint: disable=g-import-not-at-top

  result = _run(
    "train.py",
    f"--output_dir={out}",
    "--epochs=1",
    "--trajectories_per_epoch=1",
    "--num_steps=20",
    "--unroll_length=10",
    "--num_validation_problems=8",
    *flags,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  _, start_metadata = optimizer_format.load_rule(trained)
  assert f"initial validation loss {start_metadata['best_validation_loss']:.4g}" in result.stdout
  return result, start_metadata


def test_train_init_from_starts_from_the_given_optimizer(trained, tmp_path):
  out = str(tmp_path / "finetuned")
  result, start_metadata = _one_epoch_from(
    trained, out, f"--init_from={trained}", "--meta_objective=log_loss"
  )
  with open(os.path.join(out, "run.json")) as f:
    run = json.load(f)
  assert run["config"]["meta_objective"] == "log_loss"
  assert "--init_from" in run["metadata"]["command"]
  assert run["metadata"]["init_from"] == {"path": trained, "metadata": start_metadata}
  # Before an epoch improves on it, best/ is the starting optimizer, not an untrained one.
  assert f"(the starting optimizer {trained}, kept as best/" in result.stdout
  clash = _run(
    "train.py",
    f"--output_dir={tmp_path / 'clash'}",
    f"--init_from={trained}",
    "--optimizer=lstm_gac",
  )
  assert clash.returncode != 0 and "drop --optimizer" in clash.stderr
  assert "Traceback" not in clash.stderr and not (tmp_path / "clash").exists()


def test_train_cifar_from_binary_files_uses_two_networks(tmp_path):
  import numpy as np  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
    records = np.concatenate([rng.integers(0, 10, (40, 1)), rng.integers(0, 256, (40, 3072))], 1)
    (tmp_path / name).write_bytes(records.astype(np.uint8).tobytes())
  _train_two_network_optimizer(
    tmp_path / "run", "cifar2", "--dataset_source=binary", f"--data_dir={tmp_path}"
  )


def _train_two_network_optimizer(out, problem, *flags):
  """A tiny train.py run of a convnet problem; checks it wrote one network per group."""
  result = _run(
    "train.py",
    f"--problem={problem}",
    *flags,
    f"--output_dir={out}",
    "--epochs=1",
    "--trajectories_per_epoch=1",
    "--num_steps=2",
    "--unroll_length=1",
    "--num_validation_problems=1",
  )
  assert result.returncode == 0, result.stderr[-2000:]
  with open(out / "best" / "optimizer.json") as f:
    config = json.load(f)
  assert set(config["cells"]) == {"conv", "fc"}
  assert config["metadata"]["problem"]["name"] == problem


def test_mnist_convnet_meta_trains_two_networks_and_evaluates_against_baselines(tmp_path):
  out, json_path = tmp_path / "run", tmp_path / "eval.json"
  _train_two_network_optimizer(out, "mnist_convnet")  # the embedded MNIST sample
  result = _run(
    "evaluate.py",
    "--problem=mnist_convnet",
    f"--optimizer_path={out}",
    "--optimizers=learned,sgd",
    "--num_problems=2",
    "--num_steps=2",
    f"--output_json={json_path}",
  )
  assert result.returncode == 0, result.stderr[-2000:]
  with open(json_path) as f:
    data = json.load(f)
  assert (data["problem"], data["num_steps"], data["num_problems"]) == ("mnist_convnet", 2, 2)
  assert set(data["results"]) == {"learned", "sgd"}
  for name, r in data["results"].items():
    assert len(r["mean_loss"]) == 3 and all(math.isfinite(x) for x in r["mean_loss"]), name
    assert (r["learning_rate"] is None) == (name == "learned")  # baselines were tuned
  assert len({r["mean_loss"][0] for r in data["results"].values()}) == 1  # same problems


def test_generalization_writes_table_json_and_summary(tmp_path):
  out = tmp_path / "gen"
  result = _run(
    "generalization.py",
    f"--optimizer_path={os.path.join(ROOT, 'savedmodels', 'mnist')}",
    f"--output_dir={out}",
    "--num_problems=1",
    "--grid_points=2",
  )
  assert result.returncode == 0, result.stderr[-2000:]
  for progress in (
    rf"relu: tuning adam: 2/2 learning rates, {DURATION}",
    rf"generalisation: 1/8 variants, {DURATION}, ETA {DURATION}",
    rf"generalisation: 8/8 variants, {DURATION}",
  ):
    assert re.search(rf"^{progress}$", result.stdout, flags=re.MULTILINE), result.stdout
  with open(out / "generalization.json") as f:
    data = json.load(f)
  assert data.pop("provenance")["command"].startswith("python ")
  assert list(data) == [
    "base",
    "200 steps",
    "40 units",
    "2 layers",
    "relu",
    "tanh",
    "3 layers",
    "80 units",
  ]
  assert [data[v]["num_steps"] for v in data] == [100, 200, 100, 100, 100, 100, 100, 100]
  # The shipped optimizer was meta-trained on the base network and never on the last three.
  seen = {name: variant["seen_in_meta_training"] for name, variant in data.items()}
  assert seen["base"] and seen["200 steps"]
  assert not any(seen[name] for name in ("tanh", "3 layers", "80 units"))
  rows = [
    line
    for line in (out / "generalization.md").read_text().splitlines()
    if line.startswith("| ") and not line.startswith("| variant")
  ]
  assert len(rows) == 8
  for row, (name, variant) in zip(rows, data.items()):
    finals = {n: r["final_loss_mean"] for n, r in variant["results"].items()}
    learned_best = finals.pop("learned") < min(finals.values())
    assert row.startswith(f"| {name} | {'yes' if seen[name] else 'no'} |")
    assert row.endswith("yes |" if learned_best else "no |")
  for name in ("summary.png", "base.png", "relu.png"):
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_train_grow_from_starts_where_the_grown_optimizer_was(trained, tmp_path):
  from l2l_tf import optimizer_format  # pylint: disable=g-import-not-at-top

  out = str(tmp_path / "grown")
  # The grown optimizer steps as the trained one (_one_epoch_from checks the validation loss).
  _one_epoch_from(
    trained,
    out,
    f"--grow_from={trained}",
    "--optimizer=rnnprop",
    '--cell_config={"raw_gradient": true, "bounded": false, "initial_learning_rate": 0}',
  )
  rule, metadata = optimizer_format.load_rule(out)
  assert type(rule.cells["all"]).__name__ == "RNNprop"
  assert metadata["init_from"]["path"] == trained
  assert metadata["init_from"]["metadata"]["grown_into"] == "rnnprop"
