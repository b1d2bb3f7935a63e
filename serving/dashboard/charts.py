"""Charts as server-side SVG: no script, no library, nothing fetched, so pages work offline.

Every mark carries its number twice: exactly, in a `data-*` attribute (Python's shortest
round-trip repr, the same text the JSON API prints), and rounded, in a `<title>` tooltip or
a visible label. Each chart is an `<svg role="img">` with an `aria-label` that says what it
shows. All text is escaped here: names and categories come from model folders.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

# One color class per version, in version order (colors live in dashboard.css).
SERIES_CLASSES = 6


def number(value: Any, digits: int = 3) -> str:
    """A metric as people read it: fixed decimals, an em dash when undefined."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def p_value(value: float | None) -> str:
    """A p-value: three significant digits, so tiny ones stay readable."""
    return "—" if value is None else f"{value:.3g}"


def exact(value: Any) -> str:
    """The exact text of a number for a data-* attribute; empty when undefined."""
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


def series_class(index: int) -> str:
    """The CSS class of the `index`-th series."""
    return f"series-{index % SERIES_CLASSES}"


def _svg(kind: str, width: int, height: int, label: str, body: str) -> Markup:
    return Markup(
        f'<svg class="chart {kind}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(label)}">{body}</svg>'
    )


def _f(value: float) -> str:
    return f"{value:.1f}"


def _when(start: dt.datetime, width: int) -> str:
    if width >= 86400:
        return start.strftime("%Y-%m-%d")
    return start.strftime("%m-%d %H:%M")


def _bucket_title(count: int, start: dt.datetime, width_label: str, what: str = "") -> str:
    noun = "prediction" if count == 1 else "predictions"
    return f"{what}{count:,} {noun} in the {width_label} from {start:%Y-%m-%d %H:%M} UTC"


def sparkline(
    values: Sequence[int], starts: Sequence[dt.datetime], width_label: str, name: str
) -> Markup:
    """A small bar per bucket: an endpoint's traffic at a glance."""
    width, height = 168, 32
    peak = max(values, default=0) or 1
    step = width / max(len(values), 1)
    bars = []
    for index, (count, start) in enumerate(zip(values, starts, strict=True)):
        if not count:
            continue
        x = step * index
        h = max(1.5, (height - 2) * count / peak)
        bars.append(
            f'<rect class="bar" x="{_f(x)}" y="{_f(height - h)}" width="{_f(step * 0.8)}" '
            f'height="{_f(h)}" data-start="{start.isoformat()}Z" data-value="{count}">'
            f"<title>{escape(_bucket_title(count, start, width_label))}</title></rect>"
        )
    label = (
        f"{name}: {sum(values):,} predictions in {len(values)} buckets of {width_label}, "
        f"at most {max(values, default=0):,} in one"
    )
    baseline = f'<line class="axis" x1="0" y1="{height - 0.5}" x2="{width}" y2="{height - 0.5}"/>'
    return _svg("sparkline", width, height, label, baseline + "".join(bars))


def count_axis(peak: int, most_ticks: int = 4) -> tuple[int, int]:
    """(step, top) of a count axis: a whole step of 1, 2 or 5 times a power of ten, and the
    first multiple of it at or above `peak`, so every gridline is a whole number of
    predictions and at most `most_ticks` of them sit above zero."""
    if peak <= 0:
        return 1, 1
    raw = peak / most_ticks
    power = 10 ** max(math.floor(math.log10(raw)), 0)
    step = next(f * power for f in (1, 2, 5, 10) if f * power >= raw)
    return step, step * math.ceil(peak / step)


def traffic_chart(
    series: Sequence[tuple[str, Sequence[int]]],
    starts: Sequence[dt.datetime],
    bucket_seconds: int,
    width_label: str,
) -> Markup:
    """Stacked columns: predictions per bucket, one color per version (in `series` order)."""
    width, height = 640, 210
    left, right, top, bottom = 44, 8, 10, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(values[i] for _, values in series) for i in range(len(starts))]
    tick_step, peak = count_axis(max(totals, default=0))
    step = plot_w / max(len(starts), 1)
    parts = []
    for tick in range(0, peak + 1, tick_step):
        y = top + plot_h * (1 - tick / peak)
        parts.append(
            f'<line class="gridline" x1="{left}" y1="{_f(y)}" x2="{width - right}" y2="{_f(y)}"/>'
            f'<text class="tick" x="{left - 6}" y="{_f(y + 4)}" text-anchor="end">'
            f"{number(tick)}</text>"
        )
    for index in sorted({0, len(starts) // 2, len(starts) - 1}):
        if 0 <= index < len(starts):
            x = left + step * index
            anchor = "start" if index == 0 else "end" if index == len(starts) - 1 else "middle"
            if anchor == "end":
                x += step
            parts.append(
                f'<text class="tick" x="{_f(x)}" y="{height - bottom + 16}" '
                f'text-anchor="{anchor}">{_when(starts[index], bucket_seconds)}</text>'
            )
    for index, start in enumerate(starts):
        stacked = 0
        for position, (version, values) in enumerate(series):
            count = values[index]
            if not count:
                continue
            h = plot_h * count / peak
            y = top + plot_h * (1 - (stacked + count) / peak)
            stacked += count
            title = _bucket_title(count, start, width_label, f"version {version}: ")
            parts.append(
                f'<rect class="bar {series_class(position)}" x="{_f(left + step * index + 1)}" '
                f'y="{_f(y)}" width="{_f(max(step - 2, 1))}" height="{_f(max(h, 1))}" '
                f'data-version="{escape(version)}" data-start="{start.isoformat()}Z" '
                f'data-value="{count}"><title>{escape(title)}</title></rect>'
            )
    parts.append(
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{width - right}" '
        f'y2="{top + plot_h}"/>'
    )
    label = (
        f"Predictions per {width_label} over the last {len(starts)} buckets, by version: "
        + "; ".join(f"version {v}: {sum(values):,}" for v, values in series)
    )
    return _svg("traffic", width, height, label, "".join(parts))


def calibration_plot(bins: Sequence[Mapping[str, Any]], version: str) -> Markup:
    """Observed rate against mean predicted probability per bin, with the diagonal of a
    perfectly calibrated model; a point's area grows with its bin's rows."""
    size, margin = 240, 36
    plot = size - 2 * margin + 20
    left, top = margin, 12

    def x(value: float) -> float:
        return left + plot * value

    def y(value: float) -> float:
        return top + plot * (1 - value)

    parts = [
        f'<rect class="frame" x="{left}" y="{top}" width="{plot}" height="{plot}"/>',
        f'<line class="diagonal" x1="{_f(x(0))}" y1="{_f(y(0))}" x2="{_f(x(1))}" y2="{_f(y(1))}"/>',
    ]
    for tick in (0, 0.5, 1):
        parts.append(
            f'<text class="tick" x="{_f(x(tick))}" y="{_f(y(0) + 14)}" '
            f'text-anchor="middle">{tick:g}</text>'
            f'<text class="tick" x="{_f(x(0) - 5)}" y="{_f(y(tick) + 4)}" '
            f'text-anchor="end">{tick:g}</text>'
        )
    parts.append(
        f'<text class="axis-label" x="{_f(x(0.5))}" y="{_f(y(0) + 28)}" text-anchor="middle">'
        "mean predicted probability</text>"
        f'<text class="axis-label" transform="translate(11 {_f(y(0.5))}) rotate(-90)" '
        'text-anchor="middle">observed rate</text>'
    )
    filled = [b for b in bins if b.get("count")]
    peak = max((b["count"] for b in filled), default=1)
    if len(filled) > 1:
        path = " ".join(f"{_f(x(b['mean_predicted']))},{_f(y(b['observed_rate']))}" for b in filled)
        parts.append(f'<polyline class="curve" points="{path}"/>')
    for b in filled:
        radius = 2.5 + 4.5 * math.sqrt(b["count"] / peak)
        title = (
            f"{b['lower']:g} to {b['upper']:g}: {b['count']:,} rows, mean predicted "
            f"{number(b['mean_predicted'])}, observed {number(b['observed_rate'])}"
        )
        parts.append(
            f'<circle class="point" cx="{_f(x(b["mean_predicted"]))}" '
            f'cy="{_f(y(b["observed_rate"]))}" r="{_f(radius)}" '
            f'data-lower="{exact(b["lower"])}" data-upper="{exact(b["upper"])}" '
            f'data-count="{b["count"]}" data-predicted="{exact(b["mean_predicted"])}" '
            f'data-observed="{exact(b["observed_rate"])}"><title>{escape(title)}</title></circle>'
        )
    label = (
        f"Calibration of version {version}: observed rate against mean predicted probability "
        f"in {len(filled)} bins with rows; the diagonal is perfect calibration"
    )
    return _svg("calibration", size, size, label, "".join(parts))


def psi_chart(features: Sequence[Mapping[str, Any]], moderate: float, major: float) -> Markup:
    """One horizontal bar per feature: its PSI, colored by class, against the moderate and
    major thresholds."""
    row, label_w, value_w, width = 22, 130, 52, 640
    plot_w = width - label_w - value_w
    top = 18
    height = top + row * len(features) + 8
    scale = max([major * 1.2] + [f["psi"] for f in features if f.get("psi") is not None])

    def x(value: float) -> float:
        return label_w + plot_w * min(value, scale) / scale

    parts = []
    for name, threshold in (("moderate", moderate), ("major", major)):
        parts.append(
            f'<line class="threshold threshold-{name}" x1="{_f(x(threshold))}" y1="{top - 4}" '
            f'x2="{_f(x(threshold))}" y2="{height - 4}" data-value="{exact(threshold)}"/>'
            f'<text class="tick" x="{_f(x(threshold))}" y="{top - 7}" text-anchor="middle">'
            f"{threshold:g}</text>"
        )
    for index, feature in enumerate(features):
        y = top + row * index
        value = feature.get("psi")
        kind = feature.get("class", "no_data")
        name = escape(feature["feature"])
        parts.append(
            f'<text class="feature" x="{label_w - 8}" y="{y + 15}" text-anchor="end">{name}</text>'
        )
        if value is None:
            continue
        parts.append(
            f'<rect class="bar psi-{escape(kind)}" x="{label_w}" y="{y + 4}" '
            f'width="{_f(max(x(value) - label_w, 1))}" height="{row - 8}" '
            f'data-feature="{name}" data-class="{escape(kind)}" data-value="{exact(value)}">'
            f"<title>{name}: PSI {number(value)} ({escape(kind)})</title></rect>"
            f'<text class="value" x="{_f(x(value) + 4)}" y="{y + 15}">{number(value)}</text>'
        )
    label = "Population stability index per input: " + "; ".join(
        f"{f['feature']} {number(f.get('psi'))} ({f.get('class')})" for f in features
    )
    return _svg("psi", width, height, label, "".join(parts))


def interval_chart(
    arms: Mapping[str, Mapping[str, Any]], metric: str, low: float | None, high: float | None
) -> Markup:
    """Each arm's estimate of one metric with its 95% interval, on a shared axis."""
    width, row, left, right = 420, 26, 96, 16
    height = 22 + row * len(arms)
    points = [a["metrics"].get(metric) or {} for a in arms.values()]
    values = [
        v for p in points for v in (p.get("low"), p.get("value"), p.get("high")) if v is not None
    ]
    lo = low if low is not None else min(values, default=0.0)
    hi = high if high is not None else max(values, default=1.0)
    if hi <= lo:
        hi = lo + 1.0

    def x(value: float) -> float:
        return left + (width - left - right) * (value - lo) / (hi - lo)

    parts = [
        f'<line class="axis" x1="{left}" y1="{height - 16}" x2="{width - right}" '
        f'y2="{height - 16}"/>',
        f'<text class="tick" x="{left}" y="{height - 3}" text-anchor="start">{number(lo)}</text>',
        f'<text class="tick" x="{width - right}" y="{height - 3}" text-anchor="end">'
        f"{number(hi)}</text>",
    ]
    for index, (arm, figures) in enumerate(arms.items()):
        y = 12 + row * index
        estimate = figures["metrics"].get(metric) or {}
        value = estimate.get("value")
        parts.append(
            f'<text class="feature" x="{left - 8}" y="{y + 4}" text-anchor="end">'
            f"{escape(arm)} (v{escape(figures['version'])})</text>"
        )
        if value is None:
            continue
        if estimate.get("low") is not None and estimate.get("high") is not None:
            parts.append(
                f'<line class="whisker {series_class(index)}" x1="{_f(x(estimate["low"]))}" '
                f'y1="{y}" x2="{_f(x(estimate["high"]))}" y2="{y}"/>'
            )
        parts.append(
            f'<circle class="estimate {series_class(index)}" cx="{_f(x(value))}" cy="{y}" r="4" '
            f'data-arm="{escape(arm)}" data-value="{exact(value)}" '
            f'data-low="{exact(estimate.get("low"))}" data-high="{exact(estimate.get("high"))}">'
            f"<title>arm {escape(arm)}: {metric} {number(value)} "
            f"[{number(estimate.get('low'))}, {number(estimate.get('high'))}]</title></circle>"
        )
    label = f"{metric} per arm with 95% intervals: " + "; ".join(
        f"{arm} {number((f['metrics'].get(metric) or {}).get('value'))}" for arm, f in arms.items()
    )
    return _svg("intervals", width, height, label, "".join(parts))
