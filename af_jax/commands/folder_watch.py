"""Which images in a watched folder are ready to score: whole, not seen before, oldest first.

The rule writers should follow is the standard one: write the image under a name that is not
an image name (`cam_0001.png.part`) or that starts with '.' (`.cam_0001.png`), then rename it
to its final name. A rename is atomic, so a file under an image name is whole, and the watcher
ignores the other names. For writers that cannot rename (some camera software writes in
place), a file is taken only once its size and modification time are the same in polls at
least `settle_s` apart (`--poll_s`): a writer that stalls that long mid-file still loses, so
rename.

Only the folder's own files are watched (not its sub-folders), those with an image suffix
(`pixels.IMAGE_SUFFIXES`). A name is an image's identity: once taken it is never taken again,
even when a new file later lands under it. A symbolic link that leads nowhere is taken (its
verdict says so) rather than waited on forever.
"""

import dataclasses
import os
import pathlib
import time

from af_jax import pixels


@dataclasses.dataclass(frozen=True)
class Arrival:
  """An image ready to score: its `path`, and `landed`, its modification time (when its
  writer finished; latency is measured from it)."""
  path: pathlib.Path
  landed: float


def is_image_name(name: str) -> bool:
  return not name.startswith(".") and pathlib.Path(name).suffix.lower() in pixels.IMAGE_SUFFIXES


class Watcher:
  """Polls `folder` for images whose names are not in `taken` (module docstring); an image is
  ready once polls at least `settle_s` apart found it the same."""

  def __init__(self, folder, taken=(), settle_s: float = 0.5):
    self.folder = pathlib.Path(folder)
    if not self.folder.is_dir():
      raise FileNotFoundError(f"--watch {self.folder} is not a folder; create it, or point "
                              "--watch at the folder the images land in")
    self.settle_s = settle_s
    self._taken = set(taken)
    # name -> ((size, mtime) or None for a link that leads nowhere, when first seen so).
    self._seen: dict[str, tuple[tuple | None, float]] = {}

  def _scan(self) -> dict[str, tuple | None]:
    found = {}
    with os.scandir(self.folder) as entries:
      for entry in entries:
        if entry.name in self._taken or not is_image_name(entry.name):
          continue
        try:
          stat = entry.stat()
          if entry.is_file():
            found[entry.name] = (stat.st_size, stat.st_mtime_ns)
        except OSError:
          if entry.is_symlink():  # Else it was renamed or removed since the listing.
            found[entry.name] = None
    return found

  def poll(self) -> list[Arrival]:
    """The images newly ready, oldest first; each is returned once."""
    now, ready = time.monotonic(), []
    found = self._scan()
    for name, key in found.items():
      if name not in self._seen or self._seen[name][0] != key:
        self._seen[name] = (key, now)
      elif now - self._seen[name][1] >= self.settle_s:
        landed = time.time() if key is None else key[1] / 1e9
        ready.append(Arrival(self.folder / name, landed))
    self._seen = {name: seen for name, seen in self._seen.items() if name in found}
    for arrival in ready:
      self._taken.add(arrival.path.name)
      del self._seen[arrival.path.name]
    return sorted(ready, key=lambda a: (a.landed, a.path.name))

  def waiting(self) -> int:
    """How many images were seen but are not yet ready (still being written)."""
    return len(self._seen)
