#!/usr/bin/env python3
"""Writes the seed inputs of fuzz/corpus/<target>/seed-* from the repository's own examples
(crates/llm/tests/fixtures, examples/*.yaml, the picker's metrics sample, MCP messages from
the README). Re-run after changing an input format in fuzz/entries/*.rs; inputs the fuzzer
found (and crash regressions, `crash-*`) are kept as they are."""
import json, os, re, struct, zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "crates/llm/tests/fixtures")
CORPUS = os.path.join(ROOT, "fuzz/corpus")

def read(p):
    with open(os.path.join(ROOT, p), "rb") as f:
        return f.read()

def fix(name):
    with open(os.path.join(FIX, name), "rb") as f:
        return f.read()

def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        if old == "seed-" + name:
            os.remove(os.path.join(d, old))
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)

# AWS event-stream framing (string headers only), as llm::eventstream::Message::encode.
def frame(headers, payload):
    hb = b""
    for k, v in headers:
        kb, vb = k.encode(), v.encode()
        hb += bytes([len(kb)]) + kb + bytes([7]) + struct.pack(">H", len(vb)) + vb
    total = 12 + len(hb) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hb))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    msg = prelude + hb + payload
    return msg + struct.pack(">I", zlib.crc32(msg))

def bedrock_frames():
    out = b""
    for line in fix("bedrock_stream_events.jsonl").decode().splitlines():
        if not line.strip():
            continue
        v = json.loads(line)
        out += frame([(":event-type", v["event"]), (":content-type", "application/json"),
                      (":message-type", "event")], json.dumps(v["payload"]).encode())
    return out

EXC = frame([(":exception-type", "throttlingException"), (":content-type", "application/json"),
             (":message-type", "exception")], b'{"message":"slow down"}')

# --- sse: [seed][stream]
for name in ["stream_openai.sse", "stream_anthropic.sse", "gemini_stream.sse"]:
    for seed in (0, 7, 200):
        put("sse", f"{name}-{seed}", bytes([seed]) + fix(name))
put("sse", "crlf-comments", bytes([3]) + b": hi\r\nevent: a\r\ndata: x\r\ndata:  y\r\n\r\ndata\nid: 1\nretry: 5\n\ndata: tail")

# --- eventstream: [seed][frames]
frames = bedrock_frames()
for seed in (0, 5, 99):
    put("eventstream", f"bedrock-{seed}", bytes([seed]) + frames)
put("eventstream", "exception", bytes([11]) + EXC)
put("eventstream", "truncated", bytes([0]) + frames[:50])
put("eventstream", "bad-crc", bytes([1]) + frames[:20] + b"\xff" + frames[21:80])

# --- request_translate: [ingress + 5*egress][flags][body]; ALL = chat, anthropic, responses, gemini, bedrock
CHAT, ANTH, RESP, GEM, BED = range(5)
reqs = {
    CHAT: ["request_openai.json", "gemini_request_openai.json", "bedrock_request_openai.json"],
    ANTH: ["request_anthropic.json", "gemini_request_anthropic.json", "bedrock_request_anthropic.json"],
    RESP: ["responses_request.json"],
}
for ingress, names in reqs.items():
    for name in names:
        for egress in (CHAT, ANTH, GEM, BED):
            flags = 0 if egress == ingress else (egress * 13) & 0x3F
            put("request_translate", f"{name}-{ingress}-{egress}", bytes([ingress + 5 * egress, flags]) + fix(name))
put("request_translate", "gemini-ingress", bytes([GEM + 5 * CHAT, 0]) + fix("request_openai.json"))
put("request_translate", "minimal", bytes([CHAT + 5 * ANTH, 1]) + b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}')

# --- response_translate: [ingress + 5*egress][flags][provider body]
resps = {CHAT: "response_openai.json", ANTH: "response_anthropic.json", GEM: "gemini_response.json", BED: "bedrock_response.json"}
for egress, name in resps.items():
    for ingress in (CHAT, ANTH, RESP):
        put("response_translate", f"{name}-{ingress}", bytes([ingress + 5 * egress, egress & 1]) + fix(name))
put("response_translate", "error-openai", bytes([ANTH + 5 * CHAT, 29]) + b'{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}')
put("response_translate", "error-anthropic", bytes([CHAT + 5 * ANTH, 0]) + b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}')

# --- stream_translate: [client + 3*provider][flags][seed][stream]; CLIENTS = chat, anthropic, responses; PROVIDERS = chat, anthropic, gemini, bedrock
streams = {0: fix("stream_openai.sse"), 1: fix("stream_anthropic.sse"), 2: fix("gemini_stream.sse"), 3: frames}
for provider, data in streams.items():
    for client in range(3):
        flags = (provider + client) % 4
        put("stream_translate", f"p{provider}-c{client}", bytes([client + 3 * provider, flags, 0 if client == 0 else 17 * (provider + 1)]) + data)
put("stream_translate", "bedrock-exception", bytes([0 + 3 * 3, 1, 3]) + frames[:200] + EXC)
put("stream_translate", "fail-midway", bytes([1 + 3 * 0, 4, 9]) + fix("stream_openai.sse")[:700])

# --- picker_request: bodies as clients send them
for name in ["request_openai.json", "request_anthropic.json", "responses_request.json", "gemini_request_openai.json"]:
    put("picker_request", name, fix(name))
put("picker_request", "completions", b'{"model":"sim-llama","prompt":["Once upon","a time"],"user":"u1","stream":true}')
put("picker_request", "chat-parts", b'{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hello"},{"type":"image_url","image_url":{"url":"x"}}]}],"user":"alice"}')
put("picker_request", "escapes", b'{"model":"m\\u00e9","messages":[{"role":"user","content":"a\\nb\\"c\\ud83d\\ude00"}]}')

# --- vllm_metrics: the picker's sample page and the simulator's shape
src = read("crates/picker/src/metrics.rs").decode()
m = re.search(r'const SAMPLE: &str = r#"(.*?)"#;', src, re.S)
put("vllm_metrics", "picker-sample", m.group(1).encode())
put("vllm_metrics", "minimal", b"vllm:num_requests_running 1\nvllm:num_requests_waiting 0\nvllm:gpu_cache_usage_perc 0.5\n")
put("vllm_metrics", "labels-escapes", b'vllm:num_requests_running{model_name="m\\"x",le="+Inf"} 2.0 1718000000000\nvllm:num_requests_waiting{a="}"} -Inf\nvllm:kv_cache_usage_perc 1e-3\nvllm:e2e_request_latency_seconds_sum 3.5\nvllm:e2e_request_latency_seconds_count 0\n')
put("vllm_metrics", "bad-value", b"vllm:num_requests_running abc\n")

# --- mcp_session: [mode][text]; even: a sealed id as a client sends it; odd: a state as JSON
put("mcp_session", "garbage-id", b"\x00" + b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
put("mcp_session", "not-base64", b"\x00" + b"  not a session id!  ")
put("mcp_session", "state", b"\x01" + json.dumps({"id": "abc", "iat": 1, "version": "2025-06-18",
    "targets": [{"t": "alpha", "s": "up-1", "v": "2025-06-18"}, {"t": "beta", "v": "2025-03-26"}],
    "init": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}}}).encode())
put("mcp_session", "state-minimal", b"\x03" + b'{"id":"","iat":0,"version":"","targets":[]}')

# --- mcp_jsonrpc: messages from the README's walk-through and upstream answers
msgs = {
    "initialize": {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "curl", "version": "1"}}},
    "tools-list": {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
    "tools-call": {"jsonrpc": "2.0", "id": "3", "method": "tools/call", "params": {"name": "beta_add", "arguments": {"a": 2, "b": 3}}},
    "resources-read": {"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": "docs+demo://resource/static/document/a+b.md"}},
    "notification": {"jsonrpc": "2.0", "method": "notifications/initialized"},
    "list-result": {"jsonrpc": "2.0", "id": 2, "result": {"tools": [{"name": "echo", "inputSchema": {}}, {"name": 5}]}},
    "error": {"jsonrpc": "2.0", "id": "sy~alpha~7", "error": {"code": -32601, "message": "nope"}},
    "server-request": {"jsonrpc": "2.0", "id": "sy~alpha~{\"x\":1}", "method": "sampling/createMessage", "params": []},
    "batch": [{"jsonrpc": "2.0", "id": 1, "method": "ping"}],
}
for name, v in msgs.items():
    put("mcp_jsonrpc", name, json.dumps(v).encode())

# --- mcp_serve: [flags][client body] NUL [upstream reply]; flags: 1 = on an initialized session, 2 = accept SSE
replies = {
    "tools-list": {"jsonrpc": "2.0", "id": 0, "result": {"tools": [{"name": "echo", "inputSchema": {"type": "object"}}, {"name": "add", "inputSchema": {}}]}},
    "tools-call": {"jsonrpc": "2.0", "id": 0, "result": {"content": [{"type": "text", "text": "hi"}]}},
    "resources-read": {"jsonrpc": "2.0", "id": 0, "result": {"contents": [{"uri": "demo://x", "text": "t"}]}},
}
for i, (name, v) in enumerate(msgs.items()):
    body = json.dumps(v).encode()
    put("mcp_serve", f"{name}", bytes([i % 4]) + body)
    if name in replies:
        put("mcp_serve", f"{name}-reply", bytes([3]) + body + b"\x00" + json.dumps(replies[name]).encode())
put("mcp_serve", "upstream-error", bytes([1]) + json.dumps(msgs["tools-call"]).encode() + b"\x00" + b'{"jsonrpc":"2.0","id":0,"error":{"code":-32000,"message":"boom"}}')
put("mcp_serve", "upstream-garbage", bytes([3]) + json.dumps(msgs["tools-list"]).encode() + b"\x00" + b'not json')

# --- cel: expressions from the examples, then [expr NUL context]
exprs = set()
for y in ["examples/demo.yaml", "examples/seed.yaml"]:
    for line in read(y).decode().splitlines():
        mm = re.match(r"\s*[\w.]+:\s*'(.*)'\s*$", line)
        if mm:
            exprs.add(mm.group(1))
exprs |= {
    'default(llm.inputTokens, 0) + default(llm.outputTokens, 0)',
    'has(request.headers["x-team"]) && request.headers["x-team"] == "a"',
    'json(request.body).model',
    'toJson({"a": [1, 2.5, "x", null, true]})',
    'regexReplace(request.path, "/v[0-9]+/", "/")',
    'coalesce(jwt.sub, "anon")',
    'base64.decode(base64.encode(b"abc"))',
    'request.path.split("/").map(s, s.lowerAscii()).filter(s, size(s) > 0)',
    'mcp.tool.name.startsWith("alpha_") || mcp.method in ["tools/list", "ping"]',
    'llm.prompt.exists(p, p.role == "system")',
    'uuid() != ""',
    'flatten({"a": {"b": 1}})',
    'int(source.port) % 7 == 1 ? "x" : "y"',
}
for i, e in enumerate(sorted(exprs)):
    put("cel", f"expr-{i:02}", e.encode())
put("cel", "with-context", b'request.headers["x-a"] + string(llm.inputTokens)\x00{"request":{"headers":{"x-a":"v"}},"llm":{"inputTokens":3}}')
put("cel", "wrong-types", b'llm.inputTokens + 1\x00{"llm":{"inputTokens":"three"},"jwt":[1,2]}')

# --- config: the example configs and small ones exercising ${VAR} expansion
for y in ["examples/demo.yaml", "examples/seed.yaml"]:
    put("config", os.path.basename(y), read(y))
put("config", "env-expansion", b"""binds:
- port: ${PORT}
  listeners:
  - routes:
    - backends:
      - ai:
          name: openai
          provider:
            openAI:
              model: $MODEL_NAME  # $UNSET_IN_COMMENT
          hostOverride: "127.0.0.1:$PORT_B"
          pathPrefix: ^/v1$$
          policies:
            backendAuth:
              key: ${API_KEY}
""")
put("config", "unset-var", b"binds:\n- port: ${UNSET_PORT}\n")
put("config", "empty", b"")
put("config", "bad-yaml", b"binds: [\n- port: x\n")
