// A small reconnecting websocket: exponential backoff with full jitter, a pause while
// the page is hidden, and no retry after the server says "not allowed" (4401/4403).

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 15000;
const FINAL_CLOSE_CODES = new Set([4401, 4403]);

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
    this.stopped = false;
    this.timer = null;
    this.onVisible = () => {
      if (!document.hidden && !this.socket && !this.stopped) this.connect();
    };
    document.addEventListener("visibilitychange", this.onVisible);
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    this.socket = new WebSocket(socketUrl(this.path));
    this.socket.addEventListener("open", () => {
      this.attempts = 0;
      this.opens += 1;
      announceStatus(this, true);
      this.onOpen({ reconnected: this.opens > 1 });
    });
    this.socket.addEventListener("message", (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.onMessage(frame);
    });
    this.socket.addEventListener("close", (event) => {
      this.socket = null;
      this.onClose(event.code);
      if (this.stopped) return;
      if (FINAL_CLOSE_CODES.has(event.code)) {
        this.stop();
        this.onFinalClose(event.code);
        return;
      }
      announceStatus(this, false);
      this.scheduleReconnect();
    });
  }

  scheduleReconnect() {
    if (document.hidden) return; // onVisible reconnects when the page is shown again
    const ceiling = Math.min(MAX_DELAY_MS, BASE_DELAY_MS * 2 ** this.attempts);
    this.attempts += 1;
    this.timer = setTimeout(() => this.connect(), Math.random() * ceiling);
  }

  isOpen() {
    return Boolean(this.socket && this.socket.readyState === WebSocket.OPEN);
  }

  send(frame) {
    if (this.isOpen()) this.socket.send(JSON.stringify(frame));
  }

  stop() {
    this.stopped = true;
    announceStatus(this, true);
    clearTimeout(this.timer);
    document.removeEventListener("visibilitychange", this.onVisible);
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
