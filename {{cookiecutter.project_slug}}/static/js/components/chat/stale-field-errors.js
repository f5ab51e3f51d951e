// A field's error from the last submit ("Nobody with this e-mail has an account.") is about
// what was typed then: once the field changes, the error goes, so it never sits next to the
// live answer about the new value. Works on Django's field markup (`<id>_error` list,
// aria-invalid and aria-describedby on the input).

document.addEventListener("input", (event) => {
  const field = event.target;
  if (!(field instanceof Element) || field.getAttribute("aria-invalid") !== "true") return;
  const errorId = `${field.id}_error`;
  document.getElementById(errorId)?.remove();
  field.removeAttribute("aria-invalid");
  const describedBy = (field.getAttribute("aria-describedby") || "")
    .split(/\s+/)
    .filter((id) => id && id !== errorId);
  if (describedBy.length) field.setAttribute("aria-describedby", describedBy.join(" "));
  else field.removeAttribute("aria-describedby");
});
