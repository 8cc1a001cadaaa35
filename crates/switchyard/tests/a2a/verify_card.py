"""Verifies agent cards served by the gateway with libraries that share no code with it:
`jwcrypto` (JWS, JSON serialization) and `rfc8785` (JCS). The JWS payload is rebuilt here
from the card as received: RFC 8785 of the card without its `signatures` member (A2A v1.0
§8.4). Prints one JSON line per check; exits non-zero on the first failure.

Usage: verify_card.py SIGNED_BASE ALG KID UNSIGNED_BASE AGENT_ORIGIN AGENT_HS256_KEY
  SIGNED_BASE:   an agent's URL through the gateway on a route with `cardSigning`
  ALG, KID:      what the gateway's signatures must say
  UNSIGNED_BASE: the same agent through a route without a key
  AGENT_ORIGIN:  the agent itself (its own card carries its own HS256 signature)
  AGENT_HS256_KEY: the agent's signing secret
"""

import base64
import copy
import json
import sys

import httpx
import rfc8785
from jwcrypto import jwk, jws

SIGNED, ALG, KID, UNSIGNED, AGENT, AGENT_KEY = sys.argv[1:7]


def report(check: str, **fields) -> None:
    print(json.dumps({"check": check, **fields}), flush=True)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def payload(card: dict) -> bytes:
    unsigned = {k: v for k, v in card.items() if k != "signatures"}
    return rfc8785.dumps(unsigned)


def verifies(card: dict, sig: dict, key: jwk.JWK) -> bool:
    token = json.dumps(
        {"payload": b64url(payload(card)), "protected": sig["protected"], "signature": sig["signature"]}
    )
    obj = jws.JWS()
    obj.deserialize(token)
    try:
        obj.verify(key, alg=json.loads(unb64url(sig["protected"]))["alg"])
        return True
    except jws.InvalidJWSSignature:
        return False


def check_signed(card: dict, where: str) -> dict:
    sigs = card.get("signatures")
    assert isinstance(sigs, list) and len(sigs) == 1, f"{where}: one signature, the gateway's: {sigs}"
    header = json.loads(unb64url(sigs[0]["protected"]))
    assert header["alg"] == ALG and header["kid"] == KID and header["typ"] == "JOSE", header
    jku = header["jku"]
    assert jku == f"{SIGNED}/.well-known/switchyard/jwks.json", jku
    keys = httpx.get(jku).raise_for_status().json()
    assert all("d" not in k for k in keys["keys"]), "a private key in the JWK set"
    keyset = jwk.JWKSet.from_json(json.dumps(keys))
    key = keyset.get_key(KID)
    assert key is not None, keys
    assert verifies(card, sigs[0], key), f"{where}: the gateway's signature does not verify"
    # Every interface points at the gateway, and a changed card no longer verifies.
    assert AGENT not in json.dumps(card), card
    tampered = copy.deepcopy(card)
    tampered["supportedInterfaces"][0]["url"] = AGENT + "/jsonrpc"
    assert not verifies(tampered, sigs[0], key), f"{where}: a tampered card verifies"
    return header


def main() -> None:
    card = httpx.get(f"{SIGNED}/.well-known/agent-card.json").raise_for_status().json()
    header = check_signed(card, "public card")
    report("public_card_verified", alg=header["alg"], kid=header["kid"], jku=header["jku"])

    # The extended card, fetched with JSON-RPC, is signed the same way.
    rpc = httpx.post(
        card["supportedInterfaces"][0]["url"],
        headers={"A2A-Version": "1.0"},
        json={"jsonrpc": "2.0", "id": 1, "method": "GetExtendedAgentCard", "params": {}},
    ).raise_for_status().json()
    check_signed(rpc["result"], "extended card")
    report("extended_card_verified")

    # Without a key the gateway removes the agent's signature: kept on the rewritten card, it
    # would no longer verify. The agent's own card verifies with the agent's own signature
    # (checked with the SDK's verifier, which canonicalizes as the agent signed).
    from a2a.client.card_resolver import parse_agent_card
    from a2a.utils.signing import InvalidSignaturesError, create_signature_verifier

    direct = httpx.get(f"{AGENT}/.well-known/agent-card.json").raise_for_status().json()
    stripped = httpx.get(f"{UNSIGNED}/.well-known/agent-card.json").raise_for_status().json()
    assert "signatures" not in stripped, stripped
    assert AGENT not in json.dumps(stripped), stripped
    verify = create_signature_verifier(lambda kid, jku: AGENT_KEY, ["HS256"])
    verify(parse_agent_card(direct))
    grafted = dict(stripped, signatures=direct["signatures"])
    try:
        verify(parse_agent_card(grafted))
        raise AssertionError("the agent's signature verified over the rewritten card")
    except InvalidSignaturesError:
        pass
    report("stripped_when_no_key")
    report("done")


if __name__ == "__main__":
    main()
