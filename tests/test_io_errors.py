"""l2l_tf.cli.run's error handling: file, disk and checkpoint failures become one line."""

import errno

import pytest
import tensorflow as tf

from l2l_tf import cli


def _exit_message(error):
  def main(argv):
    del argv
    raise error

  with pytest.raises(SystemExit) as info:
    cli.guarded_main(main)(["script"])
  return info.value.code


@pytest.mark.parametrize(
  "error,line",
  [
    (
      tf.errors.ResourceExhaustedError(
        None,
        None,
        "{{function_node __wrapped__SaveV2_dtypes_32_device_/job:localhost/replica:0"
        "/task:0/device:CPU:0}} run/checkpoints/ckpt-3_temp/part-0; No space left on device "
        "[Op:SaveV2]\n\t [[{{node SaveV2}}]]",
      ),
      "error: ResourceExhaustedError: run/checkpoints/ckpt-3_temp/part-0; No space left on "
      "device [Op:SaveV2]",
    ),
    (
      tf.errors.DataLossError(None, None, "Checksum does not match\nmore context"),
      "error: DataLossError: Checksum does not match",
    ),
    (
      OSError(errno.ENOSPC, "No space left on device", "run/history.json"),
      "error: [Errno 28] No space left on device: 'run/history.json'",
    ),
    (ValueError("first line\n  second line"), "error: first line second line"),
  ],
)
def test_expected_failures_exit_with_one_line(error, line):
  assert _exit_message(error) == line


def test_other_exceptions_keep_their_traceback():
  with pytest.raises(IndexError):
    _exit_message(IndexError("list index out of range"))  # a bug: not hidden as a one-liner


def test_damaged_checkpoint_read_errors_are_expected(tmp_path):
  # TensorFlow's checkpoint reader reports a truncated data file as IndexError (its C++
  # OUT_OF_RANGE status); raised there, it is a file error, not a bug.
  prefix = tf.train.Checkpoint(v=tf.Variable([1.0, 2.0])).write(str(tmp_path / "ckpt"))
  data = tmp_path / "ckpt.data-00000-of-00001"
  data.write_bytes(data.read_bytes()[:10])
  with pytest.raises(IndexError) as info:
    tf.train.load_checkpoint(prefix).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
  assert cli.is_expected_error(info.value)
  assert cli.error_line(info.value).count("\n") == 0
