// A chat room on the page (full page or inside the widget): live messages over the room
// socket, catch-up over HTTP after a gap or a reconnect, presence, and the send form.
//
// The database is the truth: each frame names the message before it in the chat
// (prev_id). While frames chain onto the newest message we know we have everything
// (`contiguousId`). Each (re)open asks after contiguousId and the socket's greeting
// (`chat.sync`) brings what came since, up to a page; on a gap, or when the greeting still
// names a newer message, we fetch `messages/?after=<contiguousId>`.
// Bubbles are inserted in id order and never twice, whichever of the send's answer and
// the socket frame arrives first. Sending goes through the room's outbox
// (message-outbox.js): over the socket when it is open, over HTTP otherwise. Times and
// date dividers ("Today", "Yesterday", "Sat 28 Nov") are in the viewer's own time zone,
// placed whenever bubbles come in.

import "./htmx-fragment-errors.js";
import { ReconnectingSocket } from "./chat-websocket.js";
import { checkLength, tooLongMessage } from "./length-limit.js";
import { MentionAutocomplete } from "./mention-autocomplete.js";
import { markOwnMentions } from "./mention-highlight.js";
import "./message-actions.js";
import { CHANGE_FRAMES, MessageChanges, REORDER_GRACE_MS } from "./message-changes.js";
import { MessageOutbox } from "./message-outbox.js";
import { clockTime, dayLabel } from "./relative-time.js";
import { ReplyComposer } from "./reply-quote.js";
import { TypingIndicator } from "./typing-indicator.js";
import "./blocked-messages.js";
import { ReadingPosition } from "./unread-divider.js";

const NEAR_BOTTOM_PX = 120;
// A server that sends no greeting (the previous version, during a rolling deploy): catch up
// anyway this long after the socket opened.
const SYNC_WAIT_MS = 5000;
const CATCH_UP_RETRY_MAX_MS = 30000;
const MAX_CATCH_UP_PAGES = 40;
const MINUTE_MS = 60 * 1000;
const activeRooms = new Set();

function currentUserId() {
  return document.body.dataset.userId || "";
}

function bubbleId(bubble) {
  return Number(bubble.dataset.messageId);
}

function escapeHtml(text) {
  const element = document.createElement("span");
  element.textContent = text;
  return element.innerHTML;
}

// "Ada Lovelace" -> "AL", as the server's `initials` filter.
function initials(name) {
  const words = name.split(/\s+/).filter(Boolean).slice(0, 2);
  return words.map((word) => [...word][0]).join("").toUpperCase() || "?";
}

// The local date, as in <time datetime>: "2026-11-28".
function dayKey(date) {
  const twoDigits = (number) => String(number).padStart(2, "0");
  return `${date.getFullYear()}-${twoDigits(date.getMonth() + 1)}-${twoDigits(date.getDate())}`;
}

function sentAt(bubble) {
  const date = new Date(bubble.querySelector("time[datetime]")?.dateTime);
  return Number.isNaN(date.getTime()) ? null : date;
}

function parseBubbles(html) {
  const template = document.createElement("template");
  template.innerHTML = html;
  return [...template.content.querySelectorAll("[data-message-id]")];
}

class ChatRoom {
  constructor(element) {
    this.element = element;
    this.chatId = element.dataset.chatId;
    this.messagesUrl = element.dataset.messagesUrl;
    this.list = element.querySelector("[data-message-list]");
    this.form = element.querySelector("[data-message-form]");
    this.input = element.querySelector("[data-message-input]");
    this.errorSlot = element.querySelector("[data-send-error]");
    this.contiguousId = this.newestShownId();
    this.catchingUp = null;
    this.heldFrames = new Map(); // prev_id -> frame, for frames that arrived early
    this.graceTimer = null;
    this.placeDayDividers();
    this.readingPosition = new ReadingPosition(this);
    if (!this.readingPosition.startAtDivider()) this.scrollToBottom();
    this.keepBottomInView();
    this.dayTimer = setInterval(() => this.placeDayDividers(), MINUTE_MS); // "Today" turns "Yesterday"
    this.bindLoadOlder();
    this.changes = new MessageChanges(this, Number(element.dataset.changeSeq) || 0); // edits, deletes, reactions
    this.onVisibility = () => this.reportVisibility();
    document.addEventListener("visibilitychange", this.onVisibility);
    this.onPageShow = (event) => {
      if (event.persisted) this.catchUp(); // back from the back/forward cache
    };
    window.addEventListener("pageshow", this.onPageShow);
    // Each (re)open names the newest message shown with none missing before it: the
    // greeting brings what came after it (up to a page), so a reopened room needs no fetch.
    this.socket = new ReconnectingSocket(() => `/ws/chat/${this.chatId}/?after=${this.contiguousId}`, {
      onMessage: (frame) => this.onFrame(frame),
      // Every open is followed by the server's greeting, the first one too: a message sent
      // after the page rendered and before the socket joined the room has no frame for it.
      onOpen: () => {
        this.reportVisibility();
        this.awaitGreeting();
        this.outbox?.onSocketOpened();
      },
      onClose: () => {
        clearTimeout(this.syncTimer);
        this.awaitingGreeting = false;
        this.outbox?.onSocketClosed();
      },
      onFinalClose: () => this.showRevoked(false),
    });
    this.bindComposer(); // before bindForm: its keys (Enter in the @mention list, Escape) come first
    this.bindForm();
  }

  destroy() {
    clearTimeout(this.syncTimer);
    clearTimeout(this.catchUpRetryTimer);
    clearTimeout(this.graceTimer);
    this.outbox?.stop();
    this.typing?.stop();
    this.replies?.stop();
    this.mentions?.stop();
    this.changes.stop();
    clearInterval(this.dayTimer);
    this.resizeObserver?.disconnect();
    this.socket.stop();
    document.removeEventListener("visibilitychange", this.onVisibility);
    window.removeEventListener("pageshow", this.onPageShow);
    activeRooms.delete(this);
  }

  bubbles() {
    return [...this.list.querySelectorAll("[data-message-id]")];
  }

  newestShownId() {
    const ids = this.bubbles().map(bubbleId);
    return ids.length ? Math.max(...ids) : 0;
  }

  // Frames from the room socket

  onFrame(frame) {
    if (this.outbox?.onFrame(frame)) return;
    if (frame.type === "chat.message") {
      this.typing?.onMessage(frame);
      this.onMessageFrame(frame);
    } else if (frame.type === "chat.typing") this.typing?.onTyping(frame);
    else if (frame.type === "chat.sync") this.onGreeting(frame);
    else if (frame.type === "chat.presence") this.showPresence(frame.online);
    else if (frame.type === "chat.revoked") this.showRevoked(frame.deleted);
    else if (frame.type === "chat.renamed") this.showName(frame.name);
    else if (CHANGE_FRAMES.has(frame.type)) this.changes.onFrame(frame);
  }

  awaitGreeting() {
    clearTimeout(this.syncTimer);
    this.awaitingGreeting = true;
    this.syncTimer = setTimeout(() => {
      this.awaitingGreeting = false;
      this.catchUp();
      this.changes.catchUp();
    }, SYNC_WAIT_MS);
  }

  // The room's newest message and change cursor, read once the socket was in the room,
  // with the messages missed since the socket opened (`?after=`, up to a page): fetch only
  // what this page still does not show (after a restart, most rooms have nothing to fetch).
  onGreeting(frame) {
    clearTimeout(this.syncTimer);
    this.awaitingGreeting = false;
    const before = this.contiguousId;
    if (frame.html) this.showCaughtUp(parseBubbles(frame.html));
    if (this.contiguousId > before && !this.catchingUp) this.reportVisibility(); // marks them read
    if (frame.last_message_id > this.contiguousId || this.heldFrames.size) this.catchUp();
    this.changes.catchUpTo(frame.change_seq);
  }

  // Bubbles of every message after contiguousId (a catch-up's answer, or a greeting's).
  showCaughtUp(bubbles) {
    if (!bubbles.length) return;
    this.insert(bubbles);
    this.contiguousId = Math.max(this.contiguousId, ...bubbles.map(bubbleId));
    this.applyChainedFrames();
  }

  // Frames of messages sent at the same moment can arrive out of order: hold a frame that
  // does not chain for REORDER_GRACE_MS, and only fetch from the server if the missing
  // one has not come by then (a dropped frame), so a busy room does not stampede HTTP.
  onMessageFrame(frame) {
    if (frame.message_id <= this.contiguousId) return;
    this.heldFrames.set(frame.prev_id, frame);
    this.applyChainedFrames();
    // Frames that come between an open and its greeting may follow messages the greeting
    // brings: a gap then is only fetched if the greeting does not fill it.
    if (this.heldFrames.size && !this.graceTimer && !this.awaitingGreeting) {
      this.graceTimer = setTimeout(() => {
        this.graceTimer = null;
        if (this.heldFrames.size) this.catchUp();
      }, REORDER_GRACE_MS);
    }
  }

  applyChainedFrames() {
    let next = this.heldFrames.get(this.contiguousId);
    while (next) {
      this.heldFrames.delete(this.contiguousId);
      this.insert(parseBubbles(next.html));
      this.contiguousId = next.message_id;
      next = this.heldFrames.get(this.contiguousId);
    }
    for (const [prevId, held] of this.heldFrames) {
      if (held.message_id <= this.contiguousId) this.heldFrames.delete(prevId);
    }
    if (!this.heldFrames.size) {
      clearTimeout(this.graceTimer);
      this.graceTimer = null;
    }
  }

  // A fetch now (a greeting still behind, a late greeting, a retry) fills every gap the
  // reorder grace waits on: the grace's timer would only ask for the same again.
  async catchUp() {
    clearTimeout(this.graceTimer);
    this.graceTimer = null;
    if (this.catchingUp) {
      this.catchUpAgain = true;
      return this.catchingUp;
    }
    this.catchingUp = this.fetchMissing().finally(() => {
      this.catchingUp = null;
      if (this.catchUpAgain) {
        this.catchUpAgain = false;
        this.catchUp();
      }
    });
    return this.catchingUp;
  }

  async fetchMissing() {
    const before = this.contiguousId;
    await this.fetchPages();
    if (this.contiguousId > before) this.reportVisibility(); // marks what we caught up on read
  }

  // While frames past the gap are held, only the gap is fetched (`before` the first held
  // one): a busy room's catch-ups then render a few bubbles each, not a page.
  gapQuery() {
    const held = [...this.heldFrames.values()].map((frame) => frame.message_id);
    const query = `after=${this.contiguousId}`;
    return held.length ? `${query}&before=${Math.min(...held)}` : query;
  }

  async fetchPages() {
    for (let page = 0; page < MAX_CATCH_UP_PAGES; page += 1) {
      const query = this.gapQuery();
      let response;
      try {
        response = await fetch(`${this.messagesUrl}?${query}`, {
          headers: { "HX-Request": "true" },
          credentials: "same-origin",
        });
      } catch {
        return this.retryCatchUpLater(); // offline: the socket's reconnect also catches up
      }
      if (response.status === 404) return this.showRevoked(false);
      if (!response.ok) return this.retryCatchUpLater();
      this.catchUpRetryMs = 0;
      const bubbles = parseBubbles(await response.text());
      if (!bubbles.length) {
        if (query.includes("before=")) {
          this.heldFrames.clear(); // nothing in the gap after all: fetch everything after
          continue;
        }
        return;
      }
      this.showCaughtUp(bubbles);
    }
  }

  // A failed catch-up (server busy or restarting) is retried with backoff, so a gap is
  // filled even if the room goes quiet and no later frame prompts another try.
  retryCatchUpLater() {
    if (this.catchUpRetryTimer || !activeRooms.has(this)) return;
    this.catchUpRetryMs = Math.min(CATCH_UP_RETRY_MAX_MS, (this.catchUpRetryMs || 500) * 2);
    this.catchUpRetryTimer = setTimeout(() => {
      this.catchUpRetryTimer = null;
      if (activeRooms.has(this)) this.catchUp();
    }, this.catchUpRetryMs);
  }

  // Showing messages

  insert(newBubbles) {
    const stickToBottom = this.isNearBottom();
    for (const bubble of newBubbles) {
      const id = bubbleId(bubble);
      const existing = this.bubbles();
      if (existing.some((shown) => bubbleId(shown) === id)) continue;
      const next = existing.find((shown) => bubbleId(shown) > id);
      if (next) next.before(bubble);
      else this.list.append(bubble);
      this.decorate(bubble);
      window.htmx?.process(bubble);
    }
    this.list.querySelector("[data-empty-state]")?.remove();
    this.placeDayDividers();
    if (stickToBottom) this.scrollToBottom();
    else this.readingPosition.noteArrived(newBubbles);
  }

  decorate(bubble) {
    if (bubble.dataset.senderId && bubble.dataset.senderId === currentUserId()) {
      bubble.classList.add("bubble--mine");
    }
    markOwnMentions(bubble, currentUserId());
    const time = bubble.querySelector(".bubble-time");
    const date = sentAt(bubble);
    if (time && date) {
      time.textContent = clockTime(date); // the server wrote its own time zone's
      time.title = date.toLocaleString("en-GB", { dateStyle: "full", timeStyle: "short" });
    }
    const previous = bubble.previousElementSibling;
    const sameSender = previous?.dataset.senderId === bubble.dataset.senderId;
    bubble.classList.toggle("bubble--continued", Boolean(previous?.dataset.messageId && sameSender));
  }

  // A divider above the first message of each day. Dividers already in place are kept
  // (the list is a live region: a re-added one would be read out again); one left where
  // an older page joined on the same day goes.
  placeDayDividers() {
    const now = new Date();
    const starts = new Map(); // bubble -> its day, for the first bubble of each day
    let previousKey = null;
    for (const bubble of this.bubbles()) {
      const date = sentAt(bubble);
      if (!date) continue;
      const key = dayKey(date);
      if (key !== previousKey) starts.set(bubble, date);
      previousKey = key;
    }
    for (const divider of this.list.querySelectorAll("[data-day-divider]")) {
      const next = divider.nextElementSibling;
      if (!starts.has(next) || dayKey(starts.get(next)) !== divider.dataset.dayDivider) divider.remove();
    }
    for (const [bubble, date] of starts) {
      let divider = bubble.previousElementSibling;
      if (!divider?.matches("[data-day-divider]")) {
        divider = document.createElement("p");
        divider.className = "day-divider";
        divider.dataset.dayDivider = dayKey(date);
        divider.append(document.createElement("time"));
        divider.firstChild.dateTime = dayKey(date);
        bubble.before(divider);
      }
      const label = dayLabel(date, now);
      if (divider.firstChild.textContent !== label) divider.firstChild.textContent = label;
    }
    for (const bubble of this.bubbles()) this.decorate(bubble); // no "continued" across a divider
  }

  // Keep the newest message in view when the list gets shorter (an error line or a
  // notice appears, the message box grows) while it was scrolled to the bottom.
  keepBottomInView() {
    this.atBottom = this.isNearBottom(); // not when the room opened at its unread divider
    this.list.addEventListener("scroll", () => {
      this.atBottom = this.isNearBottom();
    });
    this.resizeObserver = new ResizeObserver(() => {
      if (this.atBottom) this.scrollToBottom();
    });
    this.resizeObserver.observe(this.list);
  }

  isNearBottom() {
    const scroller = this.list;
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
  }

  scrollToBottom() {
    this.list.scrollTop = this.list.scrollHeight;
  }

  showPresence(online) {
    this.element.querySelectorAll("[data-presence-count]").forEach((element) => {
      element.textContent = String(online);
    });
  }

  showName(name) {
    const title = this.element.querySelector("[data-room-title]");
    if (title) title.textContent = name;
    const avatar = this.element.querySelector("[data-room-avatar]");
    if (avatar) avatar.textContent = initials(name);
    if (!this.element.closest("[data-chat-widget-panel]")) document.title = name;
  }

  showRevoked(deleted) {
    this.socket?.stop();
    const notice = this.element.querySelector("[data-revoked-notice]");
    if (notice) {
      notice.textContent = deleted ? "This group was deleted." : "You are no longer a member of this chat.";
      notice.hidden = false;
    }
    this.form?.querySelectorAll("textarea, button").forEach((control) => {
      control.disabled = true;
    });
  }

  reportVisibility() {
    const visible = !document.hidden;
    this.socket?.send({ type: "visibility", visible });
    if (visible) this.socket?.send({ type: "read", message_id: this.newestShownId() });
  }

  // "Load older" (HTMX swaps the page in place of its button at the top of the list)

  bindLoadOlder() {
    // Keep what is on screen where it was: browsers' scroll anchoring does not apply at
    // scrollTop 0, where the button is clicked, so measure from the bottom instead.
    let fromBottom = null;
    this.list.addEventListener("htmx:beforeSwap", (event) => {
      if (!event.detail.requestConfig?.elt?.matches?.("[data-load-older]")) return;
      fromBottom = this.list.scrollHeight - this.list.scrollTop;
    });
    // htmx fires afterSwap on each inserted element, once the whole page is in.
    this.list.addEventListener("htmx:afterSwap", () => {
      if (fromBottom === null) return;
      this.placeDayDividers(); // and regroup across the seam
      this.list.scrollTop = this.list.scrollHeight - fromBottom;
      fromBottom = null;
    });
  }

  // Replies, "is typing" and @mentions around the message box (a module each).
  bindComposer() {
    if (!this.form || !this.input) return;
    // The @mention list first: while it is open, its keys (Escape too) are its own.
    const mentionList = this.element.querySelector("[data-mention-list]");
    if (mentionList && this.element.dataset.mentionUrl) {
      this.mentions = new MentionAutocomplete({ input: this.input, list: mentionList, url: this.element.dataset.mentionUrl });
    }
    const line = this.element.querySelector("[data-typing-indicator]");
    this.typing = new TypingIndicator({ line, input: this.input, socket: this.socket });
    this.replies = new ReplyComposer(this);
  }

  // The send form: the outbox delivers what is typed; without JS the form posts itself.

  bindForm() {
    if (!this.form || !this.input) return;
    this.outbox = new MessageOutbox({
      socket: this.socket,
      form: this.form,
      onSent: (bubblesHtml, messageId) => this.showSent(bubblesHtml, messageId),
      onRefused: (body, reason) => this.showRefused(body, reason),
      onDelayed: (text) => this.showError(text ? `<p class="send-status">${escapeHtml(text)}</p>` : ""),
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
      event.preventDefault();
      if (this.input.value.trim()) this.form.requestSubmit();
    });
    // Too long: the form does not submit (length-limit.js makes the box invalid); say why.
    this.input.addEventListener("invalid", (event) => {
      const reason = tooLongMessage(this.input);
      if (!reason) return;
      event.preventDefault(); // our line under the box, not the browser's bubble too
      this.showError(`<p>${escapeHtml(reason)}</p>`);
      this.lengthErrorShown = true;
    });
    this.input.addEventListener("input", () => {
      if (this.lengthErrorShown && checkLength(this.input)) {
        this.lengthErrorShown = false;
        this.showError("");
      }
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!this.input.value.trim()) {
        this.showError("<p>Write a message before sending.</p>"); // as the server would say
        return;
      }
      this.outbox.send(this.input.value, this.replies?.fields());
      this.replies?.clear();
      this.typing?.onSent();
      this.input.value = "";
      this.showError("");
      this.input.focus();
    });
  }

  // A sent message: its bubble came with an HTTP answer, or as the room frame that comes
  // before its ack (the server waits up to 2 s for it); if that frame was lost, the catch-up
  // fetches it.
  showSent(bubblesHtml, messageId) {
    if (bubblesHtml) this.insert(parseBubbles(bubblesHtml));
    if (messageId && messageId > this.contiguousId) {
      setTimeout(() => {
        if (activeRooms.has(this) && messageId > this.contiguousId) this.catchUp();
      }, REORDER_GRACE_MS);
    }
  }

  showRefused(body, reason) {
    if (!this.input.value) this.input.value = body;
    this.showError(reason.html ?? `<p class="error-text">${escapeHtml(reason.text)}</p>`);
  }

  showError(html) {
    if (!this.errorSlot) return;
    this.errorSlot.innerHTML = html;
    this.errorSlot.hidden = !html;
  }
}

export function initRooms(root = document) {
  const candidates = root.matches?.("[data-chat-room]") ? [root] : [];
  candidates.push(...root.querySelectorAll("[data-chat-room]"));
  for (const element of candidates) {
    if (element.chatRoom) continue;
    element.chatRoom = new ChatRoom(element);
    activeRooms.add(element.chatRoom);
  }
}

// Rooms removed from the page (widget navigation) close their sockets.
new MutationObserver(() => {
  for (const room of activeRooms) {
    if (!room.element.isConnected) room.destroy();
  }
}).observe(document.body, { childList: true, subtree: true });

document.addEventListener("htmx:load", (event) => initRooms(event.detail.elt));
initRooms();
