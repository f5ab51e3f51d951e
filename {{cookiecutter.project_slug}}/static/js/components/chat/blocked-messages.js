// Messages from people the viewer blocked are collapsed in every room on the page, to a
// "Message from a blocked person" row that expands on demand. The room's
// `data-blocked-ids` (rendered by the server) names those people; `inbox.blocked` frames
// (relayed by chat-inbox.js as `chat:inbox-frame` events) keep it current in every tab.

const SHOW = "Message from a blocked person. Show";
const HIDE = "Message from a blocked person. Hide";

function blockedIds(room) {
  return new Set((room.dataset.blockedIds || "").split(/\s+/).filter(Boolean));
}

function toggleOf(bubble) {
  return bubble.querySelector(":scope > .blocked-toggle");
}

function collapse(bubble) {
  if (toggleOf(bubble)) return;
  const toggle = document.createElement("button");
  toggle.type = "button";
  toggle.className = "blocked-toggle";
  toggle.setAttribute("aria-expanded", "false");
  toggle.textContent = SHOW;
  bubble.prepend(toggle);
  bubble.classList.add("bubble--blocked");
}

function uncollapse(bubble) {
  toggleOf(bubble)?.remove();
  bubble.classList.remove("bubble--blocked", "bubble--blocked-open");
}

export function applyBlocks(room) {
  const ids = blockedIds(room);
  for (const bubble of room.querySelectorAll("[data-message-list] [data-message-id]")) {
    if (ids.has(bubble.dataset.senderId)) collapse(bubble);
    else if (toggleOf(bubble)) uncollapse(bubble);
  }
}

function rooms() {
  return document.querySelectorAll("[data-chat-room][data-blocked-ids]");
}

document.addEventListener("click", (event) => {
  const toggle = event.target.closest(".blocked-toggle");
  if (!toggle) return;
  const bubble = toggle.parentElement;
  const open = bubble.classList.toggle("bubble--blocked-open");
  bubble.classList.toggle("bubble--blocked", !open);
  toggle.setAttribute("aria-expanded", String(open));
  toggle.textContent = open ? HIDE : SHOW;
});

document.addEventListener("chat:inbox-frame", (event) => {
  const frame = event.detail;
  if (frame.type !== "inbox.blocked") return;
  for (const room of rooms()) {
    const ids = blockedIds(room);
    if (frame.blocked) ids.add(String(frame.person_id));
    else ids.delete(String(frame.person_id));
    room.dataset.blockedIds = [...ids].join(" ");
    applyBlocks(room);
  }
});

// Bubbles come in live, from catch-ups and with "Load older": collapse the new ones.
new MutationObserver((mutations) => {
  const touched = new Set();
  for (const mutation of mutations) {
    for (const node of mutation.addedNodes) {
      if (node.nodeType !== Node.ELEMENT_NODE) continue;
      if (!node.matches("[data-message-id], [data-chat-room]") && !node.querySelector("[data-message-id]")) continue;
      const room = node.closest("[data-chat-room]") || node.querySelector("[data-chat-room]");
      if (room) touched.add(room);
    }
  }
  for (const room of touched) applyBlocks(room);
}).observe(document.body, { childList: true, subtree: true });

rooms().forEach(applyBlocks);
