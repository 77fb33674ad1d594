"""`af-jax serve-folder`: verdicts for images as they land in a folder, with an exported detector.

  af-jax serve-folder --detector detector/ --watch incoming/ --out verdicts/ \\
      [--category NAME] [--batch_size 16] [--max_wait_s 1] [--once]

The detector is an `af-jax export-detector` folder, loaded with `af_jax.load_detector` (its
SHA-256 checked first): the file a line runs, fixed, with its thresholds. Export a run first;
a training run folder is not taken, so the line never runs anything but a checked export.

Images are taken as they land in `--watch` (`folder_watch` says which are ready: writers
should write under a temporary name and rename), oldest first, and localized in batches of up
to `--batch_size`; a batch waits at most `--max_wait_s` after its oldest image landed to fill,
so latency stays bounded when images come slowly. Images of any size are resized to the
detector's size and their heatmaps back to their own. For each image, `--out` gets
`heatmaps/<file>.png` (the heatmap, 0..255 for 0..1) and `overlays/<file>.png`, then one line
of `verdicts.jsonl`: {"file", "score", "verdict", "heatmap", "overlay"} (and "category" for a
detector with references); the verdict is OK or NG by the image threshold calibrated into the
export (`--image_threshold` overrides), or "not calibrated" when it has none. A file that
cannot be read gets {"file", "error"} and the loop goes on.

Restarts: a name `verdicts.jsonl` lists is never scored again, one it does not list always is
(`verdict_file`), so a loop killed at any point (SIGKILL, power loss) and started again gives
every image exactly one verdict line. A restart with another detector, `--watch`, category or
thresholds is refused, naming them: one file holds one detector's verdicts (`--overwrite`
starts over). SIGINT or SIGTERM finish the current batch, then stop (a second one stops at
once). `--once` scores the images there and stops (cron, tests). The log says images/s and
latency every `--log_every` images and at the end (`serve_stats`).
"""

import argparse
import contextlib
import logging
import pathlib
import signal
import threading
import time

import numpy as np

from af_jax.commands import folder_watch
from af_jax.commands import output_files
from af_jax.commands import run_flags
from af_jax.commands import serve_stats
from af_jax.commands import verdict_file
from af_jax import files
from af_jax.inference import batching
from af_jax.inference import defaults
from af_jax import pixels

log = logging.getLogger(__name__)

OUTPUT_DIRS = ("heatmaps", "overlays")
NOT_CALIBRATED = "not calibrated"
# Without a pixel threshold, the overlay's colours span the heatmap's whole range [0, 1].
UNCALIBRATED_OVERLAY = 0.5


def _category(detector, name: str | None) -> int | None:
  """The index of `--category` into the detector's categories (its only one by default)."""
  names = detector.categories
  if names is None:
    if name is not None:
      raise ValueError(f"--category {name}: the detector in {detector.folder} has no "
                       "categories (its run was trained without blaze.reference); leave it out")
    return None
  if name is None and len(names) == 1:
    return 0
  if name is None:
    raise ValueError(f"the detector in {detector.folder} compares images with one of "
                     f"{', '.join(names)}; pass --category NAME, the one of these images")
  if name not in names:
    raise ValueError(f"--category {name}: the detector in {detector.folder} compares images "
                     f"with one of {', '.join(names)}; name the one of these images")
  return names.index(name)


def _thresholds(detector, category: int | None, args) -> tuple[float | None, float | None]:
  """(pixel, image) thresholds: the flag's, else the one the export carries for the category,
  else None (logged once, with how to calibrate)."""
  chosen, meanwhile = [], dict(pixel="overlays colour the heatmap's whole range [0, 1]",
                               image=f"verdicts say {NOT_CALIBRATED!r}")
  for kind in ("pixel", "image"):
    override = getattr(args, f"{kind}_threshold")
    try:
      chosen.append(detector.threshold(kind, category) if override is None else override)
    except ValueError as e:
      log.warning("serve-folder: %s; until then, %s", e, meanwhile[kind])
      chosen.append(None)
  return tuple(chosen)


def _padded_size(count: int, batch_size: int) -> int:
  """A batch of `count` goes in padded to the next power of two (at most `batch_size`): the
  detector compiles once per shape, so a few shapes serve every batch, wasting at most half."""
  return min(batch_size, 1 << (count - 1).bit_length())


def _localize(detector, images: list, category: int | None, batch_size: int) -> list:
  """(heatmap at the image's own size, score), or the detector's refusal of it, of each of a
  batch of uint8 RGB images. A batch the detector refuses (a gray image for a colour
  reference) goes again image by image, so only the image at fault misses its verdict."""
  resized = pixels.resize_images(images, detector.size)
  padded = batching.pad(resized, _padded_size(len(images), batch_size))
  index = None if category is None else np.full(len(padded), category, np.int32)
  try:
    heatmaps, scores = (np.asarray(x)[:len(images)] for x in detector(padded, index))
  except ValueError as e:
    if len(images) == 1:
      return [str(e)]
    return [result for image in images
            for result in _localize(detector, [image], category, batch_size)]
  return [(pixels.resize_back(h, im.shape[:2]), float(score))
          for h, score, im in zip(heatmaps, scores, images)]


def _read(path):
  """The image, or what is wrong with its file."""
  try:  # The output files add to its name: a long one would stop the loop when written.
    files.check_name_length(path.name, "the file's name")
    if problem := files.broken_link(path):
      return None, f"{path} {problem}"
    return pixels.read_rgb(path), None
  except ValueError as e:
    return None, str(e)


def _write_batch(detector, out, arrivals, category: int | None, thresholds,
                 batch_size: int) -> tuple[list[float], int]:
  """Scores `arrivals` and writes each one's files, then its verdict line (module docstring);
  returns their latencies and how many got an error instead of a verdict."""
  pixel_t, image_t = thresholds
  images, outcomes = {}, {}  # By place in `arrivals`; an outcome is (heatmap, score) or an error.
  for k, arrival in enumerate(arrivals):
    image, outcomes[k] = _read(arrival.path)
    if image is not None:
      images[k] = image
  if images:
    for k, result in zip(images, _localize(detector, list(images.values()), category,
                                           batch_size)):
      outcomes[k] = f"{arrivals[k].path}: {result}" if isinstance(result, str) else result
  verdicts, latencies = out.root / verdict_file.NAME, []
  for k, arrival in enumerate(arrivals):
    name = arrival.path.name
    if isinstance(outcomes[k], str):
      out.write_all([(verdict_file.append, verdicts, dict(file=name, error=outcomes[k]))])
    else:
      heatmap, score = outcomes[k]
      record = dict(file=name, score=score, verdict=NOT_CALIBRATED if image_t is None
                    else "NG" if score >= image_t else "OK",
                    heatmap=f"heatmaps/{name}.png", overlay=f"overlays/{name}.png")
      if category is not None:
        record["category"] = detector.categories[category]
      out.write_all([
          (output_files.write_png, out.root / record["heatmap"], pixels.unit_to_uint8(heatmap)),
          (output_files.write_png, out.root / record["overlay"], pixels.overlay(
              images[k], heatmap, UNCALIBRATED_OVERLAY if pixel_t is None else pixel_t)),
          (verdict_file.append, verdicts, record)])
    latencies.append(time.time() - arrival.landed)
  return latencies, sum(isinstance(outcome, str) for outcome in outcomes.values())


@contextlib.contextmanager
def _stop_on_signals():
  """An event set by SIGINT or SIGTERM, which then stop the process at once if sent again."""
  stop, previous = threading.Event(), {}

  def handler(signum, frame):
    del frame
    log.info("serve-folder: %s: finishing the current batch, then stopping",
             signal.Signals(signum).name)
    stop.set()
    signal.signal(signum, previous[signum])

  for signum in (signal.SIGINT, signal.SIGTERM):
    previous[signum] = signal.signal(signum, handler)
  try:
    yield stop
  finally:
    for signum, was in previous.items():
      signal.signal(signum, was)


def _warm_up(detector, category, batch_size: int) -> None:
  """Compiles every padded batch shape before the first image, so none waits for it."""
  start, sizes = time.monotonic(), sorted({_padded_size(n, batch_size)
                                           for n in range(1, batch_size + 1)})
  gray = detector.metadata.get("gray")  # Per category; the detector refuses the other kind.
  for size in sizes:
    images = np.zeros((size, detector.size, detector.size, 3), np.uint8)
    if category is not None and not (gray and gray[category]):
      images[..., 0] = 255  # Red: a colour image.
    detector(images, None if category is None else np.full(size, category, np.int32))
  log.info("serve-folder: compiled for batches of %s in %.1f s",
           ", ".join(map(str, sizes)), time.monotonic() - start)


def serve(args) -> dict:
  """Scores images as they land until stopped (module docstring); returns the summary
  (`serve_stats`, and `waiting`: the images seen but left for the next run)."""
  from af_jax.inference import detector_file  # pylint: disable=g-import-not-at-top
  detector = detector_file.load_detector(args.detector)
  category = _category(detector, args.category)
  thresholds = _thresholds(detector, category, args)
  with output_files.output_folder(args.out, OUTPUT_DIRS, [verdict_file.NAME], args.overwrite,
                                  resume=not args.overwrite) as out, _stop_on_signals() as stop:
    out.check_settings(dict(command="serve-folder", detector=detector.metadata["sha256"],
                            watch=str(pathlib.Path(args.watch).resolve()),
                            category=None if category is None else detector.categories[category],
                            thresholds=list(thresholds)))
    done = verdict_file.done_names(out.root / verdict_file.NAME)
    watcher = folder_watch.Watcher(args.watch, done, settle_s=args.poll_s)
    _warm_up(detector, category, args.batch_size)
    log.info("serve-folder: watching %s, verdicts in %s", args.watch, out.root)
    stats, pending = serve_stats.Stats(args.log_every), watcher.poll()
    while not stop.is_set():
      due = pending[0].landed + args.max_wait_s - time.time() if pending else args.poll_s
      stop.wait(max(0.0, min(args.poll_s, due)))
      pending += watcher.poll()
      while pending and not stop.is_set() and (
          args.once or len(pending) >= args.batch_size
          or time.time() - pending[0].landed >= args.max_wait_s):
        batch, pending = pending[:args.batch_size], pending[args.batch_size:]
        start = time.monotonic()
        latencies, errors = _write_batch(detector, out, batch, category, thresholds,
                                         args.batch_size)
        stats.batch(time.monotonic() - start, latencies, errors)
      if args.once:
        break
    summary = stats.summary()
    summary.update(waiting=len(pending) + watcher.waiting())
    log.info("serve-folder: stopped: %s", summary)
  return summary


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="af-jax serve-folder", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--detector", required=True,
                 help="folder of an exported detector (af-jax export-detector)")
  p.add_argument("--watch", required=True, help="folder the images land in")
  p.add_argument("--out", required=True, help="folder of verdicts.jsonl, heatmaps/, overlays/")
  p.add_argument("--category",
                 help="the images' category, one of the detector's (default: its only one)")
  p.add_argument("--batch_size", type=run_flags.positive_int, default=defaults.BATCH_SIZE,
                 help="most images per detector call")
  p.add_argument("--max_wait_s", type=run_flags.non_negative_float, default=1.0,
                 help="longest a batch waits to fill after its oldest image landed")
  p.add_argument("--poll_s", type=run_flags.non_negative_float, default=0.5,
                 help="seconds between looks at --watch")
  p.add_argument("--once", action="store_true", help="score the images there, then stop")
  p.add_argument("--log_every", type=run_flags.positive_int, default=100,
                 help="log images/s and latency every this many images")
  p.add_argument("--pixel_threshold", type=run_flags.unit_interval,
                 help="override the export's pixel threshold (in [0, 1])")
  p.add_argument("--image_threshold", type=run_flags.unit_interval,
                 help="override the export's image threshold (in [0, 1])")
  p.add_argument("--overwrite", action="store_true",
                 help="start over: remove the verdicts and files of an earlier run in --out")
  return p


def main(argv) -> int:
  return run_flags.run("serve-folder", serve, parser().parse_args(argv))
