-- wrk driver for the Graft benchmark suite.
-- Arguments (after `--`): METHOD BODIES_FILE
-- BODIES_FILE holds one request body per line; requests cycle through them so that keys
-- rotate. done() prints the totals and the whole latency histogram (microseconds) so that
-- several wrk processes can be merged exactly by benchmarks/suite/loadgen.py.

local bodies = {}
local count = 0
local next_body = 0

function init(args)
  wrk.method = args[1]
  wrk.headers["Content-Type"] = "application/json"
  for line in io.lines(args[2]) do
    count = count + 1
    bodies[count] = line
  end
  if count == 0 then
    error("no bodies in " .. args[2])
  end
  -- each thread starts at a different body, so threads do not write the same keys in step
  next_body = math.random(count) - 1
end

function request()
  next_body = next_body % count + 1
  return wrk.format(nil, nil, nil, bodies[next_body])
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
