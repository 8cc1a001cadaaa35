"""The official `anthropic` Python SDK as the client, through Switchyard, to simulated providers."""

import anthropic
import pytest
from conftest import NO_RETRY_AFTER, post_raw

# The same-dialect provider first, then translated ones.
ANTHROPIC_CLIENT_ROUTES = ["anthropic", "a2o", "a2v", "a2b"]

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


def client(base: str) -> anthropic.Anthropic:
    # The client holds no provider key: the gateway injects it.
    return anthropic.Anthropic(base_url=base, api_key="client-key-not-for-upstream", max_retries=0)


@pytest.mark.parametrize("route", ANTHROPIC_CLIENT_ROUTES)
def test_plain_message(gw, route):
    c = client(gw[route])
    m = c.messages.create(
        model="fast",
        max_tokens=256,
        system="Be brief.",
        messages=[{"role": "user", "content": "Hello there"}],
    )
    assert m.type == "message" and m.role == "assistant"
    text = "".join(b.text for b in m.content if b.type == "text")
    assert "Hello there" in text
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


@pytest.mark.parametrize("route", ANTHROPIC_CLIENT_ROUTES)
def test_streaming_matches_non_streaming(gw, route):
    c = client(gw[route])
    messages = [{"role": "user", "content": "Stream me a few words please"}]
    whole = c.messages.create(model="fast", max_tokens=256, messages=messages)
    whole_text = "".join(b.text for b in whole.content if b.type == "text")
    with c.messages.stream(model="fast", max_tokens=256, messages=messages) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == whole_text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("route", ANTHROPIC_CLIENT_ROUTES)
def test_tool_use_round_trip(gw, route):
    c = client(gw[route])
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    m = c.messages.create(model="fast", max_tokens=256, messages=messages, tools=[WEATHER_TOOL])
    assert m.stop_reason == "tool_use"
    use = next(b for b in m.content if b.type == "tool_use")
    assert use.name == "get_weather" and "location" in use.input
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]})
    messages.append(
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21C"}],
        }
    )
    m2 = c.messages.create(model="fast", max_tokens=256, messages=messages, tools=[WEATHER_TOOL])
    assert m2.stop_reason == "end_turn"
    assert "sunny, 21C" in "".join(b.text for b in m2.content if b.type == "text")


@pytest.mark.parametrize("route", ANTHROPIC_CLIENT_ROUTES)
def test_streamed_tool_use_input_arrives_intact(gw, route):
    c = client(gw[route])
    with c.messages.stream(
        model="fast",
        max_tokens=256,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
    ) as stream:
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == "get_weather" and "location" in use.input
    assert final.stop_reason == "tool_use"


@pytest.mark.parametrize("route", ANTHROPIC_CLIENT_ROUTES)
def test_rate_limit_keeps_status_and_format(gw, route):
    c = client(gw[route])
    with pytest.raises(anthropic.RateLimitError) as e:
        c.messages.create(
            model="fast",
            max_tokens=16,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-sim-fault": "429"},
        )
    assert e.value.status_code == 429
    if route not in NO_RETRY_AFTER:
        assert e.value.response.headers.get("retry-after")
    body = e.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("route", ANTHROPIC_CLIENT_ROUTES)
def test_reset_mid_stream_is_an_error_not_a_clean_end(gw, route):
    c = client(gw[route])
    # The SDK surfaces a transport error (its HTTP library's) or an API error event.
    with pytest.raises(Exception):  # noqa: B017
        with c.messages.stream(
            model="fast",
            max_tokens=256,
            messages=[{"role": "user", "content": "a long answer please with many words in it"}],
            extra_headers={"x-sim-fault": "reset"},
        ) as stream:
            for _ in stream:
                pass
    m = c.messages.create(model="fast", max_tokens=64, messages=[{"role": "user", "content": "still there?"}])
    assert "still there?" in "".join(b.text for b in m.content if b.type == "text")


@pytest.mark.parametrize("route", ANTHROPIC_CLIENT_ROUTES)
def test_malformed_json_is_a_400_in_anthropic_format(gw, route):
    status, body = post_raw(
        f"{gw[route]}/v1/messages",
        b'{"model": "fast", "messages": [',
        {"content-type": "application/json", "anthropic-version": "2023-06-01"},
    )
    assert status == 400
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


def test_token_count_is_answered(gw):
    c = client(gw["a2o"])
    n = c.messages.count_tokens(model="fast", messages=[{"role": "user", "content": "count these words"}])
    # The OpenAI provider has no count endpoint, so the gateway counts: three o200k tokens,
    # three of message framing, three priming the reply.
    assert n.input_tokens == 9
