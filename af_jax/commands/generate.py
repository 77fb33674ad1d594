"""`af-jax generate`: anomalies, masks and heatmaps from normal images, with a trained run.

  af-jax generate --workdir runs/flare --images 'normal/*.png' --num 10 --out gen/
  af-jax generate --workdir runs/flare --dataset mvtec_ad/bottle --data_dir data --out gen/

It takes a Flare run, or a Boot run to render the same edits with the BootGenerator (how the
paper compares the two; score either with `af-jax evaluate-generation`). `--edges` defaults
to the extractor the run's training data was prepared with; naming another one works but warns.

It writes `<out>/<category>/{images,masks,heatmaps,edges}` in the MVTec naming (`NNN.png`,
binary `NNN_mask.png` with 0/255, float32 heatmaps `NNN.npy`, edited edge maps `NNN.png`) and
one `manifest.jsonl` line per anomaly (its files, source image, seed, source index, variant,
donor image, region kind, edit op), then `locality.json` (how local the anomalies are).
`<category>` is `--category`, else the category of the images' MVTec-layout paths
(`bottle/train/good/*.png` -> `bottle`; `image_files.category_of`) or the dataset's.
Anomalies are made from groups of `GROUP_SIZE` consecutive images (donor edges come from the
same group), so the output depends on the seed and the images only, not on `--batch_size`.
An anomaly whose files cannot all be written leaves none of them, and its manifest line is
appended only once they all exist (`output_files`). Existing outputs are never replaced
unless `--overwrite` is given.
"""

import argparse
import json
import pathlib

import numpy as np

from af_jax.commands import image_files
from af_jax.commands import output_files
from af_jax.commands import run_flags
from af_jax import files
from af_jax.inference import defaults
from af_jax import pixels
from af_jax import progress

OUTPUT_DIRS = ("images", "masks", "heatmaps", "edges")
MANIFEST = "manifest.jsonl"
LOCALITY_JSON = "locality.json"
GROUP_SIZE = 16


def _source_images(args):
  """(category, source names, images, region maps or None) from --images or --dataset."""
  if args.images:
    paths = image_files.find_images(args.images)
    category = args.category or image_files.category_of(paths)
    return category, [str(f) for f in paths], image_files.read_images(paths), None
  from af_jax import input_pipeline  # pylint: disable=g-import-not-at-top
  dataset, _, category = args.dataset.partition("/")
  if not category:
    raise ValueError(f"--dataset must be NAME/CATEGORY (e.g. mvtec_ad/bottle), "
                     f"got {args.dataset!r}")
  examples = [ex for ex in input_pipeline.make_eval_dataset(args.data_dir, dataset, category,
                                                             split=args.split)
              if int(ex["label"]) == 0]
  if not examples:
    raise ValueError(f"{args.dataset} in {args.data_dir} has no normal image in split "
                     f"{args.split!r}")
  return (args.category or files.check_plain_name(category, "--dataset's category"),
          [ex["file_name"] for ex in examples],
          [np.asarray(ex["image"]) for ex in examples],
          [np.asarray(ex["regions"]) for ex in examples])


def generate(args) -> pathlib.Path:
  """Writes the anomalies of every source image (module docstring); returns the output folder."""
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  from af_jax.metrics import locality  # pylint: disable=g-import-not-at-top
  category, names, images, regions = _source_images(args)
  generator = infer.Generator(args.workdir, bound_to_region=args.bound_to_region,
                              **run_flags.network_options(args))
  root = pathlib.Path(args.out) / category
  with output_files.output_folder(root, OUTPUT_DIRS, [MANIFEST, LOCALITY_JSON],
                                  args.overwrite) as out:
    figures = _write_anomalies(args, generator, out, names, images, regions)
    summary = locality.summarize({k: np.concatenate([f[k] for f in figures])
                                  for k in locality.FIGURES})
    out.write(files.write_text, root / LOCALITY_JSON, json.dumps(summary, indent=2))
  print(f"{category}: {locality_line(summary)}")
  return root


def _write_anomalies(args, generator, out, names, images, regions) -> list[dict]:
  """Generates and writes `args.num` anomalies per image, group by group (module docstring);
  returns each group's locality figures."""
  from af_jax.metrics import locality  # pylint: disable=g-import-not-at-top
  index, figures, dirs = 0, [], out.dirs
  with progress.Progress(len(images) * args.num, f"generate {out.root.name}") as bar:
    for start in range(0, len(images), GROUP_SIZE):
      stop = min(start + GROUP_SIZE, len(images))
      result = generator.generate(
          images[start:stop], n_variants=args.num, seed=args.seed,
          regions=None if regions is None else regions[start:stop],
          image_ids=range(start, stop), mask_threshold=args.mask_threshold)
      for j in range(len(result.images)):
        stem = f"{index:03d}"
        outputs = dict(image=dirs["images"] / f"{stem}.png",
                       mask=dirs["masks"] / f"{stem}_mask.png",
                       heatmap=dirs["heatmaps"] / f"{stem}.npy",
                       edges=dirs["edges"] / f"{stem}.png")
        source = start + int(result.source[j])
        record = {k: str(p.relative_to(out.root)) for k, p in outputs.items()}
        record.update(source=names[source], source_index=source, seed=args.seed,
                      variant=int(result.variant[j]),
                      donor=names[start + int(result.donor[j])],
                      region_kind=result.region_kind[j], edit_op=result.edit_op[j])
        out.write_all([
            (output_files.write_png, outputs["image"], result.images[j]),
            (output_files.write_png, outputs["mask"], result.masks[j].astype(np.uint8) * 255),
            (files.write_npy, outputs["heatmap"], result.heatmaps[j]),
            (output_files.write_png, outputs["edges"], pixels.unit_to_uint8(result.edges[j])),
            (files.append_line, out.root / MANIFEST, json.dumps(record))])
        index += 1
        bar.update(1)
      sources = pixels.resize_images(images[start:stop], generator.size)[result.source]
      figures.append(locality.per_anomaly(sources, result.images, result.masks, result.heatmaps,
                                          result.region_masks))
  return figures


def locality_line(figures: dict) -> str:
  """The locality figures (af_jax/metrics/locality.py) in words."""
  return (f"{100 * figures['change_inside']:.0f}% of the change inside the masks, heatmap IoU "
          f"with the edited region {figures['heatmap_iou']:.2f}, mean change outside "
          f"{100 * figures['change_outside']:.2f}% of the range")


def main(argv) -> int:
  p = run_flags.parser("generate", __doc__)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--images", help="glob pattern or directory of normal images")
  src.add_argument("--dataset", help="prepared NAME/CATEGORY (normal images of --split)")
  p.add_argument("--data_dir", help="with --dataset: where `af-jax prepare` wrote it")
  p.add_argument("--split", default="train")
  p.add_argument("--category", type=run_flags.plain_name, help="output sub-folder (default: the category of an MVTec-"
                                    "layout path, <category>/<split>/<defect>/<file>, else the "
                                    "images' folder name; or the dataset's category)")
  p.add_argument("--num", type=run_flags.positive_int, default=1,
                 help="anomalies per normal image")
  p.add_argument("--seed", type=run_flags.non_negative_int, default=0)
  p.add_argument("--mask_threshold", type=run_flags.unit_interval,
                 default=defaults.MASK_THRESHOLD,
                 help="heatmap level of the binary masks (inside the edited region)")
  p.add_argument("--bound_to_region", action=argparse.BooleanOptionalAction, default=None,
                 help="change no pixel outside the edited region; --no-bound_to_region: the "
                      "paper's unbounded fusion (default: the run's flare.bound_to_region)")
  p.add_argument("--out", required=True)
  p.add_argument("--overwrite", action="store_true", help="replace a previous output")
  args = p.parse_args(argv)
  if args.dataset and not args.data_dir:
    p.error("--dataset needs --data_dir")
  return run_flags.run("generate", generate, args)
