-- wrk script for bench/run.sh.
--
--   wrk -t1 -c32 -d6s -s bench/wrk.lua http://127.0.0.1:PORT/v1/chat/completions -- chat
--   wrk -t1 -c32 -d6s -s bench/wrk.lua http://127.0.0.1:PORT/v1/stream -- stream
--
-- "chat" sends a small OpenAI chat request as a POST with a JSON body, "chat-stream" the same with
-- "stream": true; "stream" is a plain GET; "mcp" an MCP tools/call with the session in
-- $MCP_SESSION; "mcp-modern" the same call from a 2026-07-28 (sessionless) client; "a2a" an A2A
-- v1.0 JSON-RPC SendMessage.
-- done() prints one machine-readable line, "WRKJSON {...}", which run.sh keeps instead of
-- scraping wrk's human output.
--
-- Error answers are counted, not served: wrk itself counts every complete response as a
-- request (its own `errors.status` only covers >= 400). response() counts answers that are not
-- 2xx, and 2xx answers whose body carries an error: a JSON `"error":` member (a JSON-RPC error
-- inside HTTP 200, an OpenAI/Anthropic error object, an error event's data) or an SSE
-- `event: error`. done() adds the counts up over wrk's threads.

local mode = "chat"
local threads = {}

-- Per-thread counters (each wrk thread has its own Lua state; done() reads them with get()).
non2xx = 0
body_errors = 0

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  elseif body and (string.find(body, '"error":', 1, true) or string.find(body, "event: error", 1, true)) then
    body_errors = body_errors + 1
  end
end

function init(args)
  mode = args[1] or "chat"
  -- $WRK_AUTH, when set, is sent as the Authorization header (bench/governance.sh: an API key).
  local auth = os.getenv("WRK_AUTH")
  if auth and auth ~= "" then
    wrk.headers["Authorization"] = auth
  end
  if mode == "chat" or mode == "chat-stream" then
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    local stream = ""
    if mode == "chat-stream" then
      stream = '"stream":true,"stream_options":{"include_usage":true},'
    end
    -- $WRK_MODEL names the model (bench/models.sh: one of a 100-model route table).
    local model = os.getenv("WRK_MODEL")
    if not model or model == "" then model = "bench-model" end
    wrk.body = '{"model":"' .. model .. '",' .. stream
      .. '"messages":[{"role":"system","content":"You are terse."},'
      .. '{"role":"user","content":"Say hello in one word."}],"temperature":0}'
  elseif mode == "mcp" then
    -- An MCP tools/call in the session bench/run.sh opened (ignored by the direct upstream).
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Accept"] = "application/json, text/event-stream"
    wrk.headers["Mcp-Session-Id"] = os.getenv("MCP_SESSION") or ""
    wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello","arguments":{}}}'
  elseif mode == "mcp-modern" then
    -- The same tools/call from an MCP 2026-07-28 client: no session; version, capabilities and
    -- client info in _meta, mirrored in the MCP-Protocol-Version, Mcp-Method and Mcp-Name headers.
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["Accept"] = "application/json, text/event-stream"
    wrk.headers["MCP-Protocol-Version"] = "2026-07-28"
    wrk.headers["Mcp-Method"] = "tools/call"
    wrk.headers["Mcp-Name"] = "hello"
    wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hello","arguments":{},'
      .. '"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28",'
      .. '"io.modelcontextprotocol/clientCapabilities":{},'
      .. '"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"}}}}'
  elseif mode == "a2a" then
    -- An A2A v1.0 JSON-RPC SendMessage (the direct upstream answers any POST the same).
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
    wrk.headers["A2A-Version"] = "1.0"
    wrk.body = '{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":'
      .. '{"messageId":"m-bench-1","role":"ROLE_USER","parts":[{"text":"Say hello in one word."}]}}}'
  else
    wrk.method = "GET"
    wrk.headers["Accept"] = "text/event-stream"
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local bad_status, bad_body = 0, 0
  for _, t in ipairs(threads) do
    bad_status = bad_status + (t:get("non2xx") or 0)
    bad_body = bad_body + (t:get("body_errors") or 0)
  end
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,'
      .. '"non2xx":%d,"body_errors":%d,'
      .. '"lat_mean_us":%.1f,"lat_p50_us":%d,"lat_p99_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout, bad_status, bad_body,
    latency.mean, latency:percentile(50), latency:percentile(99)))
end
