// A message's actions menu and forms: the <details> menu under each bubble, the inline edit
// form's keys, and the room's dialog where "Delete for everyone" and "Report" open.
// htmx does the requests (the same forms post without JavaScript); this module only adds
// what a keyboard and a screen reader need: Enter saves an edit and Escape cancels it,
// Escape closes a menu, one menu open at a time, the dialog opens when its form arrives and
// gives focus back to the message's menu when it closes.

function dialogOf(element) {
  return element?.closest?.("[data-message-dialog]");
}

// The dialog's content arrived (htmx swapped it in): show it.
document.addEventListener("htmx:afterSwap", (event) => {
  const dialog = event.detail.target;
  if (!dialog?.matches?.("[data-message-dialog]")) return;
  const opener = event.detail.requestConfig?.elt?.closest?.("[data-message-id]");
  if (opener) dialog.dataset.openerId = opener.dataset.messageId;
  opener?.querySelector("details[data-message-actions]")?.removeAttribute("open");
  if (!dialog.open) dialog.showModal();
});

// A reaction picked from a menu: the menu closes at once, the keyboard back on its button
// (the answer, or the room's frame if it comes first, then replaces the bubble).
document.addEventListener("htmx:beforeRequest", (event) => {
  const menu = event.detail.elt?.closest?.("details[data-message-actions]");
  if (!menu) return;
  menu.open = false;
  menu.querySelector("summary").focus();
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
  (bubble?.querySelector("summary") || room?.querySelector("[data-message-input]"))?.focus();
}, true);

document.addEventListener("click", (event) => {
  const cancel = event.target.closest("[data-dialog-cancel]");
  if (cancel && dialogOf(cancel)) {
    event.preventDefault();
    dialogOf(cancel).close();
    return;
  }
  // A click outside an open menu closes it.
  document.querySelectorAll("details[data-message-actions][open]").forEach((menu) => {
    if (!menu.contains(event.target)) menu.open = false;
  });
});

// One menu open at a time ("toggle" does not bubble: listen while it goes down).
document.addEventListener("toggle", (event) => {
  const menu = event.target;
  if (!menu.matches?.("details[data-message-actions]") || !menu.open) return;
  document.querySelectorAll("details[data-message-actions][open]").forEach((other) => {
    if (other !== menu) other.open = false;
  });
}, true);

document.addEventListener("keydown", (event) => {
  const editBox = event.target.closest?.("[data-edit-input]");
  if (editBox && event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    editBox.form.requestSubmit();
  } else if (editBox && event.key === "Escape") {
    event.preventDefault();
    editBox.form.querySelector("[data-edit-cancel]")?.click();
  } else if (event.key === "Escape") {
    const menu = event.target.closest?.("details[data-message-actions][open]");
    if (!menu) return;
    menu.open = false;
    menu.querySelector("summary").focus();
  }
});
