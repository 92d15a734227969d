"""Cost of sharing information across coordinates: per-step time and state memory vs the LSTM.

For each cell (coordinatewise LSTM, LSTM+GAC, NTM-BFGS, NTM-L-BFGS with several windows) and
each coordinate layout, measures
  state_MiB   bytes of the cell's state (exact, from get_initial_state's tensors),
  fwd_ms      median time of one cell step (tf.function, plain graph),
  fwd_bwd_ms  median time of a 20-step unroll of the cell and its gradient w.r.t. the weights
              (the meta-training pattern), divided by 20,
timed round-robin over the cells of a layout (so load from other processes hits all alike),
and prints each relative to the coordinatewise LSTM on the same layout. Layouts:
  quad_batch   128 instances x 10 coordinates = 1,280 (the quadratic meta-training batch)
  dense_1280   1 instance x 1,280 coordinates (NTM-BFGS memory 1,280^2)
  mnist        1 instance x 15,910 coordinates (the 784-20-10 MNIST MLP); NTM-BFGS's dense
               memory would be 15,910^2 floats (~1 GB): it is refused, as it must be, and only
               NTM-L-BFGS runs there, in O(n k).

    python benchmarks/sharing_cost.py [--layouts=quad_batch,dense_1280,mnist] [--repeats=10]

Output: one RESULT line per (layout, cell), a table, and --output_json (optional).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import time

from absl import flags
import numpy as np
import tensorflow as tf

from l2l_tf import cells
from l2l_tf import cli

_LAYOUTS = {"quad_batch": (128, 10), "dense_1280": (1, 1280), "mnist": (1, 15910)}
_LAYOUT_FLAG = flags.DEFINE_list("layouts", list(_LAYOUTS), "Coordinate layouts to measure.")
_REPEATS = flags.DEFINE_integer("repeats", 10, "Timed repetitions (median).")
_UNROLL = flags.DEFINE_integer("unroll_length", 20, "Steps of the timed forward+backward unroll.")
_WINDOWS = flags.DEFINE_list("windows", ["5", "10", "20"], "NTM-L-BFGS window sizes k.")
_JSON = flags.DEFINE_string("output_json", None, "Optional path for the results as JSON.")


def _cells():
  common = dict(preprocessing="log_sign", output_scale=0.1)
  variants = [
    ("lstm", lambda: cells.CoordinatewiseLSTM(**common)),
    ("lstm_gac", lambda: cells.GlobalAveragingLSTM(**common)),
    ("ntm_bfgs", lambda: cells.NTMBFGS(**common)),
  ]
  for k in _WINDOWS.value:
    variants.append((f"ntm_lbfgs_k{k}", lambda k=int(k): cells.NTMLBFGS(window_size=k, **common)))
  return variants


def _block(result):
  tf.nest.map_structure(lambda t: t.numpy(), result)


def prepare(cell, shape):
  """(state bytes, [forward step, forward+backward unroll] as no-argument callables)."""
  states = cell.get_initial_state(list(shape))  # NTMBFGS refuses large n here, before allocating
  state_bytes = sum(int(np.prod(s.shape)) * s.dtype.size for s in states)
  grads = tf.random.stateless_normal([_UNROLL.value] + list(shape) + [1], [0, 1], stddev=0.1)

  @tf.function(jit_compile=False)
  def step(g, states):
    return cell(g, states)

  @tf.function(jit_compile=False)
  def unroll_and_gradient(grads, states):
    with tf.GradientTape() as tape:
      loss = tf.zeros([])
      for t in range(_UNROLL.value):  # the cell's own cost, without an optimizee
        updates, states = cell(grads[t], states)
        loss += tf.reduce_sum(tf.square(updates + grads[t]))
    return tape.gradient(loss, cell.trainable_variables)

  runs = [lambda: step(grads[0], states), lambda: unroll_and_gradient(grads, states)]
  for run in runs:
    _block(run())  # trace and warm up
  return state_bytes, runs


def time_interleaved(prepared):
  """Median seconds of every callable, timed round-robin so that load changes (the machine is
  shared) hit every cell alike. prepared: {name: [callables]} -> {name: [medians]}."""
  times = {name: [[] for _ in runs] for name, runs in prepared.items()}
  for _ in range(_REPEATS.value):
    for name, runs in prepared.items():
      for i, run in enumerate(runs):
        start = time.perf_counter()
        _block(run())
        times[name][i].append(time.perf_counter() - start)
  return {name: [float(np.median(t)) for t in per_run] for name, per_run in times.items()}


def main(argv):
  del argv
  tf.get_logger().setLevel("ERROR")  # one trace per (cell, layout) is expected, not a problem
  rows = []
  for layout in _LAYOUT_FLAG.value:
    if layout not in _LAYOUTS:
      raise ValueError(f"unknown layout {layout!r}; choose from {sorted(_LAYOUTS)}")
    shape = _LAYOUTS[layout]
    prepared, layout_rows = {}, {}
    for name, make in _cells():
      cell = make()
      row = {
        "layout": layout,
        "instances": shape[0],
        "coordinates": shape[0] * shape[1],
        "cell": name,
      }
      rows.append(row)
      try:
        state_bytes, prepared[name] = prepare(cell, shape)
      except ValueError as e:  # NTM-BFGS over its dense-memory limit
        row.update(status="refused", reason=str(e))
        print(f"RESULT layout={layout} cell={name} refused: {e}", flush=True)
        continue
      row.update(status="ok", state_bytes=state_bytes)
      layout_rows[name] = row
    for name, (forward, backward) in time_interleaved(prepared).items():
      row = layout_rows[name]
      row.update(forward_ms=1e3 * forward, forward_backward_ms=1e3 * backward / _UNROLL.value)
      print(
        f"RESULT layout={layout} cell={name} state_MiB={row['state_bytes'] / 2**20:.3f} "
        f"fwd_ms={row['forward_ms']:.2f} fwd_bwd_ms={row['forward_backward_ms']:.2f}",
        flush=True,
      )

  print()
  print(
    f"{'layout':<11} {'coords':>6} {'cell':<15} {'state MiB':>10} {'x lstm':>7} "
    f"{'fwd ms':>8} {'x lstm':>7} {'fwd+bwd ms':>10} {'x lstm':>7}"
  )
  for row in rows:
    base = next(r for r in rows if r["layout"] == row["layout"] and r["cell"] == "lstm")
    if row["status"] != "ok":
      print(
        f"{row['layout']:<11} {row['coordinates']:>6} {row['cell']:<15} refused "
        f"(dense {row['coordinates']}^2 memory; use ntm_lbfgs)"
      )
      continue
    for key in ("state_bytes", "forward_ms", "forward_backward_ms"):
      row[f"{key}_vs_lstm"] = row[key] / base[key]
    print(
      f"{row['layout']:<11} {row['coordinates']:>6} {row['cell']:<15} "
      f"{row['state_bytes'] / 2**20:>10.3f} {row['state_bytes_vs_lstm']:>7.2f} "
      f"{row['forward_ms']:>8.2f} {row['forward_ms_vs_lstm']:>7.2f} "
      f"{row['forward_backward_ms']:>10.2f} {row['forward_backward_ms_vs_lstm']:>7.2f}"
    )
  lbfgs = [r for r in rows if r["cell"].startswith("ntm_lbfgs") and r["status"] == "ok"]
  if lbfgs:
    print("\nNTM-L-BFGS state bytes per coordinate (O(k): 4 * (4*20 + R + 2*k*W) in float32):")
    for r in lbfgs:
      print(f"  {r['layout']:<11} {r['cell']:<15} {r['state_bytes'] / r['coordinates']:.0f}")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump(rows, f, indent=2)
    print(f"wrote {_JSON.value}")


if __name__ == "__main__":
  cli.run(main)
