// Test doubles: a WebSocket the test drives, and a clock it advances.

export class FakeClock {
  constructor() {
    this.t = 1_000_000;
    this.timers = new Map();
    this.nextId = 1;
  }
  now() {
    return this.t;
  }
  setTimeout(f, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + ms, f, every: 0 });
    return id;
  }
  setInterval(f, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.t + ms, f, every: ms });
    return id;
  }
  clearTimeout(id) {
    this.timers.delete(id);
  }
  clearInterval(id) {
    this.timers.delete(id);
  }
  /** Advances time by `ms`, firing due timers in order. */
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const [id, timer] of this.timers) if (timer.at <= end && (!next || timer.at < next[1].at)) next = [id, timer];
      if (!next) break;
      const [id, timer] = next;
      this.t = timer.at;
      if (timer.every) timer.at += timer.every;
      else this.timers.delete(id);
      timer.f();
    }
    this.t = end;
  }
}

export function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = [];
      this.closed = null;
      sockets.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close(code, reason) {
      this.closed = { code, reason };
      this.readyState = 3;
    }
    // What the server does:
    serverOpen() {
      this.readyState = 1;
      this.onopen?.({});
    }
    serverSend(message) {
      const text = JSON.stringify(message, (_, v) => (typeof v === 'bigint' ? `${v}#n` : v)).replace(/"(\d+)#n"/g, '$1');
      this.onmessage?.({ data: text });
    }
    serverClose(code = 1006, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
  }
  FakeWebSocket.sockets = sockets;
  return FakeWebSocket;
}
