"""Edge manipulation: forge anomaly edge maps from normal ones, on device.

The FlareGenerator (and `generate`) turns a normal edge map into an anomaly
edge map by editing it inside a selected region; the region mask M is then the
heatmap target (paper Sec. 3.3). The paper names the strategies but gives no
finer rules, so these are ours, all set by `ManipulateConfig`. Every example of
a batch draws its own choices.

Region selection
  * With probability `semantic_prob` an example uses *semantic* regions: the
    candidates are the labels 1..K of its region map (0 is background) that
    cover at least `min_region_frac` of the image; n ~ Uniform{1, ...,
    `max_semantic_regions`} distinct candidates are drawn uniformly (fewer if
    fewer exist) and the mask is the union of their pixels.
  * Otherwise, or when no label qualifies (an all-zero region map, or only
    tiny regions), it uses a *stochastic* region: the union of n ~
    Uniform{`num_shapes`} random shapes. Each shape's kind is drawn uniformly
    from `shape_kinds` (ellipse, rectangle, or polygon: n ~
    Uniform{`polygon_vertices`} vertices at evenly spaced angles with radii in
    [`polygon_min_radius`, 1] of the shape's half extent, star-shaped and
    nearly convex). A shape has size s ~ Uniform(`shape_size`) x the
    shorter image side and aspect ratio a log-uniform in `aspect_ratio`; its
    width is s sqrt(a), its height s / sqrt(a) (so its area is at most s^2),
    it is rotated by Uniform[0, pi) and centred on a uniformly drawn pixel,
    which always belongs to the shape, so the mask is never empty. Shapes may
    extend past the image border and are cut there.
  `info['region_kind']` records which one was used (index into REGION_KINDS).

Edge editing, inside the mask only (outside, edges are returned unchanged):
  * remove:  edges set to 0.
  * replace: edges taken from a donor edge map.
  * merge:   max(own edges, donor edges), the union of both edge sets.
  The op is drawn per example with probabilities `edit_op_probs` (remove,
  replace, merge); `info['edit_op']` records it (index into EDIT_OPS).

Donors. Without `donor_edges`, example i takes its donor from another example
of the same batch, chosen by a uniformly random cyclic permutation, so never
itself (the batch may mix categories and datasets, as the paper allows). A
batch of one has no other example: its donor is its own edge map rotated by
180 degrees (flipped top-bottom and left-right). The donor is then rolled
(circularly, so no edge density is lost) by a random integer offset of up to
`donor_shift` x the image size per axis.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

REGION_KINDS = ('semantic', 'stochastic')
EDIT_OPS = ('remove', 'replace', 'merge')
SHAPE_KINDS = ('ellipse', 'rectangle', 'polygon')


@dataclasses.dataclass(frozen=True)
class ManipulateConfig:
  """Rules for region selection and edge editing (see the module docstring).

  Attributes:
    semantic_prob: probability that an example uses semantic rather than stochastic regions.
    max_semantic_regions: largest number of candidate regions joined into one semantic mask.
    min_region_frac: labels covering less than this fraction of the image are not candidates.
    num_region_labels: region labels must be below this; larger ones count as background.
    shape_kinds: stochastic shape kinds to draw from (subset of SHAPE_KINDS).
    num_shapes: inclusive range of the number of shapes joined into one stochastic mask.
    shape_size: range of a shape's size, as a fraction of the shorter image side.
    aspect_ratio: range of a shape's width / height, sampled log-uniformly.
    polygon_vertices: inclusive range of the number of polygon vertices.
    polygon_min_radius: smallest polygon vertex radius, relative to the largest (1: regular).
    edit_op_probs: probabilities of remove, replace, merge (normalized to sum 1).
    donor_shift: largest circular shift of the donor edges, as a fraction of the image size.
    centre_on_edges_prob: probability that a stochastic region's shapes are centred on edge
      pixels that the edit changes (the example's own edges for remove, the donor's for
      replace and merge) rather than on uniformly drawn pixels.
    on_object: keep stochastic regions on the object: the region map's labels (non-zero)
      mark it, shapes are centred on it and cut to it (when the map marks anything). Semantic
      regions are on it already. `infer.Generator` first clears the labels of the backdrop
      (`af_jax.ops.foreground`). False = the paper (shapes anywhere).
  """
  semantic_prob: float = 0.5
  max_semantic_regions: int = 2
  min_region_frac: float = 0.002
  num_region_labels: int = 256
  shape_kinds: tuple[str, ...] = SHAPE_KINDS
  num_shapes: tuple[int, int] = (1, 3)
  shape_size: tuple[float, float] = (0.05, 0.3)
  aspect_ratio: tuple[float, float] = (0.3, 3.0)
  polygon_vertices: tuple[int, int] = (4, 8)
  polygon_min_radius: float = 0.6
  edit_op_probs: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
  donor_shift: float = 0.25
  centre_on_edges_prob: float = 0.0
  on_object: bool = False

  def __post_init__(self):
    def fail(field, expected):
      raise ValueError(f'ManipulateConfig.{field} must be {expected}, got {getattr(self, field)!r}')

    if not 0 <= self.semantic_prob <= 1:
      fail('semantic_prob', 'in [0, 1]')
    if self.max_semantic_regions < 1:
      fail('max_semantic_regions', '>= 1')
    if not 0 <= self.min_region_frac < 1:
      fail('min_region_frac', 'in [0, 1)')
    if self.num_region_labels < 2:
      fail('num_region_labels', '>= 2')
    if not self.shape_kinds or any(k not in SHAPE_KINDS for k in self.shape_kinds):
      fail('shape_kinds', f'a non-empty tuple drawn from {SHAPE_KINDS}')
    if not 1 <= self.num_shapes[0] <= self.num_shapes[1]:
      fail('num_shapes', '(low, high) with 1 <= low <= high')
    if not 0 < self.shape_size[0] <= self.shape_size[1]:
      fail('shape_size', '(low, high) with 0 < low <= high')
    if not 0 < self.aspect_ratio[0] <= self.aspect_ratio[1]:
      fail('aspect_ratio', '(low, high) with 0 < low <= high')
    if not 3 <= self.polygon_vertices[0] <= self.polygon_vertices[1]:
      fail('polygon_vertices', '(low, high) with 3 <= low <= high')
    if not 0 < self.polygon_min_radius <= 1:
      fail('polygon_min_radius', 'in (0, 1]')
    probs = self.edit_op_probs
    if len(probs) != len(EDIT_OPS) or min(probs) < 0 or sum(probs) <= 0:
      fail('edit_op_probs', f'{len(EDIT_OPS)} non-negative numbers with a positive sum')
    if not 0 <= self.donor_shift <= 1:
      fail('donor_shift', 'in [0, 1]')
    if not 0 <= self.centre_on_edges_prob <= 1:
      fail('centre_on_edges_prob', 'in [0, 1]')


@functools.partial(jax.jit, static_argnames=('config',))
def manipulate_edges(key: jax.Array, edges: jax.Array, regions: jax.Array,
                     donor_edges: jax.Array | None = None,
                     config: ManipulateConfig = ManipulateConfig()
                     ) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
  """Edits each edge map inside a randomly selected region.

  Args:
    key: PRNG key.
    edges: float [B, H, W, 1] edge maps in [0, 1].
    regions: integer [B, H, W, 1] label maps (0 background, 1..K candidate regions).
    donor_edges: optional float [B, H, W, 1] donors for replace/merge; by default
      another example of the batch (see the module docstring).
    config: the rules (static).

  Returns:
    (new_edges [B, H, W, 1] in the dtype of `edges`, region_mask float32
    [B, H, W, 1] in {0, 1}, info) with info = {'region_kind': int32 [B]
    (index into REGION_KINDS), 'edit_op': int32 [B] (index into EDIT_OPS)}.
  """
  _check_inputs(edges, regions, donor_edges)
  donor_key, example_key = jax.random.split(key)
  if donor_edges is None:
    donor_edges = _batch_donors(donor_key, edges)
  keys = jax.random.split(example_key, edges.shape[0])
  manipulate_each = jax.vmap(functools.partial(_manipulate_one, config=config))
  new_edges, mask, region_kind, edit_op = manipulate_each(
      keys, edges, regions, donor_edges.astype(edges.dtype))
  return new_edges, mask, {'region_kind': region_kind, 'edit_op': edit_op}


def _check_inputs(edges, regions, donor_edges):
  if edges.ndim != 4 or edges.shape[-1] != 1:
    raise ValueError(f'manipulate_edges: edges must be [B, H, W, 1], got shape {list(edges.shape)}')
  if regions.shape != edges.shape:
    raise ValueError(f'manipulate_edges: regions must have the shape of edges {list(edges.shape)}, '
                     f'got {list(regions.shape)}')
  if not jnp.issubdtype(regions.dtype, jnp.integer):
    raise ValueError(f'manipulate_edges: regions must be an integer label map, '
                     f'got dtype {regions.dtype}')
  if donor_edges is not None and donor_edges.shape != edges.shape:
    raise ValueError(f'manipulate_edges: donor_edges must have the shape of edges '
                     f'{list(edges.shape)}, got {list(donor_edges.shape)}')


def _batch_donors(key, edges):
  """Another example's edges for each example: a random cyclic permutation has no fixed point."""
  batch_size = edges.shape[0]
  if batch_size == 1:
    return edges[:, ::-1, ::-1]
  order = jax.random.permutation(key, batch_size)
  donor_index = jnp.zeros(batch_size, jnp.int32).at[order].set(jnp.roll(order, -1))
  return edges[donor_index]


def _manipulate_one(key, edges, regions, donor, *, config):
  semantic_key, stochastic_key, choice_key = jax.random.split(key, 3)
  semantic, has_candidates = _semantic_mask(semantic_key, regions[..., 0], config)
  kind_draw, op_draw, centre_draw, *shift_draws = jax.random.uniform(choice_key, (5,))

  # Thresholds in float64 so that ops with probability 0 get exactly empty intervals.
  cumulative = np.cumsum(config.edit_op_probs)
  thresholds = jnp.asarray(cumulative[:-1] / cumulative[-1], jnp.float32)
  edit_op = jnp.sum(op_draw >= thresholds).astype(jnp.int32)
  limits = [int(config.donor_shift * n) for n in edges.shape[:2]]
  offsets = [_uniform_int(draw, -limit, limit) for draw, limit in zip(shift_draws, limits)]
  donor = jnp.roll(donor, offsets, axis=(0, 1))
  # Edges the edit would change: remove deletes the own edges, replace and merge bring the
  # donor's. Centring shapes there makes the edit visible in the edge map.
  changed = jnp.where(edit_op == 0, edges, donor)[..., 0]
  weights = jnp.ones_like(changed)
  if config.on_object:
    on_object = regions[..., 0] > 0
    weights = jnp.where(on_object.any(), on_object.astype(changed.dtype), weights)
    changed = changed * weights
  on_edges = (centre_draw < config.centre_on_edges_prob) & (changed.max() > 0)
  stochastic = _stochastic_mask(stochastic_key, *edges.shape[:2], config,
                                centre_weights=jnp.where(on_edges, changed, weights))
  if config.on_object:  # Cut to the object; its centre is on it, so it is never empty.
    stochastic = stochastic & (weights > 0)
  use_semantic = (kind_draw < config.semantic_prob) & has_candidates
  mask = jnp.where(use_semantic, semantic, stochastic)[..., None]

  edited = jnp.stack([jnp.zeros_like(edges), donor, jnp.maximum(edges, donor)])[edit_op]
  new_edges = jnp.where(mask, edited, edges)
  region_kind = jnp.where(use_semantic, 0, 1).astype(jnp.int32)
  return new_edges, mask.astype(jnp.float32), region_kind, edit_op


def _uniform_int(draw, low, high):
  """Maps a Uniform[0, 1) draw to a uniform integer in [low, high]."""
  return jnp.minimum(low + jnp.floor(draw * (high - low + 1)), high).astype(jnp.int32)


def _semantic_mask(key, labels, config):
  """Union of up to `max_semantic_regions` random candidate labels, and whether any exist."""
  num_labels = config.num_region_labels
  counts = jnp.zeros(num_labels, jnp.int32).at[labels.ravel()].add(1, mode='drop')
  min_count = max(1, math.ceil(config.min_region_frac * labels.size))
  candidate = (counts >= min_count) & (jnp.arange(num_labels) > 0)
  draws = jax.random.uniform(key, (num_labels + 1,))
  num_chosen = _uniform_int(draws[0], 1, config.max_semantic_regions)
  # Random scores and top-k draw distinct candidates uniformly; non-candidates score -inf.
  scores = jnp.where(candidate, draws[1:], -jnp.inf)
  top_scores, top_labels = jax.lax.top_k(scores, min(config.max_semantic_regions, num_labels))
  chosen = jnp.isfinite(top_scores) & (jnp.arange(top_labels.shape[0]) < num_chosen)
  mask = ((labels[..., None] == top_labels) & chosen).any(-1)
  return mask, candidate.any()


def _stochastic_mask(key, height, width, config, centre_weights):
  """Union of random shapes; every shape contains its centre pixel, so the mask is never empty.

  Centres are drawn with probability proportional to `centre_weights` [H, W] (Gumbel-max).
  """
  max_shapes = config.num_shapes[1]
  max_vertices = config.polygon_vertices[1]
  # One draw for all parameters: each separate PRNG call adds noticeably to compile time.
  count_draw = jax.random.uniform(jax.random.fold_in(key, 0))
  draws = jax.random.uniform(key, (7 + max_vertices, max_shapes))
  count = _uniform_int(count_draw, *config.num_shapes)
  gumbel = jax.random.gumbel(jax.random.fold_in(key, 1), (max_shapes, height * width))
  flat = jnp.argmax(jnp.log(centre_weights.reshape(-1) + 1e-30) + gumbel, axis=-1)
  centre = jnp.stack([flat // width, flat % width], -1).astype(jnp.float32)
  low, high = config.shape_size
  size = min(height, width) * (low + (high - low) * draws[2])
  low, high = map(math.log, config.aspect_ratio)
  log_aspect = low + (high - low) * draws[3]
  half_extent = 0.5 * size[:, None] * jnp.exp(0.5 * jnp.stack([-log_aspect, log_aspect], -1))
  angle = math.pi * draws[4]
  kind_ids = jnp.array([SHAPE_KINDS.index(k) for k in config.shape_kinds])
  kind = kind_ids[_uniform_int(draws[5], 0, len(config.shape_kinds) - 1)]
  vertices = _uniform_int(draws[6], *config.polygon_vertices)
  radii = config.polygon_min_radius + (1 - config.polygon_min_radius) * draws[7:].T

  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32), indexing='ij')
  shapes = jax.vmap(_rasterize_shape, in_axes=(0, 0, 0, 0, 0, 0, None, None))(
      centre, half_extent, angle, kind, vertices, radii, rows, cols)
  return (shapes & (jnp.arange(max_shapes) < count)[:, None, None]).any(0)


def _rasterize_shape(centre, half_extent, angle, kind, num_vertices, radii, rows, cols):
  """Pixels inside one shape, tested in its own frame where it fits the unit square [-1, 1]^2."""
  d_row, d_col = rows - centre[0], cols - centre[1]
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  u = (cos * d_col + sin * d_row) / half_extent[1]
  v = (cos * d_row - sin * d_col) / half_extent[0]
  ellipse = u * u + v * v <= 1
  rectangle = jnp.maximum(jnp.abs(u), jnp.abs(v)) <= 1
  # Star-shaped polygon, vertex k at angle 2 pi k / n and radius radii[k]: a
  # pixel is outside when, in the sector between vertices k and k + 1 that
  # holds it, it lies beyond the edge joining them.
  index = jnp.arange(radii.shape[0])
  direction = jnp.stack([jnp.cos(2 * math.pi * index / num_vertices),
                         jnp.sin(2 * math.pi * index / num_vertices)], -1)
  following = jnp.where(index + 1 < num_vertices, index + 1, 0)
  start, end = radii[:, None] * direction, (radii[:, None] * direction)[following]
  cross = lambda a, b_u, b_v: a[:, 0, None, None] * b_v - a[:, 1, None, None] * b_u
  in_sector = ((cross(direction, u, v) >= 0) & (cross(direction[following], u, v) < 0)
               & (index < num_vertices)[:, None, None])
  beyond_edge = cross(end - start, u - start[:, 0, None, None], v - start[:, 1, None, None]) < 0
  polygon = ~(in_sector & beyond_edge).any(0)
  return jnp.stack([ellipse, rectangle, polygon])[kind]
