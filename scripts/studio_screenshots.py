"""Screenshots of every studio page into docs/img/studio-*.png, from a runs folder of tiny in-process runs.

    PYTHONPATH=src python scripts/studio_screenshots.py [--out docs/img]

Needs Debian's Chromium (/usr/bin/chromium) and `pip install playwright`. The runs are two tiny
classifiers on toy sentiment (seconds on a CPU): the pages are real, the model is not.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "studio"))

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def main() -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright
    from studio_fixtures import finished_run, recipe, studio_root

    from tuneforge.studio.app import create_app

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    out = parser.parse_args().out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ.setdefault("TUNEFORGE_REGISTRY", str(Path(tmp) / "runs.sqlite"))
        root, model, data = studio_root(Path(tmp))
        finished_run(model, data, root / "intent-lr-1e-2", epochs=3)
        finished_run(model, data, root / "intent-lr-1e-3", epochs=3, lr=1e-3)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(create_app(root), host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        yaml_text = json.dumps(recipe(model, data, root / "new-run"))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_context(viewport={"width": 1280, "height": 860}, bypass_csp=True).new_page()

            def shot(path: str, name: str, wait: float = 0.5) -> None:
                page.goto(url + path)
                time.sleep(wait)
                page.screenshot(path=str(out / f"studio-{name}.png"), full_page=False)
                print("wrote", out / f"studio-{name}.png")

            shot("/", "runs")
            shot("/runs/intent-lr-1e-2", "run", 2.0)
            shot("/runs/intent-lr-1e-2/report", "report", 1.0)
            shot("/compare?run=intent-lr-1e-2&run=intent-lr-1e-3", "compare")
            page.goto(url + "/recipe")
            page.fill("#yaml", yaml_text)
            time.sleep(1.5)
            page.screenshot(path=str(out / "studio-recipe.png"))
            print("wrote", out / "studio-recipe.png")
            shot("/data?file=train.jsonl&model=models/tiny-enc", "data", 2.0)
            page.goto(url + "/playground?run=intent-lr-1e-2")
            page.fill("textarea[name='text']", "the red lamp is great")
            page.click("text=ask both")
            page.wait_for_function("document.getElementById('tuned-answer').textContent !== '...'")
            page.screenshot(path=str(out / "studio-playground.png"))
            print("wrote", out / "studio-playground.png")
            page.goto(url + "/review")
            page.select_option("select[name='a']", "intent-lr-1e-2")
            page.select_option("select[name='b']", "intent-lr-1e-3")
            page.click("#start-review")
            page.click("#rate-left")
            page.screenshot(path=str(out / "studio-review.png"))
            print("wrote", out / "studio-review.png")
            shot("/runs/intent-lr-1e-2/deploy", "deploy")
            browser.close()
        server.should_exit = True


if __name__ == "__main__":
    main()
