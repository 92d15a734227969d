"""scripts/make_results.py: docs/RESULTS.md from small hand-made result files."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from l2l_tf import evaluation

import repo_paths

ROOT = repo_paths.ROOT
SCRIPT = os.path.join(ROOT, "scripts", "make_results.py")


def _load_script():
  spec = importlib.util.spec_from_file_location("make_results", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


make_results = _load_script()

PROVENANCE = {
  "command": "python scripts/evaluate.py --num_problems=3",
  "wall_seconds": 42.0,
  "machine": {
    "cpu_count": 2,
    "platform": "Linux-test",
    "load_average_1min": 3.0,
    "tensorflow": "2.21.0",
  },
  "date_utc": "2026-01-02 03:04 UTC",
}


def _evaluation(num_steps, finals, num_problems=3):
  """An evaluate.py result: finals {optimizer: (learning_rate, mean, std)}."""
  return {
    "problem": "test",
    "num_steps": num_steps,
    "num_problems": num_problems,
    "results": {
      name: {
        "learning_rate": lr,
        "mean_loss": [1.0] * (num_steps + 1),
        "final_loss_mean": mean,
        "final_loss_std": std,
      }
      for name, (lr, mean, std) in finals.items()
    },
  }


QUADRATIC = _evaluation(
  100,
  {
    "sgd": (0.0178, 48.7068, 477.237),
    "learned": (None, 0.133424, 0.377002),
    "adam": (0.316228, 0.292110, 0.682507),
  },
)


def _write(root, relative_path, data):
  path = root / relative_path
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(data))


def _section(text, key):
  """The lines of one panel's section of the page."""
  start = text.index(f'<a id="{key}"></a>')
  end = text.find("<a id=", start + 1)
  return text[start : end if end >= 0 else len(text)].splitlines()


def _table_rows(lines):
  """Cells of a section's table rows (header and separator left out)."""
  rows = [line for line in lines if line.startswith("| ")]
  return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def test_quadratic_rows_show_the_file_and_the_papers_values(tmp_path):
  _write(tmp_path, "results/quadratic.json", dict(QUADRATIC, provenance=PROVENANCE))
  (tmp_path / "docs" / "figures").mkdir(parents=True)
  (tmp_path / "docs" / "figures" / "quadratic.png").write_bytes(b"\x89PNG")
  section = _section(make_results.render(str(tmp_path)), "quadratic")
  assert _table_rows(section) == [  # learned first, then the baselines by mean loss
    ["learned", "-", "100", "3", "0.1334", "0.377", "0.04"],
    ["adam", "0.316", "100", "3", "0.2921", "0.6825", "0.05"],
    ["sgd", "0.0178", "100", "3", "48.71", "477.2", "0.22"],
  ]
  assert "![Quadratics](figures/quadratic.png)" in section
  assert f"Command: `{PROVENANCE['command']}`" in section
  assert (
    "Wall time 42 s on a 2-core CPU (Linux-test), 1-minute load 3.0 when it finished, "
    "TensorFlow 2.21.0; 2026-01-02 03:04 UTC."
  ) in section


def test_summary_says_whether_learned_beats_the_best_baseline(tmp_path):
  _write(tmp_path, "results/quadratic.json", QUADRATIC)
  losing = _evaluation(1000, {"learned": (None, 0.9, 0.1), "nag": (0.1, 0.8, 0.1)})
  _write(tmp_path, "results/cifar10.json", losing)
  text = make_results.render(str(tmp_path))
  assert (
    "| [Quadratics](#quadratic) | learned 0.1334 | adam 0.2921 | yes | 0.04 | 0.05 |"
    in text.splitlines()
  )
  assert (
    "| [CIFAR-10](#cifar10) | learned 0.9 | nag 0.8 | **no** | 0.81 | 0.83 |" in text.splitlines()
  )


def test_missing_panels_are_listed_with_their_commands(tmp_path):
  _write(tmp_path, "results/quadratic.json", QUADRATIC)
  text = make_results.render(str(tmp_path))
  missing = [p for p in make_results.PANELS if p.key != "quadratic"]
  assert len(missing) == len(make_results.PANELS) - 1 >= 10
  for panel in missing:
    assert f"| [{panel.title}](#{panel.key}) | not run yet | | | | |" in text.splitlines()
    section = _section(text, panel.key)
    if panel.more_files:  # a table of several files: all missing here
      files = ", ".join(f"`{file}`" for file in panel.files)
      assert f"**Not run yet.** {files} are missing; the panel's files are written by:" in section
    else:
      assert f"**Not run yet.** `{panel.result_file}` is missing; it is written by:" in section
    assert all(line in section for line in panel.command.splitlines())
  assert "not recorded in the result file" in "\n".join(_section(text, "quadratic"))


def test_mnist_files_feed_their_panels_with_the_papers_values(tmp_path):
  horizons = {
    "100": _evaluation(100, {"learned": (None, 0.21, 0.02), "adam": (0.01, 0.3, 0.03)}),
    "200": _evaluation(200, {"learned": (None, 0.11, 0.01), "adam": (0.01, 0.2, 0.02)}),
  }
  _write(tmp_path, "results/mnist_paper_setting.json", {"horizons": horizons})
  variants = {
    name: _evaluation(100, {"learned": (None, mean, 0.5), "nag": (1.0, 0.7, 0.1)})
    for name, mean in (
      ("base", 0.1),
      ("40 units", 0.05),
      ("2 layers", 1.5),
      ("relu", 0.6),
      ("tanh", 0.4),
      ("3 layers", 1.9),
      ("80 units", 0.3),
    )
  }
  variants["2 layers"]["seen_in_meta_training"] = True
  variants["tanh"]["seen_in_meta_training"] = False
  _write(
    tmp_path,
    "results/mnist_generalization/generalization.json",
    dict(variants, provenance=PROVENANCE),
  )
  text = make_results.render(str(tmp_path))
  assert _table_rows(_section(text, "mnist")) == [
    ["learned", "-", "100", "3", "0.21", "0.02", "0.25"],
    ["adam", "0.01", "100", "3", "0.3", "0.03", "0.36"],
  ]
  assert _table_rows(_section(text, "mnist_200_steps"))[0] == [
    "learned",
    "-",
    "200",
    "3",
    "0.11",
    "0.01",
    "0.21",
  ]
  assert _table_rows(_section(text, "mnist_2_layers")) == [
    ["learned (meta-trained on this network)", "-", "100", "3", "1.5", "0.5", "0.32"],
    ["nag", "1", "100", "3", "0.7", "0.1", "0.76"],
  ]
  assert _table_rows(_section(text, "mnist_relu"))[0][-1] == "fails (~2.3+)"
  assert _table_rows(_section(text, "mnist_relu"))[0][0] == "learned"  # not recorded: no label
  tanh = _table_rows(_section(text, "mnist_tanh"))
  assert tanh[0][:5] == ["learned (network held out)", "-", "100", "3", "0.4"]
  assert _table_rows(_section(text, "mnist_3_layers"))[0][4] == "1.9"


def test_sharing_std_is_pooled_over_seeds_and_problems(tmp_path):
  rng = np.random.default_rng(0)
  finals = {"lstm": [rng.random(5), rng.random(5)], "adam": [rng.random(5)]}  # adam: seed 0

  def evaluation_of(seed):
    return {
      "results": {
        name: {
          "final_loss_mean": float(np.mean(losses[seed])),
          "final_loss_std": float(np.std(losses[seed])),
          "learning_rate": None if name == "lstm" else 0.3,
        }
        for name, losses in finals.items()
        if seed < len(losses)
      }
    }

  overall = {
    name: {
      "final_loss_mean": float(np.mean(np.concatenate(losses))),
      "final_loss_median": float(np.median(np.concatenate(losses))),
    }
    for name, losses in finals.items()
  }
  overall["lstm"]["final_loss_mean_per_seed"] = [float(np.mean(x)) for x in finals["lstm"]]
  overall["adam"]["learning_rate"] = 0.3
  _write(
    tmp_path,
    "results/sharing_quadratic.json",
    {
      "num_steps": 100,
      "num_problems": 5,
      "overall": overall,
      "per_seed": {"1": {"evaluation": evaluation_of(1)}, "0": {"evaluation": evaluation_of(0)}},
    },
  )
  section = _section(make_results.render(str(tmp_path)), "sharing_quadratic")
  lstm = np.concatenate(finals["lstm"])
  assert _table_rows(section)[0] == [
    "lstm",
    "-",
    "100",
    "10",
    f"{np.mean(lstm):.4g}",
    f"{np.std(lstm):.4g}",
    "-",
  ]
  assert _table_rows(section)[1][:6] == [
    "adam",
    "0.3",
    "100",
    "5",
    f"{np.mean(finals['adam'][0]):.4g}",
    f"{np.std(finals['adam'][0]):.4g}",
  ]
  per_seed = " / ".join(f"{np.mean(x):.4g}" for x in finals["lstm"])
  assert f"- lstm: median {np.median(lstm):.4g}; per seed {per_seed}" in section


def test_memory_panel_shows_each_configuration_and_where_a_limit_stopped_one(tmp_path):
  row = {"problem": "large", "unroll": 2, "lstm_kernel": "graph", "coordinates": 1001710}
  _write(
    tmp_path,
    "results/meta_training_memory.json",  # as benchmarks/meta_training_memory.py --output_json
    {
      "jit_compile": False,
      "repeats": 2,
      "provenance": PROVENANCE,
      "results": [
        dict(row, recompute="steps", peak_mib=3000.4, setup_mib=700.2, seconds=9.871),
        dict(row, recompute="none", peak_mib=None, stopped_by="max_rss_mib"),
        dict(
          row, lstm_kernel="native", recompute="none", peak_mib=2100.0, setup_mib=710.0, seconds=4.5
        ),
      ],
    },
  )
  text = make_results.render(str(tmp_path))
  assert _table_rows(_section(text, "meta_training_memory")) == [
    ["large", "-", "2", "graph", "none", "stopped (max_rss_mib)", "stopped (max_rss_mib)", "-"],
    ["large", "1,001,710", "2", "graph", "steps", "3,000", "2,300", "9.87"],
    ["large", "1,001,710", "2", "native", "none", "2,100", "1,390", "4.50"],
  ]


def test_speed_panel_shows_throughputs_json(tmp_path):
  _write(
    tmp_path,
    "results/throughput.json",  # as benchmarks/throughput.py --output_json
    {
      "unroll_length": 20,
      "repeats": 10,
      "provenance": PROVENANCE,
      "results": [
        {
          "problem": "quadratic",
          "jit_compile": True,
          "coordinates": 1280,
          "coord_steps_per_s": 638296.4,
          "compile_s": 2.14,
        },
        {
          "problem": "mnist",
          "jit_compile": False,
          "coordinates": 15910,
          "lstm_kernel": "native",
          "coord_steps_per_s": 1080512.3,
          "compile_s": 1.94,
        },
      ],
    },
  )
  text = make_results.render(str(tmp_path))
  assert _table_rows(_section(text, "speed")) == [
    ["mnist", "15,910", "20", "false", "native", "1,080,512", "1.9"],
    ["quadratic", "1,280", "20", "true", "graph", "638,296", "2.1"],  # written before the flag
  ]
  assert "| [Speed (meta-training throughput)](#speed) | see below | | | | |" in text


def test_output_is_deterministic_whatever_the_key_order(tmp_path):
  _write(tmp_path, "results/quadratic.json", dict(QUADRATIC, provenance=PROVENANCE))
  make_results.write_page(str(tmp_path))
  first = (tmp_path / "docs" / "RESULTS.md").read_bytes()
  reordered = json.loads(json.dumps(dict(QUADRATIC, provenance=PROVENANCE), sort_keys=True))
  reordered["results"] = dict(reversed(list(reordered["results"].items())))
  _write(tmp_path, "results/quadratic.json", reordered)
  make_results.write_page(str(tmp_path))
  assert (tmp_path / "docs" / "RESULTS.md").read_bytes() == first
  assert make_results.page_is_current(str(tmp_path))


def test_check_detects_a_stale_page(tmp_path):
  _write(tmp_path, "results/quadratic.json", QUADRATIC)
  assert not make_results.page_is_current(str(tmp_path))  # no page yet
  make_results.write_page(str(tmp_path))
  assert make_results.page_is_current(str(tmp_path))
  _write(tmp_path, "results/cifar2.json", QUADRATIC)  # a new result file
  assert not make_results.page_is_current(str(tmp_path))
  make_results.write_page(str(tmp_path))
  changed = json.loads(json.dumps(QUADRATIC))
  changed["results"]["learned"]["final_loss_mean"] = 0.1335
  _write(tmp_path, "results/quadratic.json", changed)  # a rerun with another number
  assert not make_results.page_is_current(str(tmp_path))


@pytest.mark.parametrize(
  "content",
  [
    [1, 2],
    {"results": 3},
    {
      "num_steps": 100,
      "num_problems": 3,
      "results": {"a": {"learning_rate": 1, "final_loss_mean": "low", "final_loss_std": 0.1}},
    },
  ],
)
def test_a_result_file_of_the_wrong_shape_is_named(tmp_path, content):
  _write(tmp_path, "results/quadratic.json", content)
  with pytest.raises(
    ValueError,
    match=r"^results/quadratic.json: not the JSON Quadratics "
    r"expects \(",
  ):
    make_results.render(str(tmp_path))


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run(
    [sys.executable, SCRIPT, *args], capture_output=True, text=True, env=env, timeout=300
  )


def test_command_line_check_and_bad_json_fail_with_one_line(tmp_path):
  _write(tmp_path, "results/quadratic.json", QUADRATIC)
  make_results.write_page(str(tmp_path))
  page = (tmp_path / "docs" / "RESULTS.md").read_bytes()
  (tmp_path / "results" / "cifar10.json").write_text('{"problem": "cifar10", ')
  result = _run(f"--root={tmp_path}")
  assert result.returncode == 1, result.stderr
  assert (
    result.stderr.strip()
    .splitlines()[-1]
    .startswith("error: results/cifar10.json: not valid JSON (")
  ), result.stderr
  assert (tmp_path / "docs" / "RESULTS.md").read_bytes() == page  # nothing lost
  _write(tmp_path, "results/cifar10.json", QUADRATIC)
  result = _run(f"--root={tmp_path}", "--check")
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
    "error: docs/RESULTS.md is stale or missing: run python scripts/make_results.py"
  )


def test_write_json_records_provenance(tmp_path, monkeypatch):
  monkeypatch.setattr(sys, "argv", ["scripts/evaluate.py", "--output_json=a b.json"])
  evaluation.write_json({"results": {}}, str(tmp_path / "r.json"))
  provenance = json.loads((tmp_path / "r.json").read_text())["provenance"]
  assert provenance["command"] == "python scripts/evaluate.py '--output_json=a b.json'"
  assert 0 < provenance["wall_seconds"] < 24 * 3600  # this process's age, not the machine's
  assert provenance["machine"]["cpu_count"] == os.cpu_count()
  assert provenance["date_utc"].endswith(" UTC")
  kept = {"command": "earlier"}  # a result written again keeps the command that made it
  evaluation.write_json({"provenance": kept}, str(tmp_path / "again.json"))
  assert json.loads((tmp_path / "again.json").read_text())["provenance"] == kept


def test_seed_keras_fit_and_training_panels_read_their_files(tmp_path):
  seeds = {
    "num_problems": 20,
    "optimizers": {"a": {"100": 0.25, "200": 0.2}, "b": {"100": 0.27, "200": 0.22}},
    "spread": {"100": {"mean": 0.26, "std": 0.01, "min": 0.25, "max": 0.27}},
  }
  rows = make_results.seeds_rows(seeds)
  assert [(make_results.optimizer_label(r), r["steps"], r["mean"]) for r in rows] == [
    ("a (step 100)", 100, 0.25),
    ("a (step 200)", 200, 0.2),
    ("b (step 100)", 100, 0.27),
    ("b (step 200)", 200, 0.22),
    ("mean over the 2 (std: across them, step 100)", 100, 0.26),
  ]
  fit = {
    "epochs": 1,
    "results": {
      "learned": {
        "test_accuracy": 0.9,
        "runs": [{"train_loss_last": 0.2}, {"train_loss_last": 0.4}],
      },
      "adam_default": {"test_accuracy": 0.8, "runs": [{"train_loss_last": 0.6}] * 2},
    },
  }
  rows = {make_results.optimizer_label(r): r for r in make_results.keras_fit_rows(fit)}
  assert rows["learned (test accuracy 0.9000)"]["mean"] == pytest.approx(0.3)
  assert rows["learned (test accuracy 0.9000)"]["std"] == pytest.approx(0.1)
  assert rows["adam_default (test accuracy 0.8000)"]["learning_rate"] == 0.001
  run = tmp_path / "results" / "training" / "r1"
  run.mkdir(parents=True)
  (run / "run.json").write_text(
    json.dumps(
      {
        "config": {
          "curriculum": [[100, 20], [100, 100]],
          "meta_learning_rate": 0.001,
          "trajectories_per_epoch": 5,
          "seed": 3,
          "num_steps": 100,
          "unroll_length": 20,
        },
        "metadata": {"command": "train.py --init_from=savedmodels/x", "optimizer": "lstm_gac"},
      }
    )
  )
  (run / "history.json").write_text(
    json.dumps(
      [
        {"epoch": 1, "validation_loss": 0.5, "epoch_seconds": 60, "best_validation_loss": 0.5},
        {"epoch": 2, "validation_loss": 0.4, "epoch_seconds": 120, "best_validation_loss": 0.4},
      ]
    )
  )
  panel = next(p for p in make_results.PANELS if p.key == "mnist_meta_training")
  (row,) = make_results.training_rows(make_results.load_result(str(tmp_path), panel))
  assert (row["network"], row["start"], row["stages"], row["trajectories"], row["minutes"]) + (
    row["best"],
  ) == (
    "lstm_gac",
    "x",
    "100x20, 100x100",
    10,
    3.0,
    "0.4000 (epoch 2)",
  )
  assert row["random_scale"] == 1.0
  # A run whose epochs never beat its start: best/ is the starting optimizer (epoch 0), and a
  # run with --random_scale says so.
  config = json.loads((run / "run.json").read_text())
  config["config"]["random_scale"] = 10.0
  (run / "run.json").write_text(json.dumps(config))
  (run / "history.json").write_text(
    json.dumps(
      [
        {
          "epoch": 1,
          "validation_loss": 0.5,
          "epoch_seconds": 60,
          "best_epoch": 0,
          "best_validation_loss": 0.4,
        },
        {
          "epoch": 2,
          "validation_loss": 0.45,
          "epoch_seconds": 60,
          "best_epoch": 0,
          "best_validation_loss": 0.4,
        },
      ]
    )
  )
  (row,) = make_results.training_rows(make_results.load_result(str(tmp_path), panel))
  assert row["best"] == "0.4000 (epoch 0: the starting optimizer)"
  assert dict(make_results.TRAINING_COLUMNS)["random scale"](row) == "10"


def test_paired_difference_of_learned_and_best_baseline_from_per_run_losses(tmp_path):
  runs = {
    "learned": [0.1, 0.3, 0.2, 0.6],
    "nag": [0.2, 0.2, 0.4, 0.5],  # best baseline (mean 0.325)
    "adam": [0.5, 0.5, 0.5, 0.5],
  }
  data = _evaluation(
    100,
    {
      name: (None if name == "learned" else 0.1, float(np.mean(x)), float(np.std(x)))
      for name, x in runs.items()
    },
    num_problems=4,
  )
  for name, losses in runs.items():
    data["results"][name]["final_losses"] = losses
  _write(tmp_path, "results/quadratic.json", data)
  section = "\n".join(_section(make_results.render(str(tmp_path)), "quadratic"))
  diff = np.subtract(runs["learned"], runs["nag"])  # -0.1, 0.1, -0.2, 0.1
  error = np.std(diff, ddof=1) / 2
  assert (
    f"Paired over the 4 runs, learned minus nag: {np.mean(diff):.4g} (standard error "
    f"{error:.4g}; below 0: the learned optimizer is lower; 2 of 4 runs lower)." in section
  )
  summary = "| [Quadratics](#quadratic) | learned 0.3 | nag 0.325 | "
  text = make_results.render(str(tmp_path))
  assert f"{summary}tie (paired difference within 2 standard errors) |" in text
  # Lower on every run by much more than the spread of the differences: a win.
  data["results"]["learned"]["final_losses"] = [
    x - 0.1 + 0.001 * i for i, x in enumerate(runs["nag"])
  ]
  _write(tmp_path, "results/quadratic.json", data)
  assert f"{summary}yes |" in make_results.render(str(tmp_path))
  # Without per-run losses (older result files) there is no such line.
  for name in runs:
    del data["results"][name]["final_losses"]
  _write(tmp_path, "results/quadratic.json", data)
  assert "Paired over" not in make_results.render(str(tmp_path))


def _sensitivity(first_horizon_runs, study):
  """A mnist_paper_setting.py result: study [(scale, learned, adam)] at the first horizon."""
  return {
    "horizons": {"100": {"num_problems": first_horizon_runs}, "200": {"num_problems": 99}},
    "sensitivity": [
      {"scale": scale, "learned": learned, "adam": adam} for scale, learned, adam in study
    ],
    "provenance": PROVENANCE,
  }


def test_sensitivity_panels_show_the_learned_and_adam_at_each_scale(tmp_path):
  study = [(1.0, 0.3412, 0.2423), (0.5, 0.2516, 0.257)]  # learned and adam cross over
  _write(tmp_path, "results/mnist_relu_sensitivity.json", _sensitivity(7, study))
  _write(tmp_path, "results/mnist_tanh_sensitivity.json", _sensitivity(20, [(3.0, 0.33, 0.64)]))
  text = make_results.render(str(tmp_path))
  assert _table_rows(_section(text, "mnist_relu_step_size")) == [  # by scale
    ["0.5", "100", "7", "0.2516", "0.257"],
    ["1", "100", "7", "0.3412", "0.2423"],
  ]
  assert _table_rows(_section(text, "mnist_tanh_step_size")) == [["3", "100", "20", "0.33", "0.64"]]
  assert f"Command: `{PROVENANCE['command']}`" in _section(text, "mnist_relu_step_size")


def _seeds_file(losses, command):
  """A mnist_seeds.py result: losses {optimizer path: {step: mean loss}}."""
  return {
    "num_problems": 20,
    "optimizers": losses,
    "spread": {"100": {"mean": 9.0, "std": 9.0, "min": 9.0, "max": 9.0}},  # must not show
    "provenance": dict(PROVENANCE, command=command),
  }


def test_stage4_candidates_are_one_table_of_four_files(tmp_path):
  def path(run):
    return f"results/training/{run}/best"

  files = {
    "": {path("ft200"): {"100": 0.24, "200": 0.217}, path("netmix"): {"100": 0.21, "200": 0.2}},
    "_2_layers": {path("ft200"): {"100": 1.3}, path("netmix"): {"100": 1.0}},
    "_relu": {path("ft200"): {"100": 0.5}, path("netmix"): {"100": 0.34}},
    "_tanh": {path("netmix"): {"100": 0.2417}},  # ft200 left out: "-"
  }
  for suffix, losses in files.items():
    _write(
      tmp_path,
      f"results/mnist_stage4_candidates{suffix}.json",
      _seeds_file(losses, f"command{suffix}"),
    )
  section = _section(make_results.render(str(tmp_path)), "mnist_stage4_candidates")
  assert _table_rows(section) == [  # best at step 100 first
    ["netmix/best", "0.21", "0.2", "1", "0.34", "0.2417"],
    ["ft200/best", "0.24", "0.217", "1.3", "0.5", "-"],
  ]
  for suffix in files:  # each file's command, after its name
    file = f"results/mnist_stage4_candidates{suffix}.json"
    assert section[section.index(f"`{file}`:") + 2] == f"Command: `command{suffix}`"
  (tmp_path / "results" / "mnist_stage4_candidates_relu.json").unlink()
  section = _section(make_results.render(str(tmp_path)), "mnist_stage4_candidates")
  assert (
    "**Not run yet.** `results/mnist_stage4_candidates_relu.json` is missing; "
    "the panel's files are written by:"
  ) in section


def test_one_file_run_comparisons_have_a_column_per_step(tmp_path):
  losses = {
    "results/training/netmix200/best": {"100": 0.2093, "200": 0.1984, "1000": 0.115},
    "results/training/long1000/best": {"100": 0.2101, "200": 0.2019, "1000": 0.09147},
  }
  _write(tmp_path, "results/mnist_stage6_candidate.json", _seeds_file(losses, "c"))
  section = _section(make_results.render(str(tmp_path)), "mnist_stage6_candidate")
  assert _table_rows(section) == [
    ["netmix200/best", "0.2093", "0.1984", "0.115"],
    ["long1000/best", "0.2101", "0.2019", "0.09147"],
  ]


def test_peer_speed_rows_give_l2l_tfs_ratio_to_each(tmp_path):
  _write(
    tmp_path,
    "results/peer_speed.json",  # as benchmarks/peer_speed.py --output_json
    {
      "problem": "mnist",
      "coord_steps_per_s": {"l2l_tf": 1_000_000.0, "torch_compile": 1_250_000.0, "jax": 500_000.0},
      "fastest_peer": "torch_compile",
      "l2l_tf_over_fastest_peer": 0.8,
      "provenance": PROVENANCE,
    },
  )
  assert _table_rows(_section(make_results.render(str(tmp_path)), "peer_speed")) == [
    ["torch_compile", "mnist", "1,250,000", "0.8"],  # fastest first
    ["l2l_tf", "mnist", "1,000,000", "1"],
    ["jax", "mnist", "500,000", "2"],
  ]


def test_keras_step_time_rows_read_each_optimizer_and_the_refusal():
  data = {
    "jit_compile": {
      "false": {
        "optimizers": {
          "adam": {"step_ms": 1.0, "cpu_ms": 2.0, "over_adam_step_time": 1.0},
          "lstm": {"step_ms": 5.0, "cpu_ms": 12.0, "over_adam_step_time": 5.0},
        },
        "refused": {"ntm_bfgs": "group 'all': X, which refuses it: too big. Use Y."},
      }
    }
  }
  rows = {r["optimizer"]: r for r in make_results.keras_step_rows(data)}
  assert rows["lstm"]["step_ms"] == 5.0 and rows["lstm"]["cpu_ms"] == 12.0
  assert rows["lstm"]["jit"] == "false" and rows["lstm"]["refused"] is None
  assert rows["ntm_bfgs"]["refused"] == "refused: too big"
  wall = dict(make_results.KERAS_STEP_COLUMNS)["wall / Adam's"]
  assert wall(rows["lstm"]) == "5.00" and wall(rows["ntm_bfgs"]) == "refused: too big"


def test_neural_art_panels_show_the_stylised_images_and_the_growth_table(tmp_path):
  finals = {"learned": (None, 0.5077, 0.13), "adam": (0.316, 0.5096, 0.13)}
  _write(tmp_path, "results/neural_art_64.json", _evaluation(128, finals))
  figures = tmp_path / "docs" / "figures"
  figures.mkdir(parents=True)
  (figures / "neural_art_64_images.png").write_bytes(b"\x89PNG")  # no loss-curve figure
  section = _section(make_results.render(str(tmp_path)), "neural_art_64")
  assert "![Neural Art, 64x64, figure 2](figures/neural_art_64_images.png)" in section
  assert not any("figures/neural_art_64.png" in line for line in section)

  def path(run):
    return f"results/neural_art_training/{run}/best"

  for suffix, (grown, before) in {
    "64": (0.5077, 0.5112),
    "128": (0.5093, 0.5131),
    "second_style": (0.4162, 0.431),
  }.items():
    losses = {path("stage2"): {"128": before}, path("stage4"): {"128": grown}}
    _write(tmp_path, f"results/neural_art_growth_{suffix}.json", _seeds_file(losses, suffix))
  section = _section(make_results.render(str(tmp_path)), "neural_art_growth")
  assert _table_rows(section) == [  # best first; columns in the settings' order
    ["stage4/best", "0.5077", "0.5093", "0.4162"],
    ["stage2/best", "0.5112", "0.5131", "0.431"],
  ]
  growth = next(p for p in make_results.PANELS if p.key == "neural_art_growth")
  assert "--problem=neural_art --style=brick --optimizer_paths=" in growth.command
