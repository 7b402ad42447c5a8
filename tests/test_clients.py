"""Matching a sender to a [[client]] entry, and client labels."""

from __future__ import annotations

from mailsort.clients import ClientIndex, client_label, match_any, match_client
from mailsort.config import ClientConfig, LabelsConfig, parse_config

ACME = ClientConfig("Acme", domains=("acme.example",))
SHOP = ClientConfig("Acme Shop", domains=("shop.acme.example",))
BOSS = ClientConfig("Boss", addresses=("boss@acme.example",))
CLIENTS = (ACME, SHOP, BOSS)


def test_exact_address_wins_over_domain_whatever_the_order():
    assert match_client("boss@acme.example", CLIENTS) is BOSS
    assert match_client("Boss@ACME.example", CLIENTS) is BOSS


def test_domain_and_subdomain():
    assert match_client("ana@acme.example", CLIENTS) is ACME
    assert match_client("ops@mail.acme.example", CLIENTS) is ACME
    assert match_client("ops@eu.mail.acme.example", CLIENTS) is ACME


def test_most_specific_domain_wins():
    assert match_client("orders@shop.acme.example", CLIENTS) is SHOP
    assert match_client("orders@eu.shop.acme.example", (SHOP, ACME)) is SHOP


def test_strangers_and_lookalikes_do_not_match():
    assert match_client("ana@notacme.example", CLIENTS) is None
    assert match_client("ana@acme.example.evil", CLIENTS) is None
    assert match_client("", CLIENTS) is None
    assert match_client("not an address", CLIENTS) is None
    assert match_client("ana@acme.example", ()) is None


def test_display_name_form_and_several_addresses():
    assert match_client('"Ana" <ana@acme.example>', CLIENTS) is ACME
    assert match_any(["x@stranger.example", "boss@acme.example"], CLIENTS) is BOSS
    assert match_any([], CLIENTS) is None


def test_client_label_uses_prefix_and_a_safe_name():
    assert client_label(ACME, LabelsConfig()) == "Client/Acme"
    assert client_label(ClientConfig("Rossi (Pizzeria)/Roma", domains=("r.example",)),
                        LabelsConfig(client_prefix="Clienti.")) == "Clienti.Rossi Pizzeria-Roma"


def test_matching_clients_from_a_parsed_config():
    config = parse_config({
        "calendar": {"hours": {"mon": ["09:00-17:00"]}},
        "client": [{"name": "Acme", "domains": ["@Acme.Example"]}, {"name": "Rossi", "addresses": ["M.Rossi@Mail.example"]}],
    })
    assert match_client("m.rossi@mail.example", config.clients).name == "Rossi"
    assert match_client("x@sub.acme.example", config.clients).name == "Acme"
    assert client_label(match_client("x@acme.example", config.clients), config.labels) == "Client/Acme"


def plain_match_client(address, clients):
    """The definition, one client after the other: exact address first, then the longest matching domain
    (the first client listed among equals). ClientIndex must answer the same."""
    from mailsort.clients import normalize_address

    address = normalize_address(address)
    if "@" not in address:
        return None
    for client in clients:
        if address in client.addresses:
            return client
    domain = address.rpartition("@")[2]
    best = None
    for client in clients:
        for candidate in client.domains:
            if (domain == candidate or domain.endswith("." + candidate)) and (best is None or len(candidate) > best[0]):
                best = (len(candidate), client)
    return best[1] if best else None


def test_client_index_answers_like_the_plain_definition():
    """ClientIndex (behind match_client and the policy) finds clients with dicts: the same client as the
    plain walk over every client, for every address."""
    odd = (ClientConfig("Dup", domains=("shop.acme.example", "")), ClientConfig("Boss2", addresses=("boss@acme.example",)),
           ClientConfig("Dot", domains=(".odd.example", "tail.")), ClientConfig("Top", domains=("example",)))
    addresses = [f"{local}@{domain}" for local in ("boss", "ana", "Boss")
                 for domain in ("acme.example", "shop.acme.example", "eu.shop.acme.example", "notacme.example",
                                "example", "ACME.Example", "x.odd.example", ".odd.example", "odd.example", "tail.",
                                "a.tail.", "acme.example.", "")]
    addresses += ["", "not an address", '"Ana" <ana@eu.shop.acme.example>', "a@b@acme.example"]
    for clients in (CLIENTS, CLIENTS[::-1], CLIENTS + odd, odd + CLIENTS, ()):
        index = ClientIndex(clients)
        for address in addresses:
            assert index.match(address) is plain_match_client(address, clients), (address, clients)
            assert match_client(address, clients) is index.match(address)
        first = next((c for c in (plain_match_client(a, clients) for a in addresses) if c is not None), None)
        assert index.match_any(addresses) is match_any(addresses, clients) is first
