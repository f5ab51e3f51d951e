// Messages on their way out of one room, each stored exactly once and in the order typed.
//
// Each message gets a client id when it is typed. While the room socket is open, messages
// go over it as they are typed, without waiting for the acks of those before them
// ({"type": "send"}, answered by an "ack" or an "error" with the same id): on a slow
// network a quick typist's messages do not queue behind each other's round trips. Each
// names the message before it that is not acked yet ("after"), and the server stores none
// before the one it follows ("out_of_order" otherwise). Any answer but an ack holds the
// outbox until every send out is answered; then what was not stored goes again, from the
// first. With the socket closed, or no answer in time, the first message goes over the
// form's HTTP route, one at a time. The server stores a client id once per person, so a
// retry (after a reconnect, a timeout, a 503) never stores a message twice. Overload
// answers (429/503 with Retry-After, or a "rate_limited"/"busy" frame) are retried on
// their own; refusals (too long, not a member any more) give the text back to the person.

const ACK_TIMEOUT_MS = 5000;
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 30000;
const MAX_OUT = 16; // sends out over the socket at once (the server reads that many unanswered)
const RETRIED_CODES = new Set(["rate_limited", "busy"]);

export function newClientId() {
  if (window.crypto?.randomUUID) return window.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

export class MessageOutbox {
  // socket: a ReconnectingSocket; form: the send form (its action, CSRF token, fields).
  // onSent(bubblesHtml or null, messageId): stored; the bubble comes with an HTTP answer.
  // onRefused(body, {html} or {text}): not stored and not to be retried; html is the
  // server's error fragment, text a sentence to show as text.
  // onDelayed(text): a hint while a message waits to be retried ("" when none waits).
  constructor({ socket, form, onSent, onRefused, onDelayed }) {
    this.socket = socket;
    this.form = form;
    this.onSent = onSent;
    this.onRefused = onRefused;
    this.onDelayed = onDelayed;
    // {clientId, body, fields, out}, in the order typed; out: sent over the socket, unanswered.
    // Those out are always the first ones, unless `held`.
    this.queue = [];
    this.held = false; // an answer other than an ack came: nothing goes until every send out is answered
    this.overHttp = null; // the first message, while it is being sent over HTTP
    this.ackTimer = null;
    this.retryTimer = null;
    this.retryFor = null; // the message whose answer set retryTimer
    this.retries = 0;
  }

  // fields: what else the message carries ({reply_to: id}), sent with it every time.
  send(body, fields = {}) {
    this.queue.push({ clientId: newClientId(), body, fields, out: false });
    this.pump();
  }

  stop() {
    clearTimeout(this.ackTimer);
    this.stopWaitingToRetry();
    this.queue = [];
  }

  // Send what may go now: over the socket, every message not out yet (up to MAX_OUT out);
  // over HTTP, the first message, once nothing is out.
  pump() {
    if (this.retryTimer || this.overHttp) return;
    const out = this.queue.filter((message) => message.out).length;
    if (this.held) {
      if (out) return;
      this.held = false;
    }
    if (out === this.queue.length) return;
    if (this.delayShown) {
      this.delayShown = false;
      this.onDelayed("");
    }
    if (!this.socket.isOpen()) {
      if (!out) this.sendOverHttp(this.queue[0]);
      return;
    }
    for (let index = out; index < Math.min(this.queue.length, MAX_OUT); index += 1) {
      this.sendOverSocket(index);
    }
  }

  sendOverSocket(index) {
    const message = this.queue[index];
    const frame = { ...message.fields, type: "send", client_id: message.clientId, body: message.body };
    if (index > 0) frame.after = this.queue[index - 1].clientId; // not acked yet: stored before this one or this one is not
    this.socket.send(frame);
    message.out = true;
    if (index === 0) this.waitForAck();
  }

  // The first message is out over the socket: no answer in time (a socket that died
  // quietly), it goes over HTTP with the same client id.
  waitForAck() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    const first = this.queue[0];
    if (!first?.out) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = null;
      if (this.queue[0] !== first || !first.out) return;
      if (this.overHttp || this.retryTimer) this.waitForAck(); // another attempt first: look again later
      else this.sendOverHttp(first);
    }, ACK_TIMEOUT_MS);
  }

  // The socket is back: what waits goes now, a message waiting out a failed attempt too.
  onSocketOpened() {
    this.stopWaitingToRetry();
    this.pump();
  }

  // The socket closed: its answers will not come. What was out over it goes again, the
  // first over HTTP now.
  onSocketClosed() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    for (const message of this.queue) message.out = false;
    this.held = false;
    this.pump();
  }

  // Frames from the room socket that answer a send; returns true if the frame was one.
  onFrame(frame) {
    if (!frame.client_id || (frame.type !== "ack" && frame.type !== "error")) return frame.type === "ack";
    const message = this.queue.find((queued) => queued.clientId === frame.client_id);
    if (!message) return true; // a message already dealt with
    if (frame.type === "ack") {
      this.done(message, null, frame.message_id);
    } else if (!message.out) {
      // A late answer to a send already tried again (over HTTP): that try decides.
    } else if (RETRIED_CODES.has(frame.code)) {
      this.retryLater(message, frame.retry_after, frame.error);
    } else if (frame.code === "out_of_order") {
      this.answered(message); // the one before it was not stored: it goes again after that one
      this.pump();
    } else if (this.overHttp === message) {
      this.answered(message); // refused here, perhaps stored over HTTP meanwhile: that answer decides
    } else {
      this.refuse(message, { text: frame.error });
    }
    return true;
  }

  async sendOverHttp(message) {
    this.overHttp = message;
    const fields = new FormData(this.form);
    fields.set("body", message.body);
    fields.set("client_id", message.clientId);
    fields.delete("reply_to"); // the form's field says what is being written now, not what this message answers
    for (const [name, value] of Object.entries(message.fields)) fields.set(name, String(value));
    let response;
    try {
      response = await fetch(this.form.action, {
        method: "POST",
        body: fields,
        headers: { "HX-Request": "true" },
        credentials: "same-origin",
      });
    } catch {
      response = null;
    }
    if (this.overHttp === message) this.overHttp = null;
    if (!this.queue.includes(message)) return this.pump(); // an ack got there first
    if (!response) {
      return this.retryLater(message, null, "Could not reach the server. Your message will be sent when it is back.");
    }
    if (response.ok) return this.done(message, await response.text(), null);
    if (message.out && response.status !== 429 && response.status < 500) {
      return; // refused here while its socket try is unanswered, which may have stored it: that answer decides
    }
    const retryAfter = Number(response.headers.get("Retry-After"));
    if (response.status === 429 || response.status >= 500) {
      const text = response.status === 429 ? "Too many messages at once." : "The server is busy.";
      return this.retryLater(message, retryAfter || null, text);
    }
    if (response.status === 403 && response.headers.get("HX-Retarget")) {
      return this.refuse(message, { html: await response.text() }); // a refusal said in the form (a block)
    }
    if (response.status === 404 || response.status === 403) {
      return this.refuse(message, { text: "You can no longer send messages here." });
    }
    this.refuse(message, { html: await response.text() }); // the server's error fragment (400)
  }

  // An answer other than an ack: the message is no longer out, and nothing more goes
  // until every send out is answered (they name it, or one before it, as the one they follow).
  answered(message) {
    message.out = false;
    this.held = true;
    if (message === this.queue[0]) this.waitForAck();
  }

  remove(message) {
    const index = this.queue.indexOf(message);
    if (index === -1) return false;
    this.queue.splice(index, 1);
    if (index === 0) this.waitForAck();
    return true;
  }

  done(message, bubblesHtml, messageId) {
    if (!this.remove(message)) return;
    if (this.overHttp === message) this.overHttp = null; // acked over the socket: its HTTP answer no longer matters
    if (this.retryFor === message) this.stopWaitingToRetry(); // stored after all (its other try)
    this.retries = 0;
    this.onSent(bubblesHtml, messageId);
    this.pump();
  }

  refuse(message, reason) {
    if (!this.queue.includes(message)) return;
    this.answered(message);
    this.remove(message);
    this.onRefused(message.body, reason);
    this.pump();
  }

  retryLater(message, retryAfterSeconds, text) {
    if (!this.queue.includes(message)) return;
    this.answered(message);
    if (this.retryTimer) return;
    this.retryFor = message;
    this.retries += 1;
    const backoff = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (this.retries - 1));
    // Retry-After is the least wait: up to half as long again at random, or every page the
    // server turned away at once (a busy database, a restart) would come back at once too.
    const delay = retryAfterSeconds
      ? retryAfterSeconds * 1000 * (1 + Math.random() / 2)
      : backoff * (0.5 + Math.random() / 2);
    this.delayShown = true;
    this.onDelayed(`${text} Sending again in ${Math.ceil(delay / 1000)} s…`);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.retryFor = null;
      this.pump();
    }, delay);
  }

  stopWaitingToRetry() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.retryFor = null;
  }
}
