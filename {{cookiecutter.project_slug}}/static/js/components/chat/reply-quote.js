// Replies in a room: the "Reply" button of a message puts it in the reply bar above the
// message box (the next message sent answers it), and a reply's quote jumps to its
// original, loading older pages until it is on screen. When an original's bubble is
// rendered again (edited, or deleted for everyone), the quotes of it on the page follow.

const MAX_PAGES_TO_ORIGINAL = 40;
const HIGHLIGHT_MS = 2000;

function firstLine(text) {
  return text.split("\n").map((line) => line.trim()).find(Boolean) || "";
}

function span(className, text, attributes = {}) {
  const element = document.createElement(attributes.tag || "span");
  element.className = className;
  element.textContent = text;
  for (const [name, value] of Object.entries(attributes)) if (name !== "tag") element.setAttribute(name, value);
  return element;
}

// As reply_quote.html renders them.
function liveQuote(sender, text) {
  return [
    span("visually-hidden", "In reply to "),
    span("reply-quote-sender", sender, { tag: "bdi" }),
    span("reply-quote-text", text.length > 100 ? `${text.slice(0, 99)}…` : text, { dir: "auto" }),
  ];
}

function deletedQuote() {
  return [
    span("visually-hidden", "In reply to a deleted message"),
    span("reply-quote-text reply-quote-text--deleted", "Message deleted", { "aria-hidden": "true" }),
  ];
}

export class ReplyComposer {
  // room: the ChatRoom (its element, message list, message box, insert() and messagesUrl).
  constructor(room) {
    this.room = room;
    this.bar = room.element.querySelector("[data-reply-bar]");
    this.field = room.element.querySelector("[data-reply-to-input]");
    this.onClick = (event) => this.click(event);
    room.list.addEventListener("click", this.onClick);
    this.observer = new MutationObserver((mutations) => this.bubblesAdded(mutations));
    this.observer.observe(room.list, { childList: true });
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

  bubblesAdded(mutations) {
    for (const mutation of mutations) {
      for (const node of mutation.addedNodes) {
        if (node.nodeType === Node.ELEMENT_NODE && node.dataset.messageId) this.refreshQuotesOf(node);
      }
    }
  }

  // The quotes of this message, from its bubble as it is now.
  refreshQuotesOf(bubble) {
    const quotes = this.room.list.querySelectorAll(`[data-reply-quote][data-reply-to="${bubble.dataset.messageId}"]`);
    if (!quotes.length) return;
    const text = firstLine(bubble.querySelector(".bubble-body")?.innerText || "");
    const deleted = !text || "deleted" in bubble.dataset || bubble.classList.contains("bubble--deleted");
    const sender = bubble.querySelector(".bubble-sender")?.textContent.trim() || "";
    for (const quote of quotes) {
      quote.replaceChildren(...(deleted ? deletedQuote() : liveQuote(sender, text)));
    }
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
    this.observer.disconnect();
  }
}
