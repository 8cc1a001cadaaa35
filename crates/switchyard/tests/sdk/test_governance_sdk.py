"""Governance refusals as the official SDKs' own typed errors.

The `gov_*` binds carry the route policies of sdk.rs's GOVERNANCE: `apiKeyAuth` (alice may
only call `sim-gpt*`; bob, carol, dave and erin any model) and `localRateLimit` (3 requests a
minute per key; erin's team `burst` also 1 every 2 s). The buckets are per key and per bind,
so each test that spends a limit has a key of its own.
"""

import time

import anthropic
import openai
import pytest

MESSAGES = [{"role": "user", "content": "Hello there"}]


def oai(gw, key: str, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw['gov_openai']}/v1", api_key=key, max_retries=max_retries)


def ant(gw, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw["gov_anthropic"], api_key=key, max_retries=0)


# --- openai ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "code"), [(None, "unauthenticated"), ("sk-gov-nope", "invalid_api_key")])
def test_openai_missing_or_wrong_key_is_authentication_error(gw, key, code):
    # No key: the SDK insists on one, unless the request explicitly omits Authorization.
    c = oai(gw, key or "unsent")
    extra = {"Authorization": openai.Omit()} if key is None else None
    with pytest.raises(openai.AuthenticationError) as e:
        c.chat.completions.create(model="sim-gpt", messages=MESSAGES, extra_headers=extra)
    if key is None:
        assert "authorization" not in e.value.request.headers
    assert e.value.status_code == 401
    assert e.value.code == code, e.value.body
    assert e.value.response.headers.get("www-authenticate") == "Bearer"
    if key:
        assert key not in e.value.response.text, "the key is never echoed"


def test_openai_model_outside_the_keys_list_is_permission_denied(gw):
    c = oai(gw, "sk-gov-alice")
    with pytest.raises(openai.PermissionDeniedError) as e:
        c.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert e.value.status_code == 403
    assert e.value.code == "model_not_allowed", e.value.body
    # A model on her list passes.
    r = c.chat.completions.create(model="sim-gpt-mini", messages=MESSAGES)
    assert r.choices[0].message.content


def test_openai_rate_limit_headers_count_down_then_rate_limit_error(gw):
    c = oai(gw, "sk-gov-carol")
    for remaining in ["2", "1", "0"]:
        raw = c.chat.completions.with_raw_response.create(model="sim-gpt", messages=MESSAGES)
        assert raw.headers.get("x-ratelimit-limit-requests") == "3"
        assert raw.headers.get("x-ratelimit-remaining-requests") == remaining
        assert raw.headers.get("x-ratelimit-reset-requests")
        assert raw.parse().choices[0].message.content
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(model="sim-gpt", messages=MESSAGES)
    assert e.value.status_code == 429
    assert e.value.code == "rate_limited", e.value.body
    # 3 a minute: a token comes back every 20 s.
    after = int(e.value.response.headers["retry-after"])
    assert 1 <= after <= 20, after
    # The refusal tells the client where it stands too, as OpenAI's own 429s do.
    assert e.value.response.headers.get("x-ratelimit-limit-requests") == "3"
    assert e.value.response.headers.get("x-ratelimit-remaining-requests") == "0"
    assert e.value.response.headers.get("x-ratelimit-reset-requests")
    # Another key has its own bucket.
    oai(gw, "sk-gov-bob").chat.completions.create(model="sim-gpt", messages=MESSAGES)


def test_openai_sdk_retry_waits_for_retry_after(gw):
    # erin's team may make 1 call every 2 s: after one call the next is refused with a
    # retry-after of 2 s at most.
    c = oai(gw, "sk-gov-erin", max_retries=1)
    c.chat.completions.create(model="sim-gpt", messages=MESSAGES)
    with pytest.raises(openai.RateLimitError) as e:
        c.with_options(max_retries=0).chat.completions.create(model="sim-gpt", messages=MESSAGES)
    after = int(e.value.response.headers["retry-after"])
    assert 1 <= after <= 2, after
    # The SDK's own retry sleeps for retry-after (it honours it up to 2 minutes; without it
    # the first backoff would be at most 0.5 s), then succeeds.
    t = time.monotonic()
    raw = c.chat.completions.with_raw_response.create(model="sim-gpt", messages=MESSAGES)
    elapsed = time.monotonic() - t
    assert raw.retries_taken == 1
    assert raw.parse().choices[0].message.content
    assert elapsed >= 1.0, elapsed


# --- anthropic ------------------------------------------------------------------------------


def test_anthropic_wrong_key_is_authentication_error(gw):
    with pytest.raises(anthropic.AuthenticationError) as e:
        ant(gw, "sk-gov-nope").messages.create(model="claude-sim-1", max_tokens=64, messages=MESSAGES)
    assert e.value.status_code == 401
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "authentication_error"


def test_anthropic_model_outside_the_keys_list_is_permission_denied(gw):
    # alice may only call sim-gpt*.
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        ant(gw, "sk-gov-alice").messages.create(model="claude-sim-1", max_tokens=64, messages=MESSAGES)
    assert e.value.status_code == 403
    assert e.value.body["error"]["type"] == "permission_error"


def test_anthropic_limit_exhausted_is_rate_limit_error(gw):
    c = ant(gw, "sk-gov-dave")
    for _ in range(3):
        m = c.messages.create(model="claude-sim-1", max_tokens=64, messages=MESSAGES)
        assert m.type == "message"
    with pytest.raises(anthropic.RateLimitError) as e:
        c.messages.create(model="claude-sim-1", max_tokens=64, messages=MESSAGES)
    assert e.value.status_code == 429
    assert e.value.body["error"]["type"] == "rate_limit_error"
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 20
