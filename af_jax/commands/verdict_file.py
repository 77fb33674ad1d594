"""`af-jax serve-folder`'s verdict file: one JSON line per image, appended whole, read on restart.

Each line is one `files.append_line(..., sync=True)`: a single write of the line and its
newline, then fsync, and only after the image's heatmap and overlay are in place. So a line
is the proof that an image is done, and its name is never scored again. A process killed
while writing (or a power loss) can leave at most the last line torn: it lacks its newline or
is not JSON. Reading the file on start cuts that line off (its image is scored again); any
other line that is not a verdict means the file was edited by hand, and the command stops,
naming the line, rather than guess which images are done.
"""

import json
import logging
import os
import pathlib

from af_jax import files

log = logging.getLogger(__name__)

NAME = "verdicts.jsonl"


def done_names(path) -> set[str]:
  """The names of the images the verdict file at `path` lists (none when there is no file),
  after cutting off a torn last line (module docstring)."""
  path = pathlib.Path(path)
  if not path.is_file():
    return set()
  data = path.read_bytes()
  keep = data.rfind(b"\n") + 1  # What follows the last newline is torn.
  lines = data[:keep].split(b"\n")[:-1]
  records = [_record(line) for line in lines]
  if records and records[-1] is None:  # Its newline reached the disk, not all of it.
    keep -= len(lines.pop()) + 1
    records.pop()
  if None in records:
    number = records.index(None) + 1
    raise ValueError(f"line {number} of {path} is not a verdict ({lines[number - 1][:80]!r}): "
                     "the file was edited; remove that line (its image is then scored again)")
  if keep < len(data):
    log.warning("%s: its last line was torn (%r), left by a process that stopped while "
                "writing it; cut off, so that image is scored again", path, data[keep:][:80])
    os.truncate(path, keep)
  return {record["file"] for record in records}


def _record(line: bytes) -> dict | None:
  """The verdict a line holds, None when it holds none."""
  try:
    record = json.loads(line)
  except ValueError:
    return None
  return record if isinstance(record, dict) and isinstance(record.get("file"), str) else None


def append(path, record: dict) -> None:
  """One verdict line, on disk when it returns (module docstring)."""
  files.append_line(path, json.dumps(record), sync=True)
