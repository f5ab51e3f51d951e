// The chat widget: a floating button with the unread badge that opens a panel holding
// the chat list and rooms (loaded with HTMX from widget/ and widget/<pk>/). Opens and
// closes with the keyboard (Escape closes, focus goes back to the button); focus follows
// into each view it opens (a room's message box). The view survives page loads, and so
// does the open state on a wide screen (on a phone the panel would cover the next page);
// both are kept per person and forgotten at logout.

import "./htmx-fragment-errors.js";
import "./message-send.js";

// Per person: on a shared browser the next one to log in never gets someone else's chat.
const STORAGE_KEY = `chat-widget-state:${document.body.dataset.userId || ""}`;
const REOPENS_ON = "(min-width: 48em)";

const toggle = document.querySelector("[data-chat-widget-toggle]");
const panel = document.querySelector("[data-chat-widget-panel]");
// Focus goes into the next view once htmx has settled it (wired up its links and buttons).
let focusFollows = false;

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

// Logging out forgets what the widget showed.
document.querySelector("[data-logout-form]")?.addEventListener("submit", () => {
  try {
    window.localStorage.removeItem(STORAGE_KEY);
  } catch {
    // storage disabled: nothing was kept
  }
});

function show(url) {
  return window.htmx.ajax("GET", url, { target: panel, swap: "innerHTML" });
}

function isOpen() {
  return !panel.hidden;
}

// The message box in a room; else the list's first chat; else the view's first control.
function focusView() {
  const target =
    panel.querySelector("[data-message-input]") ||
    panel.querySelector("[data-chat-row]") ||
    panel.querySelector("a[href], button, input, textarea");
  target?.focus();
}

function open({ focus = true } = {}) {
  const state = loadState();
  panel.hidden = false;
  toggle.setAttribute("aria-expanded", "true");
  saveState({ ...state, open: true });
  if (panel.childElementCount) {
    if (focus) focusView();
  } else {
    focusFollows = focus;
    show(state.url || panel.dataset.widgetUrl);
  }
}

function close() {
  const focusWasInside = panel.contains(document.activeElement) || document.activeElement === document.body;
  panel.hidden = true;
  toggle.setAttribute("aria-expanded", "false");
  saveState({ ...loadState(), open: false });
  if (focusWasInside) toggle.focus();
}

if (toggle && panel) {
  toggle.addEventListener("click", () => (isOpen() ? close() : open()));
  document.addEventListener("keydown", (event) => {
    // An open modal <dialog> (a confirmation, New chat) takes Escape for itself.
    if (event.key === "Escape" && isOpen() && !document.querySelector("dialog:modal")) close();
  });
  // A view opened from a control in the panel replaces that control: focus follows into
  // the new view instead of falling to the page (a click need not focus the control).
  panel.addEventListener("htmx:beforeSwap", (event) => {
    if (event.detail.target === panel && panel.contains(event.detail.requestConfig?.elt ?? null)) {
      focusFollows = true;
    }
  });
  // Remember which view (list or a room) the panel shows, not the POSTs made inside it.
  panel.addEventListener("htmx:afterSettle", (event) => {
    if (event.target === panel && focusFollows) {
      focusFollows = false;
      focusView();
    }
    const path = event.detail.pathInfo?.requestPath || "";
    const verb = event.detail.requestConfig?.verb || "get";
    if (verb === "get" && path.startsWith(panel.dataset.widgetUrl)) {
      saveState({ ...loadState(), url: path });
    }
  });
  if (loadState().open && window.matchMedia(REOPENS_ON).matches) open({ focus: false });
}
