"""The evaluation report a person reads: markdown with a small chart, and the full JSON.

Written under ``reports/evaluation/<day>/`` (``report.md``, ``report.json``,
``evaluation.png``), each file through a temporary name and a rename, so a reader never
sees half a report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from flywheel_assets.evaluate import policy_values
from flywheel_assets.storage import Location, as_location
from flywheel_assets.reporting import data_uri, inert, new_figure, png_bytes


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def chart_png(record: dict) -> bytes:
    """Off-policy estimates with intervals (left), calibration (right)."""
    fig, (ax1, ax2) = new_figure(8, 3, ncols=2)
    ope = (record.get("off_policy") or {}).get("policies", {})
    names = list(ope)
    for i, name in enumerate(names):
        xs = [j + 0.2 * i for j in range(3)]
        vals = [ope[name][e]["value"] for e in ("ips", "snips", "dr")]
        lows = [v - ope[name][e]["ci_low"] for v, e in zip(vals, ("ips", "snips", "dr"))]
        highs = [ope[name][e]["ci_high"] - v for v, e in zip(vals, ("ips", "snips", "dr"))]
        ax1.errorbar(xs, vals, yerr=[lows, highs], fmt="o", capsize=3, label=name)
    ax1.set_xticks(range(3), ["IPS", "SNIPS", "DR"])
    unit = "DCG" if (record.get("off_policy") or {}).get("value", "dcg") == "dcg" else "reward"
    level = next((p["level"] for p in ope.values() if "level" in p), 0.95)
    ax1.set_title(f"off-policy {unit}@{record.get('k', 10)} ({level:.0%} interval)", fontsize=9)
    if names:
        ax1.legend(fontsize=8)
    for name, cal in record.get("calibration", {}).items():
        ax2.plot([b["pred"] for b in cal["bins"]], [b["obs"] for b in cal["bins"]], "o-",
                 label=f"{name} (ECE {cal['expected_calibration_error']:.3f})")
    lim = ax2.get_xlim()
    ax2.plot(lim, lim, ":", color="grey")
    ax2.set_title("calibration: predicted vs observed grade", fontsize=9)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)


def markdown(record: dict, decision_reasons: list[str] | None = None) -> str:
    """A one-screen summary: verdict, off-policy values, holdout, guards and slices."""
    lines = [f"### Evaluation {record['partition_date']}: candidate "
             f"`{record['candidate_version']}` vs champion `{record.get('champion_version') or 'none'}`"]
    if decision_reasons:
        lines += ["", *[f"- {r}" for r in decision_reasons]]
    ope = record.get("off_policy")
    if ope:
        level = next((p["level"] for p in ope["policies"].values() if "level" in p), 0.95)
        lines += ["", f"Off-policy value ({level:.0%} interval from a bootstrap clustered by "
                      "user, carrying the examination curve's uncertainty; ESS of the "
                      "importance weights; an untrustworthy estimate is not decided on):", "",
                  policy_values.table_markdown(ope)]
        for name, diff in (ope.get("differences") or {}).items():
            version = record.get(f"{name}_version")
            dr = diff["dr"]
            lines += ["", f"{name} `{version}` − champion (doubly robust): {dr['delta']:+.4f} "
                          f"[{dr['ci_low']:+.4f}, {dr['ci_high']:+.4f}]"]
        stats = [(n, p) for n, p in ope["policies"].items() if "exposure_gini" in p]
        lines += ["", "| policy | catalogue coverage | exposure Gini |", "|---|---|---|"]
        lines += [f"| {n} | {p['catalog_coverage']:.3f} | {p['exposure_gini']:.3f} |"
                  for n, p in stats]
    else:
        lines += ["", f"Off-policy value: not available ({record.get('off_policy_unavailable')})."]
    hold = record["holdout"]
    keys = list(next(iter(hold.values())))
    lines += ["", "Temporal holdout:", "", "| metric | " + " | ".join(hold) + " |",
              "|---|" + "---|" * len(hold)]
    lines += [f"| {k} | " + " | ".join(f"{hold[n][k]:.4f}" for n in hold) + " |" for k in keys]
    diff = record.get("holdout_difference")
    if diff:
        lines += ["", f"Holdout NDCG@{record.get('k', 10)}, candidate − {diff['versus']}: "
                      + (f"{diff['delta']:+.4f} [{diff['ci_low']:+.4f}, {diff['ci_high']:+.4f}] "
                         f"on {diff['requests']} informative requests" if diff["requests"] else
                         "no information (no request with two examined items of different "
                         "grades)")]
    lines += ["", f"Slices (NDCG@{record.get('k', 10)} on examined impressions):", "",
              "| slice | requests | " + " | ".join(hold) + " |", "|---|---|" + "---|" * len(hold)]
    for name, s in record["slices"].items():
        # Slice names carry values from the logs (a device, a country): made inert.
        lines.append(f"| {inert(name)} | {s['requests']} | "
                     + " | ".join(f"{s.get(n, float('nan')):.4f}" for n in hold) + " |")
    cal = record["calibration"]
    lines += ["", "Calibration (expected calibration error of the predicted grade): "
              + ", ".join(f"{n} {c['expected_calibration_error']:.4f}" for n, c in cal.items())]
    return "\n".join(lines)


def write(reports: "Location | Path", record: dict,
          decision_reasons: list[str] | None = None) -> dict:
    """Write the report files (and upload them when the reports are remote); returns
    where they are and the chart as a data URI."""
    reports = as_location(reports)
    rel = f"evaluation/{record['partition_date']}"
    out = reports.cache / rel
    out.mkdir(parents=True, exist_ok=True)
    png = chart_png(record)
    text = markdown(record, decision_reasons)
    _atomic_write(out / "evaluation.png", png)
    _atomic_write(out / "report.md", (text + "\n\n![charts](evaluation.png)\n").encode())
    _atomic_write(out / "report.json", json.dumps(record, indent=2, default=str).encode())
    reports.publish(rel)
    return {"dir": reports.where(rel), "markdown": text,
            "chart_data_uri": data_uri(png)}
