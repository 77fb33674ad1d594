"""Training and evaluation input: grain over TFDS ArrayRecord, category mixtures, per-host slices.

Every category of every dataset is one TFDS config (`<dataset>/<category>`, built by
`af-jax prepare`) read with `tfds.data_source`, so no TensorFlow is needed. The training
stream (`make_train_iterator`) is built from grain's lazy, random-access `MapDataset`s, so
reading happens only for the examples a process actually consumes:

  1. Per category: a fresh random subset of `per_category` examples each epoch (grain's
     shuffle draws a new permutation per epoch; the subset is its first `per_category`).
  2. All categories concatenated, then shuffled (new order each epoch). The epoch is the
     sum of the per-category counts, cut to a whole number of global batches (the cut-off
     examples are a different random few each epoch).
  3. Process `i` of `n` takes every `n`-th example starting at `i`. At each step the `n`
     local batches together hold exactly the global batch one process would see alone,
     whatever `n` is: the data order does not depend on the number of hosts.
  4. Decode (PNG -> uint8, only the features training uses), batch, repeat forever.
  5. Worker processes (`num_workers`) each produce whole batches, in order, so the
     stream does not depend on the number of workers either.

Every category's data facts (edge method, size, max_regions; `af_jax.data_facts`) are read
when the mix is opened: categories that disagree, or a size other than `image_size`, stop
there, and `read_data_facts` returns what they share for the run to record.

The iterator is grain's own: `get_state()` / `set_state()` (JSON-serializable dicts) resume
exactly where a run stopped, and `grain.checkpoint.CheckpointSave/CheckpointRestore` store it
in an Orbax checkpoint (see `af_jax/checkpoint.py`, item `data`).

Batches are dicts of numpy arrays (S = `image_size`, b = global batch / process count):
  image uint8 [b,S,S,3], edges/regions/mask uint8 [b,S,S,1], label int32 [b],
  source int32 [b] (index of the category in the mix, see `source_names`), with
  `references` reference float32 [b,S,S,6] (`af_jax.evidence.reference`), and with `example_index`
  index int32 [b] (the example's position in its category's split, as `normal_images` reads
  it: what `af_jax.evidence.patch_memory` leaves out of an example's own comparison).
"""

from collections.abc import Mapping
import dataclasses
import logging
from typing import Any

from absl import flags
from etils import epath
import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from af_jax import data_facts
from af_jax.evidence import reference as reference_lib

IMAGE_FEATURES = ("image", "edges", "regions", "mask")
TEXT_FEATURES = ("defect", "category", "dataset", "file_name", "view", "sample_id")
SOURCE_KEYS = frozenset({"dataset", "categories", "per_category"})

log = logging.getLogger(__name__)


def _ensure_absl_flags_parsed() -> None:
  """grain reads its options from absl flags, which library users and tests never parse.

  Only the main process needs this: grain hands its flag values to its worker processes.
  """
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


# ----------------------------------------------------------------------------- sources


class DatasetError(ValueError):
  """A prepared dataset's file cannot be read (corrupt, truncated, missing); says how to rebuild."""


def prepare_command(root, dataset: str, config_name: str) -> str:
  """The `af-jax prepare` command that builds exactly the config `config_name` in `root`.

  `prepare --categories` takes a config's name and builds it with the options the name spells;
  the only one a name cannot hold whole, a regions folder, and a download are placeholders.
  """
  regions_dir = " --regions_dir <your regions folder>" if "-regions." in config_name else ""
  manual_dir = "" if dataset == "synthetic" else " --manual_dir <your download>"
  return (f"af-jax prepare --dataset {dataset} --categories {config_name} --data_dir {root}"
          f"{regions_dir}{manual_dir}")


def rebuild_command(root, dataset: str, config_name: str) -> str:
  """The `af-jax prepare` command that rebuilds one prepared category in place."""
  return f"{prepare_command(root, dataset, config_name)} --overwrite"


class _CheckedSource:
  """A TFDS data source whose read errors say which dataset, split and file broke, and how to
  rebuild it (ArrayRecord reports a corrupt or truncated file as a bare RuntimeError such as
  'Corrupted Riegeli/records file: chunk data hash mismatch', naming neither)."""

  def __init__(self, source, root, dataset: str, config_name: str, split: str):
    self._source = source
    self._where = (root, dataset, config_name, split)

  @property
  def dataset_info(self):
    return self._source.dataset_info

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    try:
      return self._source[index]
    except (RuntimeError, OSError, ValueError) as e:
      raise self._error(index, e) from e

  def _error(self, index: int, error: Exception) -> DatasetError:
    root, dataset, config_name, split = self._where
    info = self._source.dataset_info.splits[split]
    ends = np.cumsum(info.shard_lengths)
    shard = min(int(np.searchsorted(ends, index, side="right")), len(ends) - 1)
    return DatasetError(
        f"dataset {dataset}/{config_name}, split {split!r}: file {info.filepaths[shard]} is "
        f"corrupt or truncated (reading example {index}: {str(error).splitlines()[0]}). Rebuild "
        f"it with `{rebuild_command(root, dataset, config_name)}`")


def _is_built(folder) -> bool:
  return any(folder.glob("*/dataset_info.json"))


def resolve_category(data_dir, dataset: str, category: str) -> str:
  """The built config `category` names: itself, or its only build with options.

  Builds with non-default options carry them in their name (`bottle-64px`,
  `circuit-64px-train64`); the category's own name finds such a build when it is the only one
  in `data_dir`. Several builds are an error listing them (pass the one you mean); no build
  returns `category` unchanged, for the caller's not-prepared error.
  """
  root = epath.Path(data_dir).expanduser() / dataset
  if _is_built(root / category) or not root.is_dir():
    return category
  builds = sorted(p.name for p in root.iterdir()
                  if p.name != category and category_of_build(dataset, p.name) == category
                  and _is_built(p))
  if len(builds) > 1:
    raise FileNotFoundError(f"{dataset}/{category} has several builds in {root.parent}: "
                            f"{', '.join(builds)}; name the one you mean")
  return builds[0] if builds else category


def category_of_build(dataset: str, name: str) -> str | None:
  """The category a build's name starts with: up to the first '-', or for `folder` (whose
  categories may hold '-') what its options, read from the right, leave."""
  if dataset != "folder":
    return name.split("-")[0]
  from af_jax.data_builders import folder  # pylint: disable=g-import-not-at-top
  try:
    return folder.parse_config_name(name)[0]
  except ValueError:
    return None


def open_split(data_dir: str, dataset: str, category: str, split: str, *,
               decoders: Mapping[str, Any] | None = None):
  """The TFDS data source of one split of `<dataset>/<category>` in `data_dir`.

  `category` may be a category's own name when it has a single build (`resolve_category`).
  Raises FileNotFoundError naming the expected folder and the command that builds it when
  the category is not prepared, and KeyError listing the splits when `split` is absent.
  Reading a corrupt or truncated file raises DatasetError naming the dataset, split and file
  and the command that rebuilds the category.
  """
  root = epath.Path(data_dir).expanduser()
  category = resolve_category(root, dataset, category)
  folder = root / dataset / category
  if not _is_built(folder):
    raise FileNotFoundError(
        f"dataset {dataset}/{category} is not prepared: no {folder}/<version>/dataset_info.json. "
        f"Build it with `{prepare_command(root, dataset, category)}` (see `af-jax prepare "
        "--help`).")
  try:
    splits = tfds.data_source(f"{dataset}/{category}", data_dir=str(root), download=False,
                              decoders=decoders)
  except (RuntimeError, OSError, ValueError) as e:  # Its dataset_info.json or features.json.
    raise DatasetError(
        f"dataset {dataset}/{category} in {root} cannot be opened ({str(e).splitlines()[0]}). "
        f"Rebuild it with `{rebuild_command(root, dataset, category)}`") from e
  if split not in splits:
    raise KeyError(f"{dataset}/{category} in {root} has no split {split!r}; "
                   f"it has {sorted(splits)}")
  return _CheckedSource(splits[split], root, dataset, category, split)


@dataclasses.dataclass(frozen=True)
class _Category:
  dataset: str
  category: str
  per_category: int | None


def _categories(data_config: ml_collections.ConfigDict) -> list[_Category]:
  """The mix's categories in source-id order, validating `data_config.sources`."""
  result = []
  for i, source in enumerate(data_config.sources):
    keys = set(source.keys())
    if keys != SOURCE_KEYS:
      raise ValueError(f"data.sources[{i}] must have exactly the keys {sorted(SOURCE_KEYS)}; "
                       f"got {sorted(keys)}")
    per_category = source["per_category"]
    if per_category is not None and (not isinstance(per_category, int) or per_category < 1):
      raise ValueError(f"data.sources[{i}].per_category must be a positive int or None (all); "
                       f"got {per_category!r}")
    if isinstance(source["categories"], str) or not source["categories"]:
      raise ValueError(f"data.sources[{i}].categories must be a non-empty list of names; "
                       f"got {source['categories']!r}")
    result += [_Category(source["dataset"], c, per_category) for c in source["categories"]]
  if not result:
    raise ValueError("data.sources is empty: the mix needs at least one category")
  return result


def source_names(data_config: ml_collections.ConfigDict) -> list[str]:
  """`'<dataset>/<category>'` for each value of a batch's `source` field, in order."""
  return [f"{c.dataset}/{c.category}" for c in _categories(data_config)]


def _open_mixture(data_config: ml_collections.ConfigDict):
  """([(data source, examples per epoch)] for every category of the mix in source-id order,
  the data facts they share (`af_jax.data_facts.combine`))."""
  # Training reads no text feature: leave those as raw bytes.
  skip_text = {name: tfds.decode.SkipDecoding() for name in TEXT_FEATURES}
  size = data_config.image_size
  mixture, facts = [], []
  for c in _categories(data_config):
    source = open_split(data_config.data_dir, c.dataset, c.category, data_config.split,
                        decoders=skip_text)
    facts.append(data_facts.read(source.dataset_info, f"{c.dataset}/{c.category}"))
    if facts[-1]["image_size"] != size:
      stored = facts[-1]["image_size"]
      raise ValueError(f"{c.dataset}/{c.category} in {data_config.data_dir} holds {stored}x"
                       f"{stored} images but data.image_size is {size}; prepare it at that "
                       "size or change data.image_size")
    if not len(source):
      raise ValueError(f"{c.dataset}/{c.category} has no {data_config.split!r} examples")
    count = len(source) if c.per_category is None else min(c.per_category, len(source))
    if c.per_category is not None and c.per_category > len(source):
      log.warning("%s/%s: per_category=%d but only %d %s examples; using all of them",
                  c.dataset, c.category, c.per_category, len(source), data_config.split)
    mixture.append((source, count))
  return mixture, data_facts.combine(facts)


def normal_images(data_config: ml_collections.ConfigDict) -> dict[str, tuple[int, Any]]:
  """Each category's whole training split (every example, not only the `per_category`
  subset), keyed like `source_names`: (count, an iterator over its uint8 images in stored
  order, read lazily)."""
  skip = {name: tfds.decode.SkipDecoding()
          for name in (*TEXT_FEATURES, *(f for f in IMAGE_FEATURES if f != "image"))}
  images = {}
  for c, name in zip(_categories(data_config), source_names(data_config)):
    source = open_split(data_config.data_dir, c.dataset, c.category, data_config.split,
                        decoders=skip)
    images[name] = (len(source), _images_of(source))
  return images


def _images_of(source):
  """Its images in order, read lazily (a function, so each iterator keeps its own source)."""
  return (source[i]["image"] for i in range(len(source)))


def reference_moments(data_config: ml_collections.ConfigDict
                      ) -> dict[str, reference_lib.Moments]:
  """Each category's normal-image moments over its whole training split, keyed like
  `source_names` (`af_jax.evidence.reference`)."""
  return {name: reference_lib.Moments.of(images)
          for name, (_, images) in normal_images(data_config).items()}


def read_data_facts(data_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The facts every category of the mix was prepared with (`af_jax.data_facts`)."""
  return _open_mixture(data_config)[1]


def _global_batches_per_epoch(mixture_size: int, global_batch_size: int,
                              epoch_size: int | None) -> int:
  if epoch_size is not None and not 0 < epoch_size <= mixture_size:
    raise ValueError(f"epoch_size={epoch_size} must be in [1, {mixture_size}] (the mix's size)")
  examples = mixture_size if epoch_size is None else epoch_size
  if examples < global_batch_size:
    raise ValueError(f"an epoch of {examples} examples is smaller than one global batch of "
                     f"{global_batch_size}")
  return examples // global_batch_size


def steps_per_epoch(data_config: ml_collections.ConfigDict, global_batch_size: int, *,
                    epoch_size: int | None = None) -> int:
  """Global batches per epoch: the mix's size (or `epoch_size`) // `global_batch_size`."""
  mixture_size = sum(count for _, count in _open_mixture(data_config)[0])
  return _global_batches_per_epoch(mixture_size, global_batch_size, epoch_size)


# ----------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class _TrainFeatures:
  """Keeps what training reads from one decoded example and tags it with its source id.

  Region labels above the data's `max_regions` would silently become background in the
  stages' one-hot transform, so such an example stops training, naming its category.
  With `moments`, the example also gets its category's leave-one-out reference; with
  `example_index`, its index in its category's split.
  """
  source: int
  name: str
  max_regions: int
  moments: reference_lib.Moments | None = None
  example_index: bool = False

  def __call__(self, index: int, example: Mapping[str, Any]) -> dict[str, np.ndarray]:
    if example["regions"].max() > self.max_regions:
      raise ValueError(f"{self.name} holds region label {example['regions'].max()} above its "
                       f"max_regions {self.max_regions}; re-run `af-jax prepare` for it")
    features = {name: example[name] for name in IMAGE_FEATURES}
    features["label"] = np.int32(example["label"])
    features["source"] = np.int32(self.source)
    if self.moments is not None:
      features["reference"] = self.moments.leave_one_out(example["image"])
    if self.example_index:
      features["index"] = np.int32(index)
    return features


def make_train_iterator(data_config: ml_collections.ConfigDict, *, global_batch_size: int,
                        seed: int, process_index: int | None = None,
                        process_count: int | None = None, epoch_size: int | None = None,
                        references: dict[str, reference_lib.Moments] | None = None,
                        example_index: bool = False):
  """An endless, checkpointable iterator over this process's training batches.

  Args:
    data_config: the data config (see `configs/mix82.py`).
    global_batch_size: examples per step over all processes; each process yields
      `global_batch_size // process_count` of them.
    seed: the run's seed. Together with `data_config.shuffle_seed` it fixes every per-epoch
      subset and order: the same pair gives the same batches, on any number of hosts.
    process_index, process_count: this process's slice; default `jax.process_index()` and
      `jax.process_count()`.
    epoch_size: examples per epoch, at most the mix's size (sum of per-category counts, the
      default); a smaller value keeps a random `epoch_size` of each epoch's mix.
    references: `reference_moments(data_config)` to add each example's leave-one-out
      reference (`reference` float32 [b,S,S,6], for `blaze.reference`); None adds none.
    example_index: add each example's index in its category's split (`index` int32 [b], for
      `blaze.patch_guide`).

  Returns:
    A grain `DatasetIterator` yielding dicts of numpy arrays (module docstring), with
    `get_state()` / `set_state()`. Close it (`.close()`) when `num_workers` > 0 to stop the
    worker processes promptly.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  if global_batch_size % process_count:
    raise ValueError(f"global_batch_size {global_batch_size} is not a multiple of the "
                     f"{process_count} processes")
  local_batch_size = global_batch_size // process_count
  _ensure_absl_flags_parsed()

  mixture, facts = _open_mixture(data_config)
  seeds = np.random.SeedSequence([data_config.shuffle_seed, seed]).generate_state(
      len(mixture) + 1)
  # Features are mapped before the shuffle, so they see each example's index in its split.
  parts = [
      grain.MapDataset.source(source)
      .map_with_index(_TrainFeatures(i, facts["datasets"][i]["name"], facts["max_regions"],
                                     None if references is None else references[name],
                                     example_index))
      .shuffle(seed=int(seeds[i]))[:count]
      for i, ((source, count), name) in enumerate(zip(mixture, source_names(data_config)))]
  mix = grain.MapDataset.concatenate(parts).shuffle(seed=int(seeds[-1]))
  steps = _global_batches_per_epoch(len(mix), global_batch_size, epoch_size)
  local = mix[:steps * global_batch_size][process_index::process_count]
  batches = local.batch(local_batch_size, drop_remainder=True).repeat()

  read = grain.ReadOptions(num_threads=data_config.read_threads,
                           prefetch_buffer_size=data_config.prefetch)
  stream = batches.to_iter_dataset(read)
  if data_config.num_workers > 0:
    stream = stream.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=data_config.num_workers,
                                     per_worker_buffer_size=data_config.prefetch))
  return iter(stream)


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh,
                      axis: str | tuple[str, ...] = "data") -> dict[str, jax.Array]:
  """This process's batch -> global `jax.Array`s split along dim 0 over the mesh `axis`.

  Every process calls this with its own local batch; the global batch is their
  concatenation in process order. With `make_train_iterator`'s slices it holds exactly the
  examples a single process would have batched.
  """
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
  return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
          for name, value in local_batch.items()}


# ----------------------------------------------------------------------------- evaluation


def _decode_text(example: Mapping[str, Any]) -> dict[str, Any]:
  return {name: value.decode() if isinstance(value, bytes) else value
          for name, value in example.items()}


def make_eval_dataset(data_dir: str, dataset: str, category: str,
                      split: str = "test") -> grain.MapDataset:
  """Every example of one split, in stored order, fully decoded (text as `str`).

  A grain `MapDataset`: iterate it, index it, or take `len()` of it. Images are uint8
  arrays as stored; `label` is 0 (normal) or 1 (anomaly).
  """
  return grain.MapDataset.source(open_split(data_dir, dataset, category, split)).map(
      _decode_text)
