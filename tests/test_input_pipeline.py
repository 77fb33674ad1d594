"""Tests of the grain input pipeline on a tiny TFDS dataset cut from the real MVTec AD bottle.

The fixture builds `af_test_mix` (ArrayRecord, 16 px) with three categories holding disjoint
slices of bottle/train/good; every example's `edges` is filled with its id so batches can be
traced back to examples.
"""

import importlib
import json

import cv2
import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds

from af_jax import input_pipeline
from af_jax.configs import mix82
from af_jax.data_builders import common
from af_jax.data_builders import config as builder_config
from af_jax.data_builders import features

DATASET = "af_test_mix"
SIZE = 16
TRAIN_COUNTS = {"a": 7, "b": 12, "c": 4}
FIRST_ID = {"a": 0, "b": 7, "c": 19}
TEST_DEFECT = "broken_large"


def _small_rgb(path) -> np.ndarray:
  bgr = cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR), (SIZE, SIZE),
                   interpolation=cv2.INTER_AREA)
  return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _png(array: np.ndarray) -> bytes:
  if array.ndim == 3 and array.shape[-1] == 3:
    array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
  ok, encoded = cv2.imencode(".png", array)
  assert ok
  return encoded.tobytes()


def _example(image, edge_value, mask, defect, category, file_name):
  return dict(image=_png(image), edges=_png(np.full((SIZE, SIZE), edge_value, np.uint8)),
              regions=_png(np.zeros((SIZE, SIZE), np.uint8)), mask=_png(mask),
              label=int(defect != "good"), defect=defect, category=category, dataset=DATASET,
              file_name=file_name, view="", sample_id="")


class AfTestMix(tfds.core.GeneratorBasedBuilder):
  """Three categories of real bottle images; the manual dir is the bottle folder."""
  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "The MVTec AD bottle folder (the `bottle_dir` fixture)."
  BUILDER_CONFIGS = [builder_config.AfBuilderConfig(name=name, size=SIZE)
                     for name in TRAIN_COUNTS]

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=features.example_features(SIZE),
                                 metadata=common.dataset_metadata(self.builder_config))

  def _split_generators(self, dl_manager):
    root = dl_manager.manual_dir
    return {split: self._generate_examples(root, split) for split in ("train", "test")}

  def _generate_examples(self, root, split):
    name = self.builder_config.name
    zeros = np.zeros((SIZE, SIZE), np.uint8)
    if split == "train":
      first = FIRST_ID[name]
      paths = sorted((root / "train" / "good").glob("*.png"))[first:first + TRAIN_COUNTS[name]]
      for i, path in enumerate(paths):
        yield path.name, _example(_small_rgb(path), first + i, zeros, "good", name, path.name)
      return
    for path in sorted((root / "test" / "good").glob("*.png"))[:2]:
      yield f"good/{path.name}", _example(_small_rgb(path), 0, zeros, "good", name, path.name)
    for path in sorted((root / "test" / TEST_DEFECT).glob("*.png"))[:2]:
      mask = cv2.imread(str(root / "ground_truth" / TEST_DEFECT / f"{path.stem}_mask.png"),
                        cv2.IMREAD_GRAYSCALE)
      mask = cv2.resize(mask, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
      yield (f"{TEST_DEFECT}/{path.name}",
             _example(_small_rgb(path), 0, mask, TEST_DEFECT, name, path.name))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, bottle_dir):
  root = tmp_path_factory.mktemp("tfds")
  download_config = tfds.download.DownloadConfig(manual_dir=str(bottle_dir))
  for name in TRAIN_COUNTS:
    AfTestMix(config=name, data_dir=str(root), file_format="array_record").download_and_prepare(
        download_config=download_config)
  return root


@pytest.fixture(scope="session")
def expected_images(bottle_dir):
  """Example id -> the RGB image the builder stored for it."""
  paths = sorted((bottle_dir / "train" / "good").glob("*.png"))
  return {i: _small_rgb(path) for i, path in enumerate(paths[:sum(TRAIN_COUNTS.values())])}


def _config(data_dir, **overrides):
  """Categories a and b: 3 per epoch each; c: all 4. An epoch is 10 examples."""
  sources = (mix82.sources_for(DATASET, ["a", "b"], per_category=3)
             + mix82.sources_for(DATASET, ["c"]))
  fields = dict(data_dir=str(data_dir), sources=sources, image_size=SIZE, read_threads=2,
                prefetch=2)
  return mix82.get_data_config(**{**fields, **overrides})


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _ids(batch) -> list[int]:
  return batch["edges"][:, 0, 0, 0].astype(int).tolist()


def _id_sequence(batches) -> list[list[int]]:
  return [_ids(b) for b in batches]


def test_batches_hold_the_decoded_training_features(data_dir, expected_images):
  it = input_pipeline.make_train_iterator(_config(data_dir), global_batch_size=5, seed=0)
  batch = next(it)
  assert set(batch) == {"image", "edges", "regions", "mask", "label", "source"}
  for name, channels in (("image", 3), ("edges", 1), ("regions", 1), ("mask", 1)):
    assert batch[name].shape == (5, SIZE, SIZE, channels) and batch[name].dtype == np.uint8
  assert batch["label"].dtype == np.int32 and batch["source"].dtype == np.int32
  np.testing.assert_array_equal(batch["label"], 0)
  for example_id, image in zip(_ids(batch), batch["image"]):
    np.testing.assert_array_equal(image, expected_images[example_id])


def test_each_epoch_draws_its_per_category_counts_as_fresh_subsets(data_dir):
  config = _config(data_dir)
  assert input_pipeline.steps_per_epoch(config, 5) == 2
  assert input_pipeline.source_names(config) == [f"{DATASET}/{c}" for c in "abc"]
  it = input_pipeline.make_train_iterator(config, global_batch_size=5, seed=1)
  subsets_of_a = []
  for _ in range(3):
    epoch = _take(it, 2)
    ids = sum((_ids(b) for b in epoch), [])
    sources = np.concatenate([b["source"] for b in epoch])
    assert len(set(ids)) == 10
    assert np.bincount(sources, minlength=3).tolist() == [3, 3, 4]
    for example_id, source in zip(ids, sources):
      category = "abc"[source]
      assert FIRST_ID[category] <= example_id < FIRST_ID[category] + TRAIN_COUNTS[category]
    assert sorted(i for i, s in zip(ids, sources) if s == 2) == [19, 20, 21, 22]
    subsets_of_a.append(frozenset(i for i, s in zip(ids, sources) if s == 0))
  assert len(set(subsets_of_a)) > 1


def test_same_seeds_give_the_same_batches_and_other_seeds_differ(data_dir):
  def ids(seed, shuffle_seed=0):
    it = input_pipeline.make_train_iterator(_config(data_dir, shuffle_seed=shuffle_seed),
                                            global_batch_size=5, seed=seed)
    return _id_sequence(_take(it, 4))

  reference = ids(seed=3)
  assert ids(seed=3) == reference
  assert ids(seed=4) != reference
  assert ids(seed=3, shuffle_seed=1) != reference


def test_process_slices_are_disjoint_and_make_up_the_global_batch(data_dir):
  config = _config(data_dir)
  alone = input_pipeline.make_train_iterator(config, global_batch_size=4, seed=0,
                                             process_index=0, process_count=1)
  slices = [input_pipeline.make_train_iterator(config, global_batch_size=4, seed=0,
                                               process_index=i, process_count=2)
            for i in range(2)]
  for _ in range(6):  # Three epochs of two global batches (8 of the 10 examples).
    first, second = _ids(next(slices[0])), _ids(next(slices[1]))
    assert len(first) == len(second) == 2
    assert not set(first) & set(second)
    assert sorted(first + second) == sorted(_ids(next(alone)))


def test_set_state_resumes_with_the_same_batches(data_dir):
  config = _config(data_dir)
  it = input_pipeline.make_train_iterator(config, global_batch_size=5, seed=0)
  _take(it, 3)
  state = json.loads(json.dumps(it.get_state()))
  expected = _id_sequence(_take(it, 3))
  resumed = input_pipeline.make_train_iterator(config, global_batch_size=5, seed=0)
  resumed.set_state(state)
  assert _id_sequence(_take(resumed, 3)) == expected


def test_iterator_state_round_trips_through_orbax(data_dir, tmp_path):
  config = _config(data_dir)
  manager = ocp.CheckpointManager(tmp_path / "ckpt",
                                  item_handlers={"data": grain.checkpoint.CheckpointHandler()})
  it = input_pipeline.make_train_iterator(config, global_batch_size=5, seed=0)
  _take(it, 3)
  manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
  manager.wait_until_finished()
  expected = _id_sequence(_take(it, 3))
  resumed = input_pipeline.make_train_iterator(config, global_batch_size=5, seed=0)
  manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed)))
  manager.close()
  assert _id_sequence(_take(resumed, 3)) == expected


def test_worker_processes_give_the_same_batches_and_resume(data_dir):
  in_process = input_pipeline.make_train_iterator(_config(data_dir), global_batch_size=5, seed=0)
  expected = _id_sequence(_take(in_process, 4))
  config = _config(data_dir, num_workers=2)
  workers = input_pipeline.make_train_iterator(config, global_batch_size=5, seed=0)
  assert _id_sequence(_take(workers, 2)) == expected[:2]
  state = workers.get_state()
  workers.close()
  resumed = input_pipeline.make_train_iterator(config, global_batch_size=5, seed=0)
  resumed.set_state(state)
  assert _id_sequence(_take(resumed, 2)) == expected[2:]
  resumed.close()


def test_epoch_size_keeps_a_random_part_of_each_epoch(data_dir):
  config = _config(data_dir)
  assert input_pipeline.steps_per_epoch(config, 5, epoch_size=5) == 1
  it = input_pipeline.make_train_iterator(config, global_batch_size=5, seed=0, epoch_size=5)
  epochs = _id_sequence(_take(it, 4))
  assert all(len(set(ids)) == 5 for ids in epochs)
  assert len({frozenset(ids) for ids in epochs}) > 1
  with pytest.raises(ValueError, match="epoch_size=11"):
    input_pipeline.steps_per_epoch(config, 5, epoch_size=11)
  with pytest.raises(ValueError, match="smaller than one global batch"):
    input_pipeline.steps_per_epoch(config, 16)


def test_unprepared_or_mismatched_data_gives_clear_errors(data_dir):
  missing = _config(data_dir, sources=mix82.sources_for(DATASET, ["a", "zz"]))
  with pytest.raises(FileNotFoundError, match=f"{DATASET}/zz.*af-jax prepare") as error:
    input_pipeline.make_train_iterator(missing, global_batch_size=2, seed=0)
  assert str(data_dir / DATASET / "zz") in str(error.value)
  with pytest.raises(FileNotFoundError, match="mvtec_ad/bottle"):
    input_pipeline.steps_per_epoch(_config(data_dir, sources=mix82.sources_for(
        "mvtec_ad", ["bottle"])), 2)
  with pytest.raises(KeyError, match="no split 'validation'"):
    input_pipeline.steps_per_epoch(_config(data_dir, split="validation"), 2)
  with pytest.raises(ValueError, match="holds 16x16 images but data.image_size is 256"):
    input_pipeline.steps_per_epoch(_config(data_dir, image_size=256), 2)
  bad = _config(data_dir, sources=[dict(dataset=DATASET, categories=["a"], per_category=0)])
  with pytest.raises(ValueError, match=r"sources\[0\].per_category"):
    input_pipeline.steps_per_epoch(bad, 2)
  with pytest.raises(ValueError, match="not a multiple of the 2 processes"):
    input_pipeline.make_train_iterator(_config(data_dir), global_batch_size=5, seed=0,
                                       process_index=0, process_count=2)


def test_eval_dataset_decodes_every_test_example(data_dir):
  examples = list(input_pipeline.make_eval_dataset(str(data_dir), DATASET, "a"))
  assert len(examples) == 4
  assert sorted(e["label"] for e in examples) == [0, 0, 1, 1]
  for example in examples:
    assert example["category"] == "a" and isinstance(example["file_name"], str)
    assert example["image"].shape == (SIZE, SIZE, 3)
    assert (example["mask"].max() > 0) == (example["defect"] == TEST_DEFECT)
  with pytest.raises(FileNotFoundError, match="af-jax prepare"):
    input_pipeline.make_eval_dataset(str(data_dir), DATASET, "zz")


def test_make_global_batch_shards_the_local_batch_over_the_data_axis(data_dir):
  devices = np.array(jax.devices()[:2])  # At most 2, so a batch fits the 10-example epoch.
  mesh = jax.sharding.Mesh(devices, ("data",))
  batch_size = 2 * devices.size
  local = next(input_pipeline.make_train_iterator(_config(data_dir),
                                                  global_batch_size=batch_size, seed=0))
  global_batch = input_pipeline.make_global_batch(local, mesh)
  for name, value in local.items():
    assert global_batch[name].shape == value.shape and global_batch[name].dtype == value.dtype
    assert global_batch[name].sharding.spec == jax.sharding.PartitionSpec("data")
    np.testing.assert_array_equal(np.asarray(global_batch[name]), value)


def test_mix82_is_the_papers_82_category_mix(bottle_dir):
  config = mix82.get_data_config()
  names = input_pipeline.source_names(config)
  assert len(names) == len(set(names)) == 82
  per_dataset = {s["dataset"]: (len(s["categories"]), s["per_category"]) for s in config.sources}
  assert per_dataset == {"mvtec_ad": (15, None), "mvtec_loco": (5, None), "madsim": (20, None),
                         "visa": (12, 200), "real_iad": (30, 400)}
  counts = mix82.TRAIN_COUNTS["mvtec_ad"]
  assert sum(counts.values()) == mix82.TRAIN_TOTALS["mvtec_ad"]
  assert counts["bottle"] == len(list((bottle_dir / "train" / "good").glob("*.png")))
  subset = mix82.get_data_config(sources=mix82.sources_for("synthetic", ["circuit"]))
  assert input_pipeline.source_names(subset) == ["synthetic/circuit"]
  with pytest.raises(ValueError, match="unknown data config fields"):
    mix82.get_data_config(batch_size=3)


@pytest.mark.parametrize("dataset", sorted(mix82.CATEGORIES))
def test_mix82_category_names_match_the_builders(dataset):
  importlib.import_module(f"af_jax.data_builders.{dataset}")  # Registers the builder.
  configs = tfds.builder_cls(dataset).BUILDER_CONFIGS
  assert tuple(config.name for config in configs) == mix82.CATEGORIES[dataset]


def test_a_category_s_own_name_finds_its_only_build(tmp_path):
  def build(name):
    (tmp_path / "synthetic" / name / "1.0.0").mkdir(parents=True)
    (tmp_path / "synthetic" / name / "1.0.0" / "dataset_info.json").write_text("{}")

  build("circuit-64px-train64")
  (tmp_path / "synthetic" / "circuit-128px").mkdir()  # Unfinished: no dataset_info.json.
  assert input_pipeline.resolve_category(tmp_path, "synthetic", "circuit") == "circuit-64px-train64"
  assert input_pipeline.resolve_category(tmp_path, "synthetic", "gear") == "gear"
  build("circuit")
  assert input_pipeline.resolve_category(tmp_path, "synthetic", "circuit") == "circuit"
  build("gear-64px")
  build("gear-32px")
  with pytest.raises(FileNotFoundError, match="several builds .*: gear-32px, gear-64px"):
    input_pipeline.open_split(tmp_path, "synthetic", "gear", "test")


def test_a_folder_category_with_a_hyphen_finds_only_its_own_builds(tmp_path):
  """`folder` categories may hold '-': `my` must not take `my-widget`'s build."""
  for name in ("my-widget-32px-canny", "my-32px"):
    (tmp_path / "folder" / name / "1.0.0").mkdir(parents=True)
    (tmp_path / "folder" / name / "1.0.0" / "dataset_info.json").write_text("{}")
  assert input_pipeline.resolve_category(tmp_path, "folder", "my") == "my-32px"
  assert input_pipeline.resolve_category(tmp_path, "folder", "my-widget") == (
      "my-widget-32px-canny")
  assert input_pipeline.resolve_category(tmp_path, "folder", "widget") == "widget"
