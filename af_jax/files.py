"""Writing files and folders so that a reader never sees half of one.

Every file af_jax writes (images, arrays, JSON, config.json, checkpoint manifests, reference
statistics, thresholds) goes through `atomic_write`: written under a temporary name in the
same folder, flushed to disk, then renamed over the target, so a reader sees the old file or
the whole new one, and a failed write (a full disk) leaves no partial file behind. Whole
folders (a rebuilt dataset, an exported category) are built beside their target and swapped in
with `swap_in_folder`. Files are written by Python, not by OpenCV, so a failing write is an
OSError that names the file.
"""

import contextlib
import errno
import io
import json
import os
import pathlib
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator

import numpy as np


# A plain name: letters, digits, '_', '-' and '.', not starting with '.' or '-'.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
# The longest plain name: file systems take 255 bytes a name, and af_jax adds to a category
# (`<category>-64px-canny` builds, `.<name>.tmp<suffix>` temporary files, TFDS's
# `incomplete.*` folders).
MAX_NAME_LENGTH = 100


def check_plain_name(name: str, what: str) -> str:
  """`name` if it is a plain name that can only ever be one folder or file inside another (no
  path separator, no '..', no leading '.' or '-', at most `MAX_NAME_LENGTH` characters); a
  ValueError saying so otherwise. Names taken from users (categories) go through it before
  they become paths."""
  if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or name.strip(".") == "":
    raise ValueError(f"{what} must be a plain name (letters, digits, '_', '-', '.'; no path), "
                     f"got {name!r}")
  check_name_length(name, what)
  return name


def check_name_length(name: str, what: str) -> str:
  """`name` if it has at most `MAX_NAME_LENGTH` characters, else a ValueError saying so (the
  file system's own error, 'File name too long', comes only once something is written)."""
  if len(name) > MAX_NAME_LENGTH:
    raise ValueError(f"{what} must be a plain name of at most {MAX_NAME_LENGTH} characters, got "
                     f"{len(name)} characters ({name[:24]}...)")
  return name


def broken_link(path) -> str | None:
  """What is wrong with `path` when it is a symbolic link that leads to no file (a loop, or a
  target that does not exist), said so that it can follow the path in a message; else None.
  Such a link fails only when it is opened, with an OSError that does not say it is a link."""
  path = pathlib.Path(path)
  if not path.is_symlink():
    return None
  try:
    path.stat()
  except OSError as e:
    if e.errno == errno.ELOOP:
      return "is a symbolic link loop (it leads back to itself)"
    reason = "does not exist" if e.errno == errno.ENOENT else f"cannot be opened ({e.strerror})"
    return f"is a symbolic link to {os.readlink(path)}, which {reason}"
  return None


def atomic_write(path, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
  """Calls `write(tmp)` for a temporary path beside `path`, then renames it to `path`.

  The temporary name keeps the suffix (writers such as `np.savez` add one otherwise) and
  starts with a dot, so listings of the folder skip it.
  """
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
  try:
    write(tmp)
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())  # The rename must never publish a file the disk lacks.
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)
  return path


def write_bytes(path, data: bytes) -> pathlib.Path:
  return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path, text: str) -> pathlib.Path:
  return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path, value, **dumps_kwargs) -> pathlib.Path:
  return write_text(path, json.dumps(value, indent=2, **dumps_kwargs))


def write_npy(path, array: np.ndarray) -> pathlib.Path:
  return write_bytes(path, _serialized(np.save, array))


def write_npz(path, **arrays: np.ndarray) -> pathlib.Path:
  return write_bytes(path, _serialized(np.savez, **arrays))


def read_npz(path, *, what: str, why_here: str, fields: tuple[str, ...] = ()
             ) -> dict[str, np.ndarray]:
  """Every array of an .npz file a run wrote. Missing: FileNotFoundError saying `why_here`
  it should be there; unreadable, or without one of `fields`: ValueError saying it is not
  `what`."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing: {why_here}")
  try:
    with np.load(path) as f:
      arrays = {name: f[name] for name in f.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path} is not {what} ({e}); retrain the run or restore the file") from e
  absent = [name for name in fields if name not in arrays]
  if absent:
    raise ValueError(f"{path} is not {what} (no {', '.join(absent)}); retrain the run or "
                     "restore the file")
  return arrays


def _serialized(save, *args, **kwargs) -> bytes:
  """What `save(file, ...)` writes, in memory: the disk write is then one Python write, whose
  failure (a full disk) is an OSError with its errno, not numpy's short-write message."""
  buffer = io.BytesIO()
  save(buffer, *args, **kwargs)
  return buffer.getvalue()


def append_line(path, line: str, sync: bool = False) -> None:
  """Appends `line` and a newline, whole or not at all; with `sync`, on disk before it returns.

  A failed write (a full disk) is cut back off the file, so a listing such as a manifest
  never holds a partial line. `sync` is for a line others act on at once (a verdict of
  `af-jax serve-folder`): after a power loss it must still be there, or the image it judged
  would be judged a second time.
  """
  data = (line + "\n").encode()
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  try:
    size = os.lseek(fd, 0, os.SEEK_END)
    try:
      written = os.write(fd, data)
      if written != len(data):
        raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes written", str(path))
      if sync:
        os.fsync(fd)
    except OSError:
      os.ftruncate(fd, size)
      raise
  finally:
    os.close(fd)


def write_all(writes: list[tuple]) -> None:
  """Runs `(writer, path, data)` writes; on any failure removes those done, then re-raises.

  A line listing them (`append_line`) goes last, so it is there only when they all are.
  """
  done = []
  try:
    for writer, path, data in writes:
      writer(path, data)
      done.append(pathlib.Path(path))
  except BaseException:
    for path in done:
      path.unlink(missing_ok=True)
    raise


@contextlib.contextmanager
def staged_folder(target, prefix: str) -> Iterator[pathlib.Path]:
  """Yields an empty folder beside `target` to build its new content in; on success swaps it in.

  The staging folder lies in `target`'s parent, so the swap is two renames on one file system:
  the previous `target` (if any) is renamed aside, the new one into its place (readers see the
  old folder until the first rename and the whole new one after the second), and the old one
  is deleted last. Any failure deletes only the staging folder: `target` stays as it was.
  """
  target = pathlib.Path(target)
  target.parent.mkdir(parents=True, exist_ok=True)
  staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{prefix}-", dir=target.parent))
  try:
    yield staging / "new"
    swap_in_folder(staging / "new", target, aside=staging / "previous")
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def swap_in_folder(new, target, aside) -> None:
  """Renames `new` to `target`, moving a previous `target` to `aside` first (same file system).

  If the second rename fails, the previous folder goes back, so `target` is never missing.
  """
  new, target, aside = pathlib.Path(new), pathlib.Path(target), pathlib.Path(aside)
  had_previous = target.exists()
  if had_previous:
    target.rename(aside)
  try:
    new.rename(target)
  except OSError:
    if had_previous:
      aside.rename(target)
    raise
