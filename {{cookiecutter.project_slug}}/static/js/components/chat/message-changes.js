// Edits, deletes for everyone and reactions in one room: the change frames, and catching up
// on the ones the socket missed.
//
// Every change of a chat's messages takes the chat's next change cursor (1, 2, 3, …); its
// frame carries it and so does the bubble (data-change-seq). The room starts from the
// cursor the page was rendered with (data-change-seq on the room) and keeps the highest it
// has seen in order. A frame that skips a number waits REORDER_GRACE_MS for the ones it
// skipped (changes made on two server processes can cross on their way), then fetches
// `messages/?changed_since=<cursor>`: the current bubbles of the messages changed since. So
// does a socket (re)open greeting with a higher cursor.
// A bubble is only replaced by a newer version of itself, and not while its edit form is
// open (the newer version waits until the form closes).

import { openMenu } from "./message-actions.js";

export const CHANGE_FRAMES = new Set(["chat.edited", "chat.deleted", "chat.reacted"]);
const MAX_PAGES = 20;
const RETRY_MAX_MS = 30000;
// How long a frame that skips one waits for it before the page fetches (change frames
// here, message frames in message-send.js): fetching at once, every page of a busy room
// would fetch each time two frames cross.
export const REORDER_GRACE_MS = 400;

function changeSeq(bubble) {
  return Number(bubble.dataset.changeSeq) || 0;
}

function parseBubbles(html) {
  const template = document.createElement("template");
  template.innerHTML = html;
  return template.content;
}

// Bubbles rendered for the whole room name who reacted; the viewer's own reactions are
// marked pressed here.
export function markOwnReactions(root) {
  const me = document.body.dataset.userId || "";
  root.querySelectorAll("[data-reactor-ids]").forEach((button) => {
    button.setAttribute("aria-pressed", String(button.dataset.reactorIds.split(" ").includes(me)));
  });
}

// A reaction's form (a bubble's reaction or the menu's choice) says what the viewer wants,
// `on` (add it) or not (take it back), as their page shows it: a page behind another tab's
// change (its frame not here yet) then asks for the state it shows the opposite of, instead
// of undoing that change. Without JavaScript the form toggles.
document.addEventListener("htmx:configRequest", (event) => {
  const form = event.detail.elt;
  const bubble = form?.closest?.("[data-message-id]");
  const emoji = event.detail.parameters.emoji;
  if (!bubble || !form.matches('form[action$="/react/"]') || typeof emoji !== "string") return;
  const mine = [...bubble.querySelectorAll("[data-reaction]")].some(
    (button) => button.value === emoji && button.getAttribute("aria-pressed") === "true",
  );
  event.detail.parameters.on = String(!mine);
});

export class MessageChanges {
  // room: the ChatRoom (its list, messagesUrl, decorate(bubble)); cursor: the page's.
  constructor(room, cursor) {
    this.room = room;
    this.cursor = cursor;
    this.waiting = new Map(); // message id -> newer bubble, held while its edit form is open
    this.ahead = new Set(); // change cursors of frames that came before one they follow
    this.fetching = null;
    this.retryMs = 0;
    room.list.addEventListener("htmx:beforeSwap", (event) => this.keepNewer(event));
    room.list.addEventListener("htmx:load", (event) => this.onSwappedIn(event.detail.elt));
  }

  stop() {
    clearTimeout(this.retryTimer);
    clearTimeout(this.graceTimer);
    this.stopped = true;
  }

  // A frame's bubble is shown at once (only ever over an older version); the cursor moves
  // over the frames that came in order, and a skipped one is fetched if it has not come
  // within REORDER_GRACE_MS.
  onFrame(frame) {
    this.apply(parseBubbles(frame.html));
    if (frame.change_seq > this.cursor) this.ahead.add(frame.change_seq);
    this.advance();
  }

  // Move the cursor over the changes now in order. A skip still ahead gets its own full
  // wait: one that follows a filled skip is not fetched on the earlier one's timer.
  advance() {
    const before = this.cursor;
    while (this.ahead.delete(this.cursor + 1)) this.cursor += 1;
    for (const seq of this.ahead) if (seq <= this.cursor) this.ahead.delete(seq);
    if (!this.ahead.size || this.cursor > before) {
      clearTimeout(this.graceTimer);
      this.graceTimer = null;
    }
    if (this.ahead.size && !this.graceTimer) {
      this.graceTimer = setTimeout(() => {
        this.graceTimer = null;
        if (this.ahead.size) this.catchUp(); // one or more frames were missed
      }, REORDER_GRACE_MS);
    }
  }

  // The room's cursor when the socket (re)opened (its `chat.sync` greeting).
  catchUpTo(changeSeq) {
    if (changeSeq > this.cursor) this.catchUp();
  }

  bubbleFor(id) {
    return this.room.list.querySelector(`[data-message-id="${id}"]`);
  }

  // Replace the bubbles shown with these newer versions; messages not shown (older pages
  // not loaded) come right when they are.
  apply(fragment) {
    for (const fresh of [...fragment.querySelectorAll("[data-message-id]")]) {
      const shown = this.bubbleFor(fresh.dataset.messageId);
      if (!shown || changeSeq(shown) >= changeSeq(fresh)) continue;
      if (shown.hasAttribute("data-editing")) this.waiting.set(fresh.dataset.messageId, fresh);
      else this.replace(shown, fresh);
    }
  }

  replace(shown, fresh) {
    const focused = shown.contains(document.activeElement) ? document.activeElement : null;
    const menuOpen = Boolean(shown.querySelector("[data-message-menu]"));
    shown.replaceWith(fresh);
    this.settle(fresh);
    if (menuOpen && !fresh.classList.contains("bubble--deleted")) openMenu(fresh); // someone else's change: the menu stays
    if (focused) focusLike(fresh, focused);
  }

  settle(bubble) {
    this.room.decorate(bubble);
    markOwnReactions(bubble);
    window.htmx?.process(bubble);
  }

  // An answer to this person's own edit, delete or reaction must not put back an older
  // version than a frame has shown meanwhile.
  keepNewer(event) {
    const target = event.detail.target;
    if (!target?.matches?.("[data-message-id]")) return;
    const fresh = parseBubbles(event.detail.serverResponse || "").querySelector("[data-message-id]");
    if (fresh && changeSeq(fresh) < changeSeq(target)) event.detail.shouldSwap = false;
    if (target.contains(document.activeElement)) this.refocus = document.activeElement.dataset.focusKey || "menu";
  }

  onSwappedIn(element) {
    if (!element?.matches?.("[data-message-id]")) return;
    this.settle(element);
    const newer = this.waiting.get(element.dataset.messageId);
    if (newer && !element.hasAttribute("data-editing")) {
      this.waiting.delete(element.dataset.messageId);
      if (changeSeq(newer) > changeSeq(element)) this.replace(element, newer);
    }
    const key = this.refocus;
    this.refocus = null;
    const editBox = element.querySelector("[data-edit-input]");
    if (editBox) editBox.focus();
    else if (key) focusKey(element, key);
  }

  // A fetch now (the greeting's cursor, a retry) brings every change the reorder grace
  // waits on: the grace's timer would only ask for the same again.
  catchUp() {
    clearTimeout(this.graceTimer);
    this.graceTimer = null;
    if (this.fetching) {
      this.again = true;
      return this.fetching;
    }
    this.fetching = this.fetchChanges().finally(() => {
      this.fetching = null;
      if (this.again) {
        this.again = false;
        this.catchUp();
      }
    });
    return this.fetching;
  }

  async fetchChanges() {
    for (let page = 0; page < MAX_PAGES && !this.stopped; page += 1) {
      let response;
      try {
        response = await fetch(`${this.room.messagesUrl}?changed_since=${this.cursor}`, {
          headers: { "HX-Request": "true" },
          credentials: "same-origin",
        });
      } catch {
        return this.retryLater(); // offline: the socket's reconnect also catches up
      }
      if (response.status === 404) return; // access gone: the room says so
      if (!response.ok) return this.retryLater();
      this.retryMs = 0;
      const fragment = parseBubbles(await response.text());
      const seqs = [...fragment.querySelectorAll("[data-message-id]")].map(changeSeq);
      this.apply(fragment);
      this.cursor = Math.max(this.cursor, ...seqs);
      this.advance();
      if (fragment.querySelector("[data-changes-page]")?.dataset.hasMore !== "true") return;
    }
  }

  retryLater() {
    if (this.retryTimer || this.stopped) return;
    this.retryMs = Math.min(RETRY_MAX_MS, (this.retryMs || 500) * 2);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.catchUp();
    }, this.retryMs);
  }
}

// Keep keyboard focus on the same control of a bubble that was just replaced.
function focusLike(bubble, previous) {
  focusKey(bubble, previous.dataset.focusKey || "menu");
}

function focusKey(bubble, key) {
  const target = [...bubble.querySelectorAll("[data-focus-key]")].find((element) => element.dataset.focusKey === key);
  (target || bubble.querySelector("[data-message-actions]"))?.focus();
}
