"""TLS verifies certificates: a server on 127.0.0.1 with a self-signed certificate is refused by the
IMAP connection and by the SMTP transport, with a one-line reason, before any password is sent."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading

import pytest

from mailsort.config import ServerConfig
from mailsort.errors import ServerError
from mailsort.imap import connect
from mailsort.smtp import SendError, Transport
from mailsort.tls import tls_context


@pytest.fixture
def self_signed_server(tmp_path):
    """A TLS listener on loopback with a certificate nobody trusts; records whether a handshake got through."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    completed: list[bool] = []

    def serve() -> None:  # one connection per test
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        try:
            with server_context.wrap_socket(conn, server_side=True) as tls:
                completed.append(True)
                tls.sendall(b"* OK not trusted\r\n")
        except (ssl.SSLError, OSError):
            completed.append(False)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    def handshakes() -> list[bool]:
        thread.join(5)
        return completed

    yield listener.getsockname()[1], handshakes
    listener.close()


def test_the_shared_context_verifies_certificates_and_host_names():
    context = tls_context()
    assert context is tls_context()  # made once per process: loading the CA store is the costly part
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_imap_refuses_an_untrusted_certificate(self_signed_server):
    port, handshakes = self_signed_server
    with pytest.raises(ServerError, match="TLS certificate not trusted"):
        connect(ServerConfig("127.0.0.1", port, "tls"), timeout=5)
    assert handshakes() == [False]  # the client broke off the handshake


def test_smtp_refuses_an_untrusted_certificate(self_signed_server):
    port, handshakes = self_signed_server
    with pytest.raises(SendError, match="TLS certificate not trusted") as caught:
        Transport(ServerConfig("127.0.0.1", port, "tls"), timeout=5).send(b"x", mail_from="a@b.example", to=["c@d.example"])
    assert caught.value.fatal and handshakes() == [False]
