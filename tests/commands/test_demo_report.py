"""The demo's report.html built from a small fake demo folder; overlays as localize draws them."""

import html.parser
import json

import numpy as np
import pytest

from af_jax.commands import demo_report
from af_jax.commands import evaluate
from af_jax import pixels

CATEGORIES = ("circuit-64px", "gear-64px")


def _result(pixel_auroc: float, image_auroc: float = 0.75) -> dict:
  per_category = {c: dict(pixel_auroc=pixel_auroc + i / 10, aupro=0.5, image_auroc=image_auroc,
                          num_images=28) for i, c in enumerate(CATEGORIES)}
  return dict(per_category=per_category,
              mean=dict(pixel_auroc=pixel_auroc + 0.05, aupro=0.5, image_auroc=image_auroc,
                        num_images=28.0))


# The detector beats the per-pixel floor's pixel AUROC, ties both floors' AUPRO and stays 2
# and 4 points below the nearest-patch floor's image AUROC.
FLOORS = {"pixel_gaussian": {c: dict(pixel_auroc=0.7 + i / 10, aupro=0.5, image_auroc=0.75,
                                     num_images=28) for i, c in enumerate(CATEGORIES)},
          "nearest_patch": {c: dict(pixel_auroc=0.6, aupro=0.5, image_auroc=0.77 + i / 50,
                                    num_images=28) for i, c in enumerate(CATEGORIES)}}
FACTORIES = evaluate.floor_factories(patch_memory=100)
METRICS = dict(
    evaluate.with_floors(_result(0.8), FACTORIES, FLOORS),
    generation_locality={c: dict(change_inside=0.36, heatmap_iou=0.0, change_outside=0.0022)
                         for c in CATEGORIES},
    timings=dict(data_s=22.0, train_boot_s=131.0, total_s=417.0), quick=False, seed=0)
# (step, g_loss, d_loss) of each logged stage; blaze logged nothing.
LOSSES = {"boot": [(100, 9.0, 0.6), (200, 8.0, 0.5), (300, 7.5, 0.4)],
          "flare": [(100, 2.5, 0.6), (200, 1.5, 0.5)]}


class _Tables(html.parser.HTMLParser):
  """Every <table> of a page as rows of cell texts."""

  def __init__(self, page: str):
    super().__init__()
    self.tables, self._cell = [], None
    self.feed(page)

  def handle_starttag(self, tag, attrs):
    if tag == "table":
      self.tables.append([])
    elif tag == "tr":
      self.tables[-1].append([])
    elif tag in ("th", "td"):
      self._cell = ""

  def handle_endtag(self, tag):
    if tag in ("th", "td"):
      self.tables[-1][-1].append(self._cell)
      self._cell = None

  def handle_data(self, data):
    if self._cell is not None:
      self._cell += data


def _fake_demo(out):
  """A demo output folder: each stage's metrics.jsonl as training writes it (flare resumed)."""
  for stage, rows in LOSSES.items():
    folder = out / "runs" / stage / "metrics"
    folder.mkdir(parents=True)
    lines = [{"kind": "scalars", "step": s, "values": {"g_loss": g, "d_loss": d, "g_l1": 1.0}}
             for s, g, d in rows]
    lines.insert(1, {"kind": "images", "step": 100, "values": {"grid": [1, 8, 8, 3]}})
    if stage == "flare":  # Resumed after step 200 was logged: logged again, the last counts.
      lines.append(dict(lines[-1], values={"g_loss": 3.0, "d_loss": 0.5}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
  (out / "runs" / "blaze").mkdir()
  image = np.full((8, 8, 3), 200, np.uint8)
  scale = demo_report.ColourScale(0.02, (("threshold", 0.01),))
  grid = demo_report.Grid("Localization (BlazeDetector)", ["test image", "heatmap"],
                     [(f"{c}: scratch", [image, scale.colour(np.zeros((8, 8)))])
                      for c in CATEGORIES], scale)
  return demo_report.write_report(out, "AnomalyFactory on <synthetic>", METRICS, [grid])


def test_the_floor_is_the_better_floor_per_metric_and_the_bar_allows_2_image_points():
  floor = METRICS["floor"]["per_category"]
  assert floor["circuit-64px"] == pytest.approx(dict(pixel_auroc=0.7, aupro=0.5, image_auroc=0.77))
  assert floor["gear-64px"] == pytest.approx(dict(pixel_auroc=0.8, aupro=0.5, image_auroc=0.79))
  assert METRICS["floor"]["mean"] == pytest.approx(dict(pixel_auroc=0.75, aupro=0.5,
                                                        image_auroc=0.78))
  assert METRICS["beats_floor"] == {
      "circuit-64px": dict(pixel_auroc=True, aupro=True, image_auroc=True),
      "gear-64px": dict(pixel_auroc=True, aupro=True, image_auroc=False)}
  assert set(METRICS["baselines"]) == set(FLOORS) and METRICS["patch_memory"] == 100
  for name, results in FLOORS.items():
    assert METRICS["baselines"][name]["per_category"] == results


def test_metrics_are_html_tables_with_both_floors_rows_and_locality(tmp_path):
  page = _fake_demo(tmp_path).read_text()
  assert "|" not in page and "<pre>|" not in page  # No Markdown table anywhere.
  assert "AnomalyFactory on &lt;synthetic&gt;" in page
  assert "tiny CPU models" in page and "256 px" in page and "GPU" in page
  assert "Time: 417 s in all (data 22 s, training boot 131 s)." in page
  assert "at most 2 points below it" in page
  scores, local, grid = _Tables(page).tables
  assert scores == [
      ["category", "model", "pixel AUROC (%)", "AUPRO (%)", "image AUROC (%)", "test images",
       "beats the floor"],
      ["circuit-64px", "BlazeDetector", "80.0", "50.0", "75.0", "28", "yes"],
      ["circuit-64px", "per-pixel Gaussian floor", "70.0", "50.0", "75.0", "28", ""],
      ["circuit-64px", "nearest-patch floor", "60.0", "50.0", "77.0", "28", ""],
      ["circuit-64px", "floor (the better of the two)", "70.0", "50.0", "77.0", "", ""],
      ["gear-64px", "BlazeDetector", "90.0", "50.0", "75.0", "28", "no: image AUROC"],
      ["gear-64px", "per-pixel Gaussian floor", "80.0", "50.0", "75.0", "28", ""],
      ["gear-64px", "nearest-patch floor", "60.0", "50.0", "79.0", "28", ""],
      ["gear-64px", "floor (the better of the two)", "80.0", "50.0", "79.0", "", ""],
      ["mean", "BlazeDetector", "85.0", "50.0", "75.0", "", ""],
      ["mean", "per-pixel Gaussian floor", "75.0", "50.0", "75.0", "", ""],
      ["mean", "nearest-patch floor", "60.0", "50.0", "78.0", "", ""],
      ["mean", "floor (the better of the two)", "75.0", "50.0", "78.0", "", ""]]
  assert local[1:] == [[c, "36.0", "0.00", "0.22", "-"] for c in CATEGORIES]
  assert "change inside the masks (%)" in local[0]
  assert grid == [["", "test image", "heatmap"],
                  *[[f"{c}: scratch", "", ""] for c in CATEGORIES]]


def test_heatmap_grids_have_a_labelled_colour_bar(tmp_path):
  page = _fake_demo(tmp_path).read_text()
  bar = page[page.index("aria-label='colour scale'"):]
  bar = bar[:bar.index("</svg>")]
  assert "<linearGradient" in bar and ">0</text>" in bar and ">0.02</text>" in bar
  assert ">threshold 0.01</text>" in bar
  # The bar's colours are the heatmaps': its ends are heat_colours(0) and heat_colours(1).
  for level in (0, 1):
    assert f"stop-color='rgb{tuple(int(c) for c in pixels.heat_colours(level))}'" in bar


def test_each_stage_that_logged_losses_gets_a_chart(tmp_path):
  page = _fake_demo(tmp_path).read_text()
  charts = {stage: page[page.index(f"aria-label='{stage} losses'"):] for stage in LOSSES}
  assert "aria-label='blaze losses'" not in page and "No logged losses for blaze" in page
  for stage, rows in LOSSES.items():
    chart = charts[stage][:charts[stage].index("</svg>")]
    polylines = [p.split("points='")[1].split("'")[0] for p in chart.split("<polyline")[1:]]
    assert len(polylines) == 2 and "generator (g_loss)" in chart
    assert "discriminator (d_loss)" in chart
    assert [len(p.split()) for p in polylines] == [len(rows)] * 2
  # The highest loss of a chart touches its top; flare's re-logged step 200 keeps its last value.
  assert ">9</text>" in charts["boot"] and ">3</text>" in charts["flare"]
  assert demo_report.read_scalars(tmp_path / "runs" / "flare" / "metrics" / "metrics.jsonl") == {
      100: {"g_loss": 2.5, "d_loss": 0.6, "g_l1": 1.0}, 200: {"g_loss": 3.0, "d_loss": 0.5}}
