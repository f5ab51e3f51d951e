// "Alice is typing…" under a room's messages, and the signals that tell the others.
//
// While its person types, a page sends {"type": "typing"} on the room socket at most once
// every SIGNAL_EVERY_MS. Nothing is stored: each viewer forgets a typist EXPIRE_AFTER_MS
// after their last signal, or as soon as their message arrives. The server never sends
// people their own signals.

const SIGNAL_EVERY_MS = 3000;
const EXPIRE_AFTER_MS = 5000;

export function typingText(names) {
  if (names.length === 0) return "";
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return `${names.length} people are typing…`;
}

export class TypingIndicator {
  // line: the element that shows the text; input: the message box; socket: the room's
  // ReconnectingSocket.
  constructor({ line, input, socket }) {
    this.line = line;
    this.input = input;
    this.socket = socket;
    this.typists = new Map(); // user id -> {name, timer}
    this.lastSignal = 0;
    this.onInput = () => this.signal();
    this.input?.addEventListener("input", this.onInput);
  }

  signal() {
    const now = Date.now();
    if (!this.input.value.trim() || now - this.lastSignal < SIGNAL_EVERY_MS || !this.socket.isOpen()) return;
    this.lastSignal = now;
    this.socket.send({ type: "typing" });
  }

  // Their message is sent: the next keystroke (a new message) signals at once.
  onSent() {
    this.lastSignal = 0;
  }

  // A "chat.typing" frame: show them until they stop signalling.
  onTyping(frame) {
    const id = String(frame.user_id);
    clearTimeout(this.typists.get(id)?.timer);
    const timer = setTimeout(() => this.forget(id), EXPIRE_AFTER_MS);
    this.typists.set(id, { name: frame.name, timer });
    this.render();
  }

  // A "chat.message" frame: its sender has stopped typing that one.
  onMessage(frame) {
    this.forget(String(frame.sender_id));
  }

  forget(id) {
    const typist = this.typists.get(id);
    if (!typist) return;
    clearTimeout(typist.timer);
    this.typists.delete(id);
    this.render();
  }

  render() {
    if (!this.line) return;
    const text = typingText([...this.typists.values()].map((typist) => typist.name));
    if (this.line.textContent !== text) this.line.textContent = text;
  }

  stop() {
    for (const typist of this.typists.values()) clearTimeout(typist.timer);
    this.typists.clear();
    this.input?.removeEventListener("input", this.onInput);
  }
}
