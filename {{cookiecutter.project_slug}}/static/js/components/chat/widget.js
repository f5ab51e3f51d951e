// The chat widget: a floating button with the unread badge that opens a panel holding
// the chat list and rooms (loaded with HTMX from widget/ and widget/<pk>/). Opens and
// closes with the keyboard (Escape closes); open state and view survive page loads.

import "./htmx-fragment-errors.js";
import "./message-send.js";

const STORAGE_KEY = "chat-widget-state";

const toggle = document.querySelector("[data-chat-widget-toggle]");
const panel = document.querySelector("[data-chat-widget-panel]");

function loadState() {
  try {
    return JSON.parse(window.localStorage.getItem(STORAGE_KEY)) || {};
  } catch {
    return {};
  }
}

function saveState(state) {
  try {
    window.localStorage.setItem(STORAGE_KEY, JSON.stringify(state));
  } catch {
    // storage disabled (private mode): the widget just forgets
  }
}

function show(url) {
  return window.htmx.ajax("GET", url, { target: panel, swap: "innerHTML" });
}

function isOpen() {
  return !panel.hidden;
}

function open({ focus = true } = {}) {
  const state = loadState();
  panel.hidden = false;
  toggle.setAttribute("aria-expanded", "true");
  saveState({ ...state, open: true });
  const loaded = panel.childElementCount ? Promise.resolve() : show(state.url || panel.dataset.widgetUrl);
  if (focus) {
    loaded.then(() => panel.querySelector("[data-message-input], a, button, input")?.focus());
  }
}

function close() {
  const focusWasInside = panel.contains(document.activeElement);
  panel.hidden = true;
  toggle.setAttribute("aria-expanded", "false");
  saveState({ ...loadState(), open: false });
  if (focusWasInside) toggle.focus();
}

if (toggle && panel) {
  toggle.addEventListener("click", () => (isOpen() ? close() : open()));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && isOpen()) close();
  });
  // Remember which view (list or a room) the panel shows, not the POSTs made inside it.
  panel.addEventListener("htmx:afterSettle", (event) => {
    const path = event.detail.pathInfo?.requestPath || "";
    const verb = event.detail.requestConfig?.verb || "get";
    if (verb === "get" && path.startsWith(panel.dataset.widgetUrl)) {
      saveState({ ...loadState(), url: path });
    }
  });
  if (loadState().open) open({ focus: false });
}
