"""`af-jax prepare` throughput: one process vs an Apache Beam DirectRunner, and the mix's time.

Builds one real category twice, into fresh folders: in this process, then as a Beam pipeline
on the DirectRunner with `--workers` worker processes (needs apache-beam: pip install -e
'.[beam]'). The category is a subset of an MVTec-layout folder (`--images` images: three
quarters training, a quarter normal test images as far as there are), symlinked into a temporary manual folder.
Each run reports images/s from the start of the build to its last file, start-up included
(a Beam worker imports JAX and compiles the edge network once, as it would in a real build).

  python benchmarks/prepare.py --category_dir ../shared/data/mvtec_ad/bottle --images 64
  python benchmarks/prepare.py --category_dir ... --size 256 --edges pidinet --workers 4

Then it projects the time of the paper's mix, built with `--train_per_category mix`, at the
faster rate. Only the counts published for the datasets' splits are summed (`MIX_IMAGES`);
MADSim's split sizes and Real-IAD's test split are left out, so the projection is a lower
bound: scale it by your own count with `--mix_images`.
"""

import argparse
import pathlib
import tempfile
import time

from af_jax.commands import prepare_build

# Images `af-jax prepare --mix configs/mix82.py --train_per_category mix` builds, where the
# datasets publish their split sizes: train (or the paper's draw) + test.
MIX_IMAGES = {
    "mvtec_ad": 3_629 + 1_725,
    "mvtec_loco": 1_772 + 304 + 1_568,  # train + validation (both normal) + test
    "visa": 200 * 12 + 2_162,           # the draw + the 1cls test split
    "real_iad": 400 * 30,               # the draw; its test split is not counted here
}


def _subset(category_dir: pathlib.Path, images: int, root: pathlib.Path) -> pathlib.Path:
  """`root/mvtec_ad/<category>` with `images` symlinked images of `category_dir`."""
  target = root / "mvtec_ad" / category_dir.name
  test = min(max(1, images // 4), len(list((category_dir / "test" / "good").iterdir())))
  for split, count in (("train", images - test), ("test", test)):
    sources = sorted((category_dir / split / "good").iterdir())[:count]
    if len(sources) < count:
      raise SystemExit(f"{category_dir / split / 'good'} holds {len(sources)} images, not "
                       f"{count}: lower --images")
    (target / split / "good").mkdir(parents=True)
    for source in sources:
      (target / split / "good" / source.name).symlink_to(source.resolve())
  return root / "mvtec_ad"


def _time_build(manual_dir: pathlib.Path, category: str, data_dir: pathlib.Path,
                beam_options: str | None, **options) -> tuple[int, float]:
  """(images built, seconds) of one build into an empty `data_dir`."""
  cls = prepare_build.builder_class("mvtec_ad")
  config = prepare_build.config_for("mvtec_ad", cls, category, **options)
  download = prepare_build.download_config(manual_dir, beam_options)
  start = time.perf_counter()
  builder = prepare_build.build(cls, config, data_dir, download)
  seconds = time.perf_counter() - start
  return sum(split.num_examples for split in builder.info.splits.values()), seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--category_dir", type=pathlib.Path, required=True,
                      help="an MVTec-layout category folder (e.g. ../shared/data/mvtec_ad/bottle)")
  parser.add_argument("--images", type=int, default=64, help="images built per run")
  parser.add_argument("--size", type=int, default=256)
  parser.add_argument("--edges", default="pidinet")
  parser.add_argument("--workers", type=int, default=2, help="Beam DirectRunner processes")
  parser.add_argument("--mix_images", type=int, default=sum(MIX_IMAGES.values()),
                      help="images of the mix to project the time of (default: the published "
                           "counts, MIX_IMAGES)")
  args = parser.parse_args()
  beam = (f"runner=DirectRunner,direct_num_workers={args.workers},"
          "direct_running_mode=multi_processing")
  rates = {}
  with tempfile.TemporaryDirectory() as tmp:
    manual_dir = _subset(args.category_dir, args.images, pathlib.Path(tmp) / "manual")
    for label, options in (("single process", None), (f"Beam, {args.workers} workers", beam)):
      images, seconds = _time_build(manual_dir, args.category_dir.name,
                                    pathlib.Path(tmp) / label.replace(" ", "_"), options,
                                    size=args.size, edges=args.edges)
      rates[label] = images / seconds
      print(f"{label:<20} {images} images in {seconds:6.1f} s: {rates[label]:6.2f} images/s",
            flush=True)
  best = max(rates, key=rates.get)
  hours = args.mix_images / rates[best] / 3600
  print(f"\nThe mix ({args.mix_images:,} images at {args.size} px, {args.edges} edges) at "
        f"{rates[best]:.2f} images/s ({best}): {hours:.1f} hours")


if __name__ == "__main__":
  main()
