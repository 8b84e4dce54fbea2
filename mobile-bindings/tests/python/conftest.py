"""Fixtures of the Python tests over the generated bindings.

The bindings come from `mobile-bindings/generate.sh`: SPARKWATCH_PYTHON_BINDINGS names the
folder with `sparkwatch_mobile.py` and the library (default: target/mobile-bindings/python).
The server tests need a running server: SPARKWATCH_URL (the Rust suite `tests/tests/mobile.rs`
starts a demo server per database and runs pytest against it); without it they are skipped.
"""

import json
import os
import pathlib
import sys
import urllib.request
import uuid

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BINDINGS = os.environ.get("SPARKWATCH_PYTHON_BINDINGS") or os.path.join(
    os.environ.get("CARGO_TARGET_DIR") or ROOT / "target", "mobile-bindings", "python"
)
sys.path.insert(0, str(BINDINGS))

DEMO_PASSWORD = "sparkwatch-demo"


@pytest.fixture(scope="session")
def m():
    try:
        import sparkwatch_mobile
    except ImportError as e:  # pragma: no cover - depends on the machine
        pytest.skip(f"skipped: no generated bindings in {BINDINGS} ({e}); run mobile-bindings/generate.sh")
    return sparkwatch_mobile


@pytest.fixture(scope="session")
def cases():
    path = os.environ.get("SPARKWATCH_CASES") or ROOT / "mobile-bindings" / "tests" / "cases.json"
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Api:
    """GraphQL over HTTP as the app speaks it, and photo uploads."""

    def __init__(self, base, token=None):
        self.base = base
        self.token = token

    def post(self, path, body, content_type):
        req = urllib.request.Request(self.base + path, data=body, method="POST")
        req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", "Bearer " + self.token)
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                return res.read().decode()
        except urllib.error.HTTPError as e:  # GraphQL errors may come with a 4xx status
            return e.read().decode()

    def raw(self, query, variables=None):
        """The whole response body, as text (what the outbox settles with)."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        return self.post("/graphql", body, "application/json")

    def ok(self, query, variables=None):
        res = json.loads(self.raw(query, variables))
        assert not res.get("errors"), res
        return res["data"]

    def login(self, login):
        data = self.ok(
            "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            {"i": {"login": login, "password": DEMO_PASSWORD}},
        )
        return Api(self.base, data["login"]["accessToken"])

    def upload_photo(self):
        png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0\x90\x77\x53\xde"
        boundary = uuid.uuid4().hex
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fix.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n"
        ).encode() + png + f"\r\n--{boundary}--\r\n".encode()
        return json.loads(self.post("/attachments", body, f"multipart/form-data; boundary={boundary}"))["id"]


@pytest.fixture(scope="session")
def server():
    base = os.environ.get("SPARKWATCH_URL")
    if not base:
        pytest.skip("skipped: SPARKWATCH_URL is not set (the Rust suite `mobile` starts a server and sets it)")
    return Api(base.rstrip("/"))
