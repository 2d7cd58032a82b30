"""``persaes prefs collect``: a real headless Chromium answering on the page, and the command itself.

The browser is Debian's ``chromium`` driven by its ``chromium-driver`` (``.ci/run`` installs both); the driver's
path is always given, so Selenium Manager never runs and nothing downloads a browser. A missing driver fails the
test rather than skipping it. With ``PERSAES_SCREENSHOTS`` set, the page is saved to docs/images/prefs_page.png.
"""

from __future__ import annotations

import _thread
import json
import os
import shutil
import signal
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from persaes.cli.main import main
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from persaes.app.collect import CollectSession

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = REPO / "docs" / "images" / "prefs_page.png"
ALBUM_PHOTOS = [REPO / "tests/fixtures/photos/Cat3.jpg"] + [
    REPO / "examples/album" / name for name in ("Bird2.jpg", "Nature2.jpg", "Street3.jpg", "Flowers3.jpg")
]
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--window-size=1280,720")


@pytest.fixture()
def album(tmp_path: Path) -> Path:
    root = tmp_path / "album"
    root.mkdir()
    for photo in ALBUM_PHOTOS:
        shutil.copy(photo, root / photo.name)
    return root


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium through Debian's ChromeDriver, never Selenium Manager."""
    assert CHROMEDRIVER.is_file() and CHROMIUM.is_file(), "install Debian's chromium and chromium-driver (see .ci/run)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in CHROME_ARGS + (f"--user-data-dir={tmp_path / 'chromium-profile'}",):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def shown_pair(driver: webdriver.Chrome, progress: str) -> tuple[str, str]:
    """Wait until the progress line reads ``progress`` and both photos are loaded; their album paths."""

    def ready(d: webdriver.Chrome) -> bool:
        return d.find_element(By.ID, "progress").text == progress and d.execute_script(
            "return ['left', 'right'].every(id => document.getElementById(id).naturalWidth > 0)")

    WebDriverWait(driver, 10, poll_frequency=0.05).until(ready)
    left, right = (driver.find_element(By.ID, side).get_attribute("data-path") for side in ("left", "right"))
    return left, right


def records(path: Path) -> list[dict[str, Any]]:
    """The preference file's lines, timestamps left out."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [{key: value for key, value in line.items() if key != "t"} for line in lines]


def test_answers_given_in_the_browser_are_saved(running: Callable, album: Path, tmp_path: Path,
                                                browser: webdriver.Chrome) -> None:
    out = tmp_path / "answers.jsonl"
    with running(CollectSession(album, out, pairs=6)) as server:
        browser.get(server.url)
        first = shown_pair(browser, "0 / 6")
        assert browser.find_element(By.ID, "undo").get_attribute("disabled") is not None
        browser.find_element(By.ID, "left").click()
        second = shown_pair(browser, "1 / 6")
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
        third = shown_pair(browser, "2 / 6")
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_DOWN)
        shown_pair(browser, "3 / 6")
        browser.find_element(By.ID, "undo").click()
        assert shown_pair(browser, "2 / 6") == third
        browser.find_element(By.ID, "right").click()
        shown_pair(browser, "3 / 6")
        if os.environ.get("PERSAES_SCREENSHOTS"):
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            ActionChains(browser).move_to_element(browser.find_element(By.ID, "progress")).perform()  # no hover
            browser.save_screenshot(str(SCREENSHOT))
    assert records(out) == [
        {"winner": first[0], "loser": first[1]},
        {"winner": second[1], "loser": second[0]},
        {"winner": third[0], "loser": third[1], "tie": True},
        {"undo": True},
        {"winner": third[1], "loser": third[0]},
    ]


def test_the_page_says_when_all_pairs_are_answered(running: Callable, album: Path, tmp_path: Path,
                                                   browser: webdriver.Chrome) -> None:
    out = tmp_path / "answers.jsonl"
    with running(CollectSession(album, out, pairs=1)) as server:
        browser.get(server.url)
        shown_pair(browser, "0 / 1")
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
        WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "done").is_displayed())
        assert browser.find_element(By.ID, "progress").text == "1 / 1"
        assert not browser.find_element(By.ID, "left").is_displayed()
    assert len(records(out)) == 1


def collect_until_ctrl_c(album: Path, out: Path, monkeypatch: pytest.MonkeyPatch,
                         answers: int = 0) -> tuple[Any, list[int]]:
    """Run ``persaes prefs collect`` whose "browser" opens the page, gives ``answers`` answers, then presses Ctrl-C.

    Returns:
        The click result and the HTTP statuses the visit got.
    """
    statuses: list[int] = []

    def browser_then_ctrl_c(url: str) -> None:
        def visit() -> None:
            try:
                with urllib.request.urlopen(url, timeout=60) as page:
                    statuses.append(page.status)
                token = {"X-Token": url.split("token=", 1)[1], "Content-Type": "application/json"}
                api = url.split("/?", 1)[0] + "/api/"
                with urllib.request.urlopen(urllib.request.Request(api + "next", headers=token), timeout=60) as r:
                    state = json.loads(r.read())
                for _ in range(answers):
                    body = json.dumps({"winner": state["left_path"], "loser": state["right_path"]}).encode()
                    with urllib.request.urlopen(urllib.request.Request(api + "answer", body, token), timeout=60) as r:
                        statuses.append(r.status)
                        state = json.loads(r.read())
            finally:  # a failed visit ends the server too: the test fails instead of hanging
                _thread.interrupt_main()

        threading.Thread(target=visit, daemon=True).start()

    monkeypatch.setattr("webbrowser.open", browser_then_ctrl_c)
    # Ctrl-C needs Python's own SIGINT handler: a run started in the background inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = CliRunner().invoke(main, ["prefs", "collect", str(album), "--out", str(out), "--pairs", "3"])
    finally:
        signal.signal(signal.SIGINT, previous)
    return result, statuses


def test_collect_prints_the_url_and_ends_cleanly_on_ctrl_c(album: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "answers.jsonl"
    result, statuses = collect_until_ctrl_c(album, out, monkeypatch, answers=1)
    assert result.exit_code == 0, result.output
    url, *rest = result.stdout.splitlines()
    assert url.startswith("http://127.0.0.1:") and "/?token=" in url
    assert rest == [f"answers saved to {out}"]
    assert statuses == [200, 200] and len(records(out)) == 1


def test_collect_stopped_without_an_answer_says_nothing_was_written(album: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "answers.jsonl"
    result, statuses = collect_until_ctrl_c(album, out, monkeypatch)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == ["no answer was given; nothing was written"]
    assert statuses == [200] and not out.exists()
    before = '{"winner": "Cat3.jpg", "loser": "Bird2.jpg"}\n'
    out.write_text(before)  # an earlier run's answer: kept as it was
    result, _ = collect_until_ctrl_c(album, out, monkeypatch)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == [f"no answer was given; {out} was left as it was"]
    assert out.read_text() == before


def test_collect_errors_are_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["prefs", "collect", str(tmp_path / "nope"), "--out", str(tmp_path / "a.jsonl")])
    assert missing.exit_code != 0
    assert missing.output.strip().splitlines() == [f"Error: {tmp_path / 'nope'}: album folder not found"]
    (tmp_path / "one.jpg").write_bytes(ALBUM_PHOTOS[0].read_bytes())
    empty = runner.invoke(main, ["prefs", "collect", str(tmp_path), "--out", str(tmp_path / "a.jsonl"), "--no-browser"])
    assert empty.exit_code != 0
    assert empty.output.strip().splitlines() == [f"Error: {tmp_path}: found 1 photo(s), need at least 2"]
    assert "Example:" in runner.invoke(main, ["prefs", "collect", "--help"]).output
