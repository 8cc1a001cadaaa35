"""The official `openai` Python SDK as the client, through Switchyard, to simulated providers."""

import json

import openai
import pytest
from conftest import NO_RETRY_AFTER, post_raw

# The same-dialect provider first, then translated ones.
OPENAI_CLIENT_ROUTES = ["openai", "azure", "o2a", "o2g", "o2b"]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}},
            "required": ["location"],
        },
    },
}


def client(base: str) -> openai.OpenAI:
    # The client holds no provider key: the gateway injects it.
    return openai.OpenAI(base_url=f"{base}/v1", api_key="client-key-not-for-upstream", max_retries=0)


@pytest.mark.parametrize("route", OPENAI_CLIENT_ROUTES)
def test_plain_completion(gw, route):
    c = client(gw[route])
    r = c.chat.completions.create(
        model="fast",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello there"},
        ],
        temperature=0.2,
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert "Hello there" in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # `fast` is an alias: the provider saw (and answered for) the aliased model.
    assert r.model and r.model != "fast"


@pytest.mark.parametrize("route", OPENAI_CLIENT_ROUTES)
def test_streaming_matches_non_streaming_and_reports_usage(gw, route):
    c = client(gw[route])
    messages = [{"role": "user", "content": "Stream me a few words please"}]
    whole = c.chat.completions.create(model="fast", messages=messages)
    text, usage, finish = [], None, None
    stream = c.chat.completions.create(
        model="fast", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    assert "".join(text) == whole.choices[0].message.content
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0


@pytest.mark.parametrize("route", OPENAI_CLIENT_ROUTES)
def test_tool_call_round_trip(gw, route):
    c = client(gw[route])
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = c.chat.completions.create(model="fast", messages=messages, tools=[WEATHER_TOOL])
    assert r.choices[0].finish_reason == "tool_calls"
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args, dict) and "location" in args
    # Send the tool result back; the model answers from it.
    messages.append(r.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"})
    r2 = c.chat.completions.create(model="fast", messages=messages, tools=[WEATHER_TOOL])
    assert r2.choices[0].finish_reason == "stop"
    assert "sunny, 21C" in r2.choices[0].message.content


@pytest.mark.parametrize("route", OPENAI_CLIENT_ROUTES)
def test_streamed_tool_call_arguments_arrive_intact(gw, route):
    c = client(gw[route])
    stream = c.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    calls = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": None, "name": None, "args": ""})
                if tc.id:
                    entry["id"] = tc.id
                if tc.function and tc.function.name:
                    entry["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    entry["args"] += tc.function.arguments
            if choice.finish_reason:
                finish = choice.finish_reason
    assert finish == "tool_calls"
    assert calls[0]["name"] == "get_weather" and calls[0]["id"]
    assert "location" in json.loads(calls[0]["args"])


@pytest.mark.parametrize("route", OPENAI_CLIENT_ROUTES)
def test_rate_limit_keeps_status_and_format(gw, route):
    c = client(gw[route])
    with pytest.raises(openai.RateLimitError) as e:
        c.chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-sim-fault": "429"},
        )
    assert e.value.status_code == 429
    if route not in NO_RETRY_AFTER:
        assert e.value.response.headers.get("retry-after")
    body = e.value.response.json()
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


@pytest.mark.parametrize("route", OPENAI_CLIENT_ROUTES)
def test_server_error_is_an_openai_error(gw, route):
    c = client(gw[route])
    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.create(
            model="fast",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-sim-fault": "500"},
        )
    assert e.value.status_code >= 500
    assert "message" in e.value.response.json()["error"]


@pytest.mark.parametrize("route", OPENAI_CLIENT_ROUTES)
def test_reset_mid_stream_is_an_error_not_a_clean_end(gw, route):
    c = client(gw[route])
    stream = c.chat.completions.create(
        model="fast",
        messages=[{"role": "user", "content": "a long answer please with many words in it"}],
        stream=True,
        extra_headers={"x-sim-fault": "reset"},
    )
    # The SDK surfaces a transport error (its HTTP library's) or an API error event.
    with pytest.raises(Exception):  # noqa: B017
        for _ in stream:
            pass
    # The gateway is still healthy.
    r = c.chat.completions.create(model="fast", messages=[{"role": "user", "content": "still there?"}])
    assert "still there?" in r.choices[0].message.content


@pytest.mark.parametrize("route", OPENAI_CLIENT_ROUTES)
def test_malformed_json_is_a_400_in_openai_format(gw, route):
    status, body = post_raw(
        f"{gw[route]}/v1/chat/completions",
        b'{"model": "fast", "messages": [',
        {"content-type": "application/json"},
    )
    assert status == 400
    err = body["error"]
    assert err["type"] == "invalid_request_error"
    assert err["message"]
