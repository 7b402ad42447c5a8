"""Who is this mail from? Matching a sender to a `[[client]]` entry, and the client's label.

Pure: functions of the address and the configured clients. An exact address beats any domain, and a
more specific domain beats a broader one (``shop.acme.example`` before ``acme.example``), so a client
with its own subdomain is not swallowed by the parent company's entry, whatever the order in the file.
"""

from __future__ import annotations

import email.utils
import re
from typing import Sequence

from .config import ClientConfig, LabelsConfig

# Characters a label / folder name may not carry (config._name refuses the same in label names); "/"
# inside a client's name would open a sub-folder under folder-mode labels, so it becomes "-".
_UNUSABLE = str.maketrans({"\r": " ", "\n": " ", "\t": " ", '"': "", "(": "", ")": "", "/": "-", "\\": "-",
                           "*": "", "%": ""})


_BARE = re.compile(r"[A-Za-z0-9_+=-]+(?:\.[A-Za-z0-9_+=-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def normalize_address(address: str) -> str:
    """'Ana <ANA@Acme.Example>' or 'ana@acme.example' -> 'ana@acme.example' ('' when there is none)."""
    if _BARE.fullmatch(address or ""):  # a plain address (as Message.sender is): no parsing needed
        return address.lower()
    _, parsed = email.utils.parseaddr(address or "")
    return (parsed or "").strip().lower()


def match_client(address: str, clients: Sequence[ClientConfig]) -> ClientConfig | None:
    """The client an address belongs to: exact address first, then the most specific matching domain
    (the domain itself or any subdomain of it); None for a stranger."""
    return ClientIndex(clients).match(address)


def match_any(addresses: Sequence[str], clients: Sequence[ClientConfig]) -> ClientConfig | None:
    """The client for the first of several addresses (From, then Reply-To) that matches one."""
    return ClientIndex(clients).match_any(addresses)


class ClientIndex:
    """The clients' addresses and domains in dicts: the policy keeps one per config and asks it for every
    message. When two clients list the same address or domain, the first one listed wins."""

    def __init__(self, clients: Sequence[ClientConfig]):
        self.by_address: dict[str, ClientConfig] = {}
        self.by_domain: dict[str, ClientConfig] = {}
        for client in clients:  # setdefault: the first client listed wins, as in match_client
            for address in client.addresses:
                self.by_address.setdefault(address, client)
            for domain in client.domains:
                self.by_domain.setdefault(domain, client)

    def match(self, address: str) -> ClientConfig | None:
        address = normalize_address(address)
        if "@" not in address:
            return None
        client = self.by_address.get(address)
        if client is not None:
            return client
        # The domains that match are the domain itself and what follows each of its dots (that is what
        # `domain == candidate or domain.endswith("." + candidate)` accepts), longest first: the first
        # one configured is match_client's most specific one.
        candidate = address.rpartition("@")[2]
        while True:
            client = self.by_domain.get(candidate)
            if client is not None:
                return client
            dot = candidate.find(".")
            if dot < 0:
                return None
            candidate = candidate[dot + 1:]

    def match_any(self, addresses: Sequence[str]) -> ClientConfig | None:
        for address in addresses:
            client = self.match(address)
            if client is not None:
                return client
        return None


def client_label(client: ClientConfig, labels_config: LabelsConfig) -> str:
    """'Client/Acme': the configured prefix + the client's name, made safe as a label or folder name."""
    name = " ".join(client.name.translate(_UNUSABLE).split()) or "unnamed"
    return f"{labels_config.client_prefix}{name}"
