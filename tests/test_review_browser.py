"""The review page in a real browser: the system's Chromium, headless, driven by Selenium
with the distribution's chromedriver (nothing is downloaded). A person reclassifies two
cells by click and one by keyboard, saves, and the saved CSV given to `count
--corrections` yields exactly the person's classes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import invoke

from leukocli.data.synth import make_fields

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
try:
    import selenium  # noqa: F401

    HAVE_SELENIUM = True
except ImportError:
    HAVE_SELENIUM = False

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER and HAVE_SELENIUM),
    reason="needs the system Chromium and chromedriver (apt-get install chromium "
           "chromium-driver) and selenium (pip install -e '.[dev]'); .ci/run installs them")


@pytest.fixture()
def browser(tmp_path: Path):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for downloads
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                           "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=opts)
    driver.downloads = downloads  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()


def _tally(driver) -> dict[str, int]:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    out = {}
    for li in driver.find_elements(By.CSS_SELECTOR, "#tally li[data-cls]"):
        out[li.get_attribute("data-cls")] = int(li.find_element(By.TAG_NAME, "b").text)
    return out


def _click(driver, css: str):  # type: ignore[no-untyped-def]
    """Click what a person would see: scrolled to the middle, clear of the sticky bar."""
    from selenium.webdriver.common.by import By

    target = driver.find_element(By.CSS_SELECTOR, css)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", target)
    target.click()
    return target


def _panel_of(driver, i: int) -> str:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    tile = driver.find_element(By.CSS_SELECTOR, f'button.cell[data-i="{i}"]')
    return str(tile.find_element(By.XPATH, "ancestor::section").get_attribute("data-cls"))


def test_reclassify_by_click_and_key_save_and_recount(
        browser, tiny_run: tuple[Path, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    make_fields(tmp_path / "fields", n=8, seed=4)
    photos = tmp_path / "fields" / "JPEGImages"
    model = str(tiny_run[1])
    assert invoke("count", str(photos), "--model", model, "--out", str(tmp_path / "count")
                  ).code == 0
    page = Path(json.loads(invoke("review", str(tmp_path / "count"), "--format", "json"
                                  ).stdout)["page"])
    before = json.loads((tmp_path / "count" / "counts.json").read_text())
    classes = before["classes"]
    browser.get(page.as_uri())
    assert _tally(browser) == {c: before["total"]["count"][c] for c in classes}

    # by click: cell 0 to another class, cell 1 is no white cell
    first = _panel_of(browser, 0)
    target = next(c for c in classes if c != first)
    _click(browser, 'button.cell[data-i="0"]')
    _click(browser, f'#menu button[data-cls="{target}"]')
    assert _panel_of(browser, 0) == target
    _click(browser, 'button.cell[data-i="1"]')
    _click(browser, '#menu button[data-cls="NOT_WBC"]')
    assert _panel_of(browser, 1) == "NOT_WBC"

    # by keyboard: select cell 2, Escape the menu, then the number of a class
    tile = _click(browser, 'button.cell[data-i="2"]')
    tile.send_keys(Keys.ESCAPE)
    shown = browser.execute_script(
        "return JSON.parse(document.getElementById('data').textContent).classes")
    key_class = next(c for c in shown if c != _panel_of(browser, 2))
    tile.send_keys(str(shown.index(key_class) + 1))
    assert _panel_of(browser, 2) == key_class
    # arrows move the selection without changing anything
    browser.switch_to.active_element.send_keys(Keys.ARROW_RIGHT)
    assert "3 changed" in browser.find_element(By.ID, "changed").text

    expected = dict(before["total"]["count"])
    cells = list(csv.DictReader((tmp_path / "count" / "cells.csv").open()))
    data = browser.execute_script(
        "return JSON.parse(document.getElementById('data').textContent).cells")
    for i, to in ((0, target), (1, None), (2, key_class)):
        expected[data[i]["proposed"]] -= 1
        if to:
            expected[to] += 1
    assert _tally(browser) == {**expected, "NOT_WBC": 1}

    _click(browser, "#save")
    saved = browser.downloads / "corrections.csv"
    for _ in range(100):
        if saved.is_file() and saved.stat().st_size:
            break
        time.sleep(0.1)
    rows = list(csv.DictReader(saved.open()))
    assert sorted(r["corrected"] for r in rows) == sorted([target, "NOT_WBC", key_class])
    assert all(r["when"] and r["predicted"] for r in rows)

    done = invoke("count", str(photos), "--model", model, "--out", str(tmp_path / "c2"),
                  "--corrections", str(saved), "--format", "json")
    assert done.code == 0, done.stderr
    after = json.loads(done.stdout)
    assert after["total"]["count"] == expected
    assert after["total"]["cells"] == len(cells) - 1
    recounted = list(csv.DictReader((tmp_path / "c2" / "cells.csv").open()))
    def where(r: dict[str, str]) -> tuple[str, float, float]:
        return Path(r["photo"]).name, float(r["x_min"]), float(r["y_min"])

    by_box = {where(r): r["class"] for r in recounted}
    for r in rows:
        assert by_box[where(r)] == r["corrected"]


def test_the_page_looks_right_wide_and_narrow(
        browser, tiny_run: tuple[Path, Path], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """No horizontal scrolling on a phone-sized window; tiles laid out in a grid."""
    from selenium.webdriver.common.by import By

    make_fields(tmp_path / "fields", n=6, seed=5)
    assert invoke("count", str(tmp_path / "fields" / "JPEGImages"), "--model",
                  str(tiny_run[1]), "--out", str(tmp_path / "count")).code == 0
    assert invoke("review", str(tmp_path / "count")).code == 0
    browser.get((tmp_path / "count" / "review.html").as_uri())
    for width in (1280, 390):
        browser.set_window_size(width, 900)
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, (width, overflow)
        tiles = browser.find_elements(By.CSS_SELECTOR, "button.cell")
        assert tiles and all(t.size["width"] >= 80 for t in tiles if t.is_displayed())
        browser.save_screenshot(str(tmp_path / f"review-{width}.png"))
