"""Images/s delivered by the training input pipeline, and the host cores needed for 1,000 img/s.

Times decoded batches (all four PNG features at 256 px) coming out of
`af_jax.input_pipeline.make_train_iterator` for a few worker-process counts, after a warm-up
that absorbs worker start-up. Without `--data_dir` it first builds a temporary TFDS dataset,
from the images of `--image_dir` (e.g. an MVTec AD `train/good` folder) or, without one,
from synthetic photo-like images.

  python benchmarks/input_pipeline.py
  python benchmarks/input_pipeline.py --image_dir=../shared/data/mvtec_ad/bottle/train/good
  python benchmarks/input_pipeline.py --data_dir=~/tensorflow_datasets --dataset=mvtec_ad \\
      --categories=bottle,cable --workers=0,4,8

Cores for 1,000 img/s = 1,000 x the CPU seconds one image costs, measured in-process with
one decoding thread (the pipeline's total CPU work, wherever it runs).
"""

import pathlib
import tempfile
import time

from absl import app
from absl import flags
import cv2
import numpy as np
import tensorflow_datasets as tfds

from af_jax import input_pipeline
from af_jax import pixels
from af_jax.configs import mix82
from af_jax.data_builders import common
from af_jax.data_builders import config as builder_config
from af_jax.data_builders import features

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Prepared TFDS data_dir; default: build one.")
_DATASET = flags.DEFINE_string("dataset", "mvtec_ad", "Dataset in --data_dir.")
_CATEGORIES = flags.DEFINE_list("categories", ["bottle"], "Categories in --data_dir.")
_IMAGE_DIR = flags.DEFINE_string("image_dir", None, "Images for the temporary dataset.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 256, "Examples in the temporary dataset.")
_SIZE = flags.DEFINE_integer("size", 256, "Image size.")
_BATCH = flags.DEFINE_integer("batch_size", 32, "Global batch size (one process).")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Worker-process counts to time.")
_THREADS = flags.DEFINE_integer("read_threads", 8, "Decoding threads per process.")
_WARMUP = flags.DEFINE_integer("warmup_batches", 4, "Batches skipped before timing.")
_BATCHES = flags.DEFINE_integer("batches", 24, "Batches timed.")

BENCH_DATASET = "af_bench_images"


def _photo_like(rng: np.random.Generator, size: int) -> np.ndarray:
  """Smooth colour fields plus sensor-like noise: compresses about as well as a photo."""
  low = rng.uniform(0, 255, (8, 8, 3)).astype(np.float32)
  image = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
  image += rng.normal(0, 6, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


class AfBenchImages(tfds.core.GeneratorBasedBuilder):
  """One category of --num_images examples: folder images (manual dir) or synthetic ones.

  Its config ('folder' or 'synthetic', at --size) is made at run time, so none is declared.
  """
  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = "Any folder of images (--image_dir)."

  def _info(self):
    return tfds.core.DatasetInfo(builder=self,
                                 features=features.example_features(self.builder_config.size),
                                 metadata=common.dataset_metadata(self.builder_config))

  def _split_generators(self, dl_manager):
    folder = dl_manager.manual_dir if self.builder_config.name == "folder" else None
    return {"train": self._generate_examples(folder)}

  def _generate_examples(self, folder):
    size, rng = self.builder_config.size, np.random.default_rng(0)
    paths = common.image_files(folder) if folder else []
    for i in range(_NUM_IMAGES.value):
      if paths:
        image = pixels.resize_image(pixels.read_rgb(paths[i % len(paths)]), size)
      else:
        image = _photo_like(rng, size)
      gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
      yield str(i), dict(
          image=pixels.encode_png(image), edges=pixels.encode_png(cv2.Canny(gray, 50, 150)),
          regions=pixels.encode_png((gray // 64).astype(np.uint8)),
          mask=pixels.encode_png(np.zeros_like(gray)), label=0,
          defect="good", category=self.builder_config.name, dataset=BENCH_DATASET,
          file_name=f"{i}.png", view="", sample_id="")


def _build_temporary_dataset(root: str) -> tuple[str, list[str]]:
  name = "folder" if _IMAGE_DIR.value else "synthetic"
  download_config = tfds.download.DownloadConfig(manual_dir=_IMAGE_DIR.value)
  config = builder_config.AfBuilderConfig(name=name, size=_SIZE.value, edges="canny")
  builder = AfBenchImages(config=config, data_dir=root, file_format="array_record")
  builder.download_and_prepare(download_config=download_config)
  num_bytes = sum(f.stat().st_size for f in pathlib.Path(root).rglob("*.array_record*"))
  print(f"built {_NUM_IMAGES.value} {name} examples at {_SIZE.value} px: "
        f"{num_bytes / _NUM_IMAGES.value / 1024:.0f} KiB per example (4 PNGs)")
  return BENCH_DATASET, [name]


def _time_batches(iterator, batches: int) -> float:
  """Seconds to take `batches` batches from an already warmed-up iterator."""
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return time.perf_counter() - start


def _images_per_second(data_config, num_workers: int, read_threads: int) -> tuple[float, float]:
  """(images/s, CPU seconds of this process per image) for one pipeline setting."""
  config = mix82.get_data_config(**{**data_config.to_dict(), "num_workers": num_workers,
                                    "read_threads": read_threads})
  iterator = input_pipeline.make_train_iterator(config, global_batch_size=_BATCH.value, seed=0)
  _time_batches(iterator, _WARMUP.value)
  cpu = time.process_time()
  seconds = _time_batches(iterator, _BATCHES.value)
  cpu = time.process_time() - cpu
  iterator.close()
  images = _BATCHES.value * _BATCH.value
  return images / seconds, cpu / images


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    if _DATA_DIR.value:
      data_dir, dataset, categories = _DATA_DIR.value, _DATASET.value, _CATEGORIES.value
    else:
      data_dir = tmp
      dataset, categories = _build_temporary_dataset(tmp)
    data_config = mix82.get_data_config(
        data_dir=data_dir, sources=mix82.sources_for(dataset, categories),
        image_size=_SIZE.value, prefetch=max(4, _THREADS.value))
    print(f"{input_pipeline.steps_per_epoch(data_config, _BATCH.value)} batches per epoch of "
          f"{_BATCH.value}; timing {_BATCHES.value} after {_WARMUP.value} warm-up batches")

    rate, cpu_per_image = _images_per_second(data_config, num_workers=0, read_threads=1)
    print(f"workers=0 read_threads=1: {rate:7.0f} img/s, {cpu_per_image * 1e3:.2f} ms CPU "
          f"per image -> {1000 * cpu_per_image:.1f} cores for 1,000 img/s")
    for workers in map(int, _WORKERS.value):
      rate, _ = _images_per_second(data_config, workers, _THREADS.value)
      print(f"workers={workers} read_threads={_THREADS.value}: {rate:7.0f} img/s")


if __name__ == "__main__":
  app.run(main)
