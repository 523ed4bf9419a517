"""The review page at lab size: how long it takes to write, to open in Chromium, and to
move a cell, for the 50 least confident cells of a count (the baseline) and for all.

A technologist verifies hundreds of cells per differential; the page must stay as quick
with all of them as with a few. Needs the system Chromium and chromedriver.

    leuko synth fields --fields 300 --seed 3
    leuko count fields/JPEGImages --model leuko-demo/runs/latest
    python benchmarks/review_page.py count
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine

MOVE = """
const out = [], tiles = Array.from(document.querySelectorAll('button.cell'));
for (let k = 0; k < 20; k++) {
  const b = tiles[k * 7 % tiles.length], t = performance.now();
  b.click();
  document.querySelector('#menu button[data-cls="NOT_WBC"]').click();
  out.push(performance.now() - t);
}
return out;"""


def measure(count: Path, top: int, driver: Any, folder: Path) -> dict[str, Any]:
    from leukocli.review.page import build_review

    t0 = time.perf_counter()
    page, review = build_review(count, out=folder / f"review-{top}.html", top=top)
    written = time.perf_counter() - t0
    t0 = time.perf_counter()
    driver.get(page.resolve().as_uri())
    opened = time.perf_counter() - t0
    moves = driver.execute_script(MOVE)
    return {"cells": len(review.items), "mb": round(page.stat().st_size / 1e6, 2),
            "write_s": round(written, 2), "open_s": round(opened, 2),
            "move_ms_median": round(statistics.median(moves), 1),
            "move_ms_max": round(max(moves), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("count", type=Path, help="a leuko count output folder")
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = measure(args.count, 50, driver, Path(tmp))
            full = measure(args.count, 0, driver, Path(tmp))
    finally:
        driver.quit()
    ratio = {k: round(full[k] / base[k], 2) if base[k] else None
             for k in ("cells", "write_s", "open_s", "move_ms_median")}
    print(json.dumps({"machine": machine(), "baseline_top50": base, "all": full,
                      "all_vs_baseline": ratio}, indent=2))


if __name__ == "__main__":
    main()
