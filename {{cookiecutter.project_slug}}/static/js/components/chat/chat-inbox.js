// The inbox socket (one per page of a logged-in user): keeps every unread badge, the
// chat list rows and their order live. Loaded by base.html on every authenticated page.

import "./htmx-fragment-errors.js";
import "./relative-time.js";
import "./stale-field-errors.js";
import { ReconnectingSocket } from "./chat-websocket.js";

const REFRESH_DEBOUNCE_MS = 250;
let refreshTimer = null;

export function formatCount(count) {
  return count > 99 ? "99+" : String(count);
}

function setTotalUnread(total) {
  document.querySelectorAll("[data-total-unread]").forEach((badge) => {
    badge.textContent = formatCount(total);
    badge.hidden = total === 0;
  });
  document.dispatchEvent(new CustomEvent("chat:total-unread", { detail: { total } }));
}

function rowsOf(chatId) {
  return [...document.querySelectorAll(`[data-chat-row][data-chat-id="${chatId}"]`)];
}

function setRowUnread(row, unread) {
  const badge = row.querySelector("[data-chat-unread]");
  if (!badge) return;
  badge.textContent = formatCount(unread);
  badge.hidden = unread === 0;
  row.classList.toggle("chat-row--unread", unread > 0);
}

// The "@" of a chat with an unread mention of this person; reading it to the end clears it.
function setRowMentioned(row, mentioned) {
  const mark = row.querySelector("[data-chat-mention]");
  if (mark) mark.hidden = !mentioned;
}

function activityOf(row) {
  return Date.parse(row.querySelector("[data-chat-time]")?.dateTime) || 0;
}

// Put a row after the chats with newer activity: the server holds back a busy chat's inbox
// updates for up to a second, so one can arrive after a newer chat's.
function placeByActivity(row) {
  const list = row.parentElement;
  if (!list) return;
  const newer = [...list.querySelectorAll(":scope > [data-chat-row]")].filter(
    (other) => other !== row && activityOf(other) > activityOf(row),
  );
  if (newer.length) newer[newer.length - 1].after(row);
  else list.prepend(row);
}

// Re-render every chat list on the page from the server (list partial), keeping as many
// rows as it shows: pages loaded with "Show more" stay.
export function refreshLists() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    document.querySelectorAll("[data-chat-list][data-refresh-url]").forEach((list) => {
      const url = new URL(list.dataset.refreshUrl, window.location.origin);
      url.searchParams.set("shown", list.querySelectorAll("[data-chat-row]").length);
      window.htmx?.ajax("GET", url.pathname + url.search, { target: list, swap: "innerHTML" });
    });
  }, REFRESH_DEBOUNCE_MS);
}

function onNewMessage(frame) {
  setTotalUnread(frame.total_unread);
  const rows = rowsOf(frame.chat_id);
  if (!rows.length) {
    refreshLists(); // a chat this page does not show yet (new, or shown again)
    return;
  }
  for (const row of rows) {
    const preview = row.querySelector("[data-chat-preview]");
    if (preview) {
      const name = document.createElement("bdi"); // as chat_row.html: the preview reads in its message's direction
      name.textContent = frame.sender_name;
      preview.replaceChildren(name, `: ${frame.preview}`);
    }
    const time = row.querySelector("[data-chat-time]");
    if (time) {
      time.dateTime = frame.sent_at || new Date().toISOString();
      time.textContent = "now";
    }
    setRowUnread(row, frame.unread);
    setRowMentioned(row, Boolean(frame.mentioned) && frame.unread > 0);
    placeByActivity(row);
  }
}

function onFrame(frame) {
  document.dispatchEvent(new CustomEvent("chat:inbox-frame", { detail: frame })); // for blocked-messages.js
  if (frame.type === "inbox.sync") setTotalUnread(frame.total_unread);
  else if (frame.type === "inbox.message") onNewMessage(frame);
  else if (frame.type === "inbox.unread") {
    setTotalUnread(frame.total_unread);
    rowsOf(frame.chat_id).forEach((row) => {
      setRowUnread(row, frame.unread);
      if (frame.unread === 0) setRowMentioned(row, false);
    });
  } else if (frame.type === "inbox.changed") refreshLists();
  else if (frame.type === "inbox.muted") {
    setTotalUnread(frame.total_unread); // muted chats are not in the total
    refreshLists(); // the row's muted style
  }
}

if (document.body.dataset.userId && !window.chatInboxSocket) {
  window.chatInboxSocket = new ReconnectingSocket("/ws/chat/inbox/", {
    onMessage: onFrame,
    onOpen: ({ reconnected }) => {
      if (reconnected) refreshLists(); // whatever changed while we were away
    },
  });
  // Back to a page kept in the back/forward cache: its rows are as they were when it was
  // left. Ask for them now, whether or not the socket gets back.
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) refreshLists();
  });
}
