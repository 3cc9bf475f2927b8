// Easel console: copy buttons and an order's live progress (server-sent events). Everything
// else works without JavaScript.
(function () {
  "use strict";
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy"));
    var text = source.value !== undefined ? source.value : source.textContent;
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallback(source, text); done(); });
    } else { fallback(source, text); done(); }
  });
  function fallback(source, text) {
    var area = document.createElement("textarea");
    area.value = text; document.body.appendChild(area); area.select();
    document.execCommand("copy"); document.body.removeChild(area);
  }

  function follow() {
    var live = document.getElementById("live");
    if (!live || live.getAttribute("data-final") === "true" || !window.EventSource) return;
    var status = document.getElementById("live-status");
    var bar = document.getElementById("progress");
    var outputs = document.getElementById("outputs");
    var source = new EventSource(live.getAttribute("data-events"));
    var say = function (name, text) { status.setAttribute("data-status", name); status.textContent = text; };
    source.addEventListener("queued", function (e) {
      var d = JSON.parse(e.data);
      say("pending", d.queue_position ? "pending: number " + d.queue_position + " in the queue" : "pending");
    });
    source.addEventListener("started", function () { say("running", "running"); });
    source.addEventListener("loading_model", function () { say("running", "running: loading the model"); });
    source.addEventListener("progress", function (e) {
      var d = JSON.parse(e.data);
      bar.value = d.percent; bar.textContent = d.percent + "%";
      say("running", "running: step " + d.step + " of " + d.total_steps);
    });
    var end = function (e) {
      var d = JSON.parse(e.data);
      source.close();
      live.setAttribute("data-final", "true");
      var form = document.getElementById("cancel-form");
      if (form) form.remove();
      var timings = document.getElementById("timings");
      if (timings && d.created_at) {
        var span = function (a, b) {
          return a && b ? ((Date.parse(b) - Date.parse(a)) / 1000).toFixed(1) + " s" : "\u2014";
        };
        timings.textContent = span(d.created_at, d.started_at) + " / " +
          span(d.started_at, d.completed_at) + " / " + span(d.created_at, d.completed_at);
      }
      if (d.status === "completed") {
        bar.value = 100;
        say("completed", "completed");
        (d.outputs || []).forEach(function (o, i) {
          var fig = document.createElement("figure");
          var video = (o.content_type || "").indexOf("video/") === 0;
          var img = document.createElement(video ? "video" : "img");
          img.src = o.url; img.width = o.width; img.height = o.height;
          if (video) { img.controls = true; img.loop = true; img.muted = true; }
          img.setAttribute(video ? "aria-label" : "alt", "Output " + (i + 1) + " of " + d.order_id);
          var cap = document.createElement("figcaption");
          cap.textContent = "seed " + o.seed + " · " + o.width + "×" + o.height + " · ";
          var a = document.createElement("a");
          a.href = o.url; a.setAttribute("download", ""); a.textContent = "Download";
          cap.appendChild(a); fig.appendChild(img); fig.appendChild(cap); outputs.appendChild(fig);
        });
      } else {
        say(d.status, d.status + (d.error && d.error.message ? ": " + d.error.message : ""));
      }
    };
    ["completed", "failed", "canceled"].forEach(function (n) { source.addEventListener(n, end); });
    source.addEventListener("timeout", function () { source.close(); setTimeout(follow, 500); });
  }
  document.addEventListener("DOMContentLoaded", follow);
})();
