// Waits for the user's container with long-polls of the status API, then moves on to the
// page the user asked for. A guard stops a redirect loop if the proxy keeps sending us back.
(function () {
  "use strict";
  var cfg = JSON.parse(document.getElementById("servicehub-config").textContent);
  var started = Date.now() - 1000 * (cfg.initial.elapsed || 0);
  var version = -1;
  var $ = function (id) { return document.getElementById(id); };

  setInterval(function () {
    $("elapsed").textContent = Math.round((Date.now() - started) / 1000);
  }, 500);

  function render(s) {
    $("message").textContent = s.message;
    $("progress").value = s.progress;
  }

  function fail(reason) {
    $("progress").hidden = true;
    $("reason").textContent = reason;
    $("failed").hidden = false;
  }

  function tooManyReturns() {
    var key = "servicehub-returns:" + cfg.target;
    var entry = JSON.parse(sessionStorage.getItem(key) || '{"n":0,"t":0}');
    if (Date.now() - entry.t > 30000) { entry = { n: 0, t: Date.now() }; }
    entry.n += 1;
    sessionStorage.setItem(key, JSON.stringify(entry));
    return entry.n > 5;
  }

  function pause(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  async function poll() {
    for (;;) {
      var response;
      try {
        response = await fetch(cfg.status + "&since=" + version,
                               { cache: "no-store", credentials: "same-origin" });
      } catch (e) {
        $("message").textContent = "Lost contact with the hub, trying again...";
        await pause(1000);
        continue;
      }
      if (!response.ok) {
        fail("The hub answered " + response.status + " while starting your app.");
        return;
      }
      var s = await response.json();
      version = s.version;
      render(s);
      if (s.state === "ready") {
        if (tooManyReturns()) {
          fail("Your app is running but the proxy keeps sending you back here.");
          return;
        }
        window.location.replace(cfg.target);
        return;
      }
      // Failed, or stopped (reaped or removed meanwhile): only a click starts it again.
      if (s.state === "failed" || s.state === "stopped") { fail(s.message); return; }
    }
  }

  render(cfg.initial);
  poll();
})();
