"""The studio's access rules: loopback, the token, same origin, the runs root, uploads."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tuneforge.errors import UserError
from tuneforge.studio.app import create_app
from tuneforge.studio.security import Guard, inside, run_name

HOST = "http://127.0.0.1:8000"
SAME = {"origin": HOST}


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    root.mkdir()
    (root / "ok.jsonl").write_text('{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n', encoding="utf-8")
    return root


def test_loopback_needs_no_token_but_off_loopback_one_is_made() -> None:
    assert Guard.for_host("127.0.0.1", None).token is None
    made = Guard.for_host("0.0.0.0", None)
    assert made.token and len(made.token) >= 24
    assert Guard.for_host("0.0.0.0", "mine").token == "mine"


def test_inside_refuses_paths_outside_the_root(root: Path, tmp_path: Path) -> None:
    assert inside(root, "ok.jsonl") == (root / "ok.jsonl").resolve()
    for bad in ("/etc/passwd", "../x", str(tmp_path)):
        with pytest.raises(UserError, match="outside the studio's runs root"):
            inside(root, bad)
    (root / "link").symlink_to("/etc")
    with pytest.raises(UserError):
        inside(root, "link/passwd")  # a link out of the root is followed, then refused


def test_run_names_are_one_plain_component() -> None:
    assert run_name("my-run_1.2") == "my-run_1.2"
    for bad in ("..", ".studio", "a/b", "", "a b"):
        with pytest.raises(UserError):
            run_name(bad)


def test_loopback_refuses_foreign_origin_and_rebinding(root: Path) -> None:
    client = TestClient(create_app(root, start_queue=False), base_url=HOST)
    assert client.get("/").status_code == 200
    assert client.get("/", headers={"host": "evil.example"}).status_code == 403  # DNS rebinding
    refused = client.post("/api/recipe/validate", json={"yaml": "task: x"}, headers={"origin": "http://evil.example"})
    assert refused.status_code == 403
    assert client.post("/api/recipe/validate", json={"yaml": "task: x"}).status_code == 403  # no origin at all
    assert client.post("/api/recipe/validate", json={"yaml": "task: x"}, headers=SAME).status_code == 200


def test_off_loopback_every_request_needs_the_token(root: Path) -> None:
    app = create_app(root, host="0.0.0.0", token="s3cret-token", start_queue=False)
    client = TestClient(app, base_url="http://studio.lan:7860")
    assert client.get("/").status_code == 401
    assert client.get("/?token=wrong").status_code == 401
    opened = client.get("/?token=s3cret-token", follow_redirects=False)
    assert opened.status_code == 303 and "token" not in opened.headers["location"]
    assert client.get("/").status_code == 200  # the cookie now carries it
    body = {"yaml": "task: x"}
    assert client.post("/api/recipe/validate", json=body).status_code == 403  # token, but no same-origin proof
    ok = client.post("/api/recipe/validate", json=body, headers={"origin": "http://studio.lan:7860"})
    assert ok.status_code == 200


def test_files_outside_the_root_are_never_read(root: Path) -> None:
    client = TestClient(create_app(root, start_queue=False), base_url=HOST)
    for url in ("/data?file=/etc/passwd", "/data/audit.html?file=../../etc/passwd", "/runs/..%2F..%2Fetc/report"):
        r = client.get(url)
        assert r.status_code in (400, 404) and "root:" not in r.text
    r = client.get("/data?file=/etc/passwd")
    assert "outside the studio" in r.text and "Traceback" not in r.text


def test_uploads_are_size_limited_and_read_like_any_data_file(root: Path) -> None:
    client = TestClient(create_app(root, start_queue=False, max_upload_mb=0.001), base_url=HOST)
    good = client.post("/api/data/upload?name=rows.jsonl", content=b'{"text": "hi", "label": "a"}\n', headers=SAME)
    assert good.status_code == 200 and good.json()["rows"] == 1
    big = client.post("/api/data/upload?name=big.jsonl", content=b"x" * 5000, headers=SAME)
    assert big.status_code == 400 and "upload limit" in big.json()["error"]
    broken = client.post("/api/data/upload?name=bad.jsonl", content=b'{"text": \n', headers=SAME)
    assert broken.status_code == 400 and "bad.jsonl" in broken.json()["error"]
    assert not (root / ".studio" / "uploads" / "bad.jsonl").exists()
    sneaky = client.post("/api/data/upload?name=..%2Fx.jsonl", content=b"{}\n", headers=SAME)
    assert sneaky.status_code == 400
    assert client.post("/api/data/upload?name=x.exe", content=b"{}\n", headers=SAME).status_code == 400


def test_recipe_validation_gives_the_cli_message_and_the_studio_rules(root: Path) -> None:
    client = TestClient(create_app(root, start_queue=False), base_url=HOST)
    text = f"task: classification\nmodel: minilm-l6\ndata: {{train: {root / 'ok.jsonl'}}}\noutput: {root / 'r1'}\n"
    ok = client.post("/api/recipe/validate", json={"yaml": text, "set": ["train.lr=0.001"]}, headers=SAME).json()
    assert ok["ok"], ok
    assert "lr: 0.001" in ok["yaml"]
    typo = client.post("/api/recipe/validate", json={"yaml": text, "set": ["train.learning_rate=1"]}, headers=SAME)
    assert "train.learning_rate" in typo.json()["error"] and not typo.json()["ok"]
    outside = text.replace(str(root / "r1"), "/tmp/elsewhere-run")
    refused = client.post("/api/recipe/validate", json={"yaml": outside}, headers=SAME).json()
    assert "runs root" in refused["error"]
