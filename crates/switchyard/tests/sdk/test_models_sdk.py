"""One base URL, several models and providers, failover: the official SDKs as clients.

The gateway's `GW_MODELS` bind routes by the request's `model` (sdk.rs's models_bind):
`gpt-4o`'s first deployment always answers 429, so the request fails over to its standby, the
Anthropic simulator (translated back to OpenAI's shape); `gpt-4o-mini`'s first deployment
always answers 500 and `o3-mini`'s has nothing listening, both with the OpenAI simulator as
standby; `claude-sim-1` goes to Anthropic, `gemini-sim-flash` to Gemini.
"""

import time

import anthropic
import openai


def _openai(gw):
    return openai.OpenAI(base_url=gw["models"] + "/v1", api_key="client-key", max_retries=0)


def test_failover_to_another_provider_is_invisible_to_the_openai_sdk(gw):
    client = _openai(gw)
    first = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hello from failover"}], max_tokens=30
    )
    assert "Hello from failover" in first.choices[0].message.content
    # The 429 rested the first deployment (cooldown 30 s): the next call goes straight to the
    # standby, just as quickly.
    t = time.monotonic()
    again = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "And again"}], max_tokens=30
    )
    assert "And again" in again.choices[0].message.content
    assert time.monotonic() - t < 2


def test_one_base_url_reaches_each_provider_by_model(gw):
    client = _openai(gw)
    for model in ["claude-sim-1", "gemini-sim-flash"]:
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"Hi {model}"}], max_tokens=30
        )
        assert f"Hi {model}" in r.choices[0].message.content, model
    with_anthropic = anthropic.Anthropic(base_url=gw["models"], api_key="client-key", max_retries=0)
    msg = with_anthropic.messages.create(
        model="claude-sim-1", max_tokens=30, messages=[{"role": "user", "content": "Hi Claude"}]
    )
    assert "Hi Claude" in msg.content[0].text


def test_unknown_models_are_404_and_the_model_list_is_the_config(gw):
    client = _openai(gw)
    try:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("an unknown model was served")
    except openai.NotFoundError as e:
        assert e.code == "model_not_found"
    served = ["gpt-4o", "gpt-4o-mini", "o3-mini", "claude-sim-1", "gemini-sim-flash"]
    assert [m.id for m in client.models.list()] == served
    with_anthropic = anthropic.Anthropic(base_url=gw["models"], api_key="client-key", max_retries=0)
    assert [m.id for m in with_anthropic.models.list()] == served


def test_a_500_and_a_refused_connection_fail_over_to_the_standby(gw):
    client = _openai(gw)
    for model in ["gpt-4o-mini", "o3-mini"]:
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"Hello {model}"}], max_tokens=30
        )
        assert f"Hello {model}" in r.choices[0].message.content, model
        assert r.object == "chat.completion"


def test_a_stream_fails_over_before_its_first_byte_and_is_translated(gw):
    # gpt-4o's first deployment answers 429 before any byte: the stream comes from the
    # Anthropic standby, as OpenAI chunks the SDK reads like any other.
    client = _openai(gw)
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Stream me after failover"}],
        max_tokens=30,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert "Stream me after failover" in text
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0
