// The inbox socket (one per page of a logged-in user): keeps every unread badge, the
// chat list rows and their order live. Loaded by base.html on every authenticated page.

import "./htmx-fragment-errors.js";
import "./relative-time.js";
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

function moveToTop(row) {
  const item = row.closest("li") || row;
  item.parentElement?.prepend(item);
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
    if (preview) preview.textContent = `${frame.sender_name}: ${frame.preview}`;
    const time = row.querySelector("[data-chat-time]");
    if (time) {
      time.dateTime = new Date().toISOString();
      time.textContent = "now";
    }
    setRowUnread(row, frame.unread);
    moveToTop(row);
  }
}

function onFrame(frame) {
  if (frame.type === "inbox.sync") setTotalUnread(frame.total_unread);
  else if (frame.type === "inbox.message") onNewMessage(frame);
  else if (frame.type === "inbox.unread") {
    setTotalUnread(frame.total_unread);
    rowsOf(frame.chat_id).forEach((row) => setRowUnread(row, frame.unread));
  } else if (frame.type === "inbox.changed") refreshLists();
}

if (document.body.dataset.userId && !window.chatInboxSocket) {
  window.chatInboxSocket = new ReconnectingSocket("/ws/chat/inbox/", {
    onMessage: onFrame,
    onOpen: ({ reconnected }) => {
      if (reconnected) refreshLists(); // whatever changed while we were away
    },
  });
}
