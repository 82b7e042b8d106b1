"""``aws_http``: botocore's requests sent by the lean sender, over real loopback sockets.

A small threaded server plays the AWS endpoint (it records each request as
it came off the wire and answers as a test tells it); the client is a real
boto3 EventBridge client from ``make_client``, so botocore serializes, signs
and parses as it does against AWS. moto's server is used by
``test_eventbridge`` (the publisher's path through the lean sender).
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import (
    ConnectionClosedError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
    SSLError,
)

from paysim.adapters import aws_http
from paysim.adapters.aws import ClientTuning, make_client
from paysim.config import AwsSettings
from tests.integration.delivery.test_http1_client import self_signed_certificate

AWS = AwsSettings(region="us-east-1", event_bus_name="bus", event_source="paysim.test")
OK_BODY = json.dumps({"FailedEntryCount": 0, "Entries": [{"EventId": "e-1"}]}).encode()
ENTRY: Any = {"Source": "paysim.test", "DetailType": "t", "Detail": "{}", "EventBusName": "bus"}


def ok(body: bytes = OK_BODY, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"Content-Type: application/x-amz-json-1.1"]
    head += [b"x-amzn-RequestId: r-1", b"Content-Length: %d" % len(body), *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@dataclass
class Received:
    head: bytes
    body: bytes

    @property
    def headers(self) -> list[tuple[str, str]]:
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        return [(n.strip(), v.strip()) for n, v in (line.split(":", 1) for line in lines)]

    def header(self, name: str) -> str:
        return next(v for n, v in self.headers if n.lower() == name.lower())


# The bytes to send, or chunks sent ``drip_s`` apart; None: close without a word.
Answer = Callable[[Received], bytes | list[bytes] | None]


@dataclass
class Peer:
    """An endpoint on loopback; ``answer`` decides what each request gets."""

    answer: Answer
    tls: ssl.SSLContext | None = None
    close_after_each: bool = False
    drip_s: float = 0.0
    stopped: threading.Event = field(default_factory=threading.Event)
    closed: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    requests: list[Received] = field(default_factory=list)
    connections: int = 0
    listener: socket.socket = field(default_factory=socket.socket)

    def start(self) -> str:
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        threading.Thread(target=self._accept, daemon=True).start()
        scheme = "https" if self.tls else "http"
        return f"{scheme}://localhost:{self.listener.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self.tls is not None:
                sock = self.tls.wrap_socket(sock, server_side=True)
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                while len(buffer) < length:
                    buffer += sock.recv(65536)
                request = Received(head, buffer[:length])
                buffer = buffer[length:]
                self.requests.append(request)
                reply = self.answer(request)
                if reply is None:
                    return
                for chunk in [reply] if isinstance(reply, bytes) else reply:
                    if self.stopped.wait(self.drip_s if chunk is not reply else 0):
                        return
                    sock.sendall(chunk)
                if self.close_after_each:
                    return
        except OSError:
            return
        finally:
            sock.close()
            self.closed.release()  # one per connection this side closed

    def stop(self) -> None:
        self.stopped.set()
        self.listener.close()


@pytest.fixture
def peer() -> Iterator[Callable[..., tuple[Peer, str]]]:
    peers: list[Peer] = []

    def start(answer: Answer = lambda _: ok(), **kwargs: Any) -> tuple[Peer, str]:
        p = Peer(answer, **kwargs)
        peers.append(p)
        return p, p.start()

    yield start
    for p in peers:
        p.stop()


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-for-tests")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def lean_client(url: str, **tuning: Any) -> tuple[Any, aws_http.LeanSender]:
    client = make_client("events", AWS, url)
    sender = aws_http.install(client, **tuning)
    assert sender is not None
    return client, sender


def test_put_events_goes_out_as_signed_and_the_answer_is_parsed(peer) -> None:
    server, url = peer()
    client, sender = lean_client(url)
    for _ in range(3):
        answer = client.put_events(Entries=[ENTRY])
        assert answer["Entries"] == [{"EventId": "e-1"}]
        assert answer["ResponseMetadata"]["RequestId"] == "r-1"
        assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert sender.sent == 3
    assert server.connections == 1  # kept alive
    request = server.requests[0]
    assert request.head.startswith(b"POST / HTTP/1.1\r\n")
    assert request.header("Host") == url.removeprefix("http://")
    assert json.loads(request.body)["Entries"] == [ENTRY]
    assert int(request.header("Content-Length")) == len(request.body)
    # AWS recomputes the signature from what arrives: so does this.
    authorization = request.header("Authorization")
    signed = re.search(r"SignedHeaders=([^,]+)", authorization).group(1).split(";")  # type: ignore[union-attr]
    assert "host" in signed
    wire = AWSRequest(
        "POST",
        url + "/",
        headers={n: v for n, v in request.headers if n.lower() in signed},
        data=request.body,
    )
    wire.context["timestamp"] = request.header("X-Amz-Date")
    auth = SigV4Auth(Credentials("AKIDTEST", "secret-for-tests"), "events", "us-east-1")
    expected = auth.signature(auth.string_to_sign(wire, auth.canonical_request(wire)), wire)
    assert authorization.endswith(f"Signature={expected}")


def test_the_app_tuning_installs_it(peer) -> None:
    server, url = peer()
    client = make_client("events", AWS, url, tuning=ClientTuning(lean_http=True))
    client.put_events(Entries=[ENTRY])
    plain = make_client("events", AWS, url)
    plain.put_events(Entries=[ENTRY])
    # urllib3 adds what http.client adds (Accept-Encoding); the lean sender does not.
    lean, botocore_sent = server.requests
    assert "Accept-Encoding" not in dict(lean.headers)
    assert "Accept-Encoding" in dict(botocore_sent.headers)
    assert lean.header("Host") == botocore_sent.header("Host")


def test_an_error_answer_is_botocores_client_error(peer) -> None:
    body = json.dumps({"__type": "ThrottlingException", "message": "slow down"}).encode()
    reply = ok(body).replace(b"200 OK", b"400 Bad Request")
    _, url = peer(lambda _: reply)
    client, _ = lean_client(url)
    with pytest.raises(client.exceptions.ClientError) as caught:
        client.put_events(Entries=[ENTRY])
    assert caught.value.response["Error"]["Code"] == "ThrottlingException"


def test_a_connection_the_server_closed_is_not_reused(peer) -> None:
    server, url = peer(close_after_each=True)
    client, sender = lean_client(url)
    for _ in range(3):
        client.put_events(Entries=[ENTRY])
        # Once the server has closed it, the idle connection must not be used. (Its
        # close racing the next request is the keep-alive race: urllib3 has it too.)
        assert server.closed.acquire(timeout=5)
    assert (sender.sent, server.connections) == (3, 3)


def test_connection_close_from_the_server_ends_the_connection(peer) -> None:
    server, url = peer(lambda _: ok(OK_BODY, b"Connection: close"))
    client, _ = lean_client(url)
    client.put_events(Entries=[ENTRY])
    client.put_events(Entries=[ENTRY])
    assert server.connections == 2


def test_a_refused_connection_is_an_endpoint_connection_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"
    client, _ = lean_client(url)
    with pytest.raises(EndpointConnectionError):
        client.put_events(Entries=[ENTRY])


def test_no_answer_in_time_is_a_read_timeout(peer) -> None:
    answered = threading.Event()

    def stall(_: Received) -> None:
        answered.wait(5)  # no answer until the test is over

    _, url = peer(stall)
    client = make_client("events", AWS, url, tuning=ClientTuning(read_timeout_s=0.05))
    assert aws_http.install(client) is not None
    with pytest.raises(ReadTimeoutError):
        client.put_events(Entries=[ENTRY])
    answered.set()


def test_an_answer_dripping_in_is_a_read_timeout_for_the_whole_answer(peer) -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    # Then a byte every 50 ms: each wait is far shorter than the read timeout.
    _, url = peer(lambda _: [head, *[b"x"] * 100], drip_s=0.05)
    client = make_client("events", AWS, url, tuning=ClientTuning(read_timeout_s=0.3))
    assert aws_http.install(client) is not None
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        client.put_events(Entries=[ENTRY])
    assert time.monotonic() - started < 1.5  # not the 5 s the whole drip takes


@pytest.mark.parametrize(
    "reply",
    [
        None,  # closed without a word
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}",  # cut short, then closed
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 2\r\n\r\n{}",
    ],
    ids=["closed", "cut-short", "no-status-line", "bad-header"],
)
def test_a_broken_answer_is_a_closed_connection(peer, reply: bytes | None) -> None:
    _, url = peer(lambda _: reply, close_after_each=True)
    client, sender = lean_client(url)
    with pytest.raises(ConnectionClosedError):
        client.put_events(Entries=[ENTRY])
    assert sender.sent == 0


def test_an_answer_over_the_bound_is_refused(peer) -> None:
    _, url = peer(lambda _: ok(b"x" * 2000))
    client: Any = make_client("events", AWS, url)
    sender = aws_http.LeanSender(connect_timeout_s=1, read_timeout_s=1, max_idle=1, max_body=1000)
    client.meta.events.register("before-send", sender)
    with pytest.raises(ConnectionClosedError):
        client.put_events(Entries=[ENTRY])


def _prepared(url: str, **headers: str) -> Any:
    return AWSRequest("POST", url, headers=headers, data=b"{}").prepare()


def test_it_declines_what_it_does_not_send() -> None:
    sender = aws_http.LeanSender(connect_timeout_s=1, read_timeout_s=1, max_idle=1)
    assert sender(_prepared("ftp://example.com/")) is None
    assert sender(_prepared("http://example.com/?q=\u00e9")) is None  # not percent-encoded
    assert sender(_prepared("http://example.com/", Expect="100-continue")) is None
    assert sender(_prepared("http://example.com/", **{"Transfer-Encoding": "chunked"})) is None
    streamed = _prepared("http://example.com/")
    streamed.stream_output = True
    assert sender(streamed) is None
    file_body = _prepared("http://example.com/")
    file_body.body = iter([b"{}"])
    assert sender(file_body) is None


def test_a_header_that_cannot_be_sent_is_refused_before_any_io() -> None:
    sender = aws_http.LeanSender(connect_timeout_s=1, read_timeout_s=1, max_idle=1)
    with pytest.raises(HTTPClientError):
        sender(_prepared("http://127.0.0.1:9/", **{"X-Injected": "a\r\nHost: evil"}))


def test_install_leaves_proxied_and_certificate_clients_to_botocore(monkeypatch) -> None:
    def client(url: str, config: Config | None = None) -> Any:
        session = boto3.session.Session(region_name="us-east-1")
        return session.client("events", endpoint_url=url, config=config)

    proxied = Config(proxies={"http": "http://proxy:3128"})
    assert aws_http.install(client("http://127.0.0.1:9", proxied)) is None
    with_cert = Config(client_cert="/nonexistent/cert.pem")
    assert aws_http.install(client("http://127.0.0.1:9", with_cert)) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert aws_http.install(client("https://127.0.0.1:9")) is None
    assert aws_http.install(client("http://127.0.0.1:9")) is not None  # no proxy for http


def test_https_verifies_the_certificate_with_the_given_bundle(peer, tmp_path: Path) -> None:
    cert_pem, key_pem = self_signed_certificate()
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server, url = peer(tls=server_context)
    client, sender = lean_client(url, cafile=str(tmp_path / "cert.pem"))
    client.put_events(Entries=[ENTRY])
    client.put_events(Entries=[ENTRY])
    assert (sender.sent, server.connections) == (2, 1)
    untrusting, _ = lean_client(url)  # botocore's default bundle: not this certificate
    with pytest.raises(SSLError):
        untrusting.put_events(Entries=[ENTRY])


def test_close_closes_the_idle_connections(peer) -> None:
    server, url = peer()
    client, sender = lean_client(url)
    client.put_events(Entries=[ENTRY])
    sender.close()
    client.put_events(Entries=[ENTRY])
    assert server.connections == 2
