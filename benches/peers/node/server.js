// A classic Node.js `ws` rooms-and-JSON broadcast server, the design most
// WebSocket tutorials teach. It is the "node" peer of scripts/bench-peers.sh;
// tickcast is benchmarked against it with the same workloads.
//
// Protocol (JSON text frames):
//   subscriber -> server  {"op":"join","rooms":["AAPL","MSFT"]}
//   publisher  -> server  {"op":"tick","sym":"AAPL", ...any fields...}
//   server -> members of room `sym`: the tick object, stringified once per
//   tick and sent to every member (the tutorial's broadcast loop).
//
// Usage: node server.js PORT
'use strict';

const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.argv[2] || process.env.PORT || 8090);
const rooms = new Map(); // room name -> Set of sockets

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok\n');
    return;
  }
  res.writeHead(404);
  res.end();
});

const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 1 << 20 });

wss.on('connection', (ws) => {
  const joined = new Set();
  ws.on('message', (data) => {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      ws.send(JSON.stringify({ type: 'error', message: 'bad json' }));
      return;
    }
    if (msg.op === 'tick') {
      const members = rooms.get(msg.sym);
      if (!members) return;
      delete msg.op;
      const out = JSON.stringify(msg);
      for (const member of members) {
        if (member.readyState === WebSocket.OPEN) member.send(out);
      }
    } else if (msg.op === 'join' && Array.isArray(msg.rooms)) {
      for (const room of msg.rooms) {
        if (!rooms.has(room)) rooms.set(room, new Set());
        rooms.get(room).add(ws);
        joined.add(room);
      }
      ws.send(JSON.stringify({ type: 'ack', op: 'join', rooms: msg.rooms }));
    }
  });
  ws.on('close', () => {
    for (const room of joined) {
      const members = rooms.get(room);
      if (members) {
        members.delete(ws);
        if (members.size === 0) rooms.delete(room);
      }
    }
  });
  ws.on('error', () => {});
});

server.listen(port, '127.0.0.1', () => {
  console.log(`node rooms server on ws://127.0.0.1:${port}`);
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
