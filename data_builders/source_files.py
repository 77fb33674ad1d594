"""The files a manual build was made from, so that a changed download is noticed.

A build records in its metadata (`KEY`) the name, size and modification time of every file
its examples were read from (the images and masks the builder listed, before any train
draw), by folder relative to the manual folder. Built again into the same data_dir, the
category is listed anew and compared (`changes`): the same files are reused as built; any
file added, removed or changed is a `common.StaleBuildError` that names the folders and
counts and points at `--overwrite`, never a silent reuse of data the folder no longer holds.
Modification times (not contents) keep the check as fast as listing: a file rewritten with
new pixels has a new time, and copies that keep their times are taken as the same files.
"""

from collections.abc import Iterable, Mapping
import os
import pathlib

KEY = "source_files"
MOST_FOLDERS = 3  # Folders named in a message; the rest are counted.


def fingerprint(splits: Mapping[str, Iterable], root: pathlib.Path) -> dict:
  """{folder relative to `root`: {file name: [size, mtime_ns]}} of the records' images and
  masks (`common.Record`s by split)."""
  folders: dict[str, dict[str, list[int]]] = {}
  for records in splits.values():
    for record in records:
      for path in (record.image, *record.masks):
        stat = pathlib.Path(path).stat()
        folder = pathlib.Path(os.path.relpath(pathlib.Path(path).parent, root)).as_posix()
        folders.setdefault(folder, {})[pathlib.Path(path).name] = [stat.st_size,
                                                                   stat.st_mtime_ns]
  return {folder: dict(sorted(names.items())) for folder, names in sorted(folders.items())}


def changes(recorded: Mapping, current: Mapping) -> str:
  """What differs between two `fingerprint`s, e.g. 'widget/train/good: 3 files added, 1
  changed'; '' when nothing does."""
  said = []
  for folder in sorted(set(recorded) | set(current)):
    before, now = recorded.get(folder, {}), current.get(folder, {})
    counts = {"added": len(now.keys() - before.keys()),
              "removed": len(before.keys() - now.keys()),
              "changed": sum(list(before[n]) != list(now[n]) for n in before.keys() & now.keys())}
    if any(counts.values()):
      said.append(f"{folder}: " + ", ".join(f"{n} file{'s' * (n != 1)} {what}"
                                            for what, n in counts.items() if n))
  more = len(said) - MOST_FOLDERS
  return "; ".join(said[:MOST_FOLDERS]) + (f"; and {more} more folders" if more > 0 else "")
