// django-htmx's DEBUG helper replaces the whole page with any 400/403/404/500 response, so
// that Django's debug pages show. The chat answers HTMX requests with 400/403 *fragments*
// (form and send errors) that htmx swaps as usual, so keep those away from the helper.
// Imported by the other chat modules; it does nothing outside DEBUG.

const EXPECTED_ERROR_STATUSES = new Set([400, 403]);
const FULL_PAGE = /^\s*(<!doctype|<html)/i;

document.body.addEventListener("htmx:beforeOnLoad", (event) => {
  const xhr = event.detail.xhr;
  if (EXPECTED_ERROR_STATUSES.has(xhr.status) && !FULL_PAGE.test(xhr.response)) {
    event.stopPropagation(); // htmx itself goes on; only the document-level helper is skipped
  }
});
