-- classic_client.lua: a minimal client for the ORIGINAL ("classic") UDPIPE protocol,
-- written for udpipe's tests (Lua 5.4 + luasocket only).
--
--   lua5.4 test/lua/classic_client.lua --port 40000 --token secret [options]
--
-- Client side of the wire sequence (one UDP datagram per line, exact ASCII bytes,
-- no terminator), all from ONE local socket C:
--
--   C->S   HELLO <token>            resent every second until CONNECT arrives
--   S->C   CONNECT <ip> <port>      the server's private socket SC
--   S->C   GO AWAY!                 printed if seen, never required
--   C->SC  CONNECT                  resent every second until CONNECTED arrives
--   SC->C  CONNECTED
--   both   PING -> PONG             each side pings every --ping seconds
--   both   data                     anything that is not a control word
--   C->SC  CLOSE  -> SC->C CLOSED   (resent every second, 3 sends at most)
--   SC->C  CLOSE  -> C->SC CLOSED   when the server closes
--
-- A "GO AWAY!" that comes before any CONNECT is taken as a refusal (exit 3).
--
-- Scenarios:
--   echo  connect; send --count messages "<prefix>:1".."<prefix>:N"; wait for
--         their echoes; stall (no send, no read) for --stall seconds; resume
--         (answer the queued PINGs); after --after-stall seconds send --more
--         messages; wait for their echoes; CLOSE, wait CLOSED; DONE.
--   hold  connect; send nothing; answer PINGs and print messages for --hold
--         seconds or until the server closes; then CLOSE, wait CLOSED; DONE.
--
-- Events on stdout (one per line, flushed): see README.md. Exit codes: 0 done,
-- 1 protocol failure (incl. missing echoes), 2 usage, 3 handshake failed,
-- 124 hard deadline.

local dir = arg and arg[0] and arg[0]:match("^(.*)[/\\]") or "."
package.path = dir .. "/?.lua;" .. package.path
local C = require("classic_common")
local socket = require("socket")

local USAGE = [[
usage: lua5.4 classic_client.lua --port N [options]
  --host IP            server (S) address (default 127.0.0.1)
  --port N             server (S) public port (required)
  --bind IP            local address of C (default 127.0.0.1 for a 127.x host, else 0.0.0.0)
  --token STR          handshake token (default udpipe)
  --scenario NAME      echo | hold (default echo)
  --count N            echo: messages before the stall (default 3)
  --more M             echo: messages after the stall (default 3)
  --prefix STR         message prefix, messages are "<prefix>:<i>" (default lua)
  --stall SEC          echo: length of the deliberate stall, 0 = none (default 5)
  --after-stall SEC    echo: wait after the stall before sending --more (default 1)
  --echo-wait SEC      echo: how long to wait for each batch's echoes (default 10)
  --hold SEC           hold: how long to stay connected (default 5)
  --ping SEC           own PING interval, 0 = never ping (default 1)
  --connect-timeout S  give up the handshake after S seconds (default 5)
  --stall-detect SEC   print STALLED after SEC seconds without a datagram from SC (default 3)
  --timeout SEC        give up (DISCONNECTED, exit 1) after SEC seconds without one (default 10)
  --deadline SEC       hard deadline for the whole run (default 20)
  --trace              log every datagram sent/received on stderr, escaped]]

local opts = C.start(arg, {
  host = { kind = "str", default = "127.0.0.1" },
  port = { kind = "int", required = true },
  bind = { kind = "str" },
  scenario = { kind = { "echo", "hold" }, default = "echo" },
  count = { kind = "int", default = 3 },
  more = { kind = "int", default = 3 },
  prefix = { kind = "str", default = "lua" },
  stall = { kind = "num", default = 5 },
  ["after-stall"] = { kind = "num", default = 1 },
  ["echo-wait"] = { kind = "num", default = 10 },
  hold = { kind = "num", default = 5 },
  ["connect-timeout"] = { kind = "num", default = 5 },
}, USAGE)


local s_ip = socket.dns.toip(opts.host)
if not s_ip then C.fail(C.EXIT_USAGE, "cannot resolve " .. opts.host) end
local s_port = opts.port
local bind = opts.bind or (s_ip:match("^127%.") and "127.0.0.1" or "0.0.0.0")

local sock, err = C.udp_bind(bind, 0)
if not sock then C.fail(C.EXIT_FAIL, "bind: " .. tostring(err)) end

local phase = "hello"           -- hello -> connecting -> connected
local sc_ip, sc_port            -- the server's private socket SC
local last_heard                -- last datagram from SC
local peer_stalled = false
local next_ping
local closing = false
local pending = {}              -- payloads sent whose echo has not come back
local missing = 0               -- how many are still pending (see pending)

local function send_s(bytes) C.send(sock, "C", bytes, s_ip, s_port) end
local function send_sc(bytes) C.send(sock, "C", bytes, sc_ip, sc_port) end

-- The run ends here in every "closed" case: exit 0 only if no echo is missing.
local function end_closed()
  C.emit("CLOSED")
  if missing > 0 then
    local names = {}
    for p in pairs(pending) do names[#names + 1] = p end
    table.sort(names)
    C.fail(C.EXIT_FAIL, "missing-echo " .. table.concat(names, ","))
  end
  C.emit("DONE")
  C.finish(C.EXIT_OK)
end

local function heard()
  last_heard = C.now()
  if peer_stalled then
    peer_stalled = false
    C.emit("UNSTALLED")
  end
end

local function on_public(data)
  local ip, port = data:match("^CONNECT (%d+%.%d+%.%d+%.%d+) (%d+)$")
  if ip then
    if phase == "hello" then
      if ip == "0.0.0.0" then ip = s_ip end       -- server bound to the wildcard
      sc_ip, sc_port = ip, math.tointeger(tonumber(port))
      phase = "connecting"
      C.emit("CONNECTING " .. sc_ip .. " " .. sc_port)
      send_sc("CONNECT")
    end
  elseif data == C.GO_AWAY then
    C.emit("GOAWAY")
    if phase == "hello" then C.fail(C.EXIT_HANDSHAKE, "refused") end
  else
    C.emit("IGNORED " .. C.escape(data))
  end
end

local function on_private(data)
  heard()
  if data == "CONNECTED" then
    if phase == "connecting" then
      phase = "connected"
      if opts.ping > 0 then next_ping = C.now() + opts.ping end
      C.emit("CONNECTED")
    end
  elseif C.keepalive_and_close(data, send_sc, closing, end_closed) then
    -- PING, PONG, CLOSE, CLOSED, or another control word out of place (CONNECT or GO AWAY! from SC)
  else
    C.emit("MSG " .. C.escape(data))
    if pending[data] then
      pending[data] = pending[data] - 1
      if pending[data] == 0 then pending[data] = nil end
      missing = missing - 1
    end
  end
end

-- Runs the network (reads, answers, pings, watches for silence) until done()
-- returns true or `seconds` have passed. Returns whether done() became true.
local function pump(seconds, done)
  local until_t = C.now() + seconds
  while true do
    if done and done() then return true end
    local now = C.now()
    if now >= until_t then return false end
    local readable = C.wait({ sock }, math.min(0.02, until_t - now))
    if readable[sock] then
      while true do
        local data, ip, port = C.recv(sock, "C")
        if not data then break end
        if ip == s_ip and port == s_port then
          on_public(data)
        elseif sc_ip and ip == sc_ip and port == sc_port then
          on_private(data)
        else
          C.emit("FOREIGN " .. ip .. " " .. port)
        end
      end
    end
    now = C.now()
    if phase == "connected" then
      if not closing and opts.ping > 0 and now >= next_ping then
        send_sc("PING")
        next_ping = now + opts.ping
      end
      local quiet = now - last_heard
      if not peer_stalled and quiet >= opts["stall-detect"] then
        peer_stalled = true
        C.emit("STALLED")
      end
      if quiet >= opts.timeout then
        C.emit("DISCONNECTED")
        C.finish(C.EXIT_FAIL)
      end
    end
  end
end

local function handshake()
  local give_up = C.now() + opts["connect-timeout"]
  send_s("HELLO " .. opts.token)
  while phase ~= "connected" do
    local left = give_up - C.now()
    if left <= 0 then C.fail(C.EXIT_HANDSHAKE, "handshake-timeout " .. phase) end
    if not pump(math.min(1, left), function() return phase == "connected" end) then
      -- Nothing yet: repeat the step we are on (UDP may have lost it).
      if phase == "hello" then send_s("HELLO " .. opts.token)
      elseif phase == "connecting" then send_sc("CONNECT") end
    end
  end
end

local sent = 0
local function send_batch(n)
  for _ = 1, n do
    sent = sent + 1
    local payload = opts.prefix .. ":" .. sent
    pending[payload] = (pending[payload] or 0) + 1
    missing = missing + 1
    send_sc(payload)
  end
end

local function wait_echoes()
  pump(opts["echo-wait"], function() return missing == 0 end)
end

local function stall()
  C.emit("STALL-START")
  C.sleep(opts.stall)
  C.emit("STALL-END")
  -- Our own silence is not the peer's: restart the silence clock, ping at once.
  last_heard = C.now()
  if opts.ping > 0 then next_ping = C.now() end
end

local function close()
  closing = true
  C.emit("CLOSING")
  for _ = 1, 3 do
    send_sc("CLOSE")
    pump(1)            -- CLOSED ends the run inside pump (end_closed)
  end
  C.fail(C.EXIT_FAIL, "no-closed")
end

handshake()
if opts.scenario == "echo" then
  send_batch(opts.count)
  wait_echoes()
  if opts.stall > 0 then stall() end
  pump(opts["after-stall"])
  send_batch(opts.more)
  wait_echoes()
else -- hold
  pump(opts.hold)
end
close()
