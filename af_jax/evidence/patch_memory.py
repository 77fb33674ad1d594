"""Evidence that needs no alignment: how far each pixel's patch is from its category's normal patches.

The nearest-patch floor (`af_jax.evidence.baseline.NearestPatchBaseline`, DESIGN.md B.11) shows that on
parts that are rotated or shifted, the distance of a pixel's raw 7x7x3 patch to the nearest
patch of the normal training images localizes defects far better than per-pixel statistics.
With `blaze.patch_guide` on, BlazeDetector gets that distance as one extra input channel (next
to the per-pixel deviation of `blaze.reference`), and learns from its synthetic anomalies how
far to trust it; both channels also reach the heatmap's last layer, as every guide input does.

The memory. Per category, `blaze.patch_memory` patches of its normal training images, each
image seen through one random draw of the Blaze stage's augmentation (flips, scale, shift):
training shows the network augmented images, so their normal patches must be in the memory,
or every augmented normal pixel would look far from normal. How they are chosen is
`blaze.patch_selection`:
  'random'   drawn uniformly from the augmented images' patches.
  'coreset'  greedy k-centre (PatchCore's coreset) over a pool of `blaze.patch_pool`
             candidates drawn from every image's patches both as stored (what a test image
             looks like) and augmented (what training shows): each pick is the candidate
             farthest from those already kept, so rare normal patches (a reflection, a thread
             of an edge) are kept rather than a thousandth copy of the flat background. The
             distances are measured in a random projection to `CORESET_DIMENSIONS`.
Each patch remembers the image it came from: a training example is compared only with the
patches of its category's other images (leave one out), as an unseen test image is.

The channel. d / scale, where `scale` is the median nearest distance of normal patches held
out of the memory (per category, so one value means "this many times the typical normal
distance" in every category); the network gets r / (1 + r) scaled to [-1, 1], bounded and
ordered. The search is a chunked matmul in JAX (`nearest_distances`), on the step's device.

The evidence memory. The network needs augmented patches in its memory; the evidence it is
weighed against (`af_jax.evidence.trust`, `blaze.evidence_memory`) does not: a test image
looks like a stored normal image, so the detector's patch evidence searches a second memory, a
coreset of `blaze.evidence_memory` of `blaze.evidence_pool` patches of the stored images only
(`build(..., evidence=True)`). Augmented patches are far from every stored patch, so a
uniform draw of them spends most of a memory on what no test image shows. Per real part at
64 px (the patch distance alone, blurred 1 px; px-AUROC / AUPRO / image AUROC):

  memory (patches per category)        bottle              metal_plate         magnetic tile
  8192 random augmented (the network)  74.3 / 45.8 / 78.3  94.8 / 68.8 / 95.4  62.1 / 54.1 / 52.9
  8192 random stored                   84.6 / 61.5 / 89.3  95.0 / 70.8 / 96.9  62.1 / 53.4 / 53.2
  80,000 random stored (B.11's floor)  90.8 / 73.9 / 93.9  95.9 / 76.9 / 99.2  62.4 / 55.8 / 55.8
  8192 coreset of 131072 stored        92.1 / 78.6 / 94.6  95.2 / 78.0 / 100   61.8 / 57.9 / 56.3

so the coreset finds more than the floor's ten times larger memory, at the search cost of
the network's. A smaller pool (32768) lost 1-6 AUPRO points, a smaller memory (4096) 0-3.

Files: a Blaze run keeps the network's memory in `<workdir>/patch_memory.npz`, written before its
first step, and the evidence memory in `<workdir>/evidence_memory.npz`, written when the
evidence trust is fitted, categories in the order of its references
(`af_jax.evidence.reference`); inference compares each image with the memories of the category
whose reference it uses.
"""

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from af_jax import config_dataclasses
from af_jax import files
from af_jax import per_image
from af_jax import pixels
from af_jax.ops import augment

FILE_NAME = "patch_memory.npz"
EVIDENCE_FILE_NAME = "evidence_memory.npz"
CHANNELS = 1
SCALE_SAMPLES = 2048  # Held-out normal patches per category that set its distance scale.
MEMORY_BLOCK = 2048   # Memory patches per matmul block: bounds the distance matrix's size.
# Query patches per tile: 32 MiB of distances per memory block. Tiles of 256 (2 MiB, in cache)
# ran 20% slower on 2 CPU cores (64 and 256 px): the matmuls were too small to pay their setup.
QUERY_ROWS = 4096
SELECTIONS = ("random", "coreset")
# The coreset's random projection of the 147 numbers of a 7x7x3 patch. 64 dimensions varied
# less from draw to draw alone (four draws, 64 px: metal_plate AUPRO 78.0-78.8 against
# 74.9-79.3, bottle 78.7-79.9 against 77.9-79.5), but refitted end to end the detector passed
# 7 of 12 real fits against 8 and kept its evidence in 10 against 11: the pool's draw moves a
# part more than the projection does. The exact 147 were no better than 64, at twice the time.
CORESET_DIMENSIONS = 32


def image_patches(unit_images, patch_size: int):
  """[B, H, W, patch_size**2 * C] patches of [B, H, W, C] images (numpy 'reflect' padding),
  flattened rows, then columns, then channels, as `af_jax.evidence.baseline.patches`; jittable."""
  r = patch_size // 2
  padded = jnp.pad(unit_images, ((0, 0), (r, r), (r, r), (0, 0)), mode="reflect")
  h, w = unit_images.shape[1:3]
  shifted = [padded[:, dy:dy + h, dx:dx + w] for dy in range(patch_size)
             for dx in range(patch_size)]
  return jnp.concatenate(shifted, axis=-1)


def nearest_distances(queries, memory, memory_sources, which, exclude,
                      pixel_levels: bool = False, query_levels: bool = False):
  """float32 [B, Q]: L2 distance of each query patch [B, Q, D] to its nearest patch of its
  category's memory (`memory` [C, M, D] of category `which` [B]) whose source
  (`memory_sources` [C, M]) is not `exclude` [B] (-1 excludes nothing), all patches in
  [0, 1]; jittable. M must be a multiple of `MEMORY_BLOCK` or smaller than it.

  Squared distances are |m|^2 - 2 q.m + |q|^2, the first two from one matmul per tile of
  `QUERY_ROWS` queries per image by one memory block (the memory operand carries -2 m and
  |m|^2, the query operand q and ones), the minimum kept over the blocks; on a CPU image
  after image (`per_image`). A tile is bounded: all of a batch's queries at once against a
  block made a [B, Q, MEMORY_BLOCK] matrix (4 GiB at 256 px, batch 32) that made a batch
  slower per image than one image. Patches are centred on 0.5 first: distances do not
  change, but the norms whose difference float32 takes shrink 4x, so less of it cancels.

  `pixel_levels`: every patch value is a whole 8-bit level k / 255 (patches of uint8 images,
  as the evidence memory's and a test image's are; others are rounded to the nearest). They
  are then searched as k - 127.5, which bfloat16 holds exactly, so the matmul multiplies in
  bfloat16 and sums in float32: the same distances up to the order of the sums, 3x faster
  on a CPU with AMX or AVX512-BF16 (4096 x 2048 x 147: 3.4 against 10.1 ms on this one).

  `query_levels`: only the queries are whole 8-bit levels (a test image's patches against the
  network's memory of augmented, interpolated patches). Both are then measured in levels from
  the category memory's mean patch rounded to a whole level (queries: integers within +-255,
  exact in bfloat16), and each memory value is split into two bfloat16 terms (its nearest
  bfloat16 and what remains) that each query level multiplies: every product is exact and the
  memory keeps 16 significant bits. Closer to the exact distances than the float32 search
  (metal_plate's test images at 64 px, against float64: largest error 2.6e-4 against 3.5e-4,
  the float32 search's norms cancelling more), and 1.4-1.6x faster on this CPU.

  Gray patches (three equal channels, D a multiple of 3, colour interleaved as
  `image_patches` lays them out) against a gray memory are searched in one channel, the
  squared distance 3x that channel's: the same distances, a third of the work (a grayscale
  camera's part, as the magnetic tile). Which way a batch goes is decided on its values (per
  image on a CPU), so a colour image is never searched in one channel.
  """
  q, d = queries.shape[1:]
  m = memory.shape[1]
  block = min(m, MEMORY_BLOCK)
  rows = min(q, QUERY_ROWS)
  tiles = -(-q // rows)

  split = query_levels and not pixel_levels
  if pixel_levels:  # In levels: k - 127.5, half-integers of at most 8 significant bits.
    unit, dtype = 255.0, jnp.bfloat16
    centre = centre_memory = lambda x: jnp.round(x * 255.0) - 127.5
  elif split:  # In levels, centred later on a whole level per value: integers in +-255.
    unit, dtype = 255.0, jnp.bfloat16
    centre, centre_memory = lambda x: jnp.round(x * 255.0), lambda x: x * 255.0
  else:
    unit, dtype = 1.0, jnp.float32
    centre = centre_memory = lambda x: x - 0.5

  def memory_operand(blocks, left_out):
    """Memory patches [..., M, D], those `left_out` never nearest, as `folded_memory`: in
    bfloat16 split into high and low terms for 8-bit queries (`query_levels`)."""
    norms = jnp.where(left_out, jnp.inf, jnp.sum(blocks * blocks, -1))
    high = blocks.astype(dtype)
    return folded_memory(
        [high, (blocks - high.astype(blocks.dtype)).astype(dtype)] if split else [high], norms)

  def nearest_squared(queries, blocks, left_out):
    """[b, Q]: squared distance of queries [b, Q, D'] to the nearest of blocks [b, M, D']
    not `left_out` [b, M], in tiles of queries by memory blocks."""
    b, _, dims = queries.shape
    queries = jnp.pad(queries, ((0, 0), (0, tiles * rows - q), (0, 0)))
    queries = queries.reshape(b, tiles, rows, dims).swapaxes(0, 1)
    blocks = memory_operand(blocks, left_out)  # Once, not per tile.
    blocks = blocks.reshape(b, m // block, block, -1).swapaxes(0, 1)

    def tile(x):
      x_operand = folded_queries(x.astype(dtype), copies=2 if split else 1)

      def nearer(best, mem):
        d2 = jnp.einsum("bqd,bmd->bqm", x_operand, mem, precision=jax.lax.Precision.HIGHEST,
                        preferred_element_type=jnp.float32)
        return jnp.minimum(best, jnp.min(d2, -1)), None

      best, _ = jax.lax.scan(nearer, jnp.full(x.shape[:2], jnp.inf, jnp.float32), blocks)
      return best + jnp.sum(x * x, -1)

    return jax.lax.map(tile, queries).swapaxes(0, 1).reshape(b, tiles * rows)[:, :q]

  def search(queries, which, exclude):
    queries, blocks = centre(queries), centre_memory(memory[which])
    if split:  # Around the memory's mean, rounded to a level: smaller terms, exact queries.
      middle = jnp.round(jnp.mean(blocks, 1, keepdims=True))
      queries, blocks = queries - middle, blocks - middle
    left_out = memory_sources[which] == exclude[:, None]
    if d % 3:
      best = nearest_squared(queries, blocks, left_out)
    else:  # Gray patches against a gray memory: one channel of three says it all.
      best = jax.lax.cond(
          _is_gray(queries) & _is_gray(blocks),
          lambda: 3.0 * nearest_squared(queries[..., ::3], blocks[..., ::3], left_out),
          lambda: nearest_squared(queries, blocks, left_out))
    # Rounding can leave it slightly below zero.
    return jnp.sqrt(jnp.maximum(best, 0.0)) / unit

  return per_image.on_cpu(search)(queries, which, exclude)


def folded_memory(terms: list, norms):
  """The memory side of a folded nearest-patch search: -2 times each of its `terms` [..., D]
  (the patches, or a split memory's two bfloat16 parts), then its squared `norms` [...] as
  terms that `folded_queries`' ones multiply: in float32 itself, beside bfloat16 terms three
  bfloat16 terms that hold its float32 exactly; an infinite norm (never the nearest) stays
  infinite. The product is |m|^2 - 2 q.m, so the distance matrix is only read for its
  minimum, not also multiplied and added to: with 8-bit patches in bfloat16 the search was
  bound by that, and runs 1.65x faster (float32 1.1x, a split memory's the same; 4096
  queries x 8192 patches on this CPU)."""
  dtype = terms[0].dtype
  norms = norms[..., None]
  if dtype == jnp.float32:
    norm_terms = [norms]
  else:
    finite = jnp.isfinite(norms)
    rest, norm_terms = jnp.where(finite, norms, 0.0), []
    for _ in range(3):  # float32's 24 significant bits, 8 at a time.
      norm_terms.append(rest.astype(dtype))
      rest = rest - norm_terms[-1].astype(jnp.float32)
    norm_terms[0] = jnp.where(finite, norm_terms[0], jnp.inf).astype(dtype)
  return jnp.concatenate([-2 * t for t in terms] + norm_terms, -1)


def folded_queries(queries, copies: int = 1):
  """The query side of a folded search: queries [..., D] `copies` times (once per memory
  term), then the ones that meet `folded_memory`'s norm terms."""
  ones = jnp.ones(queries.shape[:-1] + (1 if queries.dtype == jnp.float32 else 3,),
                  queries.dtype)
  return jnp.concatenate([queries] * copies + [ones], -1)


def _is_gray(patches):
  """Whether every pixel of patches [..., D] (colour interleaved) has three equal channels."""
  return jnp.all((patches[..., 0::3] == patches[..., 1::3])
                 & (patches[..., 0::3] == patches[..., 2::3]))


def coreset_indices(key, candidates, count: int):
  """int32 [count]: indices of `count` of `candidates` [P, D] chosen by greedy k-centre (each
  the candidate farthest from those chosen before it; the first at random), distances measured
  in a random projection to `CORESET_DIMENSIONS`; jittable with static `count`."""
  project_key, start_key = jax.random.split(key)
  dims = min(CORESET_DIMENSIONS, candidates.shape[1])
  projection = jax.random.normal(project_key, (candidates.shape[1], dims)) / np.sqrt(dims)
  projected = candidates @ projection
  squares = jnp.sum(projected ** 2, -1)
  first = jax.random.randint(start_key, (), 0, candidates.shape[0])

  # |x - y|^2 as |x|^2 - 2 x.y + |y|^2: one matrix-vector product per pick, 1.6x faster on a
  # CPU than subtracting and squaring (the same picks).
  def distances(j):
    return squares - 2 * (projected @ projected[j]) + squares[j]

  def pick(i, carry):
    nearest, chosen = carry
    j = jnp.argmax(nearest).astype(jnp.int32)
    return jnp.minimum(nearest, distances(j)), chosen.at[i].set(j)

  nearest = distances(first)
  chosen = jnp.zeros(count, jnp.int32).at[0].set(first)
  return jax.lax.fori_loop(1, count, pick, (nearest, chosen))[1]


_coreset = jax.jit(coreset_indices, static_argnums=2)


def category_channel(signed_images, which, arrays, patch_size: int, stride: int = 1,
                     exclude=None, pixel_levels: bool = False, query_levels: bool = False):
  """The network's patch-distance input [B, H, W, 1] in [-1, 1] for images [B, H, W, 3] in
  [-1, 1], each against the memory of its category `which` [B] (int) of `arrays`
  (`PatchMemory.arrays()`), leaving out the patches of source `exclude` [B] (the image's own
  index among the category's normal images; default None: an unseen image, nothing left
  out); jittable. With `stride` s > 1 only every s-th pixel of every s-th row is searched
  (s^2 times less work) and the map is resized back bilinearly. `pixel_levels`: the images
  and the memory hold whole 8-bit levels (`nearest_distances`), as the evidence's do;
  `query_levels`: the images do (uint8 images at inference), the memory need not."""
  patches, sources, scale = arrays
  if exclude is None:
    exclude = jnp.full(which.shape, -1, jnp.int32)
  b, h, w, _ = signed_images.shape
  queries = image_patches(pixels.signed_to_unit(signed_images), patch_size)
  queries = queries[:, stride // 2::stride, stride // 2::stride]
  grid = queries.shape[1:3]
  distances = nearest_distances(queries.reshape(b, grid[0] * grid[1], -1), patches, sources,
                                which, exclude, pixel_levels, query_levels
                                ).reshape(b, *grid, 1)
  if stride > 1:
    distances = jax.image.resize(distances, (b, h, w, 1), "linear")
  ratio = distances / scale[which][:, None, None, None]
  return 2.0 * ratio / (1.0 + ratio) - 1.0


@dataclasses.dataclass(frozen=True)
class PatchMemory:
  """Named per-category memories: patches float32 [C, M, D] in [0, 1], the index of the image
  each came from int32 [C, M], and each category's distance scale float32 [C]."""
  names: tuple[str, ...]
  patches: np.ndarray
  sources: np.ndarray
  scale: np.ndarray

  @property
  def patch_size(self) -> int:
    return int(round((self.patches.shape[-1] // 3) ** 0.5))

  def arrays(self) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(patches, sources, scale) as device arrays."""
    return jnp.asarray(self.patches), jnp.asarray(self.sources), jnp.asarray(self.scale)

  def with_category(self, name: str, other: "PatchMemory") -> "PatchMemory":
    """These memories plus (or with a new) `name`, the one category of `other`."""
    if other.patches.shape[1:] != self.patches.shape[1:]:
      raise ValueError(f"a patch memory of shape {other.patches.shape[1:]} does not match the "
                       f"run's {self.patches.shape[1:]}")
    keep = [i for i, n in enumerate(self.names) if n != name]
    return PatchMemory(tuple(self.names[i] for i in keep) + (name,),
                       np.concatenate([self.patches[keep], other.patches]),
                       np.concatenate([self.sources[keep], other.sources]),
                       np.concatenate([self.scale[keep], other.scale]))

  def save(self, workdir, file_name: str = FILE_NAME) -> pathlib.Path:
    """Writes `<workdir>/<file_name>` atomically (a rename)."""
    return files.write_npz(pathlib.Path(workdir) / file_name, names=np.asarray(self.names),
                           patches=self.patches, sources=self.sources, scale=self.scale)


def build(config, images_by_category: dict, counts: dict, evidence: bool = False
          ) -> PatchMemory:
  """The memories of a Blaze run of `config` for categories `name -> iterable of uint8
  [S, S, 3] normal images` (read once, in order; `counts[name]` of them), as the module
  docstring describes: the network's (`blaze.patch_memory`, `blaze.patch_size`,
  `blaze.patch_selection`, `blaze.patch_pool`, augmentation and seed), or with `evidence` the
  evidence's (`blaze.evidence_memory` of `blaze.evidence_pool` stored patches, coreset)."""
  blaze = config.blaze
  if evidence:
    size, selection, pool, augment_config = (blaze.evidence_memory, "coreset",
                                             blaze.evidence_pool, None)
  else:
    augment_config = config_dataclasses.from_config(augment.AugmentConfig, config.augment)
    # .get: runs saved before these fields existed drew at random.
    size, selection, pool = (blaze.patch_memory, blaze.get("patch_selection", "random"),
                             blaze.get("patch_pool", 0))
  field = "blaze.evidence_memory" if evidence else "blaze.patch_memory"
  built = [_build_category(name, images, counts[name], size, blaze.patch_size, selection, pool,
                           augment_config, config.seed + i, field)
           for i, (name, images) in enumerate(images_by_category.items())]
  return PatchMemory(tuple(images_by_category), np.stack([b[0] for b in built]),
                     np.stack([b[1] for b in built]), np.asarray([b[2] for b in built],
                                                                 np.float32))


def _build_category(name, images, count, memory_size, patch_size, selection, pool,
                    augment_config, seed, field):
  """(patches [M, D], sources [M], scale) of one category; `augment_config` None: of the
  stored images only. `field`: the config field of `memory_size`, for errors."""
  rng = np.random.default_rng(seed)
  # Each image's candidate patches: augmented ('random'), as stored then augmented
  # ('coreset'), or as stored (no augmentation).
  if augment_config is None:
    views = ("stored",)
  else:
    views = ("augmented",) if selection == "random" else ("stored", "augmented")
    warp = _augment_fn(augment_config)
  first = None
  chosen = held_out = None
  patches, sources, queries, query_sources = [], [], [], []
  for i, image in enumerate(images):
    image = pixels.check_uint8_rgb(image, batch=False)
    if first is None:
      first = image.shape
      per_image = len(views) * first[0] * first[1]
      total = count * per_image
      short = total < memory_size + SCALE_SAMPLES
      # The evidence memory of a part with few images keeps each of their stored patches.
      if short and (augment_config is not None or total <= SCALE_SAMPLES):
        raise ValueError(f"{name}: {count} normal images of {first[0]}x{first[1]} px give "
                         f"{total} patches; the patch memory needs {memory_size} plus "
                         f"{SCALE_SAMPLES} held out (lower {field} or add images)")
      keep = (total - SCALE_SAMPLES if short else memory_size if selection == "random"
              else min(max(pool, memory_size), total - SCALE_SAMPLES))
      drawn = rng.choice(total, keep + SCALE_SAMPLES, replace=False)
      chosen, held_out = np.sort(drawn[:keep]), np.sort(drawn[keep:])
    if image.shape != first:
      raise ValueError(f"{name}: normal image {i} has shape {image.shape}, the first {first}")
    unit = pixels.uint8_to_unit(image)[None]
    seen = [jnp.asarray(unit) if view == "stored"
            else warp(jax.random.fold_in(jax.random.PRNGKey(seed), i), unit) for view in views]
    flat = np.concatenate([np.asarray(image_patches(v, patch_size)).reshape(-1, 3 * patch_size ** 2)
                           for v in seen])
    for picked, out, out_sources in ((chosen, patches, sources),
                                     (held_out, queries, query_sources)):
      mine = picked[(picked >= i * per_image) & (picked < (i + 1) * per_image)] - i * per_image
      out.append(flat[mine])
      out_sources.append(np.full(len(mine), i, np.int32))
  if first is None or i + 1 != count:
    raise ValueError(f"{name}: expected {count} normal images, read "
                     f"{0 if first is None else i + 1}")
  memory, memory_sources = np.concatenate(patches), np.concatenate(sources)
  if selection == "coreset" and len(memory) > memory_size:
    # The images' warps use keys 0..count-1 of this seed; the coreset takes the next.
    picks = np.asarray(_coreset(jax.random.fold_in(jax.random.PRNGKey(seed), count),
                                jnp.asarray(memory), memory_size))
    memory, memory_sources = memory[picks], memory_sources[picks]
  elif len(memory) < memory_size:  # Repeated up to the memory's size: no distance changes.
    fill = np.resize(np.arange(len(memory)), memory_size)
    memory, memory_sources = memory[fill], memory_sources[fill]
  held = np.concatenate(queries)
  distances = nearest_distances(jnp.asarray(held)[None], jnp.asarray(memory)[None],
                                jnp.asarray(memory_sources)[None], jnp.asarray([0]),
                                jnp.asarray([-1]),  # Held-out patches are not in the memory.
                                pixel_levels=augment_config is None)
  scale = float(np.median(np.asarray(distances)))
  return memory.astype(np.float32), memory_sources, max(scale, 1e-6)


@functools.lru_cache(maxsize=8)  # One compile per augmentation, not per category.
def _augment_fn(config: augment.AugmentConfig):
  @jax.jit
  def warp(key, image):
    transform = augment.sample_transform(key, 1, image.shape[1], image.shape[2], config)
    return augment.apply_transform(transform, image, kind="image")
  return warp


def load(workdir, file_name: str = FILE_NAME) -> PatchMemory:
  """The patch memory a Blaze run saved (the network's, or `EVIDENCE_FILE_NAME`: the
  evidence's); a clear error when absent or unreadable."""
  path = pathlib.Path(workdir) / file_name
  why = ("the run was trained with blaze.patch_guide on and saved its patch memory there "
         "before its first step") if file_name == FILE_NAME else (
         "the run was trained with blaze.evidence_memory and saved it there when it fitted "
         "its evidence trust")
  f = files.read_npz(path, what="a patch memory file", why_here=why,
                     fields=("names", "patches", "sources", "scale"))
  memory = PatchMemory(tuple(str(n) for n in f["names"]), f["patches"], f["sources"],
                       f["scale"])
  c = len(memory.names)
  if (memory.patches.ndim != 3 or memory.patches.shape[0] != c
      or memory.sources.shape != memory.patches.shape[:2] or memory.scale.shape != (c,)):
    raise ValueError(f"{path} holds inconsistent shapes: {c} names, patches "
                     f"{memory.patches.shape}, sources {memory.sources.shape}, scale "
                     f"{memory.scale.shape}")
  return memory
