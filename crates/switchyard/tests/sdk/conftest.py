"""Gateway addresses come from the Rust test that started the gateway and the simulators."""

import os

import pytest


def _base(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run these through `cargo test -p switchyard --test sdk`")
    return value


@pytest.fixture(scope="session")
def gw():
    """Base URLs of the gateway's binds, by (client dialect)->(provider dialect)."""
    return {
        "openai": _base("GW_OPENAI"),  # OpenAI client -> OpenAI provider
        "anthropic": _base("GW_ANTHROPIC"),  # Anthropic client -> Anthropic provider
        "o2a": _base("GW_O2A"),  # OpenAI client -> Anthropic provider (translated)
        "a2o": _base("GW_A2O"),  # Anthropic client -> OpenAI provider (translated)
        "o2g": _base("GW_O2G"),  # OpenAI client -> Gemini API (translated)
        "a2v": _base("GW_A2V"),  # Anthropic client -> Vertex AI, service-account OAuth (translated)
        "azure": _base("GW_AZURE"),  # OpenAI client -> Azure OpenAI deployment, api-key
        "o2b": _base("GW_O2B"),  # OpenAI client -> Bedrock Converse, SigV4 (translated)
        "a2b": _base("GW_A2B"),  # Anthropic client -> Bedrock Converse, SigV4 (translated)
        # No `ai.routes` table: the gateway classifies calls by their well-known path.
        "openai_no_table": _base("GW_OPENAI_NO_TABLE"),  # OpenAI client -> OpenAI provider
        "anthropic_no_table": _base("GW_ANTHROPIC_NO_TABLE"),  # Anthropic client -> Anthropic provider
        # Behind the route policies apiKeyAuth and localRateLimit (sdk.rs's GOVERNANCE).
        "gov_openai": _base("GW_GOV_OPENAI"),  # OpenAI client -> OpenAI provider
        "gov_anthropic": _base("GW_GOV_ANTHROPIC"),  # Anthropic client -> Anthropic provider
        # Routes chosen by model, with failover (sdk.rs's models_bind).
        "models": _base("GW_MODELS"),
        # Behind response guardrails (sdk.rs's GUARDRAILS), native and translated.
        "guard_openai": _base("GW_GUARD_OPENAI"),  # OpenAI client -> OpenAI provider
        "guard_o2g": _base("GW_GUARD_O2G"),  # OpenAI client -> Gemini API (translated)
        "guard_o2b": _base("GW_GUARD_O2B"),  # OpenAI client -> Bedrock Converse (translated)
        "guard_anthropic": _base("GW_GUARD_ANTHROPIC"),  # Anthropic client -> Anthropic provider
        "guard_a2o": _base("GW_GUARD_A2O"),  # Anthropic client -> OpenAI provider (translated)
        "guard_a2b": _base("GW_GUARD_A2B"),  # Anthropic client -> Bedrock Converse (translated)
    }


# Routes whose provider sends no `retry-after` with a 429 (Bedrock's ThrottlingException has
# none), so there is none to keep.
NO_RETRY_AFTER = {"o2b", "a2b"}


def post_raw(url: str, body: bytes, headers: dict) -> tuple[int, dict]:
    """POST bytes as they are (the SDKs only send valid JSON); returns (status, JSON body)."""
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
