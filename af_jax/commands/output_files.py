"""How the commands write their outputs: only under `--out`, never over what they did not write,
one command at a time, and never looking finished when they were not.

An output folder (`OutputFolder`) is locked while a command writes into it: a second command
on the same folder is refused at once, naming the first (`af_jax.run_lock`). Every file the
command writes is listed in the folder's ledger (`.af_jax_outputs`, one relative path a line)
before it is written, so `--overwrite` removes exactly the files af_jax wrote there before and
nothing else: a user's own files in the folder or its sub-folders stay. Output without
`--overwrite` is refused when the folder already holds any of the command's files or folders.
Names taken from the user that become paths (a category) must be plain names
(`files.check_plain_name`), so nothing is ever written outside `--out`.

Files go through `af_jax.files` (temporary name, then a rename); the files of one output item
are written together or not at all, and the line listing them (a manifest or `scores.csv`
row) is appended last, whole or not at all; a command's summary file is written last of all,
so an output without it did not finish.
"""

import contextlib
import csv
import io
import pathlib

import numpy as np

from af_jax import files
from af_jax import pixels
from af_jax import run_lock

LEDGER = ".af_jax_outputs"


def write_png(path: pathlib.Path, image: np.ndarray) -> None:
  """An RGB or grayscale uint8 PNG, atomically."""
  files.write_bytes(path, pixels.encode_png(image))


def csv_line(values) -> str:
  """One CSV row, quoted where a value needs it (commas, quotes, newlines in file names)."""
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator="\n").writerow(values)  # "\n" makes newlines get quoted.
  return buffer.getvalue()[:-1]


class OutputFolder:
  """A locked output folder whose writes are listed in its ledger (module docstring)."""

  def __init__(self, root: pathlib.Path, dirs: dict[str, pathlib.Path]):
    self.root = root
    self.dirs = dirs

  def _record(self, paths) -> None:
    for path in paths:
      files.append_line(self.root / LEDGER, pathlib.Path(path).relative_to(self.root).as_posix())

  def write_all(self, writes: list[tuple]) -> None:
    """`files.write_all` of `(writer, path, data)` writes, each listed in the ledger first."""
    self._record(path for _, path, _ in writes)
    files.write_all(writes)

  def write(self, writer, path: pathlib.Path, data) -> None:
    """One `writer(path, data)`, listed in the ledger first."""
    self.write_all([(writer, path, data)])


def _remove_previous(root: pathlib.Path, dir_names) -> None:
  """Removes the files the ledger lists, then those of the command's folders left empty."""
  ledger = root / LEDGER
  if ledger.is_file():
    for line in ledger.read_text().splitlines():
      path = (root / line).resolve()
      if line and path.is_relative_to(root.resolve()) and path.is_file():
        path.unlink()
    ledger.unlink()
  for name in dir_names:
    with contextlib.suppress(OSError):  # Not empty: it holds files af_jax did not write.
      (root / name).rmdir()


@contextlib.contextmanager
def output_folder(root, dir_names, file_names, overwrite: bool):
  """Opens `root` for a command's output (module docstring); yields an `OutputFolder`.

  `dir_names` / `file_names`: the sub-folders and files the command writes there. Raises
  FileExistsError when `root` holds any of them and `overwrite` is off, and
  `run_lock.RunLockedError` when another command is writing there.
  """
  root = pathlib.Path(root)
  root.mkdir(parents=True, exist_ok=True)
  with run_lock.RunLock(root, purpose="output"):
    previous = [name for name in (*dir_names, *file_names, LEDGER) if (root / name).exists()]
    if previous and not overwrite:
      raise FileExistsError(f"{root} already holds output ({', '.join(previous)}); pass "
                            "--overwrite to replace it")
    _remove_previous(root, dir_names)
    dirs = {name: root / name for name in dir_names}
    for folder in dirs.values():
      folder.mkdir(parents=True, exist_ok=True)
    try:
      yield OutputFolder(root, dirs)
    except BaseException:
      for folder in dirs.values():  # A command that failed before writing leaves no trace.
        with contextlib.suppress(OSError):
          folder.rmdir()
      raise
