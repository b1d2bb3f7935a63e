-- wrk script: POST /predict with a unique id per request, and check every answer.
--
-- Arguments after `--`: the rows file (a Lua chunk returning {{observation_json, proba}, ...},
-- written by bench/workload.py) and the id base that keeps warm-up and measured ids apart.
--
-- The harness runs one connection per wrk thread, so each thread has at most one request in
-- flight and the answer wrk hands to response() is always for the last request() it built.
-- With several connections per thread that pairing would be lost.

local threads = {}
local thread_count = 0

-- Runs in the main state, once per thread before it starts: number the thread, keep a handle
-- so done() can read its counters.
function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
  table.insert(threads, thread)
end

-- Runs in each thread's own state.
function init(args)
  rows = dofile(args[1])
  id_base = tonumber(args[2])
  sent = 0
  expected = nil
  ok = 0
  non2xx = 0
  wrong = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function request()
  sent = sent + 1
  -- Threads start at different rows so concurrent requests differ, as real traffic does.
  local row = rows[(thread_number * 101 + sent) % #rows + 1]
  expected = row[2]
  -- Unique per run: base, then thread number, then this thread's counter.
  local id = string.format("%.0f", id_base + thread_number * 1e9 + sent)
  return wrk.format(nil, nil, nil, '{"id":' .. id .. ',"observation":' .. row[1] .. "}")
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    return
  end
  local proba = tonumber(string.match(body, '"proba":%s*(%-?[%d%.eE%+%-]+)'))
  if proba == nil or expected == nil or math.abs(proba - expected) > 1e-6 then
    wrong = wrong + 1
  else
    ok = ok + 1
  end
end

function done(summary, latency, requests)
  local ok_total, non2xx_total, wrong_total = 0, 0, 0
  for _, thread in ipairs(threads) do
    ok_total = ok_total + thread:get("ok")
    non2xx_total = non2xx_total + thread:get("non2xx")
    wrong_total = wrong_total + thread:get("wrong")
  end
  io.write(string.format("bench-check ok=%d non2xx=%d wrong=%d\n", ok_total, non2xx_total,
    wrong_total))
end
