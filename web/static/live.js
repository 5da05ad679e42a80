// Live pages: the dashboard, the open auctions on "/" and an auction's page follow the site's
// feed (GET /api/feed, server-sent events) without a reload. Every page works without this
// file; text from bidders is only ever set with textContent, never parsed as HTML.
//
// Events: "bids" {bids: newest first, leaders: best bid per auction since the last event}
// every 100 ms while bids flow, and "board" {server_now_ms, auctions, health} once a second.
// Standings only move forward here: a bid count never goes down and a highest bid is replaced
// only by one that ranks above it (greater price, or the same price earlier), so the board,
// which may be a second older than the bids, never takes back what the bids showed.
(function () {
  "use strict";
  var dashboard = document.getElementById("dashboard");
  var cards = document.querySelectorAll("li.card[data-auction]");
  var article = document.querySelector("article.auction[data-open]");
  if (!window.EventSource || !window.auctionSpan || (!dashboard && cards.length === 0 && !article)) { return; }

  var serverOffset = 0;
  var body = Number(document.body.getAttribute("data-server-now-ms"));
  if (body) { serverOffset = body - Date.now(); }
  // When the page was made, on the server's clock: only bids after it can have outbid us "since".
  var loadedAt = body || Date.now();
  function now() { return Date.now() + serverOffset; }

  // site.js (loaded first) words spans as the server does.
  var span = window.auctionSpan;
  function left(ms) {
    var l = ms - now();
    return l > 0 ? span(Math.ceil(l / 1000)) + " left" : "ended";
  }
  function ago(ms) { return span(Math.max(0, Math.floor((now() - ms) / 1000))) + " ago"; }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    if (cls) { e.className = cls; }
    return e;
  }
  function isoTime(ms, iso, mode) {
    var t = el("time");
    t.setAttribute("datetime", iso);
    t.setAttribute("title", iso);
    t.setAttribute("data-ms", String(ms));
    t.setAttribute(mode === "ago" ? "data-ago" : "data-countdown", "");
    t.textContent = mode === "ago" ? ago(ms) : left(ms);
    return t;
  }
  // "1234.50" -> "1,234.50", as the server writes money.
  function money(plain) {
    var parts = String(plain).split(".");
    var whole = parts[0].replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    var cents = ((parts[1] || "") + "00").slice(0, 2);
    return whole + "." + cents;
  }
  // Exact decimal comparison of two prices with at most 2 decimals, in cents.
  function cents(plain) {
    var parts = String(plain).split(".");
    return Number(parts[0]) * 100 + Number(((parts[1] || "") + "00").slice(0, 2));
  }
  function ranksAbove(a, b) {
    if (!b) { return true; }
    var ca = cents(a.price), cb = cents(b.price);
    return ca > cb || (ca === cb && a.ms < b.ms);
  }

  // What this browser bid (remembered from the "Bid added!" notice), per auction.
  var mine = {};
  try { mine = JSON.parse(window.localStorage.getItem("auction-my-bids") || "{}") || {}; } catch (e) { mine = {}; }
  var placed = document.getElementById("placed");
  if (placed && article) {
    mine[article.getAttribute("data-auction")] = { name: placed.getAttribute("data-name"), price: placed.getAttribute("data-price") };
    try { window.localStorage.setItem("auction-my-bids", JSON.stringify(mine)); } catch (e) { /* private mode: this page only */ }
  }
  function outbidText(id, leader) {
    var my = mine[id];
    if (!my || !leader || leader.ms < loadedAt - 1000) { return null; }
    if (leader.name === my.name && cents(leader.price) === cents(my.price)) { return null; }
    if (cents(leader.price) <= cents(my.price)) { return null; }
    return "You were outbid: " + leader.name + " bid " + money(leader.price) + ".";
  }

  // Per auction: the best bid and the count shown, so updates only move forward, and the
  // smallest next bid (the board's, or the leader's price plus the increment once a bid
  // outranks what the board knew).
  var shown = {};
  function standing(id) {
    if (!shown[id]) { shown[id] = { leader: null, fromFeed: false, count: 0, minimum: null, increment: null, ends: null }; }
    return shown[id];
  }
  function fromCents(c) { return Math.floor(c / 100) + "." + ("0" + (c % 100)).slice(-2); }
  function raiseMinimum(s) {
    if (!s.leader || s.increment === null) { return; }
    var next = cents(s.leader.price) + cents(s.increment);
    if (s.minimum === null || next > cents(s.minimum)) { s.minimum = fromCents(next); }
  }

  // ---- "/" ------------------------------------------------------------------------------
  var cardById = {};
  for (var i = 0; i < cards.length; i++) {
    var cardId = cards[i].getAttribute("data-auction");
    cardById[cardId] = cards[i];
    var cardEnds = cards[i].querySelector("time[data-countdown]");
    if (cardEnds) { standing(cardId).ends = Number(cardEnds.getAttribute("data-ms")); }
  }
  function updateCard(id, s, auction) {
    var card = cardById[id];
    if (!card) { return; }
    var price = card.querySelector("[data-field=price]");
    var by = card.querySelector("[data-field=by]");
    if (s.leader && price && by) {
      price.textContent = money(s.leader.price);
      price.classList.remove("none");
      by.textContent = "highest bid by ";
      by.appendChild(el("strong", s.leader.name));
    }
    var count = card.querySelector("[data-field=count]");
    if (count && s.count > 0) { count.textContent = String(s.count); }
    var min = card.querySelector("[data-field=min]");
    if (min && s.minimum !== null) { min.textContent = "at least " + money(s.minimum); }
    if (auction) {
      var ends = card.querySelector("time[data-countdown]");
      if (ends) { ends.setAttribute("data-ms", String(auction.ends_ms)); ends.setAttribute("title", auction.ends_at); ends.setAttribute("datetime", auction.ends_at); }
    }
    var outbid = card.querySelector("[data-field=outbid]");
    var text = outbidText(id, s.leader);
    if (outbid && text) { outbid.textContent = text; outbid.hidden = false; }
  }

  // ---- "/auctions/{id}" -------------------------------------------------------------------
  var articleId = article ? article.getAttribute("data-auction") : null;
  var seenBids = {};
  if (article) {
    if (placed) { seenBids[placed.getAttribute("data-bid-id")] = true; }
    standing(articleId).count = Number((document.getElementById("bid-count") || {}).textContent) || 0;
    var articleEnds = article.querySelector("time[data-countdown]");
    if (articleEnds) { standing(articleId).ends = Number(articleEnds.getAttribute("data-ms")); }
  }
  function addBidRow(bid) {
    if (seenBids[bid.bid_id]) { return; }
    seenBids[bid.bid_id] = true;
    var table = document.getElementById("latest-bids");
    if (!table) {
      var empty = document.getElementById("no-bids-yet");
      table = el("table");
      table.id = "latest-bids";
      var head = el("thead"), tr = el("tr");
      tr.appendChild(el("th", "Bidder")); tr.appendChild(el("th", "Amount", "num")); tr.appendChild(el("th", "When"));
      for (var k = 0; k < tr.children.length; k++) { tr.children[k].setAttribute("scope", "col"); }
      head.appendChild(tr); table.appendChild(head); table.appendChild(el("tbody"));
      if (empty) { empty.parentNode.replaceChild(table, empty); } else { return; }
    }
    var row = el("tr", null, "new");
    row.appendChild(el("td", bid.name));
    row.appendChild(el("td", bid.shown, "num"));
    var when = el("td"); when.appendChild(isoTime(bid.ms, bid.bid_ts, "ago")); row.appendChild(when);
    var tbody = table.querySelector("tbody");
    tbody.insertBefore(row, tbody.firstChild);
    while (tbody.children.length > 20) { tbody.removeChild(tbody.lastChild); }
  }
  function updateArticle(s, auction) {
    var highest = document.getElementById("highest");
    var by = document.getElementById("highest-by");
    if (s.leader && highest && by) {
      highest.textContent = money(s.leader.price);
      highest.classList.remove("none");
      by.textContent = "by ";
      by.appendChild(el("strong", s.leader.name));
    }
    var count = document.getElementById("bid-count");
    if (count && s.count > 0) { count.textContent = String(s.count); }
    if (s.minimum !== null) {
      var min = document.getElementById("minimum-next");
      if (min) { min.textContent = money(s.minimum); }
      var input = document.getElementById("price");
      if (input) { input.setAttribute("placeholder", s.minimum); }
    }
    if (auction) {
      var ends = article.querySelector("time[data-countdown]");
      if (ends) { ends.setAttribute("data-ms", String(auction.ends_ms)); ends.setAttribute("title", auction.ends_at); }
    }
    var outbid = document.getElementById("outbid");
    var text = outbidText(articleId, s.leader);
    if (outbid && text) { outbid.textContent = text; outbid.hidden = false; }
  }

  // ---- "/dashboard" -------------------------------------------------------------------------
  var feedList = document.getElementById("bid-feed");
  var feedSeen = {};
  function addFeedBid(bid) {
    if (!feedList || feedSeen[bid.bid_id]) { return; }
    feedSeen[bid.bid_id] = true;
    var item = el("li", null, "new");
    item.setAttribute("data-bid-id", bid.bid_id);
    item.appendChild(el("span", bid.shown, "amount"));
    item.appendChild(el("span", bid.name, "name"));
    var where = el("a", "#" + bid.auction_id, "where");
    where.setAttribute("href", "/auctions/" + bid.auction_id);
    item.appendChild(where);
    item.appendChild(isoTime(bid.ms, bid.bid_ts, "ago"));
    feedList.insertBefore(item, feedList.firstChild);
    while (feedList.children.length > 20) {
      var gone = feedList.lastChild;
      delete feedSeen[gone.getAttribute("data-bid-id")];
      feedList.removeChild(gone);
    }
    document.getElementById("no-bids").hidden = true;
  }
  var boardAuctions = [];
  // The dashboard lists the auctions ending soonest; "/" lists them all.
  var DASHBOARD_AUCTIONS = 20;
  function drawAuctions() {
    var tbody = document.querySelector("#open-auctions tbody");
    if (!tbody) { return; }
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    for (var n = 0; n < Math.min(boardAuctions.length, DASHBOARD_AUCTIONS); n++) {
      var a = boardAuctions[n], s = standing(String(a.id));
      var tr = el("tr");
      tr.setAttribute("data-auction", String(a.id));
      var name = el("td"), link = el("a", a.title);
      link.setAttribute("href", "/auctions/" + a.id);
      name.appendChild(link);
      tr.appendChild(name);
      tr.appendChild(el("td", s.leader ? money(s.leader.price) : "–", "num"));
      tr.appendChild(el("td", s.leader ? s.leader.name : "no bids yet", s.leader ? "" : "muted"));
      tr.appendChild(el("td", String(s.count), "num"));
      var ends = el("td"); ends.appendChild(isoTime(a.ends_ms, a.ends_at, "left")); tr.appendChild(ends);
      tbody.appendChild(tr);
    }
    document.getElementById("no-open").hidden = boardAuctions.length > 0;
  }
  function drawChart(minutes) {
    var box = document.getElementById("chart");
    if (!box) { return; }
    var ns = "http://www.w3.org/2000/svg";
    var w = 720, h = 150, pad = 22, max = 1, total = 0;
    for (var m = 0; m < minutes.length; m++) { max = Math.max(max, minutes[m].bids); total += minutes[m].bids; }
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + (h + pad));
    var bw = (w - 2) / Math.max(1, minutes.length);
    for (var b = 0; b < minutes.length; b++) {
      var bh = Math.round((minutes[b].bids / max) * (h - 4));
      var rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", String(1 + b * bw));
      rect.setAttribute("y", String(h - bh));
      rect.setAttribute("width", String(Math.max(1, bw - 1)));
      rect.setAttribute("height", String(bh));
      rect.setAttribute("class", "bar");
      var tip = document.createElementNS(ns, "title");
      tip.textContent = minutes[b].minute + " UTC: " + minutes[b].bids + " bids";
      rect.appendChild(tip);
      svg.appendChild(rect);
    }
    var labels = [0, 15, 30, 45, 59];
    for (var l = 0; l < labels.length && minutes.length === 60; l++) {
      var text = document.createElementNS(ns, "text");
      text.setAttribute("x", String(1 + labels[l] * bw));
      text.setAttribute("y", String(h + 16));
      text.setAttribute("class", "axis");
      if (l === labels.length - 1) { text.setAttribute("x", String(w - 1)); text.setAttribute("text-anchor", "end"); }
      text.textContent = minutes[labels[l]].minute;
      svg.appendChild(text);
    }
    var peak = document.createElementNS(ns, "text");
    peak.setAttribute("x", "4"); peak.setAttribute("y", "12"); peak.setAttribute("class", "axis");
    peak.textContent = "peak " + max + "/min";
    svg.appendChild(peak);
    while (box.firstChild) { box.removeChild(box.firstChild); }
    box.appendChild(svg);
    document.getElementById("chart-total").textContent = "(" + total + " in all)";
  }
  function drawHealth(health) {
    if (!health || !health.checked_at) { return; }
    var rate = document.getElementById("h-rate");
    if (!rate) { return; }
    rate.textContent = health.rows_per_second === null || health.rows_per_second === undefined ? "…" : Math.round(health.rows_per_second) + " rows/s (" + health.mysql_bids + " bids in all)";
    document.getElementById("h-row").textContent = health.newest_row ? ago(health.newest_row.ms) + " (" + health.newest_row.ts + ")" : "no bids yet";
    var csv = health.csv;
    document.getElementById("h-csv").textContent = !csv.visible ? "not visible from this web process (set BACKUP_CSV)"
      : csv.error ? "cannot be read: " + csv.error
      : csv.newest_line ? ago(csv.newest_line.ms) + " (" + csv.newest_line.ts + ")" : "no bids yet";
    var tbody = document.querySelector("#lags tbody");
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    for (var g = 0; g < health.groups.length; g++) {
      var group = health.groups[g], tr = el("tr");
      tr.appendChild(el("td", group.group));
      tr.appendChild(el("td", group.lag === null ? "unknown" : String(group.lag), "num"));
      tr.appendChild(el("td", group.error ? group.error : group.partitions + (group.uncommitted ? " (" + group.uncommitted + " with nothing committed)" : "")));
      tbody.appendChild(tr);
    }
    var top = document.getElementById("top-bidders");
    while (top.firstChild) { top.removeChild(top.firstChild); }
    for (var t = 0; t < health.top_bidders.length; t++) {
      var li = el("li");
      li.appendChild(el("span", health.top_bidders[t].name, "name"));
      li.appendChild(el("span", health.top_bidders[t].bids + (health.top_bidders[t].bids === 1 ? " bid" : " bids"), "count"));
      top.appendChild(li);
    }
    document.getElementById("no-top").hidden = health.top_bidders.length > 0;
    drawChart(health.bids_per_minute || []);
    var error = document.getElementById("h-error");
    error.hidden = !health.database_error;
    error.textContent = health.database_error || "";
  }

  // ---- the feed -----------------------------------------------------------------------------
  // How long a leader seen on the feed stands against the board (its refresh, 1 s, and the
  // db-writer's batch, well under a second, with room to spare).
  var FEED_LEADER_TRUSTED_MS = 5000;
  function leaderFrom(bid) { return { name: bid.name, price: bid.price, ms: bid.ms }; }
  // Bid counts come from the board alone (a bid of this process is in the board the moment
  // Kafka acks it, and also comes through the feed: counting feed bids would count it twice).
  function onBids(data) {
    var bids = data.bids || [];
    for (var b = bids.length - 1; b >= 0; b--) {
      addFeedBid(bids[b]);
      if (String(bids[b].auction_id) === articleId) { addBidRow(bids[b]); }
    }
    var leaders = data.leaders || [];
    for (var l = 0; l < leaders.length; l++) {
      var s = standing(String(leaders[l].auction_id));
      // A bid placed at or after the end (as last known) does not count: the board will say.
      if (s.ends !== null && leaders[l].ms >= s.ends) { continue; }
      if (ranksAbove(leaders[l], s.leader)) { s.leader = leaderFrom(leaders[l]); s.fromFeed = true; raiseMinimum(s); }
      update(String(leaders[l].auction_id), null);
    }
    if (leaders.length) { drawAuctions(); }
  }
  function update(id, auction) {
    var s = standing(id);
    updateCard(id, s, auction);
    if (id === articleId) { updateArticle(s, auction); }
  }
  function onBoard(data) {
    serverOffset = data.server_now_ms - Date.now();
    boardAuctions = data.auctions || [];
    for (var a = 0; a < boardAuctions.length; a++) {
      var auction = boardAuctions[a], id = String(auction.id), s = standing(id);
      s.ends = auction.ends_ms;
      // The board has the last word on a leader the feed showed a while ago (one that did not
      // count, say because the auction was closed early, is not in it).
      var stale = s.fromFeed && s.leader && now() - s.leader.ms > FEED_LEADER_TRUSTED_MS;
      if (stale || (auction.highest && ranksAbove(auction.highest, s.leader))) { s.leader = auction.highest; s.fromFeed = false; }
      s.count = Math.max(s.count, auction.bid_count);
      s.increment = auction.min_increment;
      if (s.minimum === null || cents(auction.minimum_next_plain) > cents(s.minimum)) { s.minimum = auction.minimum_next_plain; }
      raiseMinimum(s);
      update(id, auction);
    }
    var total = document.getElementById("open-total");
    if (total) { total.textContent = "(" + data.open_total + (data.open_total > DASHBOARD_AUCTIONS ? "; the " + DASHBOARD_AUCTIONS + " ending soonest" : "") + ")"; }
    drawAuctions();
    drawHealth(data.health);
  }

  var state = document.getElementById("feed-state");
  function say(text, cls) { if (state) { state.textContent = text; state.className = "feed-state " + cls; } }
  // A browser keeps at most 6 HTTP/1.1 connections to a site across all its tabs, and each open
  // feed holds one: a tab in the background gives its feed back and takes it again when shown
  // (the site resends the board and the newest bids on every connect).
  var source = null;
  function connect() {
    if (source) { return; }
    source = new EventSource("/api/feed");
    source.addEventListener("open", function () { say("Live", "live"); });
    source.addEventListener("error", function () { say("Reconnecting…", "down"); });
    source.addEventListener("bids", function (e) { onBids(JSON.parse(e.data)); });
    source.addEventListener("board", function (e) { onBoard(JSON.parse(e.data)); });
  }
  function disconnect() {
    if (!source) { return; }
    source.close();
    source = null;
    say("Paused while the tab is hidden", "down");
  }
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") { disconnect(); } else { connect(); }
  });
  if (document.visibilityState !== "hidden") { connect(); }
})();
