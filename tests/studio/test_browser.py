"""The studio in a real browser (Playwright driving Debian's Chromium) on a tiny in-process model.

The path a user takes: the runs page, a run launched from the recipe form, its curve updating while it
trains, stop and resume, its report, a comparison with a second run (trained through the API, as the
CLI does), and three blind review ratings that end up in the preference file.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from studio_fixtures import finished_run, recipe, studio_root

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def studio(tmp_path: Path) -> Iterator[dict[str, Any]]:
    import uvicorn

    from tuneforge.studio.app import create_app

    root, model, data = studio_root(tmp_path)
    finished_run(model, data, root / "cli-run")  # a run started outside the studio
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(root), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "root": root, "model": model, "data": data, "app": server.config.app}
    server.should_exit = True
    thread.join(timeout=10)
    for job in server.config.app.state.studio.queue.jobs:  # never leave a training process behind
        if job.state in ("running", "stopping") and job.pid:
            import os
            import signal

            os.killpg(job.pid, signal.SIGKILL)


@pytest.fixture()
def page(studio: dict[str, Any]) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium"),
                                    args=ARGS)
        # the studio's CSP forbids eval, which Playwright's wait_for_function uses; the pages' own script needs none
        tab = browser.new_context(bypass_csp=True).new_page()
        tab.set_default_timeout(60_000)
        yield tab
        browser.close()


def _state(root: Path, name: str) -> str:
    status = root / name / "status.json"
    return json.loads(status.read_text())["state"] if status.is_file() else "absent"


def _until(page: Any, condition: str, timeout: int = 60_000) -> None:
    """Wait for a condition on the page; ``$('id')`` is the element (None while a page loads)."""
    page.wait_for_function(f"(() => {{ const $ = id => document.getElementById(id); return {condition}; }})()",
                           timeout=timeout)


@pytest.fixture()
def explain(studio: dict[str, Any], page: Any, request: pytest.FixtureRequest) -> Iterator[None]:
    """On a failure: what the page said and what the training job logged."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed == failed:
        return
    logs = studio["root"] / ".studio" / "logs"
    print("PAGE:", page.url, page.inner_text("body")[:3000])
    for log in sorted(logs.glob("*.log")):
        print(log.name, log.read_text(errors="replace")[-3000:])


def test_the_whole_path_in_a_browser(studio: dict[str, Any], page: Any, explain: None) -> None:
    url, root = studio["url"], studio["root"]
    page.goto(url + "/")
    assert page.locator("#runs tr[data-run='cli-run'] .state").inner_text().startswith("complete")

    # launch from the form: a run long enough to watch (many small steps, a checkpoint every 20)
    page.goto(url + "/recipe")
    text = yaml.safe_dump(recipe(studio["model"], studio["data"], root / "live", max_steps=2500, eval_every=20,
                                 epochs=None), sort_keys=False)
    page.fill("#yaml", text)
    _until(page, "$('validation')?.textContent?.startsWith('valid')")
    page.select_option("select[name='train.scheduler']", "constant")  # a form field merges into the YAML
    _until(page, "$('yaml')?.value?.includes('scheduler: constant')")
    page.click("#train")
    page.wait_for_url(url + "/runs/live")

    # the curve updates without a reload, past two checkpoints (every 20 steps)
    _until(page, "Number($('points')?.textContent) >= 3", timeout=90_000)
    first = int(page.inner_text("#points"))
    _until(page, f"Number($('points')?.textContent) > {first}")
    assert page.locator("#curve polyline").count() >= 1
    _until(page, "$('progress-text')?.textContent?.includes('of 2500')")
    _until(page, "Number($('points')?.textContent) >= 45")

    # stop cleanly (SIGINT), then resume exactly as --resume
    page.click("#stop")
    _until(page, "$('state')?.textContent === 'interrupted' && $('job-state')?.textContent === 'interrupted'")
    assert _state(root, "live") == "interrupted"
    assert any((root / "live" / "checkpoints").iterdir())
    page.reload()
    assert "optimizer steps" in page.inner_text("#preflight")  # the preflight the run saved, as the CLI prints it
    page.click("#resume")
    _until(page, "$('state')?.textContent === 'complete' && $('job-state')?.textContent === 'done'", timeout=120_000)
    jobs = studio["app"].state.studio.queue.jobs
    assert [j.resume for j in jobs] == [False, True] and jobs[-1].state == "done"
    assert "--resume" in jobs[-1].command()

    # the report, and a comparison with the CLI's run on the same test items
    page.goto(url + "/runs/live/report")
    frame = page.frame_locator("#report")
    assert frame.locator("h1").first.inner_text()
    page.goto(url + "/compare?run=live&run=cli-run")
    assert "accuracy" in page.inner_text("#pairs")

    # three blind ratings end up as preference pairs
    page.goto(url + "/review")
    page.select_option("select[name='a']", "live")
    page.select_option("select[name='b']", "cli-run")
    page.fill("input[name='n']", "3")
    page.click("#start-review")
    for choice in ("#rate-left", "#rate-right", "#rate-left"):
        page.click(choice)
    assert "over 3 rating(s)" in page.inner_text("#win-rate")
    prefs = root / page.inner_text("#prefs")
    rows = [json.loads(line) for line in prefs.read_text().splitlines()]
    assert len(rows) == 3 and all({"prompt", "chosen", "rejected"} <= r.keys() for r in rows)
