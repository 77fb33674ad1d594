"""The demo's `report.html`: metric tables, labelled image grids, colour scales, loss curves.

One self-contained page: images inline as PNG, colour bars and charts inline as SVG (no
plotting library). It is built from what the demo has at its end: the dict it writes to
`metrics.json`, its image grids (`Grid`), and the scalars each training stage logged to
`<runs>/<stage>/metrics/metrics.jsonl` (`writers.JsonlWriter`).
"""

import base64
import html
import json
import pathlib
from typing import NamedTuple

import numpy as np

from af_jax.commands import evaluate
from af_jax import files
from af_jax import pixels
from af_jax import stage_registry

SCALE_NOTE = (
    "These are tiny CPU models (configs/demo.py: 64 px images, narrow networks, a few "
    "thousand images per stage): they show every piece working end to end, not the paper's "
    "quality. The paper configuration (configs/boot.py, flare.py, blaze.py: 256 px, batch 32, "
    "the 82-category mix) is what to train on a GPU for the paper's results.")
QUICK_NOTE = "This is a --quick run: a few training steps only, a smoke test of the chain."
LOSSES = {"g_loss": ("generator", "#d62728"), "d_loss": ("discriminator", "#1f77b4")}
STYLE = ("body{font-family:sans-serif;margin:2em;max-width:70em}"
         "table{border-collapse:collapse;margin:.5em 0 1.5em}"
         "th,td{border:1px solid #ccc;padding:.25em .6em}td.n{text-align:right}"
         "th{background:#f4f4f4}th.row{text-align:left;font-weight:normal}"
         "table.grid td{padding:2px}img{image-rendering:pixelated;display:block}"
         "svg{font-size:11px;margin-right:1.5em}"
         "pre{background:#f4f4f4;padding:1em}")


class ColourScale(NamedTuple):
  """How a grid's heatmaps were coloured: values 0..`top` on `pixels.heat_colours`.

  `marks`: (label, value) pairs shown on the colour bar (e.g. the pixel threshold).
  """
  top: float
  marks: tuple[tuple[str, float], ...] = ()

  def colour(self, heatmap: np.ndarray) -> np.ndarray:
    """uint8 RGB of a heatmap on this scale (values at or above `top` are red)."""
    return pixels.heat_colours(np.asarray(heatmap, np.float32) / self.top)


class Grid(NamedTuple):
  """Rows of images under column headings; each row is (label, one uint8 image per column)."""
  title: str
  columns: list[str]
  rows: list[tuple[str, list[np.ndarray]]]
  scale: ColourScale | None = None  # Of its heatmap columns; drawn as a colour bar.
  note: str = ""


# ------------------------------------------------------------------ tables
def _cells(tag: str, values, css: str = "") -> str:
  return "".join(f"<{tag}{css}>{html.escape(str(v))}</{tag}>" for v in values)


def table(header: list[str], rows: list[list[str]], labels: int = 1) -> str:
  """An HTML table; the first `labels` cells of a row are row headers, the rest numbers."""
  body = "".join(f"<tr>{_cells('th', row[:labels], ' class=row')}"
                 f"{_cells('td', row[labels:], ' class=n')}</tr>" for row in rows)
  return f"<table><tr>{_cells('th', header)}</tr>{body}</table>"


def _percent(value: float, decimals: int = 1) -> str:
  return f"{100 * value:.{decimals}f}"


def localization_table(metrics: dict) -> str:
  """BlazeDetector, both no-learning floors and the floor, per category and their mean: the
  rows of `af-jax evaluate`'s table (`evaluate.comparison_rows`)."""
  return table(*evaluate.comparison_rows(metrics), labels=2)


def locality_table(locality: dict) -> str:
  """How local the generated anomalies are (af_jax/metrics/locality.py), per category."""
  # The change outside is a fraction of a percent: two decimals keep it from reading 0.
  rows = [[category, _percent(v["change_inside"]), f"{v['heatmap_iou']:.2f}",
           _percent(v["change_outside"], 2),
           _percent(v["on_object"]) if "on_object" in v else "-"]
           for category, v in locality.items()]
  return table(["category", "change inside the masks (%)",
                "IoU of the heatmap's mask with the edited region",
                "mean change outside the masks (% of the range)",
                "mask area on the object (%)"], rows)


def quality_table(quality: dict) -> str:
  """IS and IC-LPIPS per category (whichever were computed)."""
  names = list(dict.fromkeys(k for values in quality.values() for k in values))
  rows = [[category, *(f"{values[k]:.4g}" if k in values else "-" for k in names)]
          for category, values in quality.items()]
  return table(["category", *names], rows)


# ------------------------------------------------------------------ images
def _png_uri(image: np.ndarray) -> str:
  return "data:image/png;base64," + base64.b64encode(pixels.encode_png(image)).decode()


def colour_bar(scale: ColourScale, scale_id: str, width: int = 240) -> str:
  """An SVG gradient bar of `scale`, labelled 0, its marks and its top value."""
  levels = np.linspace(0, 1, 17)  # JET is piecewise linear: 17 stops redraw it exactly.
  stops = "".join(f"<stop offset='{level:.3f}' stop-color='rgb{tuple(int(c) for c in rgb)}'/>"
                  for level, rgb in zip(levels, pixels.heat_colours(levels)))

  def tick(value: float, label: str) -> str:
    x = 10 + width * min(value / scale.top, 1)
    return (f"<line x1='{x:.1f}' x2='{x:.1f}' y1='4' y2='22' stroke='black'/>"
            f"<text x='{x:.1f}' y='34' text-anchor='middle'>{html.escape(label)}</text>")

  return (f"<svg width='{width + 60}' height='38' role='img' aria-label='colour scale'>"
          f"<defs><linearGradient id='{scale_id}'>{stops}</linearGradient></defs>"
          f"<rect x='10' y='6' width='{width}' height='14' fill='url(#{scale_id})'/>"
          f"<text x='10' y='34' text-anchor='middle'>0</text>"
          f"<text x='{10 + width}' y='34' text-anchor='middle'>{scale.top:.3g}</text>"
          + "".join(tick(value, f"{name} {value:.3g}") for name, value in scale.marks)
          + "</svg>")


def image_grid(grid: Grid, scale_id: str, cell_px: int = 128) -> str:
  """The grid as an HTML table: column headings, a label per row, its colour bar."""
  head = f"<tr><th></th>{_cells('th', grid.columns)}</tr>"
  body = "".join(
      f"<tr><th class=row>{html.escape(label)}</th>" + "".join(
          f"<td><img src='{_png_uri(image)}' width='{cell_px}' alt=''></td>"
          for image in images) + "</tr>"
      for label, images in grid.rows)
  parts = [f"<h2>{html.escape(grid.title)}</h2>"]
  if grid.note:
    parts.append(f"<p>{html.escape(grid.note)}</p>")
  if grid.scale is not None:
    parts.append(f"<p>Heatmap colours: {colour_bar(grid.scale, scale_id)}</p>")
  parts.append(f"<table class=grid>{head}{body}</table>")
  return "".join(parts)


# ------------------------------------------------------------------ loss curves
def read_scalars(path: pathlib.Path) -> dict[int, dict[str, float]]:
  """step -> scalars of a `metrics.jsonl`; a step logged twice (a resumed run) keeps its last."""
  if not path.is_file():
    return {}
  records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
  by_step = {r["step"]: r["values"] for r in records if r["kind"] == "scalars"}
  return dict(sorted(by_step.items()))


def loss_chart(title: str, scalars: dict[int, dict[str, float]], width: int = 320,
               height: int = 160, pad: int = 36) -> str:
  """An SVG chart of the generator and discriminator losses (`LOSSES`) over the steps."""
  last = max(scalars)
  top = max(v.get(k, 0.0) for v in scalars.values() for k in LOSSES) or 1.0

  def point(step: int, value: float) -> str:
    x = pad + (width - 2 * pad) * step / max(last, 1)
    return f"{x:.1f},{height - pad - (height - 2 * pad) * value / top:.1f}"

  def text(x, y, words, anchor="middle", extra="") -> str:
    return f"<text x='{x}' y='{y}' text-anchor='{anchor}'{extra}>{html.escape(str(words))}</text>"

  parts = [text(pad, 14, title, "start", " font-weight='bold'"),
           f"<path d='M{pad},{pad} V{height - pad} H{width - pad}' fill='none' stroke='black'/>",
           text(pad - 4, pad + 4, f"{top:.3g}", "end"), text(pad - 4, height - pad, 0, "end"),
           text(pad, height - pad + 14, 0), text(width - pad, height - pad + 14, last),
           text(width / 2, height - 6, "step")]
  for row, (key, (name, colour)) in enumerate(LOSSES.items()):
    points = " ".join(point(step, v[key]) for step, v in scalars.items() if key in v)
    if points:
      parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.5' "
                   f"points='{points}'/>")
      parts.append(text(width - pad, 14 + 13 * row, f"{name} ({key})", "end",
                        f" fill='{colour}'"))
  return (f"<svg width='{width}' height='{height}' role='img' "
          f"aria-label='{html.escape(title)} losses'>{''.join(parts)}</svg>")


def loss_charts(runs: pathlib.Path) -> str:
  """One chart per stage that logged scalars in `runs/<stage>/metrics/metrics.jsonl`."""
  charts, missing = [], []
  for stage in stage_registry.STAGES:
    scalars = read_scalars(runs / stage / "metrics" / "metrics.jsonl")
    if scalars:
      charts.append(loss_chart(stage, scalars))
    else:
      missing.append(stage)
  note = (f"<p>No logged losses for {', '.join(missing)} in {html.escape(str(runs))}.</p>"
          if missing else "")
  return "<div>" + "".join(charts) + "</div>" + note


# ------------------------------------------------------------------ the page
def _timings(timings: dict) -> str:
  names = {k[:-2].replace("train_", "training "): v for k, v in timings.items()
           if k != "total_s"}
  return (f"Time: {timings['total_s']:.0f} s in all (" +
          ", ".join(f"{k} {v:.0f} s" for k, v in names.items()) + ").")


def render(title: str, metrics: dict, grids: list[Grid], runs: pathlib.Path) -> str:
  """The whole page (module docstring)."""
  notes = [SCALE_NOTE, *([QUICK_NOTE] if metrics.get("quick") else [])]
  if "timings" in metrics:
    notes.append(_timings(metrics["timings"]))
  parts = ["<!doctype html><meta charset='utf-8'>",
           f"<title>af_jax demo: {html.escape(title)}</title><style>{STYLE}</style>",
           f"<h1>af_jax demo: {html.escape(title)}</h1>",
           *(f"<p>{html.escape(note)}</p>" for note in notes),
           "<h2>Localization</h2>", f"<p>{html.escape(evaluate.FLOOR_NOTE)}</p>",
           localization_table(metrics)]
  if "generation_locality" in metrics:
    parts += ["<h2>Generated anomalies: how local they are</h2>",
              locality_table(metrics["generation_locality"])]
  if "generation" in metrics:
    parts += ["<h2>Generated anomalies: IS and IC-LPIPS</h2>",
              quality_table(metrics["generation"])]
  parts += [image_grid(grid, f"scale{i}") for i, grid in enumerate(grids)]
  parts += ["<h2>Training losses</h2>", loss_charts(runs),
            "<details><summary>metrics.json</summary><pre>"
            f"{html.escape(json.dumps(metrics, indent=2))}</pre></details>"]
  return "\n".join(parts)


def write_report(out: pathlib.Path, title: str, metrics: dict, grids: list[Grid]) -> pathlib.Path:
  """Writes `out/report.html` from the demo's results and its runs in `out/runs`."""
  return files.write_text(out / "report.html", render(title, metrics, grids, out / "runs"))
