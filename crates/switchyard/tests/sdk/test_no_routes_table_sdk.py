"""The official SDKs on `ai` routes with no `policies.ai.routes` table, as a new user writes them:
the gateway classifies each call by its well-known path (`/messages`, `/messages/count_tokens`,
`/chat/completions`, `/models`, ...), so each client is answered in its own shape."""

import anthropic
import openai


def anthropic_client(base: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base, api_key="client-key-not-for-upstream", max_retries=0)


def openai_client(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key="client-key-not-for-upstream", max_retries=0)


def test_anthropic_message_is_a_real_message(gw):
    c = anthropic_client(gw["anthropic_no_table"])
    m = c.messages.create(
        model="fast",
        max_tokens=256,
        messages=[{"role": "user", "content": "Hello there"}],
    )
    # Answered in OpenAI's shape, the SDK would build an empty Message without complaint.
    assert m.type == "message" and m.role == "assistant"
    assert m.id and m.content, m
    text = "".join(b.text for b in m.content if b.type == "text")
    assert "Hello there" in text
    # `fast` is an alias: the provider answered for the aliased model.
    assert m.model == "claude-sim-1"
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0


def test_anthropic_stream_matches_non_streaming(gw):
    c = anthropic_client(gw["anthropic_no_table"])
    messages = [{"role": "user", "content": "Stream me a few words please"}]
    whole = c.messages.create(model="fast", max_tokens=256, messages=messages)
    whole_text = "".join(b.text for b in whole.content if b.type == "text")
    assert whole_text
    with c.messages.stream(model="fast", max_tokens=256, messages=messages) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == whole_text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_anthropic_count_tokens_resolves_the_alias(gw):
    # The provider counts; it knows `claude-sim-1`, not the gateway's alias `fast` (the
    # simulator answers 404 for a model it does not serve, as the real API does).
    c = anthropic_client(gw["anthropic_no_table"])
    by_alias = c.messages.count_tokens(
        model="fast", messages=[{"role": "user", "content": "count these words"}]
    )
    by_name = c.messages.count_tokens(
        model="claude-sim-1", messages=[{"role": "user", "content": "count these words"}]
    )
    assert by_alias.input_tokens == by_name.input_tokens > 0


def test_anthropic_models_come_from_config_in_anthropic_shape(gw):
    # The backend names models (`modelAliases`), so the gateway lists them itself.
    ids = [m.id for m in anthropic_client(gw["anthropic_no_table"]).models.list()]
    assert ids == ["fast", "claude-sim-1"]


def test_openai_chat_completion(gw):
    c = openai_client(gw["openai_no_table"])
    r = c.chat.completions.create(
        model="sim-gpt-mini", messages=[{"role": "user", "content": "Hello there"}]
    )
    assert r.object == "chat.completion"
    assert "Hello there" in r.choices[0].message.content
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0


def test_openai_streaming(gw):
    c = openai_client(gw["openai_no_table"])
    text = []
    for chunk in c.chat.completions.create(
        model="sim-gpt-mini",
        messages=[{"role": "user", "content": "Stream me a few words please"}],
        stream=True,
    ):
        for choice in chunk.choices:
            if choice.delta.content:
                text.append(choice.delta.content)
    assert "".join(text)


def test_openai_models_list_is_the_providers(gw):
    # The backend names no model, so `/v1/models` goes to the provider for its own list.
    ids = [m.id for m in openai_client(gw["openai_no_table"]).models.list()]
    assert ids == ["sim-gpt", "sim-gpt-mini"]
