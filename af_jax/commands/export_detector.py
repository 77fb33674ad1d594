"""`af-jax export-detector`: a trained BlazeDetector as a file a production line calls with JAX alone.

  af-jax export-detector --workdir runs/blaze --out detector/ [--reference DIR ...]

Writes `detector.stablehlo` and `detector.json` (`af_jax/inference/exported_detector.py` says
what they hold and how to call them without af_jax). A run trained with `blaze.reference`
exports one function for all its categories (its second input is the category index); each
`--reference DIR` adds the normal images of a category it was not trained on (named after the
folder's category, as `af-jax localize --reference` does; two folders of one category are
refused). Calibrate each category first (`af-jax localize --calibrate`, with `--reference DIR`
for an added one) to carry its thresholds along; the categories without are named.
"""

import logging

from af_jax.commands import image_files
from af_jax.commands import localize
from af_jax.commands import output_files
from af_jax.commands import run_flags
from af_jax import files
from af_jax.inference import thresholds

log = logging.getLogger(__name__)


def export(args):
  """Loads the detector, adds the references, writes the two files; returns the folder."""
  from af_jax import infer  # pylint: disable=g-import-not-at-top
  from af_jax.inference import exported_detector  # pylint: disable=g-import-not-at-top
  references = image_files.reference_sets(args.reference or ())
  detector = infer.Detector(args.workdir, **run_flags.detector_options(args))
  for name, images in references.items():
    detector.add_reference(name, images)
  names = [exported_detector.FUNCTION_FILE, exported_detector.METADATA_FILE]
  with output_files.output_folder(args.out, (), names, args.overwrite) as out:
    function, metadata = exported_detector.export_detector(detector)
    out.write(files.write_bytes, out.root / names[0], function)
    out.write(files.write_text, out.root / names[1], metadata)
  chosen = localize.category_thresholds(detector, None, None)
  unjudged = [name for name, (_, image) in chosen.items() if image is None]
  if unjudged:
    log.warning("%s carries no calibrated thresholds for %s: calibrate each first (af-jax "
                "localize --calibrate DIR --category NAME, or --reference DIR --calibrate DIR "
                "for an added category), then export again", out.root / names[1],
                ", ".join("its images" if n == thresholds.ANY else n for n in unjudged))
  return out.root


def main(argv) -> int:
  p = run_flags.parser("export-detector", __doc__)
  run_flags.add_heatmap_flags(p)
  p.add_argument("--out", required=True, help="folder of detector.stablehlo and detector.json")
  p.add_argument("--reference", action="append",
                 help="normal images (glob or directory) of a category to add (repeatable)")
  p.add_argument("--overwrite", action="store_true", help="replace a previous export")
  return run_flags.run("export-detector", export, p.parse_args(argv))
