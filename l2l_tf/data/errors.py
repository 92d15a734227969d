"""Error type shared by the dataset loaders."""


class DataError(ValueError):
  """A dataset file is missing, corrupt or not in the expected format.

  The message names the file (or directory) and what is wrong with it, so that a
  user can fix or re-download the data without reading the loader's code.
  """
