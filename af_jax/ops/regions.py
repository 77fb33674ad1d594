"""Candidate semantic regions: a label map per image for semantic region selection (paper Sec. 3.3).

The paper segments each training image with SAM, then refines the over-segmentation by removing
the background, grouping small regions and merging overlapping ones into a map of candidate
regions. SAM is not part of af_jax: masks made offline (SAM or any other segmenter) are read with
`load_region_masks` and passed to `propose_regions(masks=...)`. Without masks, an unsupervised
colour segmentation takes SAM's place.

Unsupervised segmentation (`color_segments`), OpenCV/numpy/scipy only:
  1. mean-shift filtering (`cv2.pyrMeanShiftFiltering`, spatial radius `smooth_spatial`, colour
     radius `smooth_color`) flattens texture and noise into patches of near-constant colour;
  2. k-means (`num_colors` clusters, seeded k-means++ with `seed`) on the CIE Lab colours of
     those patches (OpenCV's 8-bit Lab scale); clusters whose centres are closer than
     `color_merge` are joined, so that images with fewer colours are not split arbitrarily;
  3. each 8-connected component of each colour cluster is one segment.

User masks first become a label map (`paint_masks`): masks linked by a chain of pairwise
intersection over union >= `merge_iou` are merged into their union (SAM returns near-duplicate
masks at several granularities), then the masks are painted largest first, so that parts nested in
a larger mask (a cap on a bottle) stay visible on top of it. Unsupervised segments are disjoint.

Refinement (`refine_segments`), the same for both, in order:
  1. Remove the background: a segment covering at least `border_frac` of the image border pixels,
     or more than `max_area_frac` of the image, is background (objects are photographed in front
     of a backdrop that dominates the border; texture categories lose only their largest patches).
  2. Group small regions: every region smaller than `min_area_frac` of the image, smallest first,
     joins the neighbour (background included) with which it shares the longest boundary, so
     specks in the backdrop vanish and specks inside a part join that part.
  3. Keep the `max_regions` largest regions; the rest become background. Labels 1..K follow
     decreasing area.
"""

import heapq
import pathlib

import cv2
import numpy as np
from scipy import sparse
from scipy.cluster import vq
from scipy.sparse import csgraph

PNG_SUFFIX = ".png"


def propose_regions(image: np.ndarray, *, max_regions: int = 8,
                    masks: list[np.ndarray] | None = None, num_colors: int = 6,
                    color_merge: float = 10, smooth_spatial: int = 8, smooth_color: int = 24,
                    seed: int = 0, merge_iou: float = 0.6, border_frac: float = 0.3,
                    max_area_frac: float = 0.7, min_area_frac: float = 0.01) -> np.ndarray:
  """Candidate semantic regions of one image as a label map.

  Args:
    image: uint8 RGB [H, W, 3].
    max_regions: at most this many regions (K), 1..255.
    masks: optional segmentation masks of this image (bool [H, W] each, e.g. from SAM); None runs
      the unsupervised colour segmentation.
    num_colors, color_merge, smooth_spatial, smooth_color, seed: the unsupervised
      segmentation (module docstring).
    merge_iou: overlap merging of user masks (module docstring).
    border_frac, max_area_frac, min_area_frac: refinement (module docstring).

  Returns:
    uint8 [H, W]: 0 = background, 1..K candidate regions by decreasing area.
  """
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
  if not 1 <= max_regions <= 255:
    raise ValueError(f"max_regions must be in 1..255 (uint8 labels), got {max_regions}")
  if masks is None:
    segments = color_segments(image, num_colors=num_colors, color_merge=color_merge,
                              smooth_spatial=smooth_spatial, smooth_color=smooth_color, seed=seed)
  else:
    segments = paint_masks(masks, image.shape[:2], merge_iou=merge_iou)
  return refine_segments(segments, max_regions=max_regions, border_frac=border_frac,
                         max_area_frac=max_area_frac, min_area_frac=min_area_frac)


def color_segments(image: np.ndarray, *, num_colors: int = 6, color_merge: float = 10,
                   smooth_spatial: int = 8, smooth_color: int = 24, seed: int = 0) -> np.ndarray:
  """Segments of a uint8 RGB image as an int32 label map: connected patches of similar colour."""
  smooth = cv2.pyrMeanShiftFiltering(image, smooth_spatial, smooth_color)
  lab = cv2.cvtColor(smooth, cv2.COLOR_RGB2LAB).reshape(-1, 3)
  distinct = len(np.unique(lab.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1])))
  num_colors = min(num_colors, distinct)  # k-means++ needs as many distinct colours as clusters
  centres, clusters = vq.kmeans2(lab.astype(np.float32), num_colors, minit="++", seed=seed)
  # A fixed k splits images with fewer colours arbitrarily: join clusters of near-equal colour.
  close = np.linalg.norm(centres[:, None] - centres[None], axis=-1) < color_merge
  _, color_of_cluster = csgraph.connected_components(sparse.csr_matrix(close), directed=False)
  colors = color_of_cluster[clusters].reshape(image.shape[:2])
  segments = np.zeros(image.shape[:2], np.int32)
  for color in range(colors.max() + 1):
    count, components = cv2.connectedComponents((colors == color).astype(np.uint8),
                                                connectivity=8, ltype=cv2.CV_32S)
    inside = components > 0
    segments[inside] = components[inside] + segments.max()
  return segments


def paint_masks(masks: list[np.ndarray], shape: tuple[int, int], *,
                merge_iou: float = 0.6) -> np.ndarray:
  """Overlapping bool masks -> int32 label map, after merging near-duplicate masks.

  Masks linked by a chain of pairwise IoU >= `merge_iou` become their union; the remaining masks
  are painted largest first, so that parts nested in a larger mask stay visible on top of it.
  """
  masks = [_check_mask(mask, shape, index) for index, mask in enumerate(masks)]
  masks = merge_overlapping(masks, merge_iou)
  segments = np.zeros(shape, np.int32)
  for label, mask in enumerate(sorted(masks, key=np.count_nonzero, reverse=True), 1):
    segments[mask] = label
  return segments


def merge_overlapping(masks: list[np.ndarray], merge_iou: float) -> list[np.ndarray]:
  """Unions of the groups of masks linked by pairwise intersection over union >= `merge_iou`."""
  masks = [mask for mask in masks if mask.any()]
  if not masks:
    return []
  # Sparse pixel sets keep the pairwise intersections cheap for many mostly disjoint masks.
  pixels = sparse.csr_matrix(np.stack([mask.ravel() for mask in masks]), dtype=np.int32)
  intersection = (pixels @ pixels.T).toarray()
  area = np.diag(intersection)
  iou = intersection / (area[:, None] + area[None, :] - intersection)
  _, group = csgraph.connected_components(sparse.csr_matrix(iou >= merge_iou), directed=False)
  return [np.logical_or.reduce([m for m, g in zip(masks, group) if g == index])
          for index in range(group.max() + 1)]


def refine_segments(segments: np.ndarray, *, max_regions: int = 8, border_frac: float = 0.3,
                    max_area_frac: float = 0.7, min_area_frac: float = 0.01) -> np.ndarray:
  """Label map of segments (0 = none) -> uint8 candidate regions (module docstring, steps 1-3)."""
  area = np.bincount(segments.ravel())
  border = np.concatenate([segments[0], segments[-1], segments[1:-1, 0], segments[1:-1, -1]])
  on_border = np.bincount(border, minlength=len(area))
  background = ((on_border >= border_frac * len(border))
                | (area > max_area_frac * segments.size))
  background[0] = True
  segments = np.where(background[segments], 0, segments)
  segments = _group_small(segments, min_area_frac * segments.size)
  return _keep_largest(segments, max_regions)


def load_region_masks(regions_dir: str | pathlib.Path, file_name: str,
                      shape: tuple[int, int]) -> list[np.ndarray]:
  """Reads user segmentation masks (e.g. SAM, made offline) for one image.

  Two layouts are accepted, relative to `regions_dir` and named after the image's `file_name`
  (its path relative to the dataset root) without its extension, `<stem>`:
    `<stem>/*.png`  a folder with one mask per PNG, nonzero = inside (grayscale or colour);
    `<stem>.png`    one single-channel label map (8 or 16 bit), 0 = background, each other
                    value one mask.

  Args:
    regions_dir: the folder of masks.
    file_name: the image's path relative to the dataset root, e.g. 'bottle/train/good/000.png'.
    shape: (H, W) of the image; every mask must have this size.

  Returns:
    A list of bool [H, W] masks (possibly empty for an all-zero label map).

  Raises:
    FileNotFoundError: neither layout exists for this image, or its folder holds no PNG.
    ValueError: a file that cannot be read, has the wrong size, or (label map) has colour channels.
  """
  stem = pathlib.Path(regions_dir) / pathlib.Path(file_name).with_suffix("")
  label_map = stem.with_name(stem.name + PNG_SUFFIX)
  if stem.is_dir():
    paths = sorted(stem.glob("*" + PNG_SUFFIX))
    if not paths:
      raise FileNotFoundError(f"{stem}: no {PNG_SUFFIX} masks in this folder")
    return [_read_png(path, shape, cv2.IMREAD_GRAYSCALE) > 0 for path in paths]
  if label_map.is_file():
    labels = _read_png(label_map, shape, cv2.IMREAD_UNCHANGED)
    if labels.ndim != 2:
      raise ValueError(f"{label_map}: a label map must have one channel, got shape "
                       f"{labels.shape}")
    return [labels == value for value in np.unique(labels) if value != 0]
  raise FileNotFoundError(f"no region masks for {file_name}: expected a folder {stem} of "
                          f"{PNG_SUFFIX} masks or a label map {label_map}")


def _read_png(path: pathlib.Path, shape: tuple[int, int], flags: int) -> np.ndarray:
  array = cv2.imread(str(path), flags)
  if array is None:
    raise ValueError(f"{path}: cannot read this image file")
  if array.shape[:2] != tuple(shape):
    raise ValueError(f"{path}: mask is {array.shape[1]}x{array.shape[0]} (WxH), expected the "
                     f"image size {shape[1]}x{shape[0]}")
  return array


def _check_mask(mask: np.ndarray, shape: tuple[int, int], index: int) -> np.ndarray:
  mask = np.asarray(mask)
  if mask.shape != tuple(shape):
    raise ValueError(f"mask {index} has shape {mask.shape}, expected the image shape {shape}")
  return mask.astype(bool)


def _group_small(labels: np.ndarray, min_area: float) -> np.ndarray:
  """Merges regions under `min_area` pixels, smallest first, into their longest-border neighbour.

  Works on a region adjacency graph (shared boundary lengths, a dict per region) with a heap of
  small regions, so that noisy images with 10^5 segments take seconds, not a pass per merge.
  """
  first = np.concatenate([labels[:, :-1].ravel(), labels[:-1].ravel()])
  second = np.concatenate([labels[:, 1:].ravel(), labels[1:].ravel()])
  differ = first != second
  pairs, lengths = np.unique(np.stack([first[differ], second[differ]]), axis=1,
                             return_counts=True)
  count = int(labels.max()) + 1
  neighbours = [{} for _ in range(count)]
  for (i, j), length in zip(pairs.T.tolist(), lengths.tolist()):
    neighbours[i][j] = neighbours[i].get(j, 0) + length
    neighbours[j][i] = neighbours[j].get(i, 0) + length
  area = np.bincount(labels.ravel(), minlength=count).tolist()
  small = [(area[label], label) for label in range(1, count) if 0 < area[label] < min_area]
  heapq.heapify(small)
  target = np.arange(count)
  while small:
    size, label = heapq.heappop(small)
    if size != area[label]:
      continue  # Stale entry: the region grew since, or was merged away.
    links = neighbours[label]
    into = max(links, key=links.get) if links else 0
    target[label] = into
    area[into] += size
    area[label] = 0
    for other, length in links.items():
      del neighbours[other][label]
      if other != into:
        neighbours[other][into] = neighbours[other].get(into, 0) + length
        neighbours[into][other] = neighbours[into].get(other, 0) + length
    neighbours[label] = {}
    if into != 0 and area[into] < min_area:
      heapq.heappush(small, (area[into], into))
  while not np.array_equal(target[target], target):  # Follow chains of merges to their end.
    target = target[target]
  return target[labels]


def _keep_largest(labels: np.ndarray, max_regions: int) -> np.ndarray:
  area = np.bincount(labels.ravel())
  area[0] = 0
  kept = [label for label in np.argsort(-area, kind="stable")[:max_regions] if area[label] > 0]
  relabel = np.zeros(len(area), np.uint8)
  relabel[kept] = np.arange(1, len(kept) + 1)
  return relabel[labels]
