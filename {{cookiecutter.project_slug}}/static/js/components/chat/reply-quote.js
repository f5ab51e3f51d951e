// Replies in a room: the "Reply" button of a message puts it in the reply bar above the
// message box (the next message sent answers it), and a reply's quote jumps to its
// original, loading older pages until it is on screen.

const MAX_PAGES_TO_ORIGINAL = 40;
const HIGHLIGHT_MS = 2000;

function firstLine(text) {
  return text.split("\n").map((line) => line.trim()).find(Boolean) || "";
}

export class ReplyComposer {
  // room: the ChatRoom (its element, message list, message box, insert() and messagesUrl).
  constructor(room) {
    this.room = room;
    this.bar = room.element.querySelector("[data-reply-bar]");
    this.field = room.element.querySelector("[data-reply-to-input]");
    this.onClick = (event) => this.click(event);
    room.list.addEventListener("click", this.onClick);
    this.bar?.querySelector("[data-reply-cancel]")?.addEventListener("click", () => {
      this.clear();
      room.input?.focus();
    });
    room.input?.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.replyingTo()) {
        event.preventDefault();
        this.clear();
      }
    });
  }

  click(event) {
    const button = event.target.closest("[data-reply-button]");
    if (button) return this.start(button.closest("[data-message-id]"));
    const quote = event.target.closest("[data-reply-quote]");
    if (quote) {
      event.preventDefault();
      this.jumpTo(Number(quote.dataset.replyTo));
    }
  }

  start(bubble) {
    if (!bubble || !this.bar || !this.field) return;
    this.field.value = bubble.dataset.messageId;
    const sender = bubble.querySelector(".bubble-sender")?.textContent.trim() || "";
    this.bar.querySelector("[data-reply-bar-sender]").textContent = bubble.classList.contains("bubble--mine")
      ? "yourself"
      : sender;
    this.bar.querySelector("[data-reply-bar-quote]").textContent = firstLine(
      bubble.querySelector(".bubble-body")?.innerText || "",
    );
    this.bar.hidden = false;
    this.room.input?.focus();
  }

  replyingTo() {
    return Number(this.field?.value) || null;
  }

  // What a send carries besides its body.
  fields() {
    const id = this.replyingTo();
    return id ? { reply_to: id } : {};
  }

  clear() {
    if (this.field) this.field.value = "";
    if (this.bar) this.bar.hidden = true;
  }

  find(id) {
    return this.room.list.querySelector(`[data-message-id="${id}"]`);
  }

  oldestShownId() {
    const ids = this.room.bubbles().map((bubble) => Number(bubble.dataset.messageId));
    return ids.length ? Math.min(...ids) : null;
  }

  async jumpTo(id) {
    let target = this.find(id);
    for (let page = 0; !target && page < MAX_PAGES_TO_ORIGINAL; page += 1) {
      const oldest = this.oldestShownId();
      if (oldest !== null && oldest < id) break; // it would be on screen: deleted, or cleared for me
      if (!(await this.loadOlderPage())) break;
      target = this.find(id);
    }
    if (!target) {
      this.say("The original message is no longer in this chat.");
      return;
    }
    target.scrollIntoView({ block: "center" });
    target.focus({ preventScroll: true });
    target.classList.add("bubble--target");
    setTimeout(() => target.classList.remove("bubble--target"), HIGHLIGHT_MS);
  }

  // The page before the oldest message shown, as "Load older" would fetch it; false when
  // there is none (or it cannot be fetched now).
  async loadOlderPage() {
    const button = this.room.list.querySelector("[data-load-older]");
    const oldest = this.oldestShownId();
    if (!button || oldest === null) return false;
    let response;
    try {
      response = await fetch(`${this.room.messagesUrl}?before=${oldest}`, {
        headers: { "HX-Request": "true" },
        credentials: "same-origin",
      });
    } catch {
      return false;
    }
    if (!response.ok) return false;
    const page = document.createElement("template");
    page.innerHTML = await response.text();
    const nextButton = page.content.querySelector("[data-load-older]");
    const bubbles = [...page.content.querySelectorAll("[data-message-id]")];
    const current = this.room.list.querySelector("[data-load-older]");
    if (nextButton) {
      current?.replaceWith(nextButton);
      window.htmx?.process(nextButton);
    } else {
      current?.remove();
    }
    this.room.insert(bubbles);
    return bubbles.length > 0;
  }

  say(text) {
    this.room.list.querySelector("[data-reply-jump-status]")?.remove();
    const status = document.createElement("p");
    status.className = "reply-jump-status";
    status.dataset.replyJumpStatus = "";
    status.setAttribute("role", "status");
    status.textContent = text;
    this.room.list.append(status);
    setTimeout(() => status.remove(), HIGHLIGHT_MS * 2);
  }

  stop() {
    this.room.list.removeEventListener("click", this.onClick);
  }
}
