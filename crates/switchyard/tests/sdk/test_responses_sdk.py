"""The official `openai` SDK's Responses API through Switchyard: to OpenAI's own Responses API
(forwarded as sent) and, translated through Chat, to Anthropic, Gemini and Bedrock."""

import json

import openai
import pytest

# Native first, then translated.
RESPONSES_ROUTES = ["openai", "azure", "o2a", "o2g", "o2b"]

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
    },
}


def client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="client-key-not-for-upstream", max_retries=0)


@pytest.mark.parametrize("route", RESPONSES_ROUTES)
def test_plain_response(gw, route):
    r = client(gw[route]).responses.create(
        model="fast", instructions="Be brief.", input="Hello from responses"
    )
    assert r.object == "response"
    assert r.status == "completed"
    assert "Hello from responses" in r.output_text
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.model and r.model != "fast"


@pytest.mark.parametrize("route", RESPONSES_ROUTES)
def test_streamed_response_matches_and_completes(gw, route):
    c = client(gw[route])
    whole = c.responses.create(model="fast", input="Stream a few words")
    deltas, completed, types = [], None, []
    with c.responses.stream(model="fast", input="Stream a few words") as stream:
        for event in stream:
            types.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            if event.type == "response.completed":
                completed = event.response
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert "".join(deltas) == whole.output_text
    assert completed.usage.output_tokens > 0


@pytest.mark.parametrize("route", RESPONSES_ROUTES)
def test_function_call_round_trip(gw, route):
    c = client(gw[route])
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = c.responses.create(model="fast", input=[question], tools=[WEATHER_TOOL])
    calls = [o for o in first.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    assert "location" in json.loads(calls[0].arguments)
    second = c.responses.create(
        model="fast",
        tools=[WEATHER_TOOL],
        input=[
            question,
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": calls[0].name,
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21C"},
        ],
    )
    assert second.status == "completed"
    assert "sunny" in second.output_text


@pytest.mark.parametrize("route", RESPONSES_ROUTES)
def test_rate_limit_keeps_status(gw, route):
    with pytest.raises(openai.RateLimitError) as e:
        client(gw[route]).responses.create(
            model="fast", input="hi", extra_headers={"x-sim-fault": "429"}
        )
    assert e.value.status_code == 429
    assert e.value.response.json()["error"]["message"]
