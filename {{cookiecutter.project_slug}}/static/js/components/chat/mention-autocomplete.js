// @mention suggestions in a group's message box: typing "@" and the start of a name
// lists the members who match; ArrowUp/ArrowDown choose, Enter or Tab puts "@Name " in
// the text, Escape closes. The box points at the list with aria-controls and at the
// chosen person with aria-activedescendant (the listbox pattern of text-area autocomplete).
//
// The members come from the room's mention-candidates/ URL, fetched on the first "@" and
// again when older than REFRESH_MS (people join and leave). The server resolves the
// names against the members when the message is sent: this list only helps typing them.

const REFRESH_MS = 60 * 1000;
const MAX_SHOWN = 8;
// "@" at the start or after a non-word character, then up to 40 characters of a name.
const QUERY_BEFORE_CARET = /(?:^|[^\w@])@([^@\n]{0,40})$/u;

export function matchingPeople(people, query) {
  const wanted = query.toLocaleLowerCase();
  const matches = (text) =>
    text.toLocaleLowerCase().startsWith(wanted) ||
    text.toLocaleLowerCase().split(/\s+/).some((word) => word.startsWith(wanted));
  return people.filter((person) => matches(person.name) || matches(person.username)).slice(0, MAX_SHOWN);
}

export class MentionAutocomplete {
  constructor({ input, list, url }) {
    this.input = input;
    this.list = list;
    this.url = url;
    this.people = null;
    this.fetchedAt = 0;
    this.shown = [];
    this.active = -1;
    this.input.setAttribute("aria-autocomplete", "list");
    this.input.setAttribute("aria-controls", list.id);
    this.input.setAttribute("aria-expanded", "false");
    this.onInput = () => this.update();
    this.onKeyDown = (event) => this.keyDown(event);
    this.onBlur = () => setTimeout(() => this.close(), 150); // after a click on an option
    this.input.addEventListener("input", this.onInput);
    this.input.addEventListener("keydown", this.onKeyDown);
    this.input.addEventListener("blur", this.onBlur);
    this.list.addEventListener("mousedown", (event) => {
      const option = event.target.closest("[role=option]");
      if (!option) return;
      event.preventDefault(); // keep the focus in the box
      this.pick(Number(option.dataset.index));
    });
  }

  isOpen() {
    return !this.list.hidden;
  }

  query() {
    const caret = this.input.selectionStart;
    if (caret !== this.input.selectionEnd) return null;
    const match = QUERY_BEFORE_CARET.exec(this.input.value.slice(0, caret));
    return match ? { text: match[1], start: caret - match[1].length - 1, end: caret } : null;
  }

  async update() {
    const query = this.query();
    if (!query) return this.close();
    const people = await this.candidates();
    const current = this.query(); // typing went on while the list was fetched
    if (!current || current.text !== query.text) return;
    const finished = query.text.trimEnd().toLocaleLowerCase();
    if (finished !== query.text.toLocaleLowerCase() && people.some((p) => p.name.toLocaleLowerCase() === finished)) {
      return this.close(); // a whole name and a space: that mention is done
    }
    this.shown = matchingPeople(people, query.text);
    if (!this.shown.length) return this.close();
    this.render(0);
  }

  async candidates() {
    if (this.people && Date.now() - this.fetchedAt < REFRESH_MS) return this.people;
    try {
      const response = await fetch(this.url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (response.ok) {
        this.people = (await response.json()).members;
        this.fetchedAt = Date.now();
      }
    } catch {
      // offline: suggest from what we had, if anything
    }
    return this.people || [];
  }

  render(active) {
    this.active = active;
    this.list.replaceChildren(
      ...this.shown.map((person, index) => {
        const option = document.createElement("li");
        option.id = `${this.list.id}-option-${index}`;
        option.className = "mention-option";
        option.setAttribute("role", "option");
        option.setAttribute("aria-selected", String(index === active));
        option.dataset.index = String(index);
        const name = document.createElement("span");
        name.textContent = person.name;
        const username = document.createElement("span");
        username.className = "mention-option-username";
        username.textContent = `@${person.username}`;
        option.append(name, username);
        return option;
      }),
    );
    this.list.hidden = false;
    this.input.setAttribute("aria-expanded", "true");
    this.input.setAttribute("aria-activedescendant", `${this.list.id}-option-${active}`);
    this.list.children[active]?.scrollIntoView({ block: "nearest" });
  }

  keyDown(event) {
    if (!this.isOpen() || event.isComposing) return;
    const moves = { ArrowDown: 1, ArrowUp: -1 };
    if (event.key in moves) {
      this.render((this.active + moves[event.key] + this.shown.length) % this.shown.length);
    } else if (event.key === "Enter" || event.key === "Tab") {
      this.pick(this.active);
    } else if (event.key === "Escape") {
      this.close();
    } else {
      return;
    }
    // Handled here: not a send (Enter), a move out of the box (Tab) or a cancelled reply (Escape).
    event.preventDefault();
    event.stopImmediatePropagation();
  }

  pick(index) {
    const person = this.shown[index];
    const query = this.query();
    if (!person || !query) return this.close();
    const value = this.input.value;
    const inserted = `@${person.name} `;
    this.input.value = value.slice(0, query.start) + inserted + value.slice(query.end);
    const caret = query.start + inserted.length;
    this.input.setSelectionRange(caret, caret);
    this.close();
    // Other listeners (the length counter) hear of the change; the new text ends in a
    // space after a whole name, which suggests nobody new.
    this.input.dispatchEvent(new Event("input", { bubbles: true }));
  }

  close() {
    if (this.list.hidden) return;
    this.list.hidden = true;
    this.list.replaceChildren();
    this.shown = [];
    this.active = -1;
    this.input.setAttribute("aria-expanded", "false");
    this.input.removeAttribute("aria-activedescendant");
  }

  stop() {
    this.close();
    this.input.removeEventListener("input", this.onInput);
    this.input.removeEventListener("keydown", this.onKeyDown);
    this.input.removeEventListener("blur", this.onBlur);
  }
}
