"""The paper's training mix (Sec. 4.2): 82 categories of 5 datasets, and the data config.

  all of MVTec AD (15 categories), MVTec LOCO (5) and MADSim (20); 200 images per VisA
  category (12); 400 per Real-IAD category (30).

Every training config holds the data config as `config.data` (see `get_data_config`). Any
subset of the mix is a config override, never code, e.g. in a config file:

  config.data.sources = mix82.sources_for("synthetic", ["circuit"])
  config.data.sources = mix82.sources_for("mvtec_ad", ["bottle", "cable"]) + \\
      mix82.sources_for("visa", ["pcb1"], per_category=200)

or on the command line for scalar fields: `--config.data.data_dir=/data/tfds`.

About the paper's 18,007 images per epoch: the described mix cannot add up to it. The train
splits of MVTec AD (3,629) and MVTec LOCO (1,772) plus 200 x 12 VisA and 400 x 30 Real-IAD
images are already 19,801 before any MADSim image. `steps_per_epoch` counts what is prepared.
"""

import ml_collections

# Category names exactly as each dataset spells them (they are the TFDS config names); the
# builders in data_builders/ list the same names (tests/test_input_pipeline.py checks it).
CATEGORIES = {
    "mvtec_ad": ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather",
                 "metal_nut", "pill", "screw", "tile", "toothbrush", "transistor", "wood",
                 "zipper"),
    "mvtec_loco": ("breakfast_box", "juice_bottle", "pushpins", "screw_bag",
                   "splicing_connectors"),
    # The PAD benchmark's spelling, including "13Pheonix".
    "madsim": ("01Gorilla", "02Unicorn", "03Mallard", "04Turtle", "05Whale", "06Bird",
               "07Owl", "08Sabertooth", "09Swan", "10Sheep", "11Pig", "12Zalika",
               "13Pheonix", "14Elephant", "15Parrot", "16Cat", "17Scorpion", "18Obesobeso",
               "19Bear", "20Puppy"),
    "visa": ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2",
             "pcb1", "pcb2", "pcb3", "pcb4", "pipe_fryum"),
    "real_iad": ("audiojack", "bottle_cap", "button_battery", "end_cap", "eraser", "fire_hood",
                 "mint", "mounts", "pcb", "phone_battery", "plastic_nut", "plastic_plug",
                 "porcelain_doll", "regulator", "rolled_strip_base", "sim_card_set", "switch",
                 "tape", "terminalblock", "toothbrush", "toy", "toy_brick", "transistor1",
                 "u_block", "usb", "usb_adaptor", "vcpill", "wooden_beads", "woodstick",
                 "zipper"),
    "synthetic": ("circuit", "gear", "fabric"),  # The built-in set; not in the paper's mix.
}

# Images per epoch per category in the paper; None = the whole train split.
PAPER_PER_CATEGORY = {"mvtec_ad": None, "mvtec_loco": None, "madsim": None, "visa": 200,
                      "real_iad": 400}

# Train-split sizes checked against public sources. MVTec AD per category (sums to the
# dataset's 3,629); for the others only totals are published where we looked.
TRAIN_COUNTS = {
    "mvtec_ad": {"bottle": 209, "cable": 224, "capsule": 219, "carpet": 280, "grid": 264,
                 "hazelnut": 391, "leather": 245, "metal_nut": 220, "pill": 267, "screw": 320,
                 "tile": 230, "toothbrush": 60, "transistor": 213, "wood": 247, "zipper": 240},
}
TRAIN_TOTALS = {"mvtec_ad": 3_629, "mvtec_loco": 1_772}


def sources_for(dataset: str, categories=None, per_category: int | None = None) -> list[dict]:
  """A `data.sources` list with one entry: `categories` of `dataset` (default all known).

  `per_category` images of each category per epoch, a fresh random subset each epoch;
  None takes the whole split.
  """
  if categories is None:
    if dataset not in CATEGORIES:
      raise ValueError(f"no known categories for dataset {dataset!r}; name them explicitly "
                       f"(known datasets: {sorted(CATEGORIES)})")
    categories = CATEGORIES[dataset]
  return [dict(dataset=dataset, categories=list(categories), per_category=per_category)]


def paper_sources() -> list[dict]:
  """The 82-category mix of the paper, in the order of `CATEGORIES`."""
  return [source for dataset, per_category in PAPER_PER_CATEGORY.items()
          for source in sources_for(dataset, per_category=per_category)]


def get_data_config(**overrides) -> ml_collections.ConfigDict:
  """The data config for the paper's mix; keyword arguments replace fields."""
  c = ml_collections.ConfigDict()
  c.data_dir = "~/tensorflow_datasets"  # TFDS data_dir where `af-jax prepare` wrote the datasets.
  # Categories of the mix: a list of {dataset, categories (list), per_category (int or None
  # = the whole split)}. A batch's `source` is the index of the category in this order.
  c.sources = paper_sources()
  c.split = "train"            # Split read from every category.
  c.image_size = 256           # Must equal the size the datasets were prepared at.
  c.shuffle_seed = 0           # With the run's seed, fixes every epoch's subsets and order.
  c.num_workers = 0            # grain worker processes decoding batches; 0 = in-process threads.
  c.read_threads = 8           # Threads decoding batches in each process (PNG decoding releases the GIL).
  c.prefetch = 8               # Batches buffered ahead, per process and per worker (>= read_threads).
  unknown = sorted(set(overrides) - set(c.keys()))
  if unknown:
    raise ValueError(f"unknown data config fields {unknown}; known: {sorted(c.keys())}")
  c.update(overrides)
  return c
