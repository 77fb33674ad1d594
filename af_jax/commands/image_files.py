"""The images, masks and categories that users point the commands at: found, read and checked.

Every input is read and checked before anything is written: an unreadable or empty image, a
pattern matching no image, or ground truth masks that are missing or of another size stop the
command with an error naming the files.
"""

import glob
import pathlib

import numpy as np

from af_jax import files as files_lib
from af_jax import pixels

SPLITS = ("train", "test", "validation")  # Split folders of the MVTec layout (and MVTec LOCO's).


def find_images(pattern: str) -> list[pathlib.Path]:
  """Image files matching a glob pattern or inside a directory; error when there are none, or
  when one is a symbolic link that leads nowhere (a loop, a missing target), naming it."""
  path = pathlib.Path(pattern)
  if problem := files_lib.broken_link(path):
    raise ValueError(f"{path} {problem}")
  if path.is_dir():
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in pixels.IMAGE_SUFFIXES)
  else:
    files = sorted(pathlib.Path(p) for p in glob.glob(pattern, recursive=True)
                   if pathlib.Path(p).suffix.lower() in pixels.IMAGE_SUFFIXES)
  if not files:
    raise FileNotFoundError(
        f"no image files ({', '.join(pixels.IMAGE_SUFFIXES)}) match {pattern!r}")
  broken = [f"{f} {problem}" for f in files if (problem := files_lib.broken_link(f))]
  if broken:
    raise ValueError(f"{len(broken)} image path(s) lead to no file: {listing(broken)}; remove "
                     "the links or point them at images")
  return files


def file_states(files) -> dict[str, dict[str, list[int]]]:
  """{folder: {file name: [size, modification time in ns]}} of image files, as a build records
  its source files (`data_builders.source_files`, whose `changes` compares two): what tells
  images replaced under the same names (a `--resume` against another reference) from the ones
  read before."""
  states = {}
  for f in map(pathlib.Path, files):
    stat = f.stat()
    states.setdefault(str(f.parent), {})[f.name] = [stat.st_size, stat.st_mtime_ns]
  return states


def read_images(files) -> list[np.ndarray]:
  """Every image, or one error naming all the unreadable files."""
  images, bad = [], []
  for f in files:
    try:
      images.append(pixels.read_rgb(f))
    except ValueError:
      bad.append(str(f))
  if bad:
    raise ValueError(f"cannot read {len(bad)} image file(s) (corrupt or not an image): "
                     + listing(bad))
  return images


def reference_sets(folders) -> dict[str, list[np.ndarray]]:
  """{category: normal images} of `--reference` folders (globs or directories), each named
  after its files' category (`category_of`); two folders of one category are refused, naming
  both (one would silently replace the other)."""
  found, sets = {}, {}
  for folder in folders:
    paths = find_images(folder)
    name = category_of(paths)
    if name in found:
      raise ValueError(f"--reference {found[name]} and --reference {folder} are both category "
                       f"{name!r} (from their paths); give one folder per category")
    found[name], sets[name] = folder, read_images(paths)
  return sets


def category_of(files) -> str:
  """The category of images in the MVTec layout, `<category>/<split>/<defect>/<file>`.

  Images outside it name their category by their own folder, unless that folder is a split or
  `good` (which names no category). Raises ValueError when the files disagree or name none.
  """
  categories = set()
  for f in files:
    folders = pathlib.Path(f).resolve().parent.parts
    if len(folders) >= 3 and folders[-2] in SPLITS:
      categories.add(folders[-3])
    elif folders[-1] in (*SPLITS, "good"):
      raise ValueError(f"cannot tell the category of {f} from its path (MVTec layout: "
                       "<category>/<split>/<defect>/<file>); pass --category NAME")
    else:
      categories.add(folders[-1])
  if len(categories) > 1:
    raise ValueError(f"the images are of several categories ({', '.join(sorted(categories))}, "
                     "from their paths); run once per category or pass --category NAME")
  return categories.pop()


def listing(names: list[str], most: int = 5) -> str:
  """The first `most` of `names`, and how many more."""
  return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def ground_truth_masks(files, images, gt_dir) -> list[np.ndarray]:
  """MVTec layout: `<gt>/<defect>/<stem>_mask.png` for `.../<defect>/<stem>.png`; 'good' = empty.

  Raises one error naming every missing, unreadable or wrongly sized mask.
  """
  masks, problems = [], []
  for f, image in zip(files, images):
    f = pathlib.Path(f)
    if f.parent.name == "good":
      masks.append(np.zeros(image.shape[:2], bool))
      continue
    path = pathlib.Path(gt_dir) / f.parent.name / f"{f.stem}_mask.png"
    try:
      mask = pixels.read_mask(path)
    except ValueError:
      problems.append(f"{path} (missing or unreadable, for {f})")
      continue
    if mask.shape != image.shape[:2]:
      problems.append(f"{path} is {mask.shape[1]}x{mask.shape[0]} but {f} is "
                      f"{image.shape[1]}x{image.shape[0]}")
    else:
      masks.append(mask)
  if problems:
    raise ValueError(f"ground truth in {gt_dir} does not match the images: "
                     + listing(problems))
  return masks




def image_labels(files) -> list[int]:
  """MVTec layout: images under `good/` are normal (0), all others anomalous (1)."""
  return [int(pathlib.Path(f).parent.name != "good") for f in files]
