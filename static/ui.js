// wharf admin UI: small conveniences on top of pages that work without JavaScript.
// Loaded from the binary (src/ui/assets.rs); no inline script anywhere (CSP default-src 'self').
(function () {
  "use strict";

  // Save / Cancel appear once a setting changed.
  function dirtyForms(root) {
    root.querySelectorAll("form[data-dirty-form]").forEach(function (form) {
      var only = form.querySelector("[data-dirty-only]");
      if (!only || form.dataset.ready) return;
      form.dataset.ready = "1";
      var initial = new URLSearchParams(new FormData(form)).toString();
      var update = function () {
        only.hidden = new URLSearchParams(new FormData(form)).toString() === initial;
      };
      form.addEventListener("change", update);
      form.addEventListener("input", update);
      form.addEventListener("reset", function () { setTimeout(update, 0); });
      update();
    });
  }

  // Generate a Standard Webhooks secret in the browser, shown once so it can be copied.
  function generators(root) {
    root.querySelectorAll("button[data-generate]").forEach(function (b) {
      if (b.dataset.ready) return;
      b.dataset.ready = "1";
      b.hidden = false;
      b.addEventListener("click", function () {
        var input = document.getElementById(b.dataset.generate);
        if (!input) return;
        var bytes = new Uint8Array(32);
        crypto.getRandomValues(bytes);
        var bin = "";
        bytes.forEach(function (x) { bin += String.fromCharCode(x); });
        input.type = "text";
        input.value = "whsec_" + btoa(bin);
        input.focus();
        input.select();
      });
    });
  }

  // A Slack endpoint has no payload format and no auth header, only its Slack layout; the
  // template fields belong to the Custom format. Without JavaScript every field shows.
  function notifyTypes(root) {
    root.querySelectorAll("select[data-notify-type]").forEach(function (sel) {
      var set = sel.closest("fieldset");
      if (!set || sel.dataset.ready) return;
      sel.dataset.ready = "1";
      var format = set.querySelector("select[data-payload-format]");
      var update = function () {
        var slack = sel.value === "slack";
        set.querySelectorAll("[data-http-only]").forEach(function (el) { el.hidden = slack; });
        set.querySelectorAll("[data-slack-only]").forEach(function (el) { el.hidden = !slack; });
        var custom = !slack && format && format.value === "Custom";
        set.querySelectorAll("[data-custom-only]").forEach(function (el) { el.hidden = !custom; });
      };
      sel.addEventListener("change", update);
      if (format) format.addEventListener("change", update);
      update();
    });
  }

  // A field marked invalid by the server is no longer marked once it is changed.
  document.addEventListener("input", function (e) {
    var el = e.target;
    if (!el || !el.getAttribute || el.getAttribute("aria-invalid") !== "true") return;
    el.removeAttribute("aria-invalid");
    var field = el.closest(".field");
    var err = field && field.querySelector(".field-error");
    if (err) err.hidden = true;
  });

  function all(root) {
    dirtyForms(root);
    generators(root);
    notifyTypes(root);
  }

  document.addEventListener("DOMContentLoaded", function () { all(document); });
  document.addEventListener("htmx:load", function (e) { all(e.target || document); });
})();
