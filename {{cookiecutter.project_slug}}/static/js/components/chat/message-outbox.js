// Messages on their way out of one room, each delivered exactly once and in the order typed.
//
// Each message gets a client id when it is typed. It goes over the room socket when that is
// open ({"type": "send"}, answered by an "ack" or an "error" with the same id), and over the
// form's HTTP route otherwise, or when no ack comes in time. The server stores a client id
// once per person, so a retry (after a reconnect, a timeout, a 503) never sends it twice.
// Overload answers (429/503 with Retry-After, or a "rate_limited" frame) are retried on
// their own; refusals (too long, not a member any more) give the text back to the person.

const ACK_TIMEOUT_MS = 5000;
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 30000;

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
    this.queue = []; // {clientId, body, fields}, the head is the one in flight
    this.inFlight = null;
    this.ackTimer = null;
    this.retryTimer = null;
    this.retries = 0;
  }

  // fields: what else the message carries ({reply_to: id}), sent with it every time.
  send(body, fields = {}) {
    this.queue.push({ clientId: newClientId(), body, fields });
    if (!this.inFlight && !this.retryTimer) this.next();
  }

  stop() {
    clearTimeout(this.ackTimer);
    clearTimeout(this.retryTimer);
    this.queue = [];
  }

  next() {
    this.inFlight = this.queue[0] || null;
    if (this.delayShown) {
      this.delayShown = false;
      this.onDelayed("");
    }
    if (!this.inFlight) return;
    if (this.socket.isOpen()) this.sendOverSocket(this.inFlight);
    else this.sendOverHttp(this.inFlight);
  }

  sendOverSocket(message) {
    this.socket.send({ ...message.fields, type: "send", client_id: message.clientId, body: message.body });
    clearTimeout(this.ackTimer);
    // No answer in time (a socket that died quietly): the same client id over HTTP.
    this.ackTimer = setTimeout(() => this.sendOverHttp(message), ACK_TIMEOUT_MS);
  }

  // The socket is back: a message waiting out a failed attempt goes now.
  onSocketOpened() {
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
      this.next();
    }
  }

  // The socket closed: a message sent over it and not yet acked goes over HTTP now.
  onSocketClosed() {
    if (this.inFlight && this.ackTimer) {
      clearTimeout(this.ackTimer);
      this.ackTimer = null;
      this.sendOverHttp(this.inFlight);
    }
  }

  // Frames from the room socket that answer a send; returns true if the frame was one.
  onFrame(frame) {
    const message = this.inFlight;
    if (!frame.client_id || !message || frame.client_id !== message.clientId) {
      return frame.type === "ack";
    }
    if (frame.type === "ack") {
      this.done(message, null, frame.message_id);
    } else if (frame.type === "error" && (frame.code === "rate_limited" || frame.code === "busy")) {
      this.retryLater(message, frame.retry_after, frame.error);
    } else if (frame.type === "error") {
      this.refuse(message, { text: frame.error });
    } else {
      return false;
    }
    return true;
  }

  async sendOverHttp(message) {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
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
      return this.retryLater(message, null, "Could not reach the server. Your message will be sent when it is back.");
    }
    if (this.inFlight !== message) return; // an ack got there first
    if (response.ok) return this.done(message, await response.text(), null);
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

  done(message, bubblesHtml, messageId) {
    if (this.inFlight !== message) return;
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.queue.shift();
    this.retries = 0;
    this.onSent(bubblesHtml, messageId);
    this.next();
  }

  refuse(message, reason) {
    if (this.inFlight !== message) return;
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.queue.shift();
    this.onRefused(message.body, reason);
    this.next();
  }

  retryLater(message, retryAfterSeconds, text) {
    if (this.inFlight !== message || this.retryTimer) return;
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.retries += 1;
    const backoff = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (this.retries - 1));
    // Retry-After is the least wait: up to half as long again at random, or every page the
    // server turned away at once (a busy database, a restart) would come back at once too.
    const delay = retryAfterSeconds
      ? retryAfterSeconds * 1000 * (1 + Math.random() / 2)
      : backoff * (0.5 + Math.random() / 2);
    this.delayShown = true;
    this.onDelayed(`${text} Sending again in ${Math.ceil(delay / 1000)} s…`);
    this.inFlight = null;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.next();
    }, delay);
  }
}
