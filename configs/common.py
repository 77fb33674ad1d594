"""Every training field, its default (the paper's) and what it means.

Stage configs (`boot.py`, `flare.py`, `blaze.py`) start from `get_config(stage)`, which
applies the stage's defaults from its record in `af_jax.stage_registry` (local TPS in Boot,
bottleneck noise in Flare, the paper's epochs), and change only what differs. Any field can be overridden on the command line:

  af-jax train --config configs/boot.py --workdir runs/boot --config.batch_size=16

A config file may take an argument after a colon (`configs/demo.py:boot`).
"""

import ml_collections

from af_jax import config_dataclasses
from af_jax.ops import augment
from af_jax.ops import manipulate
from af_jax.ops import synthetic_anomalies
from af_jax import stage_registry
from af_jax.configs import mix82


def get_config(stage: str = "boot") -> ml_collections.ConfigDict:
  record = stage_registry.get(stage)
  c = ml_collections.ConfigDict()
  c.stage = stage                 # A stage of af_jax/stage_registry.py: 'boot' | 'flare' | 'blaze'.
  c.seed = 0                      # Parameter init, augmentation and manipulation randomness.
  c.teacher_workdir = ""          # Flare: a Boot workdir; Blaze: a Flare workdir (params only).
  c.teacher_step = -1             # Teacher checkpoint step; -1 = latest.

  # Data: the paper's 82-category mix. `c.data.sources` selects any subset.
  c.data = mix82.get_data_config()
  c.batch_size = 32               # Global batch, split over all devices and hosts.
  # c.num_epochs: set by the stage's record in af_jax/stage_registry.py (paper: Boot 30,
  # Flare 5, Blaze 5).
  c.num_steps = -1                # > 0 overrides num_epochs (handy for smoke runs).
  c.edge_threshold = 0.5          # Edge probability >= this becomes an edge (1); None = soft edges.

  # Network (pix2pixHD global generator + 2-scale PatchGAN); see af_jax/models.
  c.model = ml_collections.ConfigDict()
  c.model.ngf = 64                # Generator width of the first layer.
  c.model.n_downsampling = 4      # Stride-2 convs in the encoder (= transposed convs per decoder).
  c.model.n_blocks = 9            # Residual blocks at the bottleneck.
  c.model.feature_noise_std = 0.0  # Gaussian noise on bottleneck features (Flare's default: 0.1).
  c.model.ndf = 64                # Discriminator width.
  c.model.n_layers_d = 3          # Stride-2 layers per discriminator scale.
  c.model.num_d = 2               # Discriminator scales.
  c.model.compute_dtype = "float32"  # 'bfloat16' on accelerators; params/losses stay float32.

  # Losses (pix2pixHD / paper weights).
  c.loss = ml_collections.ConfigDict()
  c.loss.gan = 1.0                # LSGAN generator term.
  c.loss.feature_matching = 10.0  # Discriminator feature matching.
  c.loss.vgg = 10.0               # VGG19 perceptual loss; needs loss.vgg_weights.
  c.loss.vgg_weights = ""         # torchvision vgg19 state dict (.npz/.safetensors/.pth); "" = term off.
  c.loss.heatmap = 10.0           # Heatmap term's weight (Flare, Blaze).
  c.loss.heatmap_kind = "l2"      # 'l2' (paper) | 'bce': cross-entropy drives near-zero parts
                                  # of the heatmap on to zero (af_jax/training/losses.py).
  c.loss.l1 = 0.0                 # L1 to the target image; not in the paper, useful without VGG weights.
  # Whether the image terms (GAN, feature matching, VGG, L1) also train the heatmap H through
  # the fusion I_in * (1 - H) + T * H (the paper). While the texture T is still imperfect they
  # pull H towards 0 wherever T differs from the target, against the heatmap term pulling it
  # to the target: a briefly trained Flare settles near H = 0.5 inside its regions, so its
  # masks never form. False trains H by the heatmap term alone and T through the fusion.
  c.loss.image_terms_train_heatmap = True

  # Optimizer: Adam for G and D, linear decay to 0 after a constant part.
  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 2e-4
  c.optim.b1 = 0.5
  c.optim.b2 = 0.999
  c.optim.constant_fraction = 0.0  # Share of training at the initial rate before the linear decay.

  # Augmentations (af_jax/ops/augment.py); TPS only in Boot.
  c.augment = config_dataclasses.to_config(augment.AugmentConfig())
  # Edge manipulation (af_jax/ops/manipulate.py): Flare and Blaze.
  c.manipulate = config_dataclasses.to_config(manipulate.ManipulateConfig())

  # Flare options (af_jax/training/stage_inputs.py), used by the flare stage only.
  c.flare = ml_collections.ConfigDict()
  # The image Flare learns to output: 'boot' (paper: Boot's rendering of the edited edges,
  # everywhere) or 'boot_in_region' (that rendering inside the edited region, the input image
  # outside it). A briefly trained Boot re-renders the whole object with small errors; with
  # 'boot' Flare must copy them, so its heatmap spreads over the object and its anomalies are
  # not local. 'boot_in_region' is what the fusion I_in * (1 - H) + T * H stands for.
  c.flare.target = "boot"
  # Show Flare the edited region as an extra input channel. Generation knows the region it
  # edits; without it Flare must infer the region from the edited edges, which a small model
  # cannot, so its heatmap stays low and diffuse and the change leaks outside the region.
  # False = the paper. A Blaze run learning from such a Flare passes it the region too.
  c.flare.region_input = False
  # Generation only (af_jax/inference/generator.py): bound the heatmap by the edited region before
  # the fusion, so no pixel outside the region changes. False = the paper's unbounded fusion.
  c.flare.bound_to_region = False

  # Blaze options (af_jax/training/stage_inputs.py), used by the blaze stage only.
  c.blaze = ml_collections.ConfigDict()
  c.blaze.reextract_edges = False  # PiDiNet edges of the anomaly image instead of the edited ones.
  c.blaze.normal_fraction = 0.0   # Share of examples left unedited (all-zero heatmap target).
  c.blaze.heatmap_target = "flare"  # 'flare' (paper) | 'flare_in_region' | 'region' |
                                    # 'change_in_region' (stage_inputs.BLAZE_HEATMAP_TARGETS).
  c.blaze.change_scale = 0.2      # 'change_in_region': a pixel change this large (in [-1, 1]) = 1.
  # Share of examples that get a classic pasted anomaly (af_jax/ops/synthetic_anomalies.py: a noise
  # blob filled with misplaced, recoloured pixels of a training image) instead of Flare's.
  # 0 = the paper (Flare's anomalies only).
  c.blaze.synthetic_fraction = 0.0
  c.blaze.synthetic = config_dataclasses.to_config(synthetic_anomalies.SyntheticAnomalyConfig())
  # Give the detector each category's normal reference (af_jax/evidence/reference.py): per-pixel mean
  # and std of its normal training images, fed as 3 extra input channels |x - mean| /
  # (std + reference_eps). The run saves the references in its workdir and inference picks, per
  # image, the category whose mean image is nearest. False = the paper (image and edges only).
  c.blaze.reference = False
  c.blaze.reference_eps = 0.02    # In [0, 1] pixel units: floors the std of flat regions.
  # Give the detector evidence that needs no alignment (af_jax/evidence/patch_memory.py): the distance of
  # each pixel's patch_size x patch_size patch to the nearest of `patch_memory` normal patches
  # of its category (leave-one-out in training), as one more input channel. Needs
  # blaze.reference (its categories pick the memory at inference). Costs a matmul of
  # H*W x patch_memory x 3*patch_size**2 per image. False = the paper.
  c.blaze.patch_guide = False
  c.blaze.patch_memory = 8192     # Patches per category (a multiple of 2048, or fewer).
  c.blaze.patch_size = 7          # Odd; 7 as the nearest-patch floor (DESIGN.md B.11).
  c.blaze.patch_stride = 1        # Search every s-th pixel and row, resize back: s^2 less work.
  # Inference (Detector, export, the trust's fit): the patch evidence's search (in the evidence
  # memory, below) at every pixel whatever training used; the network's own input is searched
  # as trained (a run without an evidence memory searches that one at this stride). Thin
  # defects keep their width: against every other pixel, +1.2-1.5 AUPRO on the magnetic tile
  # (trained on and held out) and held-out metal_plate, for 4x the search's work.
  c.blaze.inference_patch_stride = 1
  # Inference averages the heatmaps of the mirrored views the run trained on (and the evidence
  # trust is fitted on that average). False: the image alone, a quarter of the network's
  # time (af_jax/inference/detector.py; README, Performance, for what it costs).
  c.blaze.flip_views = True
  # How the memory's patches are chosen (af_jax/evidence/patch_memory.py): 'random' (uniform draw) or
  # 'coreset' (greedy k-centre over `patch_pool` candidates, stored and augmented views: keeps
  # rare normal patches; about 10 s per category on 2 CPU cores at the defaults).
  c.blaze.patch_selection = "random"
  c.blaze.patch_pool = 131072     # 'coreset' candidates per category (at least patch_memory).
  # Inference: the image score is the heatmap's maximum over the object (af_jax/ops/foreground.py,
  # found without labels) instead of over every pixel. False = the paper (every pixel).
  c.blaze.score_on_object = False
  # Inference: the detector keeps its evidence (af_jax/evidence/trust.py). The heatmap is the
  # network's heatmap, the patch distances (blaze.patch_guide) and the per-pixel reference
  # (blaze.reference), each in standard deviations of the category's normal images, weighted
  # and blurred as fitted per category from anomalies made from its own normal images (at the
  # stage's end, from the teacher Flare run; Detector.add_reference fits a new part). The image
  # score is the fused map's maximum against the category's normal images. False = the network's
  # heatmap alone (the paper).
  c.blaze.evidence_trust = False
  c.blaze.trust_images = 16       # Normal images per category the fit scores (leave-one-out).
  c.blaze.trust_anomalies = "flare,pasted"  # Kinds made from them: 'flare' and/or 'pasted'.
  c.blaze.trust_sigmas = (0.0, 1.0, 2.0, 4.0)  # Candidate blurs, pixels per 64 px of image side.
  # What the fit's objective must gain for each unit of weight moved off the network. 0: with
  # the evidence memory the fit rates the patch distances right (af_jax/evidence/trust.py).
  c.blaze.trust_network_prior = 0.0
  # How far the fitted weights are pulled toward equal weights over the sources the fit rates
  # above chance (0 = the fit's weights, 1 = equal weights): the fit sees 16 images, and on
  # parts held out of training its best weights moved with the seed (af_jax/evidence/trust.py).
  c.blaze.trust_shrinkage = 0.5
  # The patch evidence's own memory (af_jax/evidence/patch_memory.py): a greedy coreset of
  # `evidence_memory` of `evidence_pool` patches of each category's stored normal images, built
  # when the trust is fitted (about 15 s per category on 2 CPU cores) and searched at
  # inference_patch_stride. The network's memory holds augmented patches, which no test image
  # shows: alone, this one's distances gained 4-33 AUPRO points over them on the real parts.
  # 0 = weigh the network's input (runs fitted before it existed).
  c.blaze.evidence_memory = 8192
  # A larger pool is not better on every part, and its coreset takes longer in proportion:
  # 262,144 gained bottle 0.3 px-AUROC / 0.3 AUPRO, lost the magnetic tile 1.0 / 1.0, and
  # took 2.4x as long (2 draws each, 64 projected dimensions; benchmarks/evidence_memory.py).
  c.blaze.evidence_pool = 131072

  # Filled by training, never set by hand: what the prepared data was built with (edge method,
  # image size, max_regions, each category's dataset version; af_jax/data_facts.py).
  c.data_facts = None

  # Scale-out: mesh (`data` x `fsdp`); multi-host via jax.distributed flags/env.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.fsdp = 1                 # > 1 splits parameters over this many devices.

  # Checkpoints and metrics.
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.log_every_steps = 50
  c.image_every_steps = 1000      # Image grids to TensorBoard; 0 = never.
  c.progress_every_steps = 10     # Console progress line.

  for field, value in record.config_defaults.items():
    *groups, name = field.split(".")
    group = c
    for g in groups:
      group = group[g]
    group[name] = value
  return c
