-- classic_server.lua: a minimal server for the ORIGINAL ("classic") UDPIPE protocol,
-- written for udpipe's tests (Lua 5.4 + luasocket only). It takes ONE client.
--
--   lua5.4 test/lua/classic_server.lua --port 0 --token secret [options]
--
-- Wire sequence it follows (every line is one UDP datagram, the exact ASCII bytes,
-- no terminator):
--
--   C->S   HELLO <token>
--   S->C   CONNECT <ip> <port>      ip/port of the private socket SC
--   S->C   GO AWAY!                 "stop talking to S"; sent on success
--   C->SC  CONNECT
--   SC->C  CONNECTED
--   both   PING -> PONG             each side pings every --ping seconds
--   both   data                     anything that is not a control word
--   C->SC  CLOSE  -> SC->C CLOSED   client-initiated close
--   SC->C  CLOSE  -> C->SC CLOSED   server-initiated close (--close-after/--close-at)
--
-- Bad token: the reference only says the server calls onBadToken(msg, ip, port);
-- it documents no reply, and the description page shows "GO AWAY!" only in the
-- successful sequence, right after CONNECT. So by default this server sends
-- NOTHING back on a bad token (the client just times out). --bad-token goaway makes
-- it answer a lone "GO AWAY!" instead, for tests of a client's refusal path.
--
-- Events on stdout (one per line, flushed): see README.md. Exit codes: 0 clean
-- close (DONE printed), 1 protocol failure, 2 usage, 124 hard deadline.

local dir = arg and arg[0] and arg[0]:match("^(.*)[/\\]") or "."
package.path = dir .. "/?.lua;" .. package.path
local C = require("classic_common")
local socket = require("socket")

local USAGE = [[
usage: lua5.4 classic_server.lua [options]
  --host IP            address to bind S and SC to (default 127.0.0.1)
  --port N             public port of S, 0 = any free port (default 0)
  --token STR          handshake token (default udpipe)
  --scenario NAME      echo | sink: echo data back, or only print it (default echo)
  --advertise IP       IP sent in "CONNECT <ip> <port>" (default: --host, or
                       127.0.0.1 when --host is 0.0.0.0)
  --ping SEC           own PING interval, 0 = never ping (default 1)
  --send N             send "<prefix>:1".."<prefix>:N" right after CONNECTED (default 0)
  --prefix STR         prefix of the messages of --send (default srv)
  --stall-after K      go silent after the K-th data message (echoed first), 0 = off (default 0)
  --stall-at SEC       go silent SEC seconds after CONNECTED, 0 = off (default 0)
  --stall SEC          length of that silence (default 5)
  --close-after K      send CLOSE after the K-th data message (echoed first), 0 = off (default 0)
  --close-at SEC       send CLOSE SEC seconds after CONNECTED, 0 = off (default 0)
  --bad-token MODE     silent | goaway: reply to a HELLO with a wrong token (default silent)
  --lenient            accept CONNECT on SC from any address (default: only from
                       the address that sent the good HELLO)
  --stall-detect SEC   print STALLED after SEC seconds without a datagram from the client (default 3)
  --timeout SEC        give up (DISCONNECTED, exit 1) after SEC seconds without one (default 10)
  --deadline SEC       hard deadline for the whole run (default 20)
  --trace              log every datagram sent/received on stderr, escaped]]

local opts = C.start(arg, {
  host = { kind = "str", default = "127.0.0.1" },
  port = { kind = "int", default = 0 },
  scenario = { kind = { "echo", "sink" }, default = "echo" },
  advertise = { kind = "str" },
  send = { kind = "int", default = 0 },
  prefix = { kind = "str", default = "srv" },
  ["stall-after"] = { kind = "int", default = 0 },
  ["stall-at"] = { kind = "num", default = 0 },
  stall = { kind = "num", default = 5 },
  ["close-after"] = { kind = "int", default = 0 },
  ["close-at"] = { kind = "num", default = 0 },
  ["bad-token"] = { kind = { "silent", "goaway" }, default = "silent" },
  lenient = { kind = "flag", default = false },
}, USAGE)


-- The IP written into "CONNECT <ip> <port>": always a dotted IPv4 address.
local advertise = opts.advertise
if not advertise then
  advertise = (opts.host == "0.0.0.0" or opts.host == "*") and "127.0.0.1" or opts.host
end
advertise = socket.dns.toip(advertise)
if not advertise or not advertise:match("^%d+%.%d+%.%d+%.%d+$") then
  io.stderr:write("error: cannot turn --host/--advertise into an IPv4 address\n")
  C.emit("ERROR usage")
  os.exit(C.EXIT_USAGE)
end

-- The public socket S and the private socket SC. The original opens SC when a
-- good HELLO arrives; this one-client server opens it up front so that a test
-- learns its port from the second line of output. The bytes on the wire are the
-- same: SC is a different port from S, and CONNECT names it.
local S, err = C.udp_bind(opts.host, opts.port)
if not S then C.fail(C.EXIT_FAIL, "bind S: " .. tostring(err)) end
local SC, err2 = C.udp_bind(opts.host, 0)
if not SC then C.fail(C.EXIT_FAIL, "bind SC: " .. tostring(err2)) end
local _, s_port = S:getsockname()
local _, sc_port = SC:getsockname()
C.emit("READY " .. s_port)
C.emit("SC " .. sc_port)

local HELLO_GOOD = "HELLO " .. opts.token
local CONNECT_REPLY = "CONNECT " .. advertise .. " " .. sc_port

local client_ip, client_port    -- address of the good HELLO (SC talks only to it)
local connected = false
local connected_at
local last_heard                -- last datagram from the client, S or SC
local peer_stalled = false
local next_ping
local data_count = 0
local stalled_once = false
local closing = false           -- we sent CLOSE and wait for CLOSED
local close_sent_at, close_sends = 0, 0

local function send_sc(bytes)
  C.send(SC, "SC", bytes, client_ip, client_port)
end

local function finish_closed()
  C.emit("CLOSED")
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

-- A deliberate stall: no reading, no writing, no pinging for --stall seconds.
local function stall()
  stalled_once = true
  C.emit("STALL-START")
  C.sleep(opts.stall)
  C.emit("STALL-END")
  -- Our own silence is not the peer's: restart the silence clock, ping at once.
  last_heard = C.now()
  if opts.ping > 0 then next_ping = C.now() end
end

local function start_close()
  if closing then return end
  closing = true
  C.emit("CLOSING")
  send_sc("CLOSE")
  close_sent_at, close_sends = C.now(), 1
end

local function on_public(data, ip, port)
  if data == HELLO_GOOD then
    if client_ip == nil or (client_ip == ip and client_port == port) then
      -- First HELLO, or the same client repeating it (its CONNECT reply was
      -- lost, or it retries): answer again with the same SC.
      client_ip, client_port = ip, port
      C.emit("HELLO " .. ip .. " " .. port)
      heard()
      C.send(S, "S", CONNECT_REPLY, ip, port)
      C.send(S, "S", C.GO_AWAY, ip, port)
    else
      -- One client only (the original calls onMaxClients; no reply documented).
      C.emit("MAXCLIENTS " .. ip .. " " .. port)
    end
  elseif data == "HELLO" or data:sub(1, 6) == "HELLO " then
    C.emit("BADTOKEN " .. ip .. " " .. port)
    if opts["bad-token"] == "goaway" then C.send(S, "S", C.GO_AWAY, ip, port) end
  else
    C.emit("IGNORED " .. C.escape(data))
  end
end

local function on_private(data)
  heard()
  if not connected then
    if data == "CONNECT" then
      connected = true
      connected_at = C.now()
      if opts.ping > 0 then next_ping = connected_at + opts.ping end
      send_sc("CONNECTED")
      C.emit("CONNECTED " .. client_ip .. " " .. client_port)
      for i = 1, opts.send do send_sc(opts.prefix .. ":" .. i) end
    else
      C.emit("UNEXPECTED " .. C.escape(data))
    end
    return
  end
  if data == "CONNECT" then
    send_sc("CONNECTED")              -- our CONNECTED was lost: answer again
  elseif C.keepalive_and_close(data, send_sc, closing, finish_closed) then
    -- PING, PONG, CLOSE, CLOSED, or another control word out of place (CONNECTED or GO AWAY! sent to a server)
  else
    data_count = data_count + 1
    C.emit("MSG " .. C.escape(data))
    if opts.scenario == "echo" then send_sc(data) end
    if opts["stall-after"] > 0 and data_count == opts["stall-after"] and not stalled_once then
      stall()
    end
    if opts["close-after"] > 0 and data_count == opts["close-after"] then start_close() end
  end
end

local socks = { S, SC }
while true do
  local readable = C.wait(socks, 0.02)
  if readable[S] then
    while true do
      local data, ip, port = C.recv(S, "S")
      if not data then break end
      on_public(data, ip, port)
    end
  end
  if readable[SC] then
    while true do
      local data, ip, port = C.recv(SC, "SC")
      if not data then break end
      if client_ip == nil then
        C.emit("FOREIGN " .. ip .. " " .. port)
      elseif ip == client_ip and port == client_port then
        on_private(data)
      elseif opts.lenient and not connected and data == "CONNECT" then
        client_ip, client_port = ip, port
        on_private(data)
      else
        C.emit("FOREIGN " .. ip .. " " .. port)
      end
    end
  end

  local now = C.now()
  if connected then
    if not closing and opts.ping > 0 and now >= next_ping then
      send_sc("PING")
      next_ping = now + opts.ping
    end
    if opts["stall-at"] > 0 and not stalled_once and now - connected_at >= opts["stall-at"] then
      stall()
      now = C.now()
    end
    if opts["close-at"] > 0 and not closing and now - connected_at >= opts["close-at"] then
      start_close()
    end
    if closing and now - close_sent_at >= 1 then
      if close_sends >= 3 then C.fail(C.EXIT_FAIL, "no-closed") end
      send_sc("CLOSE")
      close_sent_at, close_sends = now, close_sends + 1
    end
  end
  if last_heard then
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
