"""Use trained stages: generate anomalies (FlareGenerator) and localize them (BlazeDetector).

  gen = Generator("runs/flare")
  result = gen.generate(images, n_variants=4, seed=0)       # images uint8 [N, H, W, 3]
  det = Detector("runs/blaze")
  det.calibrate(normal_images, fpr=0.01)                     # thresholds without anomalies
  loc = det.localize(test_images)                            # heatmaps, repaired images, scores

Both restore generator parameters only, from the latest (or a given) checkpoint step, and
run one jitted, batched function; batches are padded to a fixed size so one compile serves
all calls. Images of any size are resized to the model's training size; the detector
resizes heatmaps back to each image's own size.

Binary masks of generated anomalies: heatmap >= `mask_threshold` inside the edited region
(the heatmap is the network's own estimate of where the image changed; the edited region
bounds it, so the mask never marks untouched parts of the image). When that leaves no pixel,
the mask falls back to the edited region itself.
"""

import dataclasses
import json
import pathlib

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from af_jax import checkpoint
from af_jax import edges as edges_lib
from af_jax import manipulate
from af_jax import regions as regions_lib
from af_jax import stages
from af_jax.metrics import localization

THRESHOLDS_FILE = "thresholds.json"


def load_stage(workdir, stage: str, step: int = -1, dtype=None):
  """(config, generator module, params) of a run; errors say what is wrong with it."""
  config = checkpoint.load_config(workdir)
  if config.stage != stage:
    raise checkpoint.CheckpointError(
        f"{workdir} holds a {config.stage!r} run, expected a {stage!r} run")
  generator = stages.make_generator(config.model, dtype=dtype)
  size = config.data.image_size
  abstract = jax.eval_shape(generator.init, jax.random.PRNGKey(0),
                            jnp.zeros((1, size, size, 1)), jnp.zeros((1, size, size, 3)))
  params, _ = checkpoint.restore_generator(workdir, abstract, step)
  return config, generator, params


def resize_images(images, size: int) -> np.ndarray:
  """uint8 images (a list of any sizes, or an array) -> uint8 [N, size, size, 3]."""
  out = []
  for i, image in enumerate(images):
    image = np.asarray(image)
    if image.ndim == 2:
      image = np.repeat(image[..., None], 3, -1)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
      raise ValueError(f"image {i}: expected uint8 [H, W, 3] (or [H, W]), got "
                       f"{image.dtype} {image.shape}")
    if image.shape[:2] != (size, size):
      shrink = image.shape[0] > size
      image = cv2.resize(image, (size, size),
                         interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    out.append(image)
  return np.stack(out) if out else np.zeros((0, size, size, 3), np.uint8)


def _batches(n: int, batch_size: int):
  for start in range(0, n, batch_size):
    yield start, min(start + batch_size, n)


def _pad(x: np.ndarray, batch_size: int) -> np.ndarray:
  pad = batch_size - len(x)
  return np.concatenate([x, np.repeat(x[-1:], pad, 0)]) if pad else x


class _Stage:
  """Shared restore/resize/edge plumbing of the Generator and the Detector."""

  stage = ""

  def __init__(self, workdir, step: int = -1, dtype=None, edge_method: str = "pidinet",
               batch_size: int = 16):
    self.workdir = pathlib.Path(workdir)
    self.config, self.generator, self.params = load_stage(workdir, self.stage, step, dtype)
    self.size = self.config.data.image_size
    self.edge_threshold = self.config.edge_threshold
    self.edge_method = edge_method
    self.batch_size = batch_size

  def edges(self, images: np.ndarray) -> np.ndarray:
    """Edge probabilities [N, S, S] of model-size uint8 images."""
    return edges_lib.compute_edges(images, method=self.edge_method)


@dataclasses.dataclass
class GenerationResult:
  images: np.ndarray        # uint8 [M, S, S, 3] anomaly images (M = N * n_variants).
  heatmaps: np.ndarray      # float32 [M, S, S] in [0, 1].
  masks: np.ndarray         # bool [M, S, S] (rule in the module docstring).
  edges: np.ndarray         # float32 [M, S, S]: the edited edge maps.
  region_masks: np.ndarray  # bool [M, S, S]: the edited regions.
  source: np.ndarray        # int [M]: index of the normal image each one came from.
  variant: np.ndarray       # int [M].
  region_kind: list         # 'semantic' | 'stochastic' per image.
  edit_op: list             # 'remove' | 'replace' | 'merge' per image.


class Generator(_Stage):
  """A trained FlareGenerator: normal images in, anomalies with heatmaps and masks out."""

  stage = "flare"

  def __init__(self, *args, manipulate_config: manipulate.ManipulateConfig | None = None,
               **kwargs):
    super().__init__(*args, **kwargs)
    self.manipulate_config = manipulate_config or stages.manipulate_config(self.config)
    threshold = self.edge_threshold

    def run(params, key, edges, image, regions):
      k_edit, k_noise = jax.random.split(key)
      edges = stages.binarize_edges(edges, threshold)
      new_edges, region_mask, info = manipulate.manipulate_edges(
          k_edit, edges, regions, config=self.manipulate_config)
      new_edges = stages.binarize_edges(new_edges, threshold)
      out = self.generator.apply(params, stages.to_signed(new_edges), image,
                                 add_noise=True, rngs={"noise": k_noise})
      return out["output"], out["heatmap"], new_edges, region_mask, info

    self._run = jax.jit(run)

  def generate(self, images, n_variants: int = 1, seed: int = 0, regions=None,
               mask_threshold: float = 0.5, max_regions: int | None = None) -> GenerationResult:
    """`n_variants` anomalies per normal image; same seed, same output.

    `regions`: optional label maps [N, S, S] (0 = background); by default candidate regions
    are proposed from each image (`af_jax.regions.propose_regions`).
    """
    images = resize_images(images, self.size)
    n = len(images)
    if n == 0:
      raise ValueError("generate() got no images")
    edge_maps = self.edges(images)[..., None]
    if regions is None:
      k = max_regions or self.config.max_regions
      regions = np.stack([regions_lib.propose_regions(im, max_regions=k) for im in images])
    regions = np.asarray(regions).reshape(n, self.size, self.size, 1).astype(np.int32)
    signed = images.astype(np.float32) / 127.5 - 1.0

    src = np.tile(np.arange(n), n_variants)
    variant = np.repeat(np.arange(n_variants), n)
    outputs = []
    for start, stop in _batches(len(src), self.batch_size):
      idx = src[start:stop]
      key = jax.random.fold_in(jax.random.PRNGKey(seed), start)
      out = self._run(self.params, key, _pad(edge_maps[idx], self.batch_size),
                      _pad(signed[idx], self.batch_size), _pad(regions[idx], self.batch_size))
      outputs.append(jax.tree.map(lambda x, m=stop - start: np.asarray(x)[:m], out))
    fake, heat, new_edges, region_mask, info = jax.tree.map(
        lambda *xs: np.concatenate(xs), *outputs)
    region_mask = region_mask[..., 0] > 0.5
    heat = heat[..., 0].astype(np.float32)
    masks = (heat >= mask_threshold) & region_mask
    empty = ~masks.any(axis=(1, 2))
    masks[empty] = region_mask[empty]
    return GenerationResult(
        images=np.clip(np.rint((fake + 1) * 127.5), 0, 255).astype(np.uint8),
        heatmaps=heat, masks=masks, edges=new_edges[..., 0].astype(np.float32),
        region_masks=region_mask, source=src, variant=variant,
        region_kind=[manipulate.REGION_KINDS[i] for i in info["region_kind"]],
        edit_op=[manipulate.EDIT_OPS[i] for i in info["edit_op"]])


@dataclasses.dataclass
class LocalizationResult:
  heatmaps: list            # float32 [H, W] per image, at the image's own size.
  repaired: list            # uint8 [H, W, 3] per image: the repaired normal image.
  scores: np.ndarray        # float [N]: image-level anomaly score.


class Detector(_Stage):
  """A trained BlazeDetector: images in, anomaly heatmaps, repaired images and scores out."""

  stage = "blaze"

  def __init__(self, *args, smoothing_sigma: float = 4.0, **kwargs):
    super().__init__(*args, **kwargs)
    self.smoothing_sigma = smoothing_sigma
    threshold = self.edge_threshold

    def run(params, edges, image):
      out = self.generator.apply(params, stages.to_signed(
          stages.binarize_edges(edges, threshold)), image)
      return out["heatmap"][..., 0], out["texture"]

    self._run = jax.jit(run)
    self.thresholds = self._load_thresholds()

  def localize(self, images) -> LocalizationResult:
    """Heatmaps at each image's size, repaired images and max-of-smoothed-heatmap scores."""
    shapes = [np.asarray(im).shape[:2] for im in images]
    resized = resize_images(images, self.size)
    if len(resized) == 0:
      raise ValueError("localize() got no images")
    edge_maps = self.edges(resized)[..., None]
    signed = resized.astype(np.float32) / 127.5 - 1.0
    heat, texture = [], []
    for start, stop in _batches(len(resized), self.batch_size):
      h, t = self._run(self.params, _pad(edge_maps[start:stop], self.batch_size),
                       _pad(signed[start:stop], self.batch_size))
      heat.append(np.asarray(h[:stop - start], np.float32))
      texture.append(np.asarray(t[:stop - start], np.float32))
    heat, texture = np.concatenate(heat), np.concatenate(texture)
    scores = localization.image_scores_from_heatmaps(heat, self.smoothing_sigma)
    heatmaps, repaired = [], []
    for (h, w), hm, tx in zip(shapes, heat, texture):
      tx = np.clip(np.rint((tx + 1) * 127.5), 0, 255).astype(np.uint8)
      if (h, w) != (self.size, self.size):
        hm = cv2.resize(hm, (w, h), interpolation=cv2.INTER_LINEAR)
        tx = cv2.resize(tx, (w, h), interpolation=cv2.INTER_LINEAR)
      heatmaps.append(hm)
      repaired.append(tx)
    return LocalizationResult(heatmaps=heatmaps, repaired=repaired, scores=np.asarray(scores))

  # -------------------------------------------------------------- thresholds
  def calibrate(self, normal_images, fpr: float = 0.01) -> dict:
    """Pixel and image thresholds at false-positive rate `fpr` on normal images; saved.

    No anomalous image is needed: the pixel threshold is the (1 - fpr) quantile of all
    heatmap values, the image threshold the (1 - fpr) quantile of the image scores.
    """
    if not 0 < fpr < 1:
      raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    result = self.localize(normal_images)
    pixels = np.concatenate([h.ravel() for h in result.heatmaps])
    self.thresholds = dict(pixel=float(np.quantile(pixels, 1 - fpr)),
                           image=float(np.quantile(result.scores, 1 - fpr)),
                           fpr=fpr, num_images=len(result.scores))
    path = self.workdir / THRESHOLDS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(self.thresholds, indent=2))
    tmp.replace(path)
    return self.thresholds

  def _load_thresholds(self) -> dict | None:
    path = self.workdir / THRESHOLDS_FILE
    return json.loads(path.read_text()) if path.is_file() else None

  def threshold(self, kind: str, override: float | None = None) -> float:
    """The pixel/image threshold: the override, else the calibrated one, else an error."""
    if override is not None:
      return override
    if not self.thresholds:
      raise ValueError(f"no calibrated thresholds in {self.workdir / THRESHOLDS_FILE}: run "
                       "Detector.calibrate(normal_images) (or `af-jax localize --calibrate DIR`) "
                       "or pass a threshold")
    return self.thresholds[kind]
