"""Checksum manifests of checkpoint steps: written after a save, checked before a restore.

Why a manifest rather than "restore and catch the error": Orbax's OCDBT/zarr store reads
lazily and only what a restore asks for (a teacher reads the generator item only), and bytes
overwritten inside an uncompressed chunk restore without any error, as silently wrong
weights. A manifest of every file's size and SHA-256, written once Orbax has committed the
step, catches truncation, overwritten bytes and missing files or item folders alike, by
reading every byte of exactly the items about to be used (at disk speed; about a second per
GB, a small fraction of training or compile time), and needs no model to check.

`MANIFEST` (`af_jax_checksums.json` inside the step folder) maps each file's path relative to
the step folder to [size, sha256]. It is written atomically (temporary name, then rename)
after Orbax's commit, so a step either has a complete manifest or none. A step without one
(saved before af_jax kept manifests, or killed between Orbax's commit and the manifest) is
"unverified": callers fall back to reading it fully and treating a failed read as corruption.

Corrupt steps are moved aside into `<workdir>/corrupt_checkpoints/<step>` (with `-2`, `-3`...
when that name is taken), outside the folder Orbax lists and cleans, so they are never
restored, never deleted and can still be inspected.
"""

import hashlib
import json
import pathlib

from af_jax import files

MANIFEST = "af_jax_checksums.json"
CORRUPT_DIR = "corrupt_checkpoints"


class CorruptStepError(RuntimeError):
  """A checkpoint step's files differ from when it was saved; `reason` says how."""

  def __init__(self, step_dir: pathlib.Path, reason: str):
    super().__init__(f"checkpoint {step_dir} is corrupt: {reason}")
    self.step_dir = pathlib.Path(step_dir)
    self.reason = reason


def _sha256(path: pathlib.Path) -> str:
  with path.open("rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def _files(step_dir: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.name != MANIFEST
                and not p.name.startswith(f".{MANIFEST}"))


def write_manifest(step_dir) -> None:
  """Records the size and SHA-256 of every file of a committed step, atomically."""
  step_dir = pathlib.Path(step_dir)
  entries = {p.relative_to(step_dir).as_posix(): [p.stat().st_size, _sha256(p)]
             for p in _files(step_dir)}
  files.write_text(step_dir / MANIFEST, json.dumps(entries, indent=0, sort_keys=True))


def verify(step_dir, items) -> bool:
  """Checks every file of `items` (item folder names) of a step against its manifest.

  Returns True when all of them are as saved, False when the step has no manifest (unverified:
  only the item folders' presence was checked). Raises CorruptStepError naming the first bad
  file and how many more there are.
  """
  step_dir = pathlib.Path(step_dir)
  missing_items = [item for item in items if not (step_dir / item).is_dir()]
  manifest_path = step_dir / MANIFEST
  if not manifest_path.is_file():
    if missing_items:
      raise CorruptStepError(step_dir, f"its {', '.join(missing_items)} item folder is missing")
    return False
  try:
    manifest = json.loads(manifest_path.read_text())
    entries = {name: (int(size), str(digest)) for name, (size, digest) in manifest.items()}
  except (ValueError, TypeError, AttributeError) as e:  # Overwritten or cut-short JSON.
    raise CorruptStepError(step_dir, f"its checksum manifest {MANIFEST} is unreadable ({e})")
  problems = []
  for name, (size, digest) in sorted(entries.items()):
    if "/" in name and name.split("/")[0] not in items:  # Top-level files are always checked.
      continue
    path = step_dir / name
    if not path.is_file():
      problems.append(f"{name} is missing")
    elif path.stat().st_size != size:
      problems.append(f"{name} is {path.stat().st_size} bytes, {size} when saved (truncated "
                      "or cut short)")
    elif _sha256(path) != digest:
      problems.append(f"{name} differs from when it was saved (SHA-256 mismatch: "
                      "overwritten bytes)")
  if missing_items:
    problems.insert(0, f"its {', '.join(missing_items)} item folder is missing")
  if problems:
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    raise CorruptStepError(step_dir, problems[0] + more)
  return True


def move_aside(step_dir) -> pathlib.Path:
  """Moves a corrupt step folder to `<workdir>/corrupt_checkpoints/`; returns where it went."""
  step_dir = pathlib.Path(step_dir)
  target_dir = step_dir.parent.parent / CORRUPT_DIR
  target_dir.mkdir(exist_ok=True)
  target, n = target_dir / step_dir.name, 1
  while target.exists():
    n += 1
    target = target_dir / f"{step_dir.name}-{n}"
  step_dir.rename(target)
  return target
