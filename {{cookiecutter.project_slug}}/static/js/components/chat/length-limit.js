// Length limits that never cut: a field with data-max-length (the message box, group
// names) shows a counter once it nears its limit and is invalid past it, so the form
// will not submit and says why. (A maxlength attribute would cut a paste short silently.)
// The counter is the element whose id the field names in data-length-counter, or one
// made after the field.

const NEAR_LIMIT = 0.9;

// Counted as the server counts: characters (not UTF-16 units), a line break as one,
// without the leading and trailing spaces it strips.
export function lengthOf(value) {
  return [...value.replace(/\r\n?/g, "\n").trim()].length;
}

export function tooLongMessage(field) {
  const limit = Number(field.dataset.maxLength);
  const length = lengthOf(field.value);
  if (!limit || length <= limit) return "";
  return `At most ${limit} characters; this has ${length}. Shorten it by ${length - limit}.`;
}

function counterFor(field) {
  const named = field.dataset.lengthCounter && document.getElementById(field.dataset.lengthCounter);
  if (named) return named;
  const counter = document.createElement("span");
  counter.className = "length-counter";
  counter.id = `${field.id || field.name}-length`;
  counter.hidden = true;
  field.after(counter);
  field.dataset.lengthCounter = counter.id;
  field.setAttribute("aria-describedby", `${field.getAttribute("aria-describedby") || ""} ${counter.id}`.trim());
  return counter;
}

// Updates the counter and the field's validity; true while the value fits.
export function checkLength(field) {
  const limit = Number(field.dataset.maxLength);
  if (!limit) return true;
  const length = lengthOf(field.value);
  const counter = counterFor(field);
  const over = length > limit;
  counter.hidden = length < limit * NEAR_LIMIT;
  counter.textContent = over ? `${length} / ${limit}: ${length - limit} too many` : `${length} / ${limit}`;
  counter.classList.toggle("length-counter--over", over);
  field.setCustomValidity(tooLongMessage(field));
  return !over;
}

function checkAll(root) {
  root.querySelectorAll?.("[data-max-length]").forEach(checkLength);
}

if (!window.chatLengthLimits) {
  window.chatLengthLimits = true;
  document.addEventListener("input", (event) => {
    if (event.target.matches?.("[data-max-length]")) checkLength(event.target);
  });
  document.addEventListener("htmx:load", (event) => checkAll(event.detail.elt));
  checkAll(document);
}
