// Small behaviours htmx does not cover. No inline scripts: the CSP forbids them.

// Enter or Space on a focused card value opens its editor (like a button).
document.addEventListener("keydown", (event) => {
  const target = event.target;
  if ((event.key === "Enter" || event.key === " ") && target.matches && target.matches(".editable[role=button]")) {
    event.preventDefault();
    target.click();
    return;
  }
  // Escape cancels an inline edit: click its cancel button.
  if (event.key === "Escape") {
    const form = target.closest && target.closest(".inline-edit");
    const cancel = form && form.querySelector("[data-cancel]");
    if (cancel) cancel.click();
  }
});

// Focus follows the inline editor: into its first input when it opens, back to the
// value when it closes (keyboard users keep their place).
document.addEventListener("htmx:load", (event) => {
  const element = event.detail.elt;
  if (!element.matches) return;
  if (element.matches(".inline-edit")) {
    const input = element.querySelector("input:not([type=hidden]), select, textarea");
    if (input) input.focus();
  } else if (element.matches(".editable[role=button]") && document.activeElement === document.body) {
    element.focus();
  }
});

// Close open dropdowns when clicking elsewhere.
document.addEventListener("click", (event) => {
  document.querySelectorAll("details.dropdown[open], details.column-chooser[open]").forEach((d) => {
    if (!d.contains(event.target)) d.removeAttribute("open");
  });
});

// The custom field form shows "Choices" only for choice types.
function syncChoices() {
  const type = document.getElementById("field_type");
  const choices = document.getElementById("choices");
  if (!type || !choices) return;
  const label = choices.closest("label");
  const show = type.value.endsWith("_choice");
  [label, label && label.nextElementSibling].forEach((el) => {
    if (el && (el === label || el.tagName === "SMALL")) el.hidden = !show;
  });
}
document.addEventListener("change", (event) => {
  if (event.target.id === "field_type") syncChoices();
});
document.addEventListener("DOMContentLoaded", syncChoices);

// The idle lock: after the server's idle timeout without input, show the lock screen
// (the server locks the session by itself; this only shows it on time).
(function () {
  const body = document.body;
  const seconds = Number(body && body.dataset.idleSeconds);
  if (!seconds) return;
  let timer = null;
  const lock = () => {
    const here = window.location.pathname + window.location.search;
    window.location.assign(body.dataset.lockUrl + "?next=" + encodeURIComponent(here));
  };
  const reset = () => {
    clearTimeout(timer);
    timer = setTimeout(lock, seconds * 1000 + 1000);
  };
  ["keydown", "click", "htmx:afterRequest"].forEach((name) => document.addEventListener(name, reset));
  reset();
})();

// The client list's selection: "select every client on this page" and "all matching"
// tick every row; unticking a row unticks both (the selection is then the ticked rows).
document.addEventListener("change", (event) => {
  const box = event.target;
  const form = box.closest && box.closest("#mass-form");
  if (!form || box.type !== "checkbox") return;
  const page = form.querySelector("[data-select-page]");
  const all = form.querySelector("#mass-all");
  if (box === page || box === all) {
    form.querySelectorAll('input[name="ids"]').forEach((row) => { row.checked = box.checked; });
    if (box === all && page) page.checked = box.checked;
    if (box === page && !box.checked && all) all.checked = false;
  } else if (box.name === "ids" && !box.checked) {
    [page, all].forEach((el) => { if (el) el.checked = false; });
  }
});
