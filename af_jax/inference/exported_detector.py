"""A trained detector as one serialized StableHLO function that a production line calls with JAX alone.

  af-jax export-detector --workdir runs/blaze --out detector/

writes `detector/detector.stablehlo` (the bytes of `jax.export.export(...).serialize()`) and
`detector/detector.json` (what it takes and gives: the model size S, the categories of its
references in index order, each category's calibrated thresholds (`thresholds`: category ->
pixel, image and fpr, of those calibrated with this detector's settings; "*" for a run without
references), the af_jax version, and the size and SHA-256 of `detector.stablehlo`, which
`af_jax.load_detector` checks).
The function takes uint8 images [N, S, S, 3] (N symbolic: any batch size) and, for a run
trained with `blaze.reference`, the index of each image's category int32 [N] into
`categories`; it returns (heatmaps float32 [N, S, S] in [0, 1], scores float32 [N]), what
`Detector.localize(images, category=categories[i])` gives for S x S images: the same edge
extractor, reference (and patch-distance) channels, flip averaging (`postprocess.average_views`), smoothing
(`postprocess.smooth_heatmaps`) and image score, or, for a run with `blaze.evidence_trust`, the
evidence weighed by each category's fitted trust (`af_jax.evidence.trust`), traced once with the
parameters as constants. Loading needs `jax` only:

  import json, jax
  from jax import export
  detector = export.deserialize(open("detector/detector.stablehlo", "rb").read())
  size = json.load(open("detector/detector.json"))["size"]
  heatmaps, scores = detector.call(images)     # uint8 [N, size, size, 3], N >= 1

Images of another size or dtype are refused by `call` (the exported shapes are checked),
never computed; a category index out of range is not (it is clamped), nor a damaged file:
`af_jax.load_detector` (`detector_file`) checks both, and takes a batch of 0. Only
PiDiNet-edge runs export: Canny is OpenCV code, not a JAX function.
"""

import functools
import json

import jax
from jax import export
import jax.numpy as jnp
import numpy as np

from af_jax.evidence import patch_memory
from af_jax import per_image
from af_jax import pixels
from af_jax.evidence import reference
from af_jax.inference import detector_file
from af_jax.inference import thresholds as thresholds_lib
from af_jax import postprocess
from af_jax.evidence import trust as trust_lib
from af_jax.ops import edges as edges_lib
from af_jax.ops import foreground

FUNCTION_FILE = detector_file.FUNCTION_FILE
METADATA_FILE = detector_file.METADATA_FILE


def detector_function(detector, part=lambda name, fn: fn):
  """The pure JAX function of a `Detector` (module docstring): (images[, category]) ->
  (heatmaps, scores), closing over its parameters and references. It runs each of its parts
  (`profile.PARTS`) as `part(name, fn)`: fn itself by default, so all trace into one program;
  `benchmarks/inference.py` gives a `part` that compiles and times each alone."""
  if detector.edge_method != "pidinet":
    raise ValueError(f"the run in {detector.workdir} sees {detector.edge_method!r} edges, which "
                     "are computed by OpenCV and cannot be exported; export a run trained on "
                     "PiDiNet edges (af-jax prepare's default)")
  edge_fn = edges_lib.make_edge_fn()
  params, views, sigma = detector.params, detector.views(), detector.smoothing_sigma
  threshold, mean_std, eps, memory = detector.edge_threshold, None, None, None
  score_on_object = detector.config.blaze.get("score_on_object", False)
  if detector.patch_memory is not None:
    memory = detector.patch_memory.arrays()
  evidence_memory = (None if detector.evidence_memory is None
                     else detector.evidence_memory.arrays())
  if detector.references is not None:
    mean_std = jnp.asarray(detector.references.mean_std(np.arange(len(
        detector.references.names))))
    eps = detector.config.blaze.reference_eps
  trust_rows = None
  if detector.trust is not None:
    trust_rows = jnp.asarray(detector.trust_indices(np.arange(len(detector.references.names))))

  @functools.partial(part, "edges")
  def edges(signed):
    return pixels.binarize_edges(edge_fn(signed), threshold)

  @functools.partial(part, "reference")
  def reference_channels(signed, category):
    return reference.network_channels(signed, mean_std[category], eps)

  @functools.partial(part, "patch")
  def patch_channel(signed, category):
    return patch_memory.category_channel(signed, category, memory,
                                         detector.config.blaze.patch_size,
                                         detector.patch_stride, query_levels=True)

  @functools.partial(part, "patch evidence")
  def patch_evidence(signed, category):
    return patch_memory.category_channel(signed, category, evidence_memory,
                                         detector.config.blaze.patch_size,
                                         detector.evidence_patch_stride, pixel_levels=True)

  @functools.partial(part, "network")
  def network(edges, signed, guide):
    def apply(edges, signed, guide):  # Image by image on a CPU (`per_image`).
      out = detector.generator.apply(params, pixels.unit_to_signed(edges), signed,
                                     guide if guide.shape[-1] else None)
      return out["heatmap"][..., 0]
    return (per_image.on_cpu(apply)(edges, signed, guide),)

  @functools.partial(part, "post-processing")
  def post_process(heat, guide, patch, images, category):
    on = (foreground.foreground_batch(pixels.uint8_to_unit(images)) if score_on_object
          else None)
    if trust_rows is not None:
      return trust_lib.apply(detector.trust, detector.source_maps(heat, guide, patch),
                             trust_rows[category], on)
    heat = postprocess.smooth_heatmaps(heat, sigma)
    return heat, postprocess.image_scores(heat, on)

  def run(images, category=None):
    signed = pixels.uint8_to_signed(images)
    guide = [jnp.zeros(signed.shape[:3] + (0,), jnp.float32)]
    if mean_std is not None:
      guide.append(reference_channels(signed, category))
    if memory is not None:
      guide.append(patch_channel(signed, category))
    guide = jnp.concatenate(guide, axis=-1)
    heat, _ = postprocess.average_views(network, views, edges(signed), signed, guide)
    patch = None  # The patch evidence: its own memory's, else the network's patch input.
    if evidence_memory is not None:
      patch = patch_evidence(signed, category)
    elif memory is not None:
      patch = guide[..., -1:]
    return post_process(heat, guide, patch, images, category)

  return run


def export_detector(detector) -> tuple[bytes, str]:
  """(the serialized function, its metadata as JSON) of a `Detector` (module docstring)."""
  size = detector.size
  batch = export.symbolic_shape("N")[0]
  args = [jax.ShapeDtypeStruct((batch, size, size, 3), jnp.uint8)]
  categories = None
  if detector.references is not None:
    args.append(jax.ShapeDtypeStruct((batch,), jnp.int32))
    categories = list(detector.references.names)
  function = export.export(jax.jit(detector_function(detector)))(*args).serialize()
  from af_jax import __version__  # pylint: disable=g-import-not-at-top
  metadata = dict(
      size=size, inputs=["images uint8 [N, S, S, 3]"]
      + (["category int32 [N] (index into categories)"] if categories else []),
      outputs=["heatmaps float32 [N, S, S] in [0, 1]", "scores float32 [N]"],
      categories=categories, thresholds=_thresholds(detector), step=detector.step,
      # Which references are gray: the checked loader never compares gray and colour.
      gray=None if categories is None else detector.references.gray.tolist(),
      edge_method=detector.edge_method, smoothing_sigma=detector.smoothing_sigma,
      flip_tta=detector.flip_tta, af_jax_version=__version__, workdir=str(detector.workdir),
      bytes=len(function), sha256=detector_file.sha256(function))
  return function, json.dumps(metadata, indent=2)


def _thresholds(detector) -> dict[str, dict]:
  """{category: pixel, image, fpr} of the categories whose calibrated thresholds were measured
  with this detector's settings (`thresholds.ANY` for a run without references)."""
  saved, settings = detector.thresholds, detector.settings()
  names = (thresholds_lib.ANY,) if detector.references is None else detector.references.names
  return {name: {k: saved[name][k] for k in ("pixel", "image", "fpr")} for name in names
          if thresholds_lib.problem(saved, name, settings) is None}
