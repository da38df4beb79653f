-- Shared helpers for classic_server.lua and classic_client.lua.
--
-- These scripts speak the ORIGINAL ("classic") UDPIPE text protocol, so that the
-- udpipe test suite can check its classic mode against a real Lua 5.4 + luasocket
-- peer. Plain Lua 5.4 and luasocket only. See README.md beside this file.
--
-- Conventions shared by both scripts:
--   * stdout: one event per line, flushed at once (the test reads these);
--   * stderr: with --trace, every datagram sent or received, escaped byte for byte;
--   * a hard deadline (--deadline, seconds) after which the script prints
--     "TIMEOUT deadline" and exits 124, whatever state it is in.

local socket = require("socket")

local M = {}

M.now = socket.gettime

-- The control words of the classic protocol. On the private socket SC a datagram
-- is a control message when it is EXACTLY one of these byte strings (case
-- sensitive, no trailing newline or space); anything else is application data.
-- "HELLO <token>" and "CONNECT <ip> <port>" carry arguments and only ever travel
-- on the public socket S, where they are parsed separately.
M.CONTROL = {
  ["CONNECT"] = true,
  ["CONNECTED"] = true,
  ["PING"] = true,
  ["PONG"] = true,
  ["CLOSE"] = true,
  ["CLOSED"] = true,
  ["GO AWAY!"] = true,
}

M.GO_AWAY = "GO AWAY!"

-- Exit codes (documented in README.md).
M.EXIT_OK = 0          -- the scenario ran to its clean end; DONE was printed
M.EXIT_FAIL = 1        -- protocol failure: peer silent too long, no CLOSED, missing echoes
M.EXIT_USAGE = 2       -- bad command line
M.EXIT_HANDSHAKE = 3   -- handshake failed: refused, or no CONNECT / CONNECTED in time
M.EXIT_DEADLINE = 124  -- hard deadline reached

local start = M.now()
local trace_on = false
local deadline_at = math.huge
local open_sockets = {}

function M.elapsed()
  return M.now() - start
end

-- One event line on stdout, flushed immediately so a parent process sees it now.
function M.emit(line)
  io.stdout:write(line, "\n")
  io.stdout:flush()
end

-- Byte-exact, printable rendering of a datagram: printable ASCII stays as it is,
-- backslash and double quote are escaped, every other byte becomes \xHH.
function M.escape(bytes)
  local out = {}
  for i = 1, #bytes do
    local b = bytes:byte(i)
    if b == 92 then
      out[#out + 1] = "\\\\"
    elseif b == 34 then
      out[#out + 1] = '\\"'
    elseif b >= 32 and b <= 126 then
      out[#out + 1] = string.char(b)
    else
      out[#out + 1] = string.format("\\x%02X", b)
    end
  end
  return table.concat(out)
end

function M.set_trace(on)
  trace_on = on and true or false
end

-- label: which local socket ("S", "SC", "C"); dir: ">" sent, "<" received.
function M.trace(label, dir, ip, port, bytes)
  if not trace_on then return end
  io.stderr:write(string.format('%8.3f %-2s %s %s:%s %d "%s"\n',
    M.elapsed(), label, dir, tostring(ip), tostring(port), #bytes, M.escape(bytes)))
  io.stderr:flush()
end

function M.note(text)
  if not trace_on then return end
  io.stderr:write(string.format("%8.3f -- %s\n", M.elapsed(), text))
  io.stderr:flush()
end

-- A non-blocking UDP socket bound to host:port (port 0 = any free port).
function M.udp_bind(host, port)
  local s, err = socket.udp()
  if not s then return nil, err end
  local ok, berr = s:setsockname(host, port)
  if not ok then s:close(); return nil, berr end
  s:settimeout(0)
  open_sockets[#open_sockets + 1] = s
  return s
end

function M.send(sock, label, bytes, ip, port)
  local n, err = sock:sendto(bytes, ip, port)
  M.trace(label, ">", ip, port, bytes)
  if not n then M.note("sendto failed: " .. tostring(err)) end
  return n, err
end

-- Reads one datagram if there is one: bytes, ip, port; or nil.
local MAX_DATAGRAM = 65535
function M.recv(sock, label)
  local data, ip, port = sock:receivefrom(MAX_DATAGRAM)
  if not data then return nil end
  M.trace(label, "<", ip, port, data)
  return data, ip, port
end

-- Waits at most `timeout` seconds (capped by the deadline) for any of `socks`
-- to become readable; returns the set of readable sockets (may be empty).
function M.wait(socks, timeout)
  M.check_deadline()
  local left = deadline_at - M.now()
  if timeout > left then timeout = math.max(left, 0) end
  local readable = socket.select(socks, nil, timeout)
  M.check_deadline()
  local set = {}
  for _, s in ipairs(readable or {}) do set[s] = true end
  return set
end

-- Sleeps `seconds` without touching any socket (used for deliberate stalls),
-- still honouring the hard deadline.
function M.sleep(seconds)
  local until_t = M.now() + seconds
  while true do
    M.check_deadline()
    local left = until_t - M.now()
    if left <= 0 then return end
    socket.sleep(math.min(left, 0.05))
  end
end

function M.finish(code)
  for _, s in ipairs(open_sockets) do pcall(s.close, s) end
  io.stdout:flush()
  io.stderr:flush()
  os.exit(code)
end

function M.set_deadline(seconds)
  deadline_at = start + seconds
end

function M.check_deadline()
  if M.now() >= deadline_at then
    M.emit("TIMEOUT deadline")
    M.finish(M.EXIT_DEADLINE)
  end
end

function M.fail(code, reason)
  M.emit("ERROR " .. reason)
  M.finish(code)
end

-- Command line: --name value or --name=value; flags take no value.
-- spec[name] = { kind = "num"|"int"|"str"|"flag"|{enum...}, default = v, help = "" }
function M.parse_args(argv, spec, usage)
  local opts = {}
  for name, s in pairs(spec) do opts[name] = s.default end
  local function usage_error(msg)
    io.stderr:write("error: ", msg, "\n", usage, "\n")
    io.stdout:write("ERROR usage\n")
    io.stdout:flush()
    os.exit(M.EXIT_USAGE)
  end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "-h" or a == "--help" then
      io.stdout:write(usage, "\n")
      os.exit(0)
    end
    local name, value = a:match("^%-%-([%w%-]+)=(.*)$")
    if not name then name = a:match("^%-%-([%w%-]+)$") end
    if not name then usage_error("unexpected argument '" .. a .. "'") end
    local s = spec[name]
    if not s then usage_error("unknown option --" .. name) end
    if s.kind == "flag" then
      if value ~= nil then usage_error("--" .. name .. " takes no value") end
      opts[name] = true
    else
      if value == nil then
        i = i + 1
        value = argv[i]
        if value == nil then usage_error("--" .. name .. " needs a value") end
      end
      if s.kind == "num" or s.kind == "int" then
        local n = tonumber(value)
        if not n or n < 0 or (s.kind == "int" and math.type(n) ~= "integer") then
          usage_error("--" .. name .. " must be a non-negative " ..
            (s.kind == "int" and "integer" or "number") .. ", got '" .. value .. "'")
        end
        opts[name] = n
      elseif type(s.kind) == "table" then
        local okv = false
        for _, v in ipairs(s.kind) do if v == value then okv = true end end
        if not okv then
          usage_error("--" .. name .. " must be one of " .. table.concat(s.kind, ", "))
        end
        opts[name] = value
      else
        opts[name] = value
      end
    end
    i = i + 1
  end
  for name, s in pairs(spec) do
    if s.required and opts[name] == nil then usage_error("--" .. name .. " is required") end
  end
  return opts
end

-- Options both scripts take, with the same meaning (see README.md).
M.COMMON_SPEC = {
  token = { kind = "str", default = "udpipe" },
  ping = { kind = "num", default = 1 },
  ["stall-detect"] = { kind = "num", default = 3 },
  timeout = { kind = "num", default = 10 },
  deadline = { kind = "num", default = 20 },
  trace = { kind = "flag", default = false },
}

-- Parses argv against spec plus COMMON_SPEC, checks the token, arms the trace and the
-- hard deadline, and returns the options.
function M.start(argv, spec, usage)
  for name, s in pairs(M.COMMON_SPEC) do
    if spec[name] == nil then spec[name] = s end
  end
  local opts = M.parse_args(argv, spec, usage)
  if opts.token == "" or opts.token:find("[^\33-\126]") then
    io.stderr:write("error: --token must be non-empty printable ASCII without spaces\n")
    M.emit("ERROR usage")
    os.exit(M.EXIT_USAGE)
  end
  M.set_trace(opts.trace)
  M.set_deadline(opts.deadline)
  return opts
end

-- The control words both sides handle alike once connected. Returns true when `data`
-- was a control word (handled here, or printed as UNEXPECTED), false for a message.
function M.keepalive_and_close(data, send, closing, on_closed)
  if data == "PING" then
    send("PONG")
    M.emit("PING")
  elseif data == "PONG" then
    M.emit("PONG")
  elseif data == "CLOSE" then
    send("CLOSED")
    M.emit("PEER-CLOSE")
    on_closed()
  elseif data == "CLOSED" then
    if closing then on_closed() else M.emit("UNEXPECTED CLOSED") end
  elseif M.CONTROL[data] then
    M.emit("UNEXPECTED " .. data)
  else
    return false
  end
  return true
end

return M
