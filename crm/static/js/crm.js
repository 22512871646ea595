// Small behaviours htmx does not cover. No inline scripts: the CSP forbids them.
document.addEventListener("keydown", (event) => {
  // Escape cancels an inline edit: click its cancel button.
  if (event.key !== "Escape") return;
  const form = event.target.closest && event.target.closest(".inline-edit");
  const cancel = form && form.querySelector("[data-cancel]");
  if (cancel) { cancel.click(); }
});
document.addEventListener("click", (event) => {
  // Close open dropdowns when clicking elsewhere.
  document.querySelectorAll("details.dropdown[open], details.column-chooser[open]").forEach((d) => {
    if (!d.contains(event.target)) d.removeAttribute("open");
  });
});
document.addEventListener("htmx:afterSwap", (event) => {
  // Focus the first input of a freshly swapped-in inline editor (keyboard users).
  const input = event.detail.target.querySelector && event.detail.target.querySelector(".inline-edit input:not([type=hidden]), .inline-edit select, .inline-edit textarea");
  if (input) input.focus();
});
