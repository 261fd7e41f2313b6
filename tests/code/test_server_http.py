"""The model server under slow and broken clients (issue 24, kind 6), over real HTTP on 127.0.0.1.

The real app (`build_app`: kserve's routes, handlers and middlewares plus ours) on the real uvicorn with
the request deadline, in a thread of this process. The predictor holds only what the request parser needs
(catalogue, rating range, version): every request sent here is refused or answered before any model
would run. The served model itself is tested in tests/integration/test_serving.py.

A request that never arrives whole gets a 408 and its connection is closed (headers never finished, a body
cut short, 64 of them at once), while a model that takes longer than the deadline to answer is not cut;
a repeated JSON key is a 400 naming it; a client's mistake or disconnect logs one line, no traceback;
`/v2/models/reclora/versions/<v>/...` answers for the served version and names it for any other; a V2 key
the Open Inference Protocol lacks, at any level and on either infer route, and an output the model lacks
are 400s naming them (the answer holding only the outputs asked for is tested against a served model).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from reclora.serving import RecLoRAPredictor
from reclora.serving.server import build_app, deadline_protocol

TIMEOUT = 0.6  # the request deadline of these servers, seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """uvicorn with the deadline protocol serving ``app`` in a thread on 127.0.0.1."""

    def __init__(self, app, timeout: float = TIMEOUT) -> None:
        import uvicorn

        self.port = _free_port()
        cfg = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_config=None, http=deadline_protocol(timeout), lifespan="off"
        )
        self.server = uvicorn.Server(cfg)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def raw(self, data: bytes, wait: float) -> tuple[bytes, float]:
        """Send ``data`` and read until the server closes (or ``wait`` s pass); (reply, seconds to close)."""
        t0 = time.time()
        with socket.create_connection(("127.0.0.1", self.port), timeout=wait) as s:
            s.sendall(data)
            reply = b""
            try:
                while chunk := s.recv(65536):
                    reply += chunk
            except TimeoutError:
                return reply, float("inf")
        return reply, time.time() - t0


@pytest.fixture(scope="module")
def server():
    p = RecLoRAPredictor("unused-version-dir")
    p.item_set, p.rating_range, p.version, p.ready = {1, 2, 3, 5, 8}, (1.0, 5.0), "v0003", True
    with _Server(build_app(p)) as srv:
        yield srv


V1 = "/v1/models/reclora:predict"
V2 = "/v2/models/reclora/infer"


# ------------------------------------------------------------------ a request that never arrives whole
@pytest.mark.parametrize(
    "data",
    [
        b"",  # connected, never a byte
        b"POST /v1/models/reclora:predict HTTP/1.1\r\nHost: x\r\ncontent-ty",  # headers never finished
        b"POST /v1/models/reclora:predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b'content-length: 100\r\n\r\n{"instances": [',  # a body cut short
    ],
)
def test_a_request_that_never_arrives_whole_gets_408_and_is_closed(server, data, caplog):
    with caplog.at_level(logging.WARNING):
        reply, seconds = server.raw(data, wait=TIMEOUT * 10)
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert b"did not arrive whole within 0.6 s" in reply
    assert TIMEOUT * 0.9 <= seconds < TIMEOUT * 5  # closed by the deadline, not left open
    time.sleep(0.1)
    lines = [r for r in caplog.records if "408" in r.getMessage() or "499" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None, [r.getMessage() for r in caplog.records]


def test_many_half_sent_requests_are_all_closed(server):
    """The handed finding: 128 half-sent requests were held open indefinitely."""
    socks = []
    try:
        for _ in range(64):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT * 10)
            s.sendall(b"POST /v1/models/reclora:predict HTTP/1.1\r\ncontent-length: 50\r\n\r\n{")
            socks.append(s)
        t0 = time.time()
        for s in socks:
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 408 ")
        assert time.time() - t0 < TIMEOUT * 10
    finally:
        for s in socks:
            s.close()
    assert httpx.get(f"{server.url}/v2/health/live", trust_env=False).status_code == 200  # still serving


def test_a_slow_model_is_not_cut_by_the_request_deadline():
    """The clock stops when the request is whole: answering may take longer than the deadline."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        await asyncio.sleep(TIMEOUT * 3)  # the "model"
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]}
        )
        await send({"type": "http.response.body", "body": body})

    with _Server(app) as srv:
        with httpx.Client(trust_env=False, timeout=30) as c:
            r = c.post(srv.url, content=b"x" * 1000)
            assert r.status_code == 200 and r.content == b"x" * 1000
            r = c.post(srv.url, content=b"second request on the same connection")
            assert r.status_code == 200


# ------------------------------------------------------------------ client mistakes: a 400 and one log line
@pytest.mark.parametrize(
    "path,body,words",
    [
        (V1, b'{"instances": [{"user_id": 1, "candidates": [1], "user_id": 2}]}', "repeats the key 'user_id'"),
        (
            V2,
            b'{"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1], "data": [2]}]}',
            "repeats the key 'data'",
        ),
        (
            V1,
            b'{"instances": [{"user_id": 990001, "candidates": [1, 2], "History": [{"item_id": 3, "rating": 5}]}]}',
            "instances[0] has an unknown field 'History' (did you mean 'history'?)",
        ),
        (
            V1,
            b'{"instances": [{"user_id": 1, "candidates": [1], "history": [{"item_id": 3, "Rating": 5}]}]}',
            "instances[0].history[0] has an unknown field 'Rating'",
        ),
        (
            V2,
            b'{"inputs": [{"name": "user_id", "shape": [2], "datatype": "INT64", "data": [1, 2]},'
            b' {"name": "candidates", "shape": [1, 1], "datatype": "INT64", "data": [1]}]}',
            "candidates",
        ),
        (
            V2,
            b'{"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]},'
            b' {"name": "user_id", "shape": [1], "datatype": "INT64", "data": [2]},'
            b' {"name": "candidates", "shape": [1, 1], "datatype": "INT64", "data": [1]}]}',
            "V2 input 'user_id' is given 2 times",
        ),
        (
            V2,
            b'{"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT32", "data": [2147483648]},'
            b' {"name": "candidates", "shape": [1, 1], "datatype": "INT64", "data": [1]}]}',
            "input 'user_id' is INT32",
        ),
        (V2, b'{"inputs": 3}', "invalid request body"),
        (
            V2,
            b'{"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]},'
            b' {"name": "candidates", "shape": [1, 1], "datatype": "INT64", "data": [1], "Data": [2]}]}',
            "inputs[1] ('candidates') has an unknown field 'Data' (did you mean 'data'?)",
        ),
    ],
)
def test_a_client_mistake_is_a_400_and_one_log_line(server, path, body, words, caplog):
    with caplog.at_level(logging.INFO), httpx.Client(base_url=server.url, trust_env=False, timeout=30) as c:
        r = c.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert words in r.json()["error"], r.text
    time.sleep(0.1)
    mine = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert len(mine) == 1 and mine[0].exc_info is None and "\n" not in mine[0].getMessage(), [
        x.getMessage() for x in mine
    ]
    assert mine[0].getMessage().startswith(f"400 POST {path} from 127.0.0.1:")


def test_a_client_that_goes_away_mid_body_logs_one_line(server, caplog):
    with caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(
                b"POST /v1/models/reclora:predict HTTP/1.1\r\ncontent-type: application/json\r\n"
                b'content-length: 80\r\n\r\n{"instances"'
            )
            time.sleep(0.2)
        time.sleep(TIMEOUT * 2)
    mine = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert len(mine) == 1 and mine[0].exc_info is None, [x.getMessage() for x in mine]
    assert (
        "499 POST /v1/models/reclora:predict" in mine[0].getMessage()
        and "closed the connection" in mine[0].getMessage()
    )


# ------------------------------------------------------------------ the versioned V2 routes
@pytest.mark.parametrize("version", ["v0003", "3", "0003", "V3"])
def test_versioned_routes_answer_for_the_served_version(server, version):
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as c:
        r = c.get(f"/v2/models/reclora/versions/{version}/ready")
        assert r.status_code == 200 and r.json() == {"name": "reclora", "ready": True}, r.text
        r = c.get(f"/v2/models/reclora/versions/{version}")
        assert r.status_code == 200 and r.json()["name"] == "reclora", r.text
        # the same parser as the unversioned route: a bad body is its 400, not a 501
        bad = {"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]}]}
        r = c.post(f"/v2/models/reclora/versions/{version}/infer", json=bad)
        assert r.status_code == 400 and "lacks input 'candidates'" in r.json()["error"], r.text


@pytest.mark.parametrize("route", ["/infer", "/ready", ""])
def test_another_version_is_a_404_naming_the_served_one(server, route):
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as c:
        body = {"inputs": [{"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]}]}
        r = (
            c.post(f"/v2/models/reclora/versions/v0002{route}", json=body)
            if route == "/infer"
            else c.get(f"/v2/models/reclora/versions/v0002{route}")
        )
    assert r.status_code == 404, r.text
    assert "v0002" in r.json()["error"] and "serves reclora version v0003" in r.json()["error"]


# ------------------------------------------------------------------ V2 keys and outputs (issue 24, kind 2)
U1 = {"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]}
C1 = {"name": "candidates", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}
# a valid request but for one key the Open Inference Protocol does not define (kserve's model drops it):
# each was a 200 that scored the first body's user, whatever the extra key meant
V2_UNKNOWN_KEYS = [
    ({"inputs": [U1, C1], "Inputs": [U1, C1]}, "the V2 request has an unknown field 'Inputs' (did you mean 'inputs'?)"),
    (
        {"inputs": [U1, C1], "instances": [{"user_id": 2, "candidates": [3]}]},
        "the V2 request has an unknown field 'instances' ('instances' is the V1 body",
    ),
    ({"inputs": [U1, C1], "Parameters": {}}, "the V2 request has an unknown field 'Parameters' (did you mean"),
    ({"inputs": [U1, C1], "Outputs": [{"name": "cold_start"}]}, "unknown field 'Outputs' (did you mean 'outputs'?)"),
    ({"inputs": [U1, C1], "ID": "a"}, "the V2 request has an unknown field 'ID' (did you mean 'id'?)"),
    ({"inputs": [U1, C1], "model_name": "x"}, "the V2 request has an unknown field 'model_name'; the fields are id"),
    ({"Inputs": [U1, C1]}, "the V2 request has an unknown field 'Inputs' (did you mean 'inputs'?)"),
    ({"inputs": [U1, {**C1, "Data": [3, 5]}]}, "inputs[1] ('candidates') has an unknown field 'Data' (did you mean"),
    ({"inputs": [{**U1, "Shape": [2]}, C1]}, "inputs[0] ('user_id') has an unknown field 'Shape' (did you mean"),
    ({"inputs": [{**U1, "dtype": "INT32"}, C1]}, "inputs[0] ('user_id') has an unknown field 'dtype'"),
    ({"inputs": [U1, C1], "outputs": [{"name": "p_click", "binary_data": True}]}, "outputs[0] ('p_click') has an"),
]


@pytest.mark.parametrize("route", ["/v2/models/reclora/infer", "/v2/models/reclora/versions/v0003/infer"])
@pytest.mark.parametrize("body,words", V2_UNKNOWN_KEYS)
def test_a_v2_key_the_protocol_lacks_is_a_400_naming_it(server, route, body, words):
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as c:
        r = c.post(route, json=body)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"], r.text


def test_a_v2_binary_request_with_an_unknown_key_in_its_json_header_is_a_400(server):
    """The binary extension: the JSON header (inference-header-content-length bytes) is checked the same way."""
    user = {"name": "user_id", "shape": [1], "datatype": "INT64", "parameters": {"binary_data_size": 8}}
    for extra, words in (({"Data": [2]}, "inputs[0] ('user_id') has an unknown field 'Data'"), ({}, None)):
        head = json.dumps({"inputs": [{**user, **extra}, C1], "outputs": [{"name": "p_clik"}]}).encode()
        with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as c:
            r = c.post(
                V2,
                content=head + np.array([1], "<i8").tobytes(),
                headers={"inference-header-content-length": str(len(head)), "content-type": "application/octet-stream"},
            )
        assert r.status_code == 400, r.text
        # without the unknown key the same request gets as far as its (misspelt) output: the header was read
        assert (words or "unknown V2 output 'p_clik'") in r.json()["error"], r.text


@pytest.mark.parametrize(
    "outputs,words",
    [
        (
            [{"name": "p_clik"}],
            "unknown V2 output 'p_clik' (did you mean 'p_click'?); the outputs are p_click, cold_start",
        ),
        ([{"name": "cold_start"}, {"name": "score"}], "unknown V2 output 'score'; the outputs are p_click, cold_start"),
        ([{"name": "p_click"}, {"name": "p_click"}], "V2 output 'p_click' is asked for 2 times; each output once"),
    ],
)
def test_a_v2_output_the_model_lacks_is_a_400_before_any_scoring(server, outputs, words):
    """This server has no model: a request that reached the forward would be a 500, not this 400."""
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as c:
        r = c.post(V2, json={"inputs": [U1, C1], "outputs": outputs})
    assert r.status_code == 400, r.text
    assert words in r.json()["error"], r.text
