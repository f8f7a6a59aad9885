-- wrk script of scripts/load.sh: POSTs one AdmissionReview (minified, as the API server sends
-- it), checks that every answer is 200 and carries the request's uid, and prints one RESULT line.
-- The fixture's path comes after `--` on wrk's command line.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- JSON without insignificant whitespace, otherwise byte for byte (key order kept).
local function minify(json)
  local out, in_string, escaped = {}, false, false
  for c in json:gmatch(".") do
    if in_string then
      out[#out + 1] = c
      if escaped then
        escaped = false
      elseif c == "\\" then
        escaped = true
      elseif c == '"' then
        in_string = false
      end
    elseif not c:match("%s") then
      in_string = c == '"'
      out[#out + 1] = c
    end
  end
  return table.concat(out)
end

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = minify(file:read("*a"))
  file:close()
  uid = assert(body:match('"request":{"uid":"([^"]+)"'), "no request.uid at the start of request")
  expect = '"uid":"' .. uid .. '"'
  bad = 0
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

function response(status, headers, body)
  if status ~= 200 or not body:find(expect, 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local wrong = 0
  for _, thread in ipairs(threads) do
    wrong = wrong + thread:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration=%.3f p50_us=%d p99_us=%d wrong=%d socket_errors=%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    wrong, e.connect + e.read + e.write + e.timeout))
end
