// The inbox's "New chat" and "New group" buttons open native modal <dialog>s with the
// Invoker Commands API (commandfor + command="show-modal"). This module fills in for
// browsers without it. The dialog itself focuses its autofocus field, traps Tab and
// closes on Escape.

const invokersSupported = "commandForElement" in HTMLButtonElement.prototype;

document.addEventListener("click", (event) => {
  if (invokersSupported) return;
  const opener = event.target.closest("[data-dialog-open]");
  const dialog = opener && document.getElementById(opener.dataset.dialogOpen);
  if (dialog && !dialog.open) dialog.showModal();
});
