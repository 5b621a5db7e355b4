"""Authentication at the handshake, entitlements at subscribe, token expiry
and refresh, and the same over TLS (docs/PROTOCOL.md, "Authentication").

Tokens are signed here with PyJWT; the TLS test makes its own CA and
server certificate with trustme and connects with an ``ssl`` context that
trusts only that CA.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import jwt
import pytest
from websockets.exceptions import InvalidStatus

from tickcast_client import REPO_ROOT, http_request

SECRET = "test-secret-test-secret-test-secret!"
UNIVERSE = ["AAPL", "BTCUSDT", "BTCEUR", "ETHUSDT"]
REPLAY_DIR = REPO_ROOT / "tests" / "data" / "binance"
RECORDING = "btcusdt_20240808.gz"


def token(secret: str = SECRET, exp_in: float | None = 300, **claims) -> str:
    if exp_in is not None:
        claims["exp"] = int(time.time() + exp_in)
    return jwt.encode(claims, secret, algorithm="HS256")


def bearer(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


@pytest.fixture
def universe(tmp_path) -> Path:
    path = tmp_path / "universe.txt"
    path.write_text("\n".join(UNIVERSE) + "\n")
    return path


@pytest.fixture
def authed(tickcast, universe):
    """A server with --auth-jwt-secret, the universe declared, replay on."""
    return tickcast(
        extra=[
            "--auth-jwt-secret",
            SECRET,
            "--symbols-file",
            str(universe),
            "--replay-dir",
            str(REPLAY_DIR),
            "--auth-expiry-warning",
            "2s",
        ]
    )


def refused(server, **kw) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as info:
        server.connect("json", **kw)
    response = info.value.response
    return response.status_code, response.body.decode(errors="replace")


def test_no_bad_or_expired_token_gets_401(authed):
    status, body = refused(authed)
    assert status == 401 and "missing token" in body, body
    status, body = refused(authed, headers=bearer(token(secret="another-secret-another-secret-xyz!", symbols=["*"])))
    assert status == 401 and "bad signature" in body, body
    status, body = refused(authed, headers=bearer(token(exp_in=-5, symbols=["*"])))
    assert status == 401 and "expired" in body, body
    status, body = refused(authed, headers={"Authorization": "Bearer not-a-jwt"})
    assert status == 401 and "invalid token" in body, body
    # /symbols needs a token and lists only the entitled symbols; /healthz is open.
    status, headers, _ = authed.http("/symbols")
    assert status == 401 and headers.get("www-authenticate", "").startswith("Bearer")
    status, _, body = authed.http("/symbols", headers=bearer(token(symbols=["BTC*"])))
    assert status == 200 and sorted(__import__("json").loads(body)) == ["BTCEUR", "BTCUSDT"]
    assert authed.http("/healthz")[0] == 200
    # The token never reaches the log.
    secret_token = token(symbols=["*"])
    c = authed.connect("json", query=f"encoding=json&token={secret_token}")
    c.close()
    assert secret_token not in authed.log_tail(200)


def test_header_query_and_subprotocol_tokens_all_work(authed):
    tok = token(symbols=["AAPL"])
    clients = [
        authed.connect("json", headers=bearer(tok)),
        authed.connect("json", query=f"encoding=json&token={tok}"),
        authed.connect(None, subprotocols=["tickcast.json", f"base64url.bearer.{tok}"], decode_as="json"),
    ]
    # The token entry is never echoed as the chosen subprotocol.
    assert clients[2].ws.subprotocol == "tickcast.json"
    for c in clients:
        c.subscribe_and_snapshots("AAPL")


def test_entitlements_apply_at_subscribe(authed):
    c = authed.connect("json", headers=bearer(token(symbols=["BTC*", "AAPL"])))
    c.subscribe("AAPL", "ETHUSDT", "BTCUSDT")
    msgs = c.recv_until(lambda m: m["type"] == "error")
    ack = next(m for m in msgs if m["type"] == "ack")
    assert ack["symbols"] == ["AAPL", "BTCUSDT"], ack
    err = msgs[-1]
    assert err["code"] == "forbidden" and err["symbols"] == ["ETHUSDT"], err
    # The permitted ones still apply: their snapshots come.
    snaps = {m["sym"] for m in msgs + c.drain(0.3) if m["type"] == "snapshot"}
    assert snaps == {"AAPL", "BTCUSDT"}, snaps

    # "*" expands to the permitted symbols only, now and later.
    w = authed.connect("json", headers=bearer(token(symbols=["BTC*"])))
    w.subscribe("*")
    assert w.recv_type("ack")["symbols"] == ["*"]
    snaps = {m["sym"] for m in w.drain(0.3) if m["type"] == "snapshot"}
    assert snaps == {"BTCUSDT", "BTCEUR"}, snaps
    feed = authed.feed()
    feed.send({"type": "trade", "sym": "ETHNEW", "px": 1.0, "sz": 1.0}, {"type": "trade", "sym": "BTCNEW", "px": 2.0, "sz": 1.0})
    later = w.recv_until(lambda m: m.get("sym") == "BTCNEW" and m["type"] == "trade")
    assert all(m.get("sym") != "ETHNEW" for m in later + w.drain(0.3)), later

    # max_subscriptions: the ones over the limit are refused.
    m = authed.connect("json", headers=bearer(token(symbols=["*"], max_subscriptions=2)))
    m.subscribe("AAPL", "BTCUSDT", "ETHUSDT")
    msgs = m.recv_until(lambda x: x["type"] == "error")
    assert next(x for x in msgs if x["type"] == "ack")["symbols"] == ["AAPL", "BTCUSDT"]
    assert msgs[-1]["code"] == "forbidden" and msgs[-1]["symbols"] == ["ETHUSDT"], msgs[-1]
    assert "max_subscriptions" in msgs[-1]["message"]


def test_replay_needs_its_entitlement(authed):
    path = "/replay"
    q = f"source={RECORDING}&encoding=json&speed=max"
    status, body = refused(authed, path=path, query=q, headers=bearer(token(symbols=["*"])))
    assert status == 403 and "replay" in body, body
    status, body = refused(authed, path=path, query=q, headers=bearer(token(symbols=["*"], replay=["other.gz"])))
    assert status == 403, body
    # Symbols granted by pattern only: the replay must name entitled symbols.
    status, body = refused(authed, path=path, query=q, headers=bearer(token(symbols=["BTC*"], replay=True)))
    assert status == 403 and "symbols" in body, body
    status, body = refused(authed, path=path, query=q + "&symbols=ETHUSDT", headers=bearer(token(symbols=["BTC*"], replay=True)))
    assert status == 403 and "ETHUSDT" in body, body
    ok = authed.connect("json", path=path, query=q + "&symbols=BTCUSDT", headers=bearer(token(symbols=["BTC*"], replay=True)))
    ok.recv_until(lambda m: m["type"] in ("trade", "quote", "book", "snapshot"))
    whole = authed.connect("json", path=path, query=q, headers=bearer(token(symbols=["*"], replay=[RECORDING])))
    whole.recv_until(lambda m: m["type"] in ("trade", "quote", "book", "snapshot"))


def test_refresh_extends_and_expiry_closes_with_4001(authed):
    short = token(exp_in=3, sub="ann", symbols=["AAPL"])
    exp = jwt.decode(short, options={"verify_signature": False})["exp"]
    kept = authed.connect("json", headers=bearer(short))
    dropped = authed.connect("json", headers=bearer(short))
    warning = kept.recv_until(lambda m: m["type"] == "token_expiring", timeout=4)[-1]
    assert warning == {"type": "token_expiring", "expires_at": exp}, warning

    # A bad refresh is refused and changes nothing; a good one is acked.
    kept.send_json({"op": "refresh", "token": token(secret="another-secret-another-secret-xyz!")})
    err = kept.recv_until(lambda m: m["type"] == "error")[-1]
    assert err["code"] == "unauthorized", err
    kept.send_json({"op": "refresh", "token": token(exp_in=60, sub="bob", symbols=["*"])})
    assert kept.recv_until(lambda m: m["type"] == "error")[-1]["code"] == "unauthorized"
    kept.send_json({"op": "refresh", "token": token(exp_in=60, sub="ann", symbols=["AAPL", "BTC*"])})
    ack = kept.recv_until(lambda m: m["type"] == "ack")[-1]
    assert ack == {"type": "ack", "op": "refresh", "symbols": []}, ack

    code, reason, _ = dropped.expect_close(timeout=6)
    assert (code, reason) == (4001, "token expired")
    # Past the first token's exp, the refreshed session lives on, with the
    # new token's entitlements for later subscribes.
    time.sleep(max(0.0, exp + 1 - time.time()))
    kept.subscribe_and_snapshots("BTCUSDT")


def test_rs256_public_key(tickcast, tmp_path, universe):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "pub.pem").write_bytes(public_pem)
    server = tickcast(extra=["--auth-public-key", str(tmp_path / "pub.pem"), "--symbols-file", str(universe)])
    good = jwt.encode({"symbols": ["AAPL"], "exp": int(time.time() + 300)}, key, algorithm="RS256")
    server.connect("json", headers=bearer(good)).subscribe_and_snapshots("AAPL")
    # HS256 signed with the public key's bytes (algorithm confusion): refused.
    # (Signed by hand: PyJWT itself refuses to use a PEM key as an HMAC secret.)
    import base64, hashlib, hmac

    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(b'{"symbols":["*"]}')
    forged = (signing_input + b"." + b64(hmac.new(public_pem, signing_input, hashlib.sha256).digest())).decode()
    status, body = refused(server, headers=bearer(forged))
    assert status == 401 and "HS256" in body, body


def test_wss_with_a_test_ca(tickcast, tmp_path, universe):
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert_pem, key_pem = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(key_pem))
    cert.cert_chain_pems[0].write_to_path(str(cert_pem))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    server = tickcast(
        extra=[
            "--tls-cert", str(cert_pem), "--tls-key", str(key_pem),
            "--auth-jwt-secret", SECRET, "--symbols-file", str(universe),
        ],
        ssl_context=context,
    )
    status, body = refused(server)
    assert status == 401, body
    c = server.connect("json", headers=bearer(token(symbols=["BTC*"])))
    c.subscribe_and_snapshots("BTCUSDT")
    c.subscribe("AAPL")
    assert c.recv_until(lambda m: m["type"] == "error")[-1]["code"] == "forbidden"
    feed = server.feed()
    feed.send({"type": "trade", "sym": "BTCUSDT", "px": 10.5, "sz": 2.0})
    trade = c.recv_until(lambda m: m["type"] == "trade")[-1]
    assert trade["sym"] == "BTCUSDT" and trade["px"] == 10.5
    assert server.http("/symbols", headers=bearer(token(symbols=["AAPL"])))[2] == b'["AAPL"]'
    # Plain HTTP to the TLS port gets no HTTP answer.
    with pytest.raises((OSError, Exception)):
        http_request(server.port, "/healthz", timeout=2)
