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
appended only once they all exist (`output_files`); while the output is unfinished each line
also holds the anomaly's `locality` figures, which go into `locality.json` (written last) and
leave the finished manifest. Existing outputs are never replaced unless `--overwrite` is
given; `--resume` completes an unfinished one (only the anomalies its manifest lacks).

Batches are split over all of this host's devices. Several hosts (the multi-host flags of
`af-jax train`, `host_flags`) share the work group by group: each process makes every N-th
group from its own index on and lists its anomalies in its own part of the manifest
(`manifest.process_<i>.jsonl`); process 0 merges the parts into the manifest and
`locality.json` one process writes.
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
  from af_jax.inference import hosts  # pylint: disable=g-import-not-at-top
  category, names, images, regions = _source_images(args)
  generator = infer.Generator(args.workdir, bound_to_region=args.bound_to_region,
                              **run_flags.network_options(args))
  root = pathlib.Path(args.out) / category
  with output_files.output_folder(root, OUTPUT_DIRS, [MANIFEST, LOCALITY_JSON],
                                  args.overwrite, args.resume) as out:
    out.check_settings(dict(
        command="generate", workdir=str(generator.workdir.resolve()), step=generator.step,
        dtype=args.dtype, edge_method=generator.edge_method, num=args.num, seed=args.seed,
        mask_threshold=args.mask_threshold, bound_to_region=generator.bound_to_region,
        sources=names))
    done = _listed_records(out, args.num) if out.resumed else {}
    groups = hosts.share(-(-len(images) // GROUP_SIZE))
    _write_anomalies(args, generator, out, names, images, regions, groups, done)
    hosts.barrier("generate: every share written")
    if not hosts.is_main():
      return root
    summary = _merge(out, args.num, len(images))
    out.write(files.write_text, root / LOCALITY_JSON, json.dumps(summary, indent=2))
  print(f"{category}: {locality_line(summary)}")
  return root


def _index(record: dict, num: int) -> int:
  """The place of a manifest line's anomaly in the output (its files' NNN)."""
  return record["source_index"] * num + record["variant"]


def _listed_records(out, num: int) -> dict[int, dict]:
  """The manifest lines that the output's parts list (every process's), by anomaly index."""
  records = {}
  for part in out.parts(MANIFEST):
    for line in part.read_text().splitlines():
      record = json.loads(line)
      records[_index(record, num)] = record
  return records


def _merge(out, num: int, num_images: int) -> dict:
  """Process 0: every part's lines into the manifest, in order, without their locality
  figures; returns the locality summary."""
  from af_jax.metrics import locality  # pylint: disable=g-import-not-at-top
  records = _listed_records(out, num)
  missing = num_images * num - len(records)
  if missing:
    raise ValueError(f"{missing} anomalies have no manifest line: a process failed; rerun "
                     "with --resume to complete the output")
  records = [records[i] for i in range(num_images * num)]
  figures = [r.pop("locality") for r in records]
  out.merge(MANIFEST, "".join(json.dumps(r) + "\n" for r in records))
  return locality.summarize({k: np.asarray([f[k] for f in figures]) for k in locality.FIGURES})


def _write_anomalies(args, generator, out, names, images, regions, groups: list[int],
                     done: dict) -> None:
  """Generates `args.num` anomalies per image of each group of `groups` (module docstring)
  and writes those not `done`, each with its line in this process's part of the manifest."""
  from af_jax.metrics import locality  # pylint: disable=g-import-not-at-top
  num, dirs, part = args.num, out.dirs, out.part(MANIFEST)
  spans = [(g * GROUP_SIZE, min((g + 1) * GROUP_SIZE, len(images))) for g in groups]
  spans = [(start, stop) for start, stop in spans
           if any(i not in done for i in range(start * num, stop * num))]
  missing = sum(i not in done for start, stop in spans for i in range(start * num, stop * num))
  with progress.Progress(missing, f"generate {out.root.name}") as bar:
    for start, stop in spans:
      result = generator.generate(
          images[start:stop], n_variants=num, seed=args.seed,
          regions=None if regions is None else regions[start:stop],
          image_ids=range(start, stop), mask_threshold=args.mask_threshold)
      sources = pixels.resize_images(images[start:stop], generator.size)[result.source]
      figures = locality.per_anomaly(sources, result.images, result.masks, result.heatmaps,
                                     result.region_masks)
      for j in range(len(result.images)):
        index = start * num + j
        if index in done:
          continue
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
                      region_kind=result.region_kind[j], edit_op=result.edit_op[j],
                      locality={k: float(figures[k][j]) for k in locality.FIGURES})
        out.write_all([
            (output_files.write_png, outputs["image"], result.images[j]),
            (output_files.write_png, outputs["mask"], result.masks[j].astype(np.uint8) * 255),
            (files.write_npy, outputs["heatmap"], result.heatmaps[j]),
            (output_files.write_png, outputs["edges"], pixels.unit_to_uint8(result.edges[j])),
            (files.append_line, part, json.dumps(record))])
        bar.update(1)


def locality_line(figures: dict) -> str:
  """The locality figures (af_jax/metrics/locality.py) in words."""
  return (f"{100 * figures['change_inside']:.0f}% of the change inside the masks, heatmap IoU "
          f"with the edited region {figures['heatmap_iou']:.2f}, mean change outside "
          f"{100 * figures['change_outside']:.2f}% of the range, "
          f"{100 * figures.get('on_object', 1.0):.0f}% of the mask area on the object")


def main(argv) -> int:
  p = run_flags.parser("generate", __doc__)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--images", help="glob pattern or directory of normal images")
  src.add_argument("--dataset", help="prepared NAME/CATEGORY (normal images of --split)")
  p.add_argument("--data_dir", help="with --dataset: where `af-jax prepare` wrote it")
  p.add_argument("--split", default="train")
  p.add_argument("--category", type=run_flags.plain_name,
                 help="output sub-folder (default: the category of an MVTec-layout path, "
                      "<category>/<split>/<defect>/<file>, else the images' folder name; or "
                      "the dataset's category)")
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
  run_flags.add_output_flags(p)
  args = p.parse_args(argv)
  if args.dataset and not args.data_dir:
    p.error("--dataset needs --data_dir")
  return run_flags.run("generate", generate, args)
