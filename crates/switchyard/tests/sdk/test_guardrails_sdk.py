"""Response guardrails seen through the official `openai` and `anthropic` SDKs, on native and
translated routes (sdk.rs's GUARDRAILS): e-mail addresses masked with a placeholder that has
quotes (`"<EMAIL>"`), card numbers masked, tickets refused. The simulators echo the prompt, so
a prompt with personal data makes an answer with it."""

import json

import anthropic
import openai
import pytest

PII = "mail jane.doe@example.com or card 4111 1111 1111 1111 today"
MASKED = 'mail "<EMAIL>" or card <CREDIT_CARD> today'
ORIGINALS = ["jane.doe@example.com", "4111"]
TICKET = "see TICKET-1234 now"

OPENAI_ROUTES = ["guard_openai", "guard_o2g", "guard_o2b"]
ANTHROPIC_ROUTES = ["guard_anthropic", "guard_a2o", "guard_a2b"]

MAIL_TOOL = {
    "type": "function",
    "function": {
        "name": "send_mail",
        "description": "Sends a mail",
        "parameters": {
            "type": "object",
            # The simulators fill arguments with an enum's first value.
            "properties": {"to": {"type": "string", "enum": ["jane.doe@example.com"]}},
            "required": ["to"],
        },
    },
}


def oa(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="client-key", max_retries=0)


def an(base: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base, api_key="client-key", max_retries=0)


def clean(text: str):
    for o in ORIGINALS:
        assert o not in text, text


@pytest.mark.parametrize("route", OPENAI_ROUTES)
def test_openai_answers_are_masked_whole_and_streamed(gw, route):
    c = oa(gw[route])
    messages = [{"role": "user", "content": PII}]
    whole = c.chat.completions.create(model="fast", messages=messages)
    text = whole.choices[0].message.content
    assert text.endswith(MASKED), text
    clean(whole.model_dump_json())

    parts, usage, finish = [], None, []
    stream = c.chat.completions.create(
        model="fast", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        clean(chunk.model_dump_json())
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                parts.append(choice.delta.content)
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    assert "".join(parts) == text
    assert finish == ["stop"]
    assert usage is not None and usage.completion_tokens > 0


@pytest.mark.parametrize("route", OPENAI_ROUTES)
def test_openai_tool_call_arguments_stay_json_when_masked(gw, route):
    c = oa(gw[route])
    kwargs = dict(
        model="fast",
        messages=[{"role": "user", "content": "send it"}],
        tools=[MAIL_TOOL],
        tool_choice={"type": "function", "function": {"name": "send_mail"}},
    )
    r = c.chat.completions.create(**kwargs)
    args = r.choices[0].message.tool_calls[0].function.arguments
    assert json.loads(args) == {"to": '"<EMAIL>"'}, args

    streamed = {}
    for chunk in c.chat.completions.create(stream=True, **kwargs):
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                if call.function and call.function.arguments:
                    streamed[call.index] = streamed.get(call.index, "") + call.function.arguments
    assert [json.loads(a) for a in streamed.values()] == [{"to": '"<EMAIL>"'}], streamed


@pytest.mark.parametrize("route", OPENAI_ROUTES)
def test_openai_rejects_raise_the_sdk_error_with_the_code_and_the_guard(gw, route):
    c = oa(gw[route])
    messages = [{"role": "user", "content": TICKET}]
    with pytest.raises(openai.BadRequestError) as e:
        c.chat.completions.create(model="fast", messages=messages)
    assert e.value.status_code == 400
    assert e.value.code == "guardrail_rejected"
    assert '"tickets"' in e.value.message
    assert "TICKET-1234" not in str(e.value.body)

    got = []
    with pytest.raises(openai.APIError) as e:
        for chunk in c.chat.completions.create(model="fast", messages=messages, stream=True):
            got.append(chunk)
    assert e.value.code == "guardrail_rejected"
    assert '"tickets"' in e.value.message
    assert all("TICKET-1234" not in ch.model_dump_json() for ch in got)


@pytest.mark.parametrize("route", ["guard_openai", "guard_o2b"])
def test_responses_api_is_masked_whole_and_streamed_and_rejects_raise(gw, route):
    c = oa(gw[route])
    whole = c.responses.create(model="fast", input=PII)
    assert whole.output_text.endswith(MASKED), whole.output_text
    clean(whole.model_dump_json())

    deltas, final = [], None
    with c.responses.stream(model="fast", input=PII) as stream:
        for event in stream:
            clean(event.model_dump_json(warnings=False))
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = stream.get_final_response()
    assert "".join(deltas) == whole.output_text
    assert final.output_text == whole.output_text

    with pytest.raises(openai.APIError) as e:
        for _ in c.responses.create(model="fast", input=TICKET, stream=True):
            pass
    assert "guardrail_rejected" in e.value.message and '"tickets"' in e.value.message


@pytest.mark.parametrize("route", ANTHROPIC_ROUTES)
def test_anthropic_answers_are_masked_whole_and_streamed(gw, route):
    c = an(gw[route])
    messages = [{"role": "user", "content": PII}]
    whole = c.messages.create(model="fast", max_tokens=256, messages=messages)
    text = whole.content[0].text
    assert text.endswith(MASKED), text
    clean(whole.model_dump_json())
    with c.messages.stream(model="fast", max_tokens=256, messages=messages) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


@pytest.mark.parametrize("route", ANTHROPIC_ROUTES)
def test_anthropic_tool_input_is_masked_whole_and_streamed(gw, route):
    c = an(gw[route])
    kwargs = dict(
        model="fast",
        max_tokens=256,
        messages=[{"role": "user", "content": "send it"}],
        tools=[
            {
                "name": "send_mail",
                "description": "Sends a mail",
                "input_schema": MAIL_TOOL["function"]["parameters"],
            }
        ],
        tool_choice={"type": "tool", "name": "send_mail"},
    )
    whole = c.messages.create(**kwargs)
    uses = [b for b in whole.content if b.type == "tool_use"]
    assert uses[0].input == {"to": '"<EMAIL>"'}
    with c.messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert uses[0].input == {"to": '"<EMAIL>"'}


@pytest.mark.parametrize("route", ANTHROPIC_ROUTES)
def test_anthropic_rejects_raise_the_sdk_error_with_the_guard(gw, route):
    c = an(gw[route])
    messages = [{"role": "user", "content": TICKET}]
    with pytest.raises(anthropic.BadRequestError) as e:
        c.messages.create(model="fast", max_tokens=256, messages=messages)
    assert e.value.status_code == 400
    body = e.value.body
    assert body["type"] == "error"
    assert body["error"]["message"].startswith("guardrail_rejected")
    assert '"tickets"' in body["error"]["message"]
    assert "TICKET-1234" not in json.dumps(body)

    with pytest.raises(anthropic.APIStatusError) as e:
        with c.messages.stream(model="fast", max_tokens=256, messages=messages) as stream:
            for _ in stream:
                pass
    assert "guardrail_rejected" in str(e.value) and '"tickets"' in str(e.value)
