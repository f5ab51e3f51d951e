// A message's actions menu and forms. Each bubble has only the menu's button (a link to the
// message's page of actions, for browsers without JavaScript); pressing it copies the room's
// one menu (<template data-message-menu-template>, rendered for message 0) into the bubble
// with the message's id, so a room of many messages, and every live frame, carries one
// button per message instead of a menu each. htmx does the requests. This module adds what
// a keyboard and a screen reader need: one menu open at a time, Escape closes it and gives
// the keyboard back to its button, Enter saves an edit and Escape cancels it, and the room's
// dialog (Delete for everyone, Report) opens when its form arrives and gives focus back to
// the message's button when it closes.

function menuOf(bubble) {
  return bubble?.querySelector("[data-message-menu]");
}

export function closeMenu(bubble, { focus = false } = {}) {
  const menu = menuOf(bubble);
  if (!menu) return;
  menu.remove();
  const button = bubble.querySelector("[data-message-actions]");
  button?.setAttribute("aria-expanded", "false");
  if (focus) button?.focus();
}

function closeAllMenus(except = null) {
  document.querySelectorAll("[data-message-menu]").forEach((menu) => {
    const bubble = menu.closest("[data-message-id]");
    if (bubble && bubble !== except) closeMenu(bubble);
  });
}

// Past CHAT_EDIT_WINDOW_SECONDS (the room's data-edit-window; 0: always) the menu offers no Edit.
function editWindowOver(room, bubble) {
  const window = Number(room.dataset.editWindow) || 0;
  const sent = Date.parse(bubble.querySelector("time[datetime]")?.dateTime);
  return window > 0 && Number.isFinite(sent) && Date.now() - sent > window * 1000;
}

export function openMenu(bubble) {
  const room = bubble.closest("[data-chat-room]");
  const template = room?.querySelector("template[data-message-menu-template]");
  if (!template || menuOf(bubble)) return;
  closeAllMenus(bubble);
  const id = bubble.dataset.messageId;
  const menu = template.content.firstElementChild.cloneNode(true);
  for (const element of [menu, ...menu.querySelectorAll("*")]) {
    for (const attribute of element.attributes) {
      const value = attribute.value.replace("/messages/0/", `/messages/${id}/`).replace("#message-0", `#message-${id}`);
      if (value !== attribute.value) attribute.value = value;
    }
  }
  if (editWindowOver(room, bubble)) menu.querySelector("[data-edit-action]")?.remove();
  bubble.querySelector("[data-message-actions]").after(menu);
  bubble.querySelector("[data-message-actions]").setAttribute("aria-expanded", "true");
  window.htmx?.process(menu);
  menu.querySelector("button, a")?.focus();
}

document.addEventListener("click", (event) => {
  const button = event.target.closest?.("[data-message-actions]");
  const bubble = button?.closest("[data-message-id]");
  if (button && bubble?.closest("[data-chat-room]")) {
    event.preventDefault();
    if (menuOf(bubble)) closeMenu(bubble, { focus: true });
    else openMenu(bubble);
  }
});

function dialogOf(element) {
  return element?.closest?.("[data-message-dialog]");
}

// The dialog's content arrived (htmx swapped it in): show it.
document.addEventListener("htmx:afterSwap", (event) => {
  const dialog = event.detail.target;
  if (!dialog?.matches?.("[data-message-dialog]")) return;
  const opener = event.detail.requestConfig?.elt?.closest?.("[data-message-id]");
  if (opener) dialog.dataset.openerId = opener.dataset.messageId;
  if (!dialog.open) dialog.showModal();
});

// An action picked from a menu: the menu closes at once, the keyboard back on its button
// (the answer, or the room's frame if it comes first, then replaces the bubble).
document.addEventListener("htmx:beforeRequest", (event) => {
  const menu = event.detail.elt?.closest?.("[data-message-menu]");
  if (menu) closeMenu(menu.closest("[data-message-id]"), { focus: true });
});

// A delete answered: the bubble shows the placeholder (or why not), the dialog closes.
document.addEventListener("htmx:afterRequest", (event) => {
  const form = event.detail.elt;
  if (form?.matches?.("[data-closes-dialog]")) dialogOf(form)?.close();
});

document.addEventListener("close", (event) => {
  const dialog = event.target;
  if (!dialog.matches?.("[data-message-dialog]")) return;
  const room = dialog.closest("[data-chat-room]");
  const bubble = room?.querySelector(`[data-message-id="${dialog.dataset.openerId}"]`);
  dialog.replaceChildren();
  (bubble?.querySelector("[data-message-actions]") || room?.querySelector("[data-message-input]"))?.focus();
}, true);

document.addEventListener("click", (event) => {
  const cancel = event.target.closest("[data-dialog-cancel]");
  if (cancel && dialogOf(cancel)) {
    event.preventDefault();
    dialogOf(cancel).close();
    return;
  }
  // A click outside an open menu closes it.
  if (!event.target.closest?.("[data-message-menu], [data-message-actions]")) closeAllMenus();
});

// The browser focuses the edit form's autofocus box as soon as it is swapped in, but htmx
// wires the form up only when the swap settles (20 ms later): a key pressed in between
// would post the form as a page without JavaScript does, and reload the room.
function wiredUp(form) {
  window.htmx?.process(form);
  return form;
}

document.addEventListener("keydown", (event) => {
  const editBox = event.target.closest?.("[data-edit-input]");
  if (editBox && event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    wiredUp(editBox.form).requestSubmit();
  } else if (editBox && event.key === "Escape") {
    event.preventDefault();
    wiredUp(editBox.form).querySelector("[data-edit-cancel]")?.click();
  } else if (event.key === "Escape") {
    const menu = event.target.closest?.("[data-message-menu]");
    if (menu) closeMenu(menu.closest("[data-message-id]"), { focus: true });
  }
});
