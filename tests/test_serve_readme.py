"""The README's service examples (curl and Python, between the serve markers) do what they say."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

SECTION = Path(__file__).resolve().parents[1].joinpath("README.md").read_text().split("<!-- serve:start -->")[1]
SECTION = SECTION.split("<!-- serve:end -->")[0]


@pytest.fixture(scope="module")
def client(mini, tmp_path_factory):
    from fastapi.testclient import TestClient

    from blend.serve import create_app

    with TestClient(create_app(mini, home=tmp_path_factory.mktemp("home"))) as c:
        yield c


def curl_calls() -> list[list[str]]:
    block = "\n".join(re.findall(r"```bash\n(.*?)```", SECTION, re.S)).replace("\\\n", " ")
    return [shlex.split(line) for line in block.splitlines() if line.strip().startswith("curl")]


def test_readme_curl_calls(client, tmp_path):
    calls = curl_calls()
    assert len(calls) == 3
    for argv in calls:
        url = next(a for a in argv if a.startswith("localhost"))
        headers = dict(h.split(": ", 1) for h in (argv[i + 1] for i, a in enumerate(argv) if a == "-H"))
        data = json.loads(argv[argv.index("-d") + 1])
        r = client.post(url.split("7860", 1)[1], json=data, headers=headers)
        assert r.status_code in (200, 201), (url, r.text)
        if data.get("format") == "png":
            assert r.headers["content-type"] == "image/png"
    names = [d["name"] for d in client.get("/v1/directions", headers={"X-Session-Id": "my-session-1"}).json()["directions"]]
    assert "bigger" in names


def test_readme_python_call(client, tmp_path, monkeypatch, capsys):
    import httpx

    code = re.findall(r"```python\n(.*?)```", SECTION, re.S)[0]

    def local_client(base_url, headers=None, timeout=None):
        client.headers.update(headers or {})
        return client

    monkeypatch.setattr(httpx, "Client", local_client)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README", "exec"), {})
    said = re.search(r"print\(out\[\"texts\"\]\[0\]\)\s+# (.*)", code).group(1).strip()
    assert capsys.readouterr().out.strip() == said
    from PIL import Image
    assert Image.open(tmp_path / "decoded.png").size[0] > 0
