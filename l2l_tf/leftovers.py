"""Cleaning up the temporaries that a killed l2l_tf process leaves behind.

Only names that l2l_tf itself creates are touched:
  .<name>.tmp-XXXXXXXX, .<name>.old-XXXXXXXX   beside a directory written with
      l2l_tf.atomic_files.atomic_directory (its staging copy, and the old version being swapped out)
  <prefix>pid<PID>_XXXXXXXX                    staging directories in the system temporary
      directory (l2l_tf.export), removed only when process PID is gone or after a day, so a
      live process's staging directory is never taken from under it.
"""

import os
import re
import shutil
import time

# tempfile.mkdtemp's random suffix.
_RANDOM = r"[A-Za-z0-9_]+"
# Older than this, a staging directory is not in use, whatever its name says.
STALE_SECONDS = 24 * 3600


def _is_real_directory(path):
  return os.path.isdir(path) and not os.path.islink(path)


def _remove_tree(path):
  shutil.rmtree(path, ignore_errors=True)


def clean_atomic_directory(path):
  """Removes what killed atomic_directory(path) writes left beside `path`; returns their names.

  A kill between the swap's two renames leaves no `path` at all: the previous version sits in
  .<name>.old-*/x. It is put back (a complete directory that was in place before), so `path`
  is never left missing; the unfinished new version is dropped with the other temporaries.
  """
  path = os.path.abspath(path)
  parent, name = os.path.split(path)
  if not os.path.isdir(parent):
    return []
  pattern = re.compile(rf"^\.{re.escape(name)}\.(tmp|old)-{_RANDOM}$")
  found = sorted(
    entry
    for entry in os.listdir(parent)
    if pattern.match(entry) and _is_real_directory(os.path.join(parent, entry))
  )
  if not os.path.lexists(path):
    previous = [os.path.join(parent, entry, "x") for entry in found if ".old-" in entry]
    previous = [p for p in previous if _is_real_directory(p)]
    if previous:
      os.rename(max(previous, key=os.path.getmtime), path)
  for entry in found:
    _remove_tree(os.path.join(parent, entry))
  return found


def _process_is_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # another user's process
  return True


def staging_prefix(prefix):
  """The mkdtemp prefix of a staging directory that remove_stale_staging can attribute."""
  return f"{prefix}pid{os.getpid()}_"


def remove_stale_staging(directory, prefix, now=None):
  """Removes staging directories <prefix>pid<PID>_* of dead processes (and any older than a day).

  Directories named by an older version (<prefix>XXXXXXXX, without a process id) are removed
  only after a day. Returns the removed names.
  """
  now = time.time() if now is None else now
  named = re.compile(rf"^{re.escape(prefix)}pid(\d+)_{_RANDOM}$")
  anonymous = re.compile(rf"^{re.escape(prefix)}{_RANDOM}$")
  removed = []
  try:
    entries = os.listdir(directory)
  except OSError:
    return removed
  for entry in sorted(entries):
    path = os.path.join(directory, entry)
    match = named.match(entry)
    if not (match or anonymous.match(entry)) or not _is_real_directory(path):
      continue
    try:
      stale = now - os.path.getmtime(path) > STALE_SECONDS
    except OSError:
      continue  # removed meanwhile
    if stale or (match and not _process_is_alive(int(match.group(1)))):
      _remove_tree(path)
      removed.append(entry)
  return removed
