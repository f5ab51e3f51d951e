// Where a room's reading starts and the way back to the newest message. A room opened
// with unread messages starts at the "New messages" divider the server put above the
// first of them (it stays there while they read). While the list is scrolled up and newer
// messages are below (those unread at opening, or ones arriving since), a "Jump to latest"
// button says how many; it goes once the bottom is in view.

function currentUserId() {
  return document.body.dataset.userId || "";
}

// Pixels of the message above the divider left in view, for context.
const CONTEXT_PX = 24;

export class ReadingPosition {
  // `room` is the ChatRoom of message-send.js: its element, list, isNearBottom() and scrollToBottom().
  constructor(room) {
    this.room = room;
    this.button = room.element.querySelector("[data-jump-latest]");
    this.label = room.element.querySelector("[data-jump-latest-label]");
    this.unseen = 0;
    this.button?.addEventListener("click", () => {
      room.scrollToBottom();
      this.hide();
      room.input?.focus(); // the button is gone: focus goes where the reader goes next
    });
    room.list.addEventListener("scroll", () => {
      if (room.isNearBottom()) this.hide();
    });
  }

  // Scroll a freshly opened room to its divider; false (the caller goes to the bottom) without one.
  startAtDivider() {
    const divider = this.room.list.querySelector("[data-unread-divider]");
    if (!divider) return false;
    const list = this.room.list;
    list.scrollTop += divider.getBoundingClientRect().top - list.getBoundingClientRect().top - CONTEXT_PX;
    if (!this.room.isNearBottom()) {
      let below = 0;
      for (let next = divider.nextElementSibling; next; next = next.nextElementSibling) {
        if (next.dataset.messageId) below += 1;
      }
      this.show(below);
    }
    return true;
  }

  // Bubbles just put in the list while it was scrolled up: count the others' new ones.
  noteArrived(bubbles) {
    const fromOthers = bubbles.filter((bubble) => bubble.isConnected && bubble.dataset.senderId !== currentUserId());
    if (fromOthers.length && !this.room.isNearBottom()) this.show(this.unseen + fromOthers.length);
  }

  show(count) {
    if (!this.button) return;
    this.unseen = count;
    this.label.textContent = count
      ? `Jump to latest (${count} new message${count === 1 ? "" : "s"})`
      : "Jump to latest";
    this.button.hidden = false;
  }

  hide() {
    if (!this.button || this.button.hidden) return;
    const hadFocus = this.button.contains(document.activeElement);
    this.button.hidden = true;
    this.unseen = 0;
    if (hadFocus) this.room.input?.focus();
  }
}
