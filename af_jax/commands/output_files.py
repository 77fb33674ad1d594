"""How the commands write their outputs: only under `--out`, never over what they did not write,
one command at a time, and never looking finished when they were not.

An output folder (`OutputFolder`) is locked while a command writes into it: a second command
on the same folder is refused at once, naming the first (`af_jax.run_lock`). Every file the
command writes is listed in the folder's ledger (`.af_jax_outputs`, one relative path a line)
before it is written, so `--overwrite` removes exactly the files af_jax wrote there before and
nothing else: a user's own files in the folder or its sub-folders stay. Output without
`--overwrite` is refused when the folder already holds any of the command's files or folders,
and with it too when one of those files is there but no ledger lists it: a user's file of that
name (a `detector.json` of their own) is never replaced.
Names taken from the user that become paths (a category) must be plain names
(`files.check_plain_name`), so nothing is ever written outside `--out`.

Files go through `af_jax.files` (temporary name, then a rename); the files of one output item
are written together or not at all, and the line listing them (a manifest or `scores.csv`
row) is appended last, whole or not at all; a command's summary file is written last of all,
so an output without it did not finish.

Resuming (`--resume` of `generate` and `localize`): an output that did not finish (a crash, a
full disk, a host that died) is completed, not redone. The items its listing holds are kept;
only the others are computed and written. The settings that decide the output are recorded
when it begins (`.af_jax_settings.json`); a resume with other settings is refused, naming them.

Several processes (a multi-host run, `af_jax.inference.hosts`) share one output folder on a
file system they all see. Each one locks its own lock file and keeps its own ledger
(`.af_jax_outputs.process_<i>` beside process 0's `.af_jax_outputs`). They all look at the
folder before any of them changes it; then process 0 alone clears it (`--overwrite`) and
makes the sub-folders. Each process writes the items of its share and lists them in its own
part of a listing (`OutputFolder.part`): process 0 in the listing itself (`scores.csv`), the
others in `<stem>.process_<i><suffix>` beside it (`scores.process_1.csv`). Once every process
is done, process 0 merges the parts into the one listing, in the order a single process
lists the items, and writes the summary files (`OutputFolder.write` is process 0's alone).
A rerun with `--resume` reads every part there is, so it may use another number of hosts.
"""

import contextlib
import csv
import io
import json
import pathlib
import reprlib

import numpy as np

from af_jax import files
from af_jax import pixels
from af_jax import run_lock

LEDGER = ".af_jax_outputs"
SETTINGS = ".af_jax_settings.json"


def write_png(path: pathlib.Path, image: np.ndarray) -> None:
  """An RGB or grayscale uint8 PNG, atomically."""
  files.write_bytes(path, pixels.encode_png(image))


def csv_line(values) -> str:
  """One CSV row, quoted where a value needs it (commas, quotes, newlines in file names)."""
  buffer = io.StringIO()
  csv.writer(buffer, lineterminator="\n").writerow(values)  # "\n" makes newlines get quoted.
  return buffer.getvalue()[:-1]


def _process_file(root: pathlib.Path, name: str, process: int) -> pathlib.Path:
  """Process `process`'s own file of `name`: `name` itself for process 0,
  `<stem>.process_<i><suffix>` beside it for the others."""
  path = root / name
  return path if process == 0 else path.with_name(f"{path.stem}.process_{process}{path.suffix}")


def _all_process_files(root: pathlib.Path, name: str) -> list[pathlib.Path]:
  """Every process's file of `name` there is, process 0's first."""
  path = root / name
  others = sorted(root.glob(f"{path.stem}.process_*{path.suffix}"))
  return [path] * path.is_file() + others


class OutputFolder:
  """A locked output folder whose writes are listed in its ledger (module docstring).

  `process`: this process's index in a multi-host run (0 alone otherwise); `resumed`: whether
  it completes an earlier, unfinished output (`--resume`).
  """

  def __init__(self, root: pathlib.Path, dirs: dict[str, pathlib.Path], process: int = 0,
               resumed: bool = False):
    self.root = root
    self.dirs = dirs
    self.process = process
    self.resumed = resumed

  def _record(self, paths) -> None:
    ledger = _process_file(self.root, LEDGER, self.process)
    for path in paths:
      files.append_line(ledger, pathlib.Path(path).relative_to(self.root).as_posix())

  def write_all(self, writes: list[tuple]) -> None:
    """`files.write_all` of this process's `(writer, path, data)` writes (one output item),
    each listed in the ledger first."""
    self._record(path for _, path, _ in writes)
    files.write_all(writes)

  def write(self, writer, path: pathlib.Path, data) -> None:
    """One `writer(path, data)` of a file of the whole output (a summary, a merged listing),
    listed in the ledger first: process 0 writes it, the other processes' call does nothing."""
    if self.process == 0:
      self.write_all([(writer, path, data)])

  def part(self, listing: str) -> pathlib.Path:
    """This process's part of the listing file `listing` (module docstring)."""
    return _process_file(self.root, listing, self.process)

  def parts(self, listing: str) -> list[pathlib.Path]:
    """Every part of `listing` in the folder: of every process, this run's and earlier ones'."""
    return _all_process_files(self.root, listing)

  def merge(self, listing: str, text: str) -> None:
    """Process 0: writes `text` (every part's items, in order) as `listing`, then removes the
    other processes' parts."""
    if self.process == 0:
      self.write(files.write_text, self.root / listing, text)
      for path in self.parts(listing)[1:]:
        path.unlink()

  def recorded(self, key: str):
    """The value of `key` in the settings this output was begun with, None if not recorded."""
    path = self.root / SETTINGS
    return json.loads(path.read_text()).get(key) if path.is_file() else None

  def check_settings(self, settings: dict) -> None:
    """Records the settings that decide the output (JSON values); when resuming an output
    begun with other ones, raises ValueError naming them."""
    settings = json.loads(json.dumps(settings))
    path = self.root / SETTINGS
    if self.resumed and path.is_file():
      before = json.loads(path.read_text())
      changed = [f"{k}: {reprlib.repr(before.get(k))} then, {reprlib.repr(settings.get(k))} now"
                 for k in sorted(before.keys() | settings.keys())
                 if before.get(k) != settings.get(k)]
      if changed:
        raise ValueError(f"--resume: the output in {self.root} was begun with other settings "
                         f"({'; '.join(changed)}); resume with the same ones, or pass "
                         "--overwrite to start over")
    else:
      self.write(files.write_json, path, settings)


def _refuse_unlisted(root: pathlib.Path, file_names) -> None:
  """A FileExistsError naming the first of the command's files in `root` that no ledger lists:
  af_jax did not write it, so it is the user's, and writing would replace it."""
  listed = {line for ledger in _all_process_files(root, LEDGER)
            for line in ledger.read_text().splitlines()}
  for name in file_names:
    if (root / name).exists() and name not in listed:
      raise FileExistsError(f"{root / name} was not written by af_jax (no {LEDGER} in {root} "
                            "lists it), so it is not replaced; move it away, or choose another "
                            "--out")


def _remove_previous(root: pathlib.Path, dir_names) -> None:
  """Removes the files the ledgers list, then those of the command's folders left empty."""
  for ledger in _all_process_files(root, LEDGER):
    for line in ledger.read_text().splitlines():
      path = (root / line).resolve()
      if line and path.is_relative_to(root.resolve()) and path.is_file():
        path.unlink()
    ledger.unlink()
  for name in dir_names:
    with contextlib.suppress(OSError):  # Not empty: it holds files af_jax did not write.
      (root / name).rmdir()


@contextlib.contextmanager
def output_folder(root, dir_names, file_names, overwrite: bool, resume: bool | None = None):
  """Opens `root` for a command's output (module docstring); yields an `OutputFolder`.

  `dir_names` / `file_names`: the sub-folders and files the command writes there. Raises
  FileExistsError when `root` holds any of them and neither `overwrite` nor `resume` is on
  (None: the command cannot resume), and `run_lock.RunLockedError` when another command is
  writing there. In a multi-host run every process calls it (module docstring).
  """
  from af_jax.inference import hosts  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  if overwrite and resume:
    raise ValueError("--overwrite and --resume exclude each other: --overwrite replaces the "
                     "previous output, --resume completes it")
  root, process = pathlib.Path(root), jax.process_index()
  root.mkdir(parents=True, exist_ok=True)
  with run_lock.RunLock(root, process, purpose="output"):
    _refuse_unlisted(root, file_names)
    previous = [name for name in (*dir_names, *file_names) if (root / name).exists()]
    previous += [path.name for path in _all_process_files(root, LEDGER)]
    if previous and not (overwrite or resume):
      fixes = "--overwrite to replace it" + ("" if resume is None else
                                             " or --resume to complete it")
      raise FileExistsError(f"{root} already holds output ({', '.join(previous)}); pass {fixes}")
    hosts.barrier("output folder checked")  # Every process looked before process 0 changes it.
    dirs = {name: root / name for name in dir_names}
    if process == 0:
      if not resume:
        _remove_previous(root, dir_names)
      for folder in dirs.values():
        folder.mkdir(parents=True, exist_ok=True)
    hosts.barrier("output folder ready")
    try:
      yield OutputFolder(root, dirs, process, resumed=bool(previous and resume))
    except BaseException:
      for folder in dirs.values():  # A command that failed before writing leaves no trace.
        with contextlib.suppress(OSError):
          folder.rmdir()
      raise
