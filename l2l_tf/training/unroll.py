"""Unrolling optimizee training: the forward pass of the meta-loss.

A trajectory's carried state is a Trajectory: parameters theta_t, the optimizer's state, and the
loss and gradient at theta_t (computed once per step: the gradient feeds the optimizer, the loss
feeds the meta-loss). An unroll of K steps turns theta_t into theta_{t+K} and returns
sum_{k=1..K} mean_b f_b(theta_{t+k}), the paper's meta-loss with w_t = 1.

Backpropagation through an unroll normally stores every step's intermediates: about
K x coordinates x (a few hundred floats for the paper's LSTM). The recompute modes trade time
for memory (gradient checkpointing): the backward pass reruns the forward pass of a step
("steps") or of a block of about sqrt(K) steps ("blocks") from its stored input trajectory, so
only one trajectory per step (or block) and one step's (block's) intermediates are held.
"""

import collections
import math

import keras
import tensorflow as tf

Trajectory = collections.namedtuple("Trajectory", ["params", "rule_state", "loss", "grads"])

# What the backward pass of an unroll recomputes instead of storing (see the module docstring).
RECOMPUTE_MODES = ("none", "steps", "blocks")


def value_and_grad(problem, params, batch, second_derivatives=False):
  """Per-instance losses [B] and their gradients at params, on one step's batch.

  With second_derivatives False the gradient is a constant for the meta-gradient (the paper's
  dropped edges), and the loss's own derivative is supplied from that same gradient, so the
  backward pass never differentiates the optimizee a second time.
  """
  with tf.GradientTape() as tape:
    tape.watch(params)
    losses = problem.loss(params, batch)
    total = tf.reduce_sum(losses)
  grads = tape.gradient(total, params)
  if second_derivatives:
    return losses, grads
  grads = tf.nest.map_structure(tf.stop_gradient, grads)
  return _with_known_gradient(params, tf.stop_gradient(losses), grads), grads


def _with_known_gradient(params, losses, grads):
  """Returns `losses` whose derivative w.r.t. params is the precomputed `grads`."""
  names = list(params)

  @tf.custom_gradient
  def attach(*values):
    del values

    def gradient(upstream):
      # d(sum_b w_b f_b)/d theta_b = w_b * grad_b, for the per-instance loss weights w.
      return [
        tf.reshape(upstream, [-1] + [1] * (grads[n].shape.rank - 1)) * grads[n] for n in names
      ]

    return tf.identity(losses), gradient

  return attach(*[params[n] for n in names])


def start_trajectory(problem, rule, params, first_batch, second_derivatives=False):
  """Trajectory at theta_0 with a fresh optimizer state (zero hidden state)."""
  losses, grads = value_and_grad(problem, params, first_batch, second_derivatives)
  return Trajectory(params, rule.init_state(params), losses, grads)


def unroll(problem, rule, trajectory, batches, second_derivatives=False, recompute="none"):
  """Runs len(batches) optimizer steps from `trajectory`.

  Args:
    batches: nested tensors with a leading axis of K: the data of steps t+1 .. t+K.
    recompute: one of RECOMPUTE_MODES: "none" stores every step's intermediates for the
      meta-gradient; "steps" and "blocks" recompute them in the backward pass (same values,
      less memory, about one more forward pass of time).
  Returns:
    (meta_loss, trajectory at t+K, losses [K, B] after each step).
  A tf.while_loop, so graphs (and XLA compiles) stay the same size for any K.
  """
  if recompute not in RECOMPUTE_MODES:
    raise ValueError(f"recompute must be one of {', '.join(RECOMPUTE_MODES)}, got {recompute!r}")
  if recompute != "none":
    return _recomputed_unroll(problem, rule, trajectory, batches, second_derivatives, recompute)
  leading = tf.nest.flatten(batches)[0]
  static_steps = leading.shape[0]  # known statically: XLA needs a bounded loop
  num_steps = tf.shape(leading)[0]
  losses = tf.TensorArray(
    trajectory.loss.dtype, size=num_steps, element_shape=trajectory.loss.shape
  )

  def body(t, trajectory, losses, meta_loss):
    trajectory = _step(problem, rule, trajectory, batches, t, second_derivatives)
    return (
      t + 1,
      trajectory,
      losses.write(t, trajectory.loss),
      meta_loss + tf.reduce_mean(trajectory.loss),
    )

  _, trajectory, losses, meta_loss = tf.while_loop(
    lambda t, *_: t < num_steps,
    body,
    (tf.constant(0), trajectory, losses, tf.zeros([], trajectory.loss.dtype)),
    maximum_iterations=static_steps,
  )
  return meta_loss, trajectory, losses.stack()


def _step(problem, rule, trajectory, batches, t, second_derivatives):
  """Optimizer step t of an unroll: the trajectory after it, with its loss and gradient."""
  params, rule_state = rule.step(trajectory.params, trajectory.grads, trajectory.rule_state)
  batch = tf.nest.map_structure(lambda x: x[t], batches)
  losses, grads = value_and_grad(problem, params, batch, second_derivatives)
  return Trajectory(params, rule_state, losses, grads)


def block_size(num_steps, recompute):
  """Steps per recomputed block: 1 for "steps"; for "blocks" the largest divisor of num_steps
  not above sqrt(num_steps) (stored trajectories and one block's intermediates balance there).
  """
  if recompute == "steps":
    return 1
  return max(d for d in range(1, math.isqrt(num_steps) + 1) if num_steps % d == 0)


def _recomputed_unroll(problem, rule, trajectory, batches, second_derivatives, recompute):
  """unroll() whose backward pass recomputes each block of steps from its input trajectory.

  The forward pass keeps only the trajectory at the start of each block (the checkpoints).
  The backward pass is a while loop of our own over the blocks in reverse: it reruns a block
  from its checkpoint under a tape and pulls the cotangents through it. (Recomputing inside
  the gradient of the forward loop instead would capture the problem's data there, which
  while_v2 refuses for eager tensors.) The recomputation reads that iteration's checkpoint, so
  neither grappler nor XLA can merge it with the forward pass: the saving holds with and
  without jit_compile.
  """
  num_steps = tf.nest.flatten(batches)[0].shape[0]
  if num_steps is None:
    raise ValueError("recompute needs batches whose number of steps is known statically")
  flat_start = tf.nest.flatten(trajectory)
  if not all(x.dtype.is_floating for x in flat_start):
    raise ValueError("recompute needs trajectories of floating-point tensors")
  size = block_size(num_steps, recompute)
  num_blocks = num_steps // size
  # The rule's weights enter as explicit tensors, read once here, and the blocks see them
  # through a keras.StatelessScope: their meta-gradient is then an ordinary input gradient.
  weights = rule.trainable_variables

  def run_block(block, flat_trajectory, weight_values):
    """Steps of block `block` from a flat trajectory: (flat trajectory after, losses [size, B])."""
    current = tf.nest.pack_sequence_as(trajectory, flat_trajectory)

    def body(i, current, losses):
      current = _step(problem, rule, current, batches, block * size + i, second_derivatives)
      return i + 1, current, losses.write(i, current.loss)

    losses = tf.TensorArray(current.loss.dtype, size=size, element_shape=current.loss.shape)
    with keras.StatelessScope(list(zip(weights, weight_values))):
      _, current, losses = tf.while_loop(
        lambda i, *_: i < size, body, (tf.constant(0), current, losses), maximum_iterations=size
      )
    return tf.nest.flatten(current), losses.stack()

  @tf.custom_gradient
  def checkpointed_unroll(*inputs):
    flat_trajectory, weight_values = inputs[: len(flat_start)], inputs[len(flat_start) :]
    flat_end, losses, checkpoints = _forward_keeping_checkpoints(
      run_block,
      flat_trajectory,
      weight_values,
      num_blocks,
      tf.TensorSpec([size] + trajectory.loss.shape.as_list(), trajectory.loss.dtype),
    )

    def gradient(*upstream):
      upstream = [
        tf.zeros_like(y) if g is None else g for g, y in zip(upstream, flat_end + [losses])
      ]
      d_losses = tf.reshape(upstream[-1], [num_blocks, size, -1])
      return _backward_from_checkpoints(
        run_block, checkpoints, weight_values, upstream[:-1], d_losses
      )

    return flat_end + [losses], gradient

  outputs = checkpointed_unroll(*flat_start, *[tf.convert_to_tensor(w) for w in weights])
  losses = outputs[-1]
  return (
    tf.reduce_sum(tf.reduce_mean(losses, axis=-1)),
    tf.nest.pack_sequence_as(trajectory, outputs[:-1]),
    losses,
  )


def _forward_keeping_checkpoints(
  run_block, flat_trajectory, weight_values, num_blocks, block_losses_spec
):
  """Runs the blocks in order, keeping each block's input trajectory (and nothing else).

  Returns (flat trajectory at the end, losses [steps, B], one TensorArray of checkpoints per
  trajectory tensor). block_losses_spec: a tf.TensorSpec of one block's losses.
  """

  def body(block, flat_trajectory, checkpoints, losses):
    checkpoints = [c.write(block, x) for c, x in zip(checkpoints, flat_trajectory)]
    flat_trajectory, block_losses = run_block(block, flat_trajectory, weight_values)
    return block + 1, flat_trajectory, checkpoints, losses.write(block, block_losses)

  checkpoints = [
    tf.TensorArray(x.dtype, size=num_blocks, element_shape=x.shape) for x in flat_trajectory
  ]
  losses = tf.TensorArray(
    block_losses_spec.dtype, size=num_blocks, element_shape=block_losses_spec.shape
  )
  _, flat_end, checkpoints, losses = tf.while_loop(
    lambda block, *_: block < num_blocks,
    body,
    (tf.constant(0), list(flat_trajectory), checkpoints, losses),
    maximum_iterations=num_blocks,
  )
  return flat_end, losses.concat(), checkpoints


def _backward_from_checkpoints(run_block, checkpoints, weight_values, d_end, d_losses):
  """Pulls cotangents back through the blocks, last first, rerunning each from its checkpoint.

  Args:
    d_end: cotangents of the flat trajectory after the last block.
    d_losses: cotangents of the losses, [blocks, steps per block, B].
  Returns:
    cotangents of the flat input trajectory, then of weight_values.
  """
  num_blocks = d_losses.shape[0]

  def body(index, d_trajectory, d_weights):
    block = num_blocks - 1 - index
    sources = [c.read(block) for c in checkpoints] + [tf.identity(w) for w in weight_values]
    with tf.GradientTape() as tape:
      tape.watch(sources)
      end, block_losses = run_block(block, sources[: len(checkpoints)], sources[len(checkpoints) :])
    grads = tape.gradient(
      end + [block_losses],
      sources,
      output_gradients=d_trajectory + [d_losses[block]],
      unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    return (
      index + 1,
      grads[: len(checkpoints)],
      [total + g for total, g in zip(d_weights, grads[len(checkpoints) :])],
    )

  # One iteration at a time: a block's recomputation needs only its checkpoint, so the
  # executor would otherwise run up to 10 of them ahead of their cotangents, each holding a
  # block's intermediates (XLA runs loop iterations one at a time anyway).
  _, d_start, d_weights = tf.while_loop(
    lambda index, *_: index < num_blocks,
    body,
    (tf.constant(0), list(d_end), [tf.zeros_like(w) for w in weight_values]),
    maximum_iterations=num_blocks,
    parallel_iterations=1,
  )
  return d_start + d_weights


def detach(trajectory):
  """Carries a trajectory into the next truncation without meta-gradient history."""
  return tf.nest.map_structure(tf.stop_gradient, trajectory)
