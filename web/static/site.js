// Countdowns and "… ago" times that follow the server's clock, not the browser's.
// The page works without this file: the server renders every time as text already.
(function () {
  "use strict";
  // The same wording as the server's (pages.rs, `span`); live.js words its times with it too.
  function span(secs) {
    if (secs < 60) { return secs + " s"; }
    var m = Math.floor(secs / 60), h = Math.floor(secs / 3600), d = Math.floor(secs / 86400);
    function two(major, minor, unit) { return minor === 0 ? major : major + " " + minor + " " + unit; }
    if (secs < 600) { return two(m + " min", secs % 60, "s"); }
    if (secs < 3600) { return m + " min"; }
    if (secs < 86400) { return two(h + " h", m % 60, "min"); }
    return two(d + " d", h % 24, "h");
  }
  window.auctionSpan = span;

  var serverNow = Number(document.body.getAttribute("data-server-now-ms"));
  if (!serverNow) { return; }
  // How far the browser's clock is from the server's, measured once when the page loads
  // (the page's own travel time is the only error, a fraction of a second).
  var offset = serverNow - Date.now();
  function now() { return Date.now() + offset; }

  function tick() {
    var t = now();
    var countdowns = document.querySelectorAll("time[data-countdown]");
    for (var i = 0; i < countdowns.length; i++) {
      var el = countdowns[i];
      var left = Number(el.getAttribute("data-ms")) - t;
      if (left > 0) {
        el.textContent = span(Math.ceil(left / 1000)) + " left";
      } else if (!el.classList.contains("ended")) {
        // A late bid may have moved the end: the server says what happened.
        el.textContent = "ended (reload to see the result)";
        el.classList.add("ended");
      }
    }
    var agos = document.querySelectorAll("time[data-ago]");
    for (var j = 0; j < agos.length; j++) {
      var ago = t - Number(agos[j].getAttribute("data-ms"));
      agos[j].textContent = span(Math.max(0, Math.floor(ago / 1000))) + " ago";
    }
  }

  tick();
  window.setInterval(tick, 1000);
})();
