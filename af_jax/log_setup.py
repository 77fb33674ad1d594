"""Where an `af-jax` verb's log records go: the console for af_jax's, a file for the rest.

Libraries (absl, TFDS, Orbax, grain, JAX) log notices a user cannot act on: TFDS's "Using
custom data configuration" with the whole config's repr, Orbax's "Given directory is read
only" for every teacher checkpoint it reads, and so on. `routed(verb, argv)` (entered by
`cli.py` around every verb) sends

* to the console (stderr): records of af_jax's own loggers (`af_jax.*`, its data builders and configs included)
  from the verb's level on (INFO for `train` and `serve-folder`, WARNING otherwise), and
  library records of level ERROR and up;
* to `<folder>/af_jax.log`: every record from INFO on, with time and logger name, appended,
  each run starting with a line naming the command. `<folder>` is the verb's output folder
  (`LOG_FOLDERS`: the run's workdir for the verbs that use a trained run, the `--out` of
  the demo and serve-folder, prepare's `--data_dir`). The first library warning kept off
  the console says, once, where that file is. A verb without such a folder shows library
  warnings on the console as usual.

af_jax's metric log lines (`writers.LoggingWriter`) go through absl, so to the file only:
training shows them on the console as its progress line.
"""

import argparse
import contextlib
import logging
import os
import pathlib
import sys
import time

LOG_FILE = "af_jax.log"
OWN_LOGGERS = ("af_jax",)
# verb: (the flag naming the folder that gets LOG_FILE, its default when not given).
LOG_FOLDERS = {
    "prepare": ("--data_dir", None),
    "train": ("--workdir", None),
    "generate": ("--workdir", None),
    "localize": ("--workdir", None),
    "evaluate": ("--workdir", None),
    "evaluate-generation": ("--generated", None),
    "demo": ("--out", "demo_out"),  # demo.py's default --out.
    "serve-folder": ("--out", None),
}
# Other verbs: WARNING. A loop that runs for days says how it keeps up.
CONSOLE_LEVELS = {"train": logging.INFO, "serve-folder": logging.INFO}
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONSOLE_FORMAT = "%(levelname)s: %(message)s"


def is_own(record: logging.LogRecord) -> bool:
  return record.name.split(".")[0] in OWN_LOGGERS


def log_file(verb: str, argv: list[str]) -> pathlib.Path | None:
  """`<folder>/af_jax.log` of `verb` run with `argv` (module docstring), or None."""
  if verb not in LOG_FOLDERS:
    return None
  flag, default = LOG_FOLDERS[verb]
  parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  parser.add_argument(flag, default=default)
  folder = vars(parser.parse_known_args(argv)[0])[flag.lstrip("-").replace("-", "_")]
  return pathlib.Path(folder) / LOG_FILE if folder else None


class _FolderLog(logging.FileHandler):
  """Appends to `path`, creating its folder with the first record (so `--help` writes none).

  A folder that cannot be written (read-only, a full disk) loses the log silently: the
  verb reports its own errors on its outputs, and a log must never clutter or stop it.
  """

  def __init__(self, path: pathlib.Path, header: str):
    super().__init__(path, mode="a", encoding="utf-8", delay=True)
    self._header = header

  def emit(self, record: logging.LogRecord) -> None:
    try:
      if self.stream is None:
        os.makedirs(os.path.dirname(self.baseFilename), exist_ok=True)
        self.stream = self._open()
        self.stream.write(self._header + "\n")
      super().emit(record)
    except OSError:
      pass

  def handleError(self, record: logging.LogRecord) -> None:
    pass


class _Console(logging.StreamHandler):
  """af_jax's records from `level` on and library errors; notes once where the rest went."""

  def __init__(self, level: int, path: pathlib.Path | None):
    super().__init__(sys.stderr)
    self.setFormatter(logging.Formatter(CONSOLE_FORMAT))
    self._own_level, self._path, self._noted = level, path, False

  def shows(self, record: logging.LogRecord) -> bool:
    if is_own(record):
      return record.levelno >= self._own_level
    return record.levelno >= (logging.WARNING if self._path is None else logging.ERROR)

  def emit(self, record: logging.LogRecord) -> None:
    if self.shows(record):
      super().emit(record)
    elif record.levelno >= logging.WARNING and not self._noted:
      self._noted = True
      self.stream.write(f"(library warnings, e.g. from TFDS and Orbax, are logged in "
                        f"{self._path})\n")
      self.flush()


@contextlib.contextmanager
def routed(verb: str, argv: list[str]):
  """Routes log records as the module docstring says while the block runs, then restores."""
  root = logging.getLogger()
  path = log_file(verb, argv)
  handlers = [_Console(CONSOLE_LEVELS.get(verb, logging.WARNING), path)]
  if path is not None:
    header = f"---- {time.strftime('%Y-%m-%d %H:%M:%S')} af-jax {verb} {' '.join(argv)}"
    handlers.append(_FolderLog(path, header))
    handlers[-1].setFormatter(logging.Formatter(FILE_FORMAT))
  level = root.level
  root.setLevel(logging.INFO)
  for handler in handlers:
    root.addHandler(handler)
  try:
    yield path
  finally:
    for handler in handlers:
      root.removeHandler(handler)
      handler.close()
    root.setLevel(level)
