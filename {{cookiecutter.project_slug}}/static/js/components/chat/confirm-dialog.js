// Destructive buttons on full pages ("Leave group", "Delete for me", "Remove …") ask first:
// a form holding a <dialog data-confirm-dialog> opens it instead of posting. The dialog's
// own submit button posts the form; Cancel or Escape closes it, and focus goes back to the
// button that opened it. Without JavaScript the dialog stays closed and the form posts.

document.addEventListener("submit", (event) => {
  const form = event.target;
  const dialog = form.querySelector("dialog[data-confirm-dialog]");
  if (!dialog || dialog.contains(event.submitter)) return;
  event.preventDefault();
  const trigger = event.submitter || form.querySelector("button");
  dialog.addEventListener("close", () => trigger?.focus(), { once: true });
  dialog.showModal(); // focuses its autofocus button: Cancel
});

document.addEventListener("click", (event) => {
  event.target.closest("[data-confirm-cancel]")?.closest("dialog")?.close();
});
