-- wrk script for bench/soak.sh: one request kind per wrk process, paced, every answer checked.
--
--   wrk -t1 -c4 -d60s -s bench/soak.lua http://127.0.0.1:PORT -- chat 20
--
-- Modes: "plain" (GET /plain/v1/models through a `host` route), "chat" (an OpenAI chat
-- completion, JSON), "stream" (the same streamed), "translated" (an OpenAI stream served by the
-- Anthropic simulator, chosen by `x-target: anthropic`), "mcp" (a `tools/call` of the reference
-- server's `echo` on /mcp, on the session id given as the third argument), "pool" (a chat
-- completion through the `{pool: fleet}` route, a pick per request). The second argument is the
-- pause in milliseconds each connection takes before its next request (wrk's delay()), which
-- sets the rate well below saturation.
--
-- response() counts answers that are not 2xx, 2xx answers whose body carries an error (a JSON
-- `"error":` member, an SSE `event: error`), and 2xx streams that do not end with
-- `data: [DONE]` or plain/chat answers without their expected member (`bad`). wrk itself counts
-- socket errors (connect, read, write, timeout). done() prints one line, "WRKJSON {...}"; its
-- "mode" is not the script argument (done() runs where init() did not), soak.sh names the mode.

local mode = "chat"
local pause = 20
local threads = {}

non2xx = 0
body_errors = 0
bad = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or "chat"
  pause = tonumber(args[2] or "20")
  if mode == "plain" then
    wrk.method = "GET"
    wrk.path = "/plain/v1/models"
    return
  end
  wrk.method = "POST"
  wrk.path = "/v1/chat/completions"
  wrk.headers["Content-Type"] = "application/json"
  if mode == "mcp" then
    wrk.path = "/mcp"
    wrk.headers["Accept"] = "application/json, text/event-stream"
    wrk.headers["Mcp-Protocol-Version"] = "2025-06-18"
    wrk.headers["Mcp-Session-Id"] = args[3] or ""
    wrk.body = '{"jsonrpc":"2.0","id":7,"method":"tools/call",'
      .. '"params":{"name":"echo","arguments":{"message":"soak"}}}'
    return
  end
  if mode == "pool" then
    wrk.path = "/pool/v1/chat/completions"
    wrk.body = '{"model":"sim-llama","max_tokens":8,'
      .. '"messages":[{"role":"user","content":"A pool pick per request."}]}'
    return
  end
  if mode == "translated" then
    wrk.headers["x-target"] = "anthropic"
  end
  local stream = "false"
  if mode == "stream" or mode == "translated" then
    stream = "true"
  end
  wrk.body = '{"model":"sim-gpt","stream":' .. stream .. ',"max_tokens":24,'
    .. '"messages":[{"role":"system","content":"You are terse."},'
    .. '{"role":"user","content":"Tell me about soak tests and steady traffic over time."}]}'
end

function delay()
  return pause
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    return
  end
  body = body or ""
  if string.find(body, '"error":', 1, true) or string.find(body, "event: error", 1, true) then
    body_errors = body_errors + 1
  elseif mode == "stream" or mode == "translated" then
    if not string.find(body, "data: [DONE]", 1, true) or not string.find(body, '"content"', 1, true) then
      bad = bad + 1
    end
  elseif mode == "mcp" then
    if not string.find(body, '"result"', 1, true) or string.find(body, '"isError":true', 1, true) then
      bad = bad + 1
    end
  elseif mode == "plain" then
    if not string.find(body, '"data"', 1, true) then
      bad = bad + 1
    end
  elseif not string.find(body, '"message"', 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local s_non2xx, s_body, s_bad = 0, 0, 0
  for _, t in ipairs(threads) do
    s_non2xx = s_non2xx + (t:get("non2xx") or 0)
    s_body = s_body + (t:get("body_errors") or 0)
    s_bad = s_bad + (t:get("bad") or 0)
  end
  io.write(string.format(
    'WRKJSON {"mode":"%s","requests":%d,"duration_us":%d,'
      .. '"err_connect":%d,"err_read":%d,"err_write":%d,"err_timeout":%d,'
      .. '"non2xx":%d,"body_errors":%d,"bad":%d,"lat_p50_us":%d,"lat_p99_us":%d}\n',
    mode, summary.requests, summary.duration,
    e.connect, e.read, e.write, e.timeout, s_non2xx, s_body, s_bad,
    latency:percentile(50), latency:percentile(99)))
end
