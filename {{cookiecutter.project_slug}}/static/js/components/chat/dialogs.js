// The inbox's "New chat" and "New group" buttons open native modal <dialog>s with the
// Invoker Commands API (commandfor + command="show-modal"). This module fills in for
// browsers without it and puts the focus on the dialog's first field once it is open.
// The dialog itself traps Tab and closes on Escape.

const invokersSupported = "commandForElement" in HTMLButtonElement.prototype;

function firstField(dialog) {
  return dialog.querySelector("input:not([type='hidden']), textarea, select");
}

document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-dialog-open]");
  const dialog = opener && document.getElementById(opener.dataset.dialogOpen);
  if (!dialog) return;
  if (!invokersSupported && !dialog.open) dialog.showModal();
  // The invoker opens the dialog after this click handler; focus once it has.
  requestAnimationFrame(() => {
    if (dialog.open) firstField(dialog)?.focus();
  });
});
