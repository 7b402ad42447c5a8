"""The TLS context every connection uses: the stdlib's defaults, i.e. certificates verified against
the system's CA store and host names checked.

One context per process, made on first use: loading the CA store costs about a tenth of a second of
CPU, and a pass opens several connections (IMAP, a second IMAP connection that applies decisions
while the first fetches, SMTP). A context holds no per-connection state, so sharing it is safe."""

from __future__ import annotations

import ssl
from functools import lru_cache


@lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()
