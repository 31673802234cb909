"""The page of ``mmi serve`` and its API docs in a real browser: headless Chromium (Debian's
``chromium`` and ``chromium-driver``, driven by selenium) against ``mmi serve`` started as a
user starts it, on 127.0.0.1. Every request the page makes (the browser's own network log)
must go to that address, and the browser's console must stay free of errors. Screenshots are
saved under pytest's tmp folder and, when ``MMI_SCREENSHOT_DIR`` is set, there too.

Without a browser (``chromium``/``chromedriver`` not on PATH) these tests are skipped with
the reason; ``.ci/run`` installs them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from launch import free_port
from test_web import HOSTILE, titled_world

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WAIT = 30  # seconds for anything the page does


def _browser() -> tuple[str, str]:
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip(f"no headless browser to test the page with: {' / '.join(BROWSERS)} or chromedriver not on "
                    f"PATH (install Debian's chromium and chromium-driver; .ci/run does)")
    return browser, driver


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``mmi serve`` over the titled world's bundle, on a free 127.0.0.1 port."""
    _browser()
    world = titled_world(tmp_path_factory.mktemp("browser"))
    port = free_port()
    log = open(world["root"] / "serve.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "multimodal_interest.cli", "serve", "--model",
                                str(world["bundle"]), "--dataset", str(world["root"] / "data"), "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                pytest.fail(f"mmi serve did not start (exit {process.poll()}):\n{log.read()[-4000:]}")
            time.sleep(0.3)
        yield {**world, "base": base}
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, chromedriver = _browser()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
                "--window-size=1280,1000", "--force-device-scale-factor=1", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium-manager look for a driver online
    d = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    d.set_page_load_timeout(WAIT)
    try:
        yield d
    finally:
        d.quit()


def requested_urls(driver) -> list[str]:
    """Every URL the page asked for since the last call (the browser's network log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def only_local(urls: list[str], base: str) -> None:
    assert urls, "the network log recorded no request"
    outside = [u for u in urls if not u.startswith(base + "/")]
    assert not outside, f"requests to other hosts: {outside}"


def screenshot(driver, tmp_path: Path, name: str) -> Path:
    """The whole page (the window stretched to its height), as PNG."""
    path = tmp_path / name
    width, height = driver.get_window_size()["width"], driver.get_window_size()["height"]
    chrome = height - driver.execute_script("return window.innerHeight")
    driver.set_window_size(width, chrome + driver.execute_script("return document.documentElement.scrollHeight"))
    driver.save_screenshot(str(path))
    driver.set_window_size(width, height)
    if os.environ.get("MMI_SCREENSHOT_DIR"):
        folder = Path(os.environ["MMI_SCREENSHOT_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / name)
    return path


def wait_for(driver, condition, what: str):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
    return wait.until(lambda d: condition(d), message=f"waited {WAIT} s for {what}")  # the page redraws lists


# ------------------------------------------------------------------ the page
def test_the_page_finds_adds_recommends_explains_and_maps(server, driver, tmp_path):
    from selenium.webdriver.common.by import By

    base = server["base"]
    driver.get(base + "/")
    wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", "the page")
    assert driver.find_element(By.ID, "source").get_attribute("value") == "a"
    assert driver.find_element(By.ID, "target").get_attribute("value") == "b"
    drawn = len(driver.find_elements(By.CSS_SELECTOR, "#map circle.user"))  # the middle 98% on each axis
    assert 0.9 * httpx.get(f"{base}/map").json()["users"] <= drawn <= httpx.get(f"{base}/map").json()["users"]

    def find_and_add(query: str, title: str) -> None:
        box = driver.find_element(By.ID, "query")
        box.clear()
        box.send_keys(query)
        driver.find_element(By.ID, "search").click()
        rows = wait_for(driver, lambda d: [r for r in d.find_elements(By.CSS_SELECTOR, "#results li")
                                           if r.find_element(By.CSS_SELECTOR, ".title").text == title],
                        f"{title!r} among the results")
        rows[0].find_element(By.CSS_SELECTOR, "button.add").click()

    find_and_add("item a17", "item a17")  # a known title, typed
    find_and_add("Oil paint", "Oil paint set, 24 colours")
    find_and_add("<b>ink</b>", " ".join(HOSTILE.split()))  # markup in a title is shown as text
    history = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#history .title")]
    assert history == ["item a17", "Oil paint set, 24 colours", " ".join(HOSTILE.split())]
    assert driver.execute_script("return document.body.dataset.pwned") is None
    assert not driver.find_elements(By.CSS_SELECTOR, "#history img, #results img, #history b, #results script")

    k = 5
    box = driver.find_element(By.ID, "k")
    box.clear()
    box.send_keys(str(k))
    driver.find_element(By.ID, "recommend").click()
    you = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#map circle.you"), "your point on the map")[0]
    rows = driver.find_elements(By.CSS_SELECTOR, "#recs tbody tr")
    assert len(rows) == k
    pairs = [{"platform": "a", "item_id": i} for i in ("a17", "a7", "a5")]
    want = httpx.post(f"{base}/recommend", json={"history": pairs, "platform": "b", "k": k, "explain": 3}).json()
    for row, item in zip(rows, want["items"]):
        title = row.find_element(By.CSS_SELECTOR, "td.title")
        assert title.text.splitlines() == [want["titles"]["b"][item["item_id"]], item["item_id"]]
        assert row.find_element(By.CSS_SELECTOR, "td.score").text == f"{item['score']:.2f}"
        chips = [c.get_attribute("textContent") for c in row.find_elements(By.CSS_SELECTOR, ".chip .label")]
        assert chips and chips == [want["titles"]["a"][c["item_id"]] for c in item["because"]], "explanations"
    point = [float(you.get_attribute("data-x")), float(you.get_attribute("data-y"))]
    where = httpx.post(f"{base}/users/map", json={"history": pairs}).json()["point"]
    assert np.allclose(point, where, atol=1e-5)
    assert driver.execute_script("return document.body.dataset.pwned") is None

    only_local(requested_urls(driver), base)
    assert console_errors(driver) == []
    shot = screenshot(driver, tmp_path, "page.png")
    assert shot.stat().st_size > 10_000


def test_a_failed_request_is_shown_on_the_page_not_thrown(server, driver):
    """A search the service refuses (an unknown platform, as a stale page would send) is
    reported in the page; the console stays free of script errors."""
    from selenium.webdriver.common.by import By

    base = server["base"]
    driver.get(base + "/")
    wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true", "the page")
    driver.execute_script("const o = document.createElement('option'); o.value = o.textContent = 'gone';"
                          "document.getElementById('source').append(o); document.getElementById('source').value = 'gone';")
    driver.find_element(By.ID, "query").send_keys("item")
    driver.find_element(By.ID, "search").click()
    status = wait_for(driver, lambda d: d.find_element(By.ID, "search-status").text.startswith("Search failed")
                      and d.find_element(By.ID, "search-status"), "the error in the page")
    assert "unknown platform 'gone'" in status.text
    errors = console_errors(driver)  # the browser logs the 422 itself; nothing else
    assert all("422" in e for e in errors), errors


# ------------------------------------------------------------------ the API docs
def test_the_api_docs_render_offline(server, driver, tmp_path):
    from selenium.webdriver.common.by import By

    base = server["base"]
    driver.get_log("performance")  # drop what came before
    driver.get(base + "/docs")
    title = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"), "Swagger UI")[0]
    assert "multimodal-interest" in title.text
    operations = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"), "operations")
    paths = {o.text.replace("\u200b", "") for o in operations}
    assert {"/recommend", "/items/search", "/map", "/users/map"} <= paths, paths
    only_local(requested_urls(driver), base)
    assert console_errors(driver) == []
    screenshot(driver, tmp_path, "docs.png")
