// A small reconnecting websocket: exponential backoff with full jitter, a pause while
// the page is hidden or the browser offline, and no retry after the server says "not
// allowed" (4401/4403). Back online, back from the back/forward cache, or told that the
// server restarts (1012: a deploy; the proxy sends the new socket to another process), it
// reconnects at once (and the page catches up in onOpen); with no other process to take it,
// it keeps trying every second or two, for up to 30 s, until the restarted one is back. While open it pings
// when quiet, and a socket that stops answering is dropped and reconnected
// (socket-heartbeat.js).

import { Heartbeat } from "./socket-heartbeat.js";

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;
const FINAL_CLOSE_CODES = new Set([4401, 4403]);
const SERVICE_RESTART = 1012;
// A restarting process closes all its sockets together: their reconnects spread over a second.
const RESTART_JITTER_MS = 1000;
// A restarted process is back within seconds: for this long after a 1012, a socket that
// cannot connect tries again at most RESTART_RETRY_MS later, not up to MAX_DELAY_MS, so the
// page is back within a couple of seconds of the server. One that opens and is closed at
// once (1013 busy) backs off as usual.
const RESTART_WINDOW_MS = 30000;
const RESTART_RETRY_MS = 2000;

export function socketUrl(path) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}${path}`;
}

export class ReconnectingSocket {
  constructor(path, { onMessage, onOpen, onClose, onFinalClose } = {}) {
    this.path = path;
    this.onMessage = onMessage || (() => {});
    this.onOpen = onOpen || (() => {});
    this.onClose = onClose || (() => {});
    this.onFinalClose = onFinalClose || (() => {});
    this.attempts = 0;
    this.opens = 0;
    this.restartedAt = null; // Date.now() of the last 1012, until a frame is heard
    this.stopped = false;
    this.timer = null;
    this.onVisible = () => {
      if (!document.hidden && !this.socket && !this.stopped) this.connect();
    };
    // Offline, a socket can look open for minutes while nothing gets through: drop it.
    this.onOffline = () => this.dropWhileOffline();
    this.onOnline = () => this.reconnectNow();
    this.onPageShow = (event) => {
      if (event.persisted) this.reconnectNow(); // the browser closed it when the page was put away
    };
    document.addEventListener("visibilitychange", this.onVisible);
    window.addEventListener("offline", this.onOffline);
    window.addEventListener("online", this.onOnline);
    window.addEventListener("pageshow", this.onPageShow);
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    // A path that is a function is asked again on each connect (a room's says what it shows).
    const socket = new WebSocket(socketUrl(typeof this.path === "function" ? this.path() : this.path));
    this.socket = socket;
    // Each connection has its own heartbeat; one dropped by `drop` stops at its close.
    const current = () => this.socket === socket && socket.readyState === WebSocket.OPEN;
    const heartbeat = new Heartbeat({
      ping: () => current() && socket.send(JSON.stringify({ type: "ping" })),
      onSilent: () => current() && this.drop({ reconnect: true }),
    });
    let opened = false;
    this.socket.addEventListener("open", () => {
      opened = true;
      this.opens += 1;
      heartbeat.start();
      announceStatus(this, true);
      this.onOpen({ reconnected: this.opens > 1 });
    });
    this.socket.addEventListener("message", (event) => {
      heartbeat.heard();
      // Let in: the backoff starts over at the next drop. Not at the open: a server that
      // accepts only to close at once (1013 busy, 1011, 4429) must see the waits grow.
      this.attempts = 0;
      this.restartedAt = null;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onMessage(frame);
    });
    this.socket.addEventListener("close", (event) => {
      heartbeat.stop();
      if (this.socket !== socket) return; // one dropped (offline, or silent)
      this.socket = null;
      this.onClose(event.code);
      if (this.stopped) return;
      if (FINAL_CLOSE_CODES.has(event.code)) {
        this.stop();
        this.onFinalClose(event.code);
        return;
      }
      announceStatus(this, false);
      this.scheduleReconnect(event.code, { opened });
    });
  }

  scheduleReconnect(closeCode, { opened = true } = {}) {
    if (closeCode === SERVICE_RESTART) this.restartedAt = Date.now();
    if (document.hidden || !navigator.onLine) return; // onVisible and onOnline reconnect
    let ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempts);
    if (closeCode === SERVICE_RESTART) ceiling = RESTART_JITTER_MS;
    else if (!opened && this.serverRestarting()) ceiling = Math.min(ceiling, RESTART_RETRY_MS);
    this.attempts += 1;
    this.timer = setTimeout(() => this.connect(), Math.random() * ceiling);
  }

  serverRestarting() {
    return this.restartedAt !== null && Date.now() - this.restartedAt < RESTART_WINDOW_MS;
  }

  isOpen() {
    return Boolean(this.socket && this.socket.readyState === WebSocket.OPEN);
  }

  reconnectNow() {
    if (this.socket || this.stopped) return;
    this.attempts = 0;
    this.connect();
  }

  dropWhileOffline() {
    this.drop({ reconnect: false }); // onOnline reconnects
  }

  // Give up on the current socket without waiting for its close (which may take minutes
  // on a dead connection); with `reconnect`, try again with backoff.
  drop({ reconnect }) {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    socket?.close();
    if (socket) this.onClose(1006); // its own close event is ignored: tell the owner now
    announceStatus(this, false);
    if (reconnect) this.scheduleReconnect();
  }

  send(frame) {
    if (this.isOpen()) this.socket.send(JSON.stringify(frame));
  }

  stop() {
    this.stopped = true;
    announceStatus(this, true);
    clearTimeout(this.timer);
    document.removeEventListener("visibilitychange", this.onVisible);
    window.removeEventListener("offline", this.onOffline);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("pageshow", this.onPageShow);
    if (this.socket) this.socket.close(1000);
  }
}

// Every socket reports here; "reconnecting…" hints show while any socket is down.
const downSockets = new Set();
function announceStatus(socket, online) {
  if (online) downSockets.delete(socket);
  else downSockets.add(socket);
  document.querySelectorAll("[data-connection-status]").forEach((element) => {
    element.hidden = downSockets.size === 0;
  });
}
