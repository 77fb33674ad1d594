"""`af-jax export`: prepared categories written out as PNG files in the MVTec AD layout.

  af-jax export --data_dir data --dataset synthetic --categories circuit,gear --out images/

Each category becomes `<out>/<category>/train/good/<stem>.png`, `test/<defect>/<stem>.png`
(`good` for normal images) and `ground_truth/<defect>/<stem>_mask.png` (0/255, anomalous images
only): the files `af-jax generate --images` and `af-jax localize --calibrate --ground_truth`
read. Images are as prepared (the build's square size), named by the stem of the file they
were prepared from (`_2`, `_3`, ... when two in one folder share it); a build's other splits
(MVTec LOCO's validation) get their own folder alike. `<category>` is the dataset's category
(`circuit` for the build `circuit-64px-train64`), which `generate` then names its output after.

A category is written into a temporary folder inside `--out` and renamed into place when
complete, so an `<out>/<category>` folder is always a whole export. One already there is kept
(an error) unless `--overwrite`, which swaps the new one in the same way.
"""

import argparse
import pathlib
import sys

import numpy as np

from af_jax import files
from af_jax import input_pipeline
from af_jax import pixels


def _write_split(examples, root: pathlib.Path, split: str) -> None:
  """One split's images (and anomalous images' masks) under `root` (module docstring)."""
  taken = set()
  for ex in examples:
    defect = ex["defect"] if ex["label"] else "good"
    stem = pathlib.PurePosixPath(ex["file_name"]).stem
    name, k = stem, 1
    while (split, defect, name) in taken:
      k += 1
      name = f"{stem}_{k}"
    taken.add((split, defect, name))
    image = root / split / defect / f"{name}.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(pixels.encode_png(np.asarray(ex["image"])))
    if ex["label"]:
      mask = root / "ground_truth" / defect / f"{name}_mask.png"
      mask.parent.mkdir(parents=True, exist_ok=True)
      mask.write_bytes(pixels.encode_png(np.asarray(ex["mask"])[..., 0]))


def export_category(data_dir, dataset: str, category: str, out,
                    overwrite: bool = False) -> pathlib.Path:
  """Writes one prepared category to `<out>/<its category>` (module docstring); returns that.

  `category` is a build's name or a category with a single build (`input_pipeline.open_split`).
  """
  splits = sorted(input_pipeline.open_split(data_dir, dataset, category, "train")
                  .dataset_info.splits)
  out = pathlib.Path(out)
  target = out / category.split("-")[0]  # A build's name starts with its category.
  if target.exists() and not overwrite:
    raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")
  with files.staged_folder(target, prefix=f"{target.name}.export") as staging:
    for split in splits:
      _write_split(input_pipeline.make_eval_dataset(data_dir, dataset, category, split),
                   staging, split)
  return target


def main(argv) -> int:
  parser = argparse.ArgumentParser(prog="af-jax export", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--data_dir", required=True, help="where `af-jax prepare` wrote the data")
  parser.add_argument("--dataset", required=True, help="prepared dataset name, e.g. mvtec_ad")
  parser.add_argument("--categories", required=True,
                      type=lambda v: [c.strip() for c in v.split(",") if c.strip()],
                      help="comma-separated categories or builds' names (bottle-64px)")
  parser.add_argument("--out", required=True, help="folder of the exported categories")
  parser.add_argument("--overwrite", action="store_true", help="replace a previous export")
  args = parser.parse_args(argv)
  if not args.categories:
    parser.error("--categories names no category")
  for category in args.categories:
    try:
      path = export_category(args.data_dir, args.dataset, category, args.out, args.overwrite)
    except (OSError, ValueError, KeyError) as e:
      print(f"af-jax export: error: {e}", file=sys.stderr)
      return 1
    print(f"af-jax export: {args.dataset}/{category} -> {path}")
  return 0
