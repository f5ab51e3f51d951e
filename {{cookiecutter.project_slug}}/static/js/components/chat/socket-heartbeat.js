// Keeps a quiet socket talking, and notices one that died without a close.
//
// After HEARTBEAT_MS in which the socket heard nothing, the page sends {"type": "ping"}
// and the server answers {"type": "pong"} (chat/realtime/consumers.py). Proxies that cut idle
// connections (nginx's proxy_read_timeout, 60 s by default; load balancers) so see
// traffic in a quiet room. A socket that hears nothing for PONG_TIMEOUT_MS after its ping
// is dead (a network change, a laptop back from sleep, a proxy that dropped it): the
// owner is told, and drops and reconnects it. Any frame counts as heard, not only a pong.

export const HEARTBEAT_MS = 25000;
export const PONG_TIMEOUT_MS = 10000;

export class Heartbeat {
  constructor({ ping, onSilent }) {
    this.ping = ping;
    this.onSilent = onSilent;
    this.timer = null;
  }

  start() {
    this.heard();
    this.schedule(HEARTBEAT_MS);
  }

  // Called for every frame received: cheap, the timer only reads the time it leaves.
  heard() {
    this.lastHeard = Date.now();
    this.pingSentAt = null;
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  schedule(delay) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.check(), delay);
  }

  // Timers in a background tab may fire late; times are measured, never counted in ticks.
  check() {
    const now = Date.now();
    if (this.pingSentAt !== null) {
      const waited = now - this.pingSentAt;
      if (waited >= PONG_TIMEOUT_MS) {
        this.stop();
        this.onSilent();
      } else {
        this.schedule(PONG_TIMEOUT_MS - waited);
      }
      return;
    }
    const quiet = now - this.lastHeard;
    if (quiet < HEARTBEAT_MS) {
      this.schedule(HEARTBEAT_MS - quiet);
      return;
    }
    this.pingSentAt = now;
    this.ping();
    this.schedule(PONG_TIMEOUT_MS);
  }
}
