-- wrk driver for the Graft benchmark suite.
-- Arguments (after `--`): METHOD BODIES_FILE [KEY_PREFIX]
-- BODIES_FILE holds one request body per line; requests cycle through them. In a body, each
-- @KEY@ becomes a key never sent before by this process (KEY_PREFIX, then a 12-digit counter)
-- and each @KEY64@ the same kind of key in base64 (etcd's JSON gateway takes base64), so
-- writes insert new keys and the state grows as it does for users who insert records. A body
-- without placeholders is sent as it is. done() prints the totals and the whole latency
-- histogram (microseconds) so that several wrk processes can be merged exactly by
-- benchmarks/suite/loadgen.py.

local bodies = {}
local count = 0
local next_body = 0
local prefix = "k"
local sequence = 0

local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(text)
  local out = {}
  for i = 1, #text, 3 do
    local a, b, c = string.byte(text, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local d1 = math.floor(n / 262144) % 64
    local d2 = math.floor(n / 4096) % 64
    local d3 = math.floor(n / 64) % 64
    local d4 = n % 64
    out[#out + 1] = ALPHABET:sub(d1 + 1, d1 + 1) .. ALPHABET:sub(d2 + 1, d2 + 1)
      .. (b and ALPHABET:sub(d3 + 1, d3 + 1) or "=")
      .. (c and ALPHABET:sub(d4 + 1, d4 + 1) or "=")
  end
  return table.concat(out)
end

-- A body as its literal pieces with the placeholders between them: {text, slot, text, ...}
-- where a slot is 1 (@KEY@) or 2 (@KEY64@); nil when it has no placeholder.
local function split(line)
  local parts = {}
  local pos = 1
  while true do
    local s, e, tag = string.find(line, "@(KEY%d*)@", pos)
    if s == nil then
      break
    end
    parts[#parts + 1] = line:sub(pos, s - 1)
    parts[#parts + 1] = (tag == "KEY64") and 2 or 1
    pos = e + 1
  end
  if #parts == 0 then
    return nil
  end
  parts[#parts + 1] = line:sub(pos)
  return parts
end

function init(args)
  wrk.method = args[1]
  wrk.headers["Content-Type"] = "application/json"
  if args[3] ~= nil then
    prefix = args[3]
  end
  for line in io.lines(args[2]) do
    count = count + 1
    bodies[count] = {text = line, parts = split(line)}
  end
  if count == 0 then
    error("no bodies in " .. args[2])
  end
  -- each thread starts at a different body, so threads do not write the same keys in step
  next_body = math.random(count) - 1
end

function request()
  next_body = next_body % count + 1
  local body = bodies[next_body]
  local parts = body.parts
  if parts == nil then
    return wrk.format(nil, nil, nil, body.text)
  end
  local out = {}
  for i = 1, #parts do
    local part = parts[i]
    if part == 1 or part == 2 then
      sequence = sequence + 1
      local key = prefix .. string.format("%012d", sequence)
      out[i] = (part == 2) and base64(key) or key
    else
      out[i] = part
    end
  end
  return wrk.format(nil, nil, nil, table.concat(out))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("@@totals %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout))
  local parts = {}
  for k = 1, #latency do
    local value, n = latency(k)
    parts[#parts + 1] = value .. ":" .. n
    if #parts == 500 then
      io.write("@@hist ", table.concat(parts, " "), "\n")
      parts = {}
    end
  end
  if #parts > 0 then
    io.write("@@hist ", table.concat(parts, " "), "\n")
  end
end
