"""The explorer's HTML page: markup, style and plain JavaScript (no library, no network).

Kept as a Python string so that it ships with the package like any module. ``/*__ATLAS_DATA__*/null``
is replaced by the page's JSON data and ``__TITLE__`` by its title (see :mod:`.explore`).
"""

TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
  body { font: 13px sans-serif; margin: 0; display: flex; height: 100vh; color: #222; }
  #main { flex: 1; display: flex; flex-direction: column; min-width: 0; }
  #bar { padding: 6px 10px; border-bottom: 1px solid #ddd; display: flex; gap: 14px; align-items: center; }
  #map { flex: 1; width: 100%; background: #fafafa; }
  #side { width: 330px; border-left: 1px solid #ddd; overflow-y: auto; padding: 8px; }
  #legend { display: flex; flex-wrap: wrap; gap: 4px 10px; font-size: 11px; }
  .sw { display: inline-block; width: 10px; height: 10px; border-radius: 5px; margin-right: 3px; vertical-align: middle; }
  circle.pt { stroke: #fff; stroke-width: 0.5; cursor: pointer; }
  circle.pt.sel { stroke: #000; stroke-width: 2.5; }
  circle.pt.nb { stroke: #000; stroke-width: 1.5; }
  #tip { position: fixed; pointer-events: none; background: #fff; border: 1px solid #888; padding: 4px;
         font-size: 11px; display: none; box-shadow: 1px 1px 4px rgba(0,0,0,.3); }
  #tip img, .nb-item img { image-rendering: pixelated; display: block; }
  .nb-item { border-bottom: 1px solid #eee; padding: 4px 0; cursor: pointer; }
  .nb-item:hover { background: #f0f0ff; }
  h3 { margin: 4px 0 8px 0; font-size: 14px; }
</style>
</head>
<body>
<div id="main">
  <div id="bar">
    <b>synapse atlas</b>
    <label>colour by <select id="colour-by"></select></label>
    <span id="count"></span>
    <div id="legend"></div>
  </div>
  <svg id="map" xmlns="http://www.w3.org/2000/svg"></svg>
</div>
<div id="side">
  <h3 id="side-title">click a synapse for its nearest neighbours</h3>
  <div id="neighbours"></div>
  <p style="font-size:11px;color:#666">slices: z, y and x planes through the cleft centre; raw EM in grey,
  pre-synaptic segment cyan, cleft red. Similarity: cosine of the embeddings.</p>
</div>
<div id="tip"></div>
<pre id="selftest" style="display:none"></pre>
<script>
"use strict";
var ATLAS = /*__ATLAS_DATA__*/null;
var PAGE_ERRORS = [];
window.addEventListener("error", function (e) { PAGE_ERRORS.push(String(e.message || e)); });
(function () {
  var SVGNS = "http://www.w3.org/2000/svg";
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94"];
  var n = ATLAS.ids.length;
  var svg = document.getElementById("map");
  var tip = document.getElementById("tip");
  var circles = [];
  var selected = -1;

  function ramp(t) {  // viridis-like ramp, t in [0, 1]
    var stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
    t = Math.max(0, Math.min(1, t)) * (stops.length - 1);
    var i = Math.min(Math.floor(t), stops.length - 2), f = t - i, a = stops[i], b = stops[i + 1];
    return "rgb(" + [0, 1, 2].map(function (j) { return Math.round(a[j] + f * (b[j] - a[j])); }).join(",") + ")";
  }

  function colours(name) {
    var c = ATLAS.colourings[name], legend = document.getElementById("legend");
    legend.innerHTML = "";
    if (c.kind === "continuous") {
      var lo = Math.min.apply(null, c.values), hi = Math.max.apply(null, c.values), span = (hi - lo) || 1;
      legend.innerHTML = "<span><span class='sw' style='background:" + ramp(0) + "'></span>" + lo.toFixed(3) +
        "</span><span><span class='sw' style='background:" + ramp(1) + "'></span>" + hi.toFixed(3) + "</span>";
      return c.values.map(function (v) { return ramp((v - lo) / span); });
    }
    var cats = Array.from(new Set(c.values)).sort(), index = {};
    cats.forEach(function (cat, i) {
      index[cat] = cat === "unlabelled" ? "#cccccc" : PALETTE[i % PALETTE.length];
      var item = document.createElement("span");
      var count = c.values.filter(function (v) { return v === cat; }).length;
      item.innerHTML = "<span class='sw' style='background:" + index[cat] + "'></span>";
      item.appendChild(document.createTextNode(cat + " (" + count + ")"));
      legend.appendChild(item);
    });
    return c.values.map(function (v) { return index[v]; });
  }

  function recolour() {
    var fill = colours(document.getElementById("colour-by").value);
    for (var i = 0; i < n; i++) circles[i].setAttribute("fill", fill[i]);
  }

  function thumb(i, scale) {
    var src = ATLAS.thumbnails ? ATLAS.thumbnails[i] : null;
    if (!src) return document.createTextNode("(no thumbnail)");
    var img = document.createElement("img");
    img.src = src;
    img.onload = function () { img.width = img.naturalWidth * scale; };
    return img;
  }

  function describe(i) {
    var parts = [];
    Object.keys(ATLAS.colourings).forEach(function (name) {
      var v = ATLAS.colourings[name].values[i];
      parts.push(name + ": " + (typeof v === "number" ? v.toFixed(3) : v));
    });
    return parts.join(" | ");
  }

  function showTip(i, ev) {
    tip.innerHTML = "";
    var title = document.createElement("div");
    title.innerHTML = "<b></b>";
    title.firstChild.textContent = ATLAS.ids[i];
    tip.appendChild(title);
    tip.appendChild(thumb(i, 2));
    var info = document.createElement("div");
    info.textContent = describe(i);
    info.style.maxWidth = "320px";
    tip.appendChild(info);
    tip.style.display = "block";
    tip.style.left = Math.min((ev.clientX || 0) + 14, window.innerWidth - 340) + "px";
    tip.style.top = Math.min((ev.clientY || 0) + 14, window.innerHeight - 200) + "px";
    tip.setAttribute("data-index", String(i));
  }

  function select(i) {
    circles.forEach(function (c) { c.classList.remove("sel"); c.classList.remove("nb"); });
    selected = i;
    circles[i].classList.add("sel");
    document.getElementById("side-title").textContent = "nearest synapses of " + ATLAS.ids[i];
    var box = document.getElementById("neighbours");
    box.innerHTML = "";
    var self = document.createElement("div");
    self.className = "nb-item query";
    self.appendChild(document.createTextNode("query: " + ATLAS.ids[i]));
    self.appendChild(thumb(i, 2));
    box.appendChild(self);
    ATLAS.neighbours[i].forEach(function (j, r) {
      circles[j].classList.add("nb");
      var item = document.createElement("div");
      item.className = "nb-item neighbour";
      item.setAttribute("data-index", String(j));
      item.appendChild(document.createTextNode("#" + (r + 1) + " " + ATLAS.ids[j] + "  (similarity " +
        ATLAS.similarities[i][r].toFixed(3) + ")"));
      item.appendChild(thumb(j, 2));
      item.addEventListener("click", function () { select(j); });
      box.appendChild(item);
    });
  }

  function draw() {
    var W = svg.clientWidth || 900, H = svg.clientHeight || 600, pad = 20;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var xs = ATLAS.x, ys = ATLAS.y;
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    var sx = (W - 2 * pad) / ((x1 - x0) || 1), sy = (H - 2 * pad) / ((y1 - y0) || 1);
    var r = n > 5000 ? 2 : n > 1000 ? 3 : 5;
    for (var i = 0; i < n; i++) {
      var c = document.createElementNS(SVGNS, "circle");
      c.setAttribute("class", "pt");
      c.setAttribute("cx", (pad + (xs[i] - x0) * sx).toFixed(1));
      c.setAttribute("cy", (H - pad - (ys[i] - y0) * sy).toFixed(1));
      c.setAttribute("r", r);
      c.setAttribute("data-index", String(i));
      (function (i) {
        c.addEventListener("mouseover", function (ev) { showTip(i, ev); });
        c.addEventListener("mouseout", function () { tip.style.display = "none"; });
        c.addEventListener("click", function () { select(i); });
      })(i);
      svg.appendChild(c);
      circles.push(c);
    }
    document.getElementById("count").textContent = n + " synapses (" + ATLAS.method + " map)";
  }

  function selftest() {
    var result = {points: svg.querySelectorAll("circle.pt").length, synapses: n};
    var first = circles[0];
    first.dispatchEvent(new MouseEvent("mouseover", {bubbles: true, clientX: 10, clientY: 10}));
    var tipImg = tip.querySelector("img");
    result.hover_id = tip.querySelector("b") ? tip.querySelector("b").textContent : null;
    result.hover_thumbnail = !!(tipImg && tipImg.src.indexOf("data:image/png;base64,") === 0);
    first.dispatchEvent(new MouseEvent("click", {bubbles: true}));
    var items = document.querySelectorAll("#neighbours .nb-item.neighbour");
    result.neighbours_shown = items.length;
    result.neighbours_expected = ATLAS.neighbours[0].length;
    result.first_neighbour = items.length ? ATLAS.ids[Number(items[0].getAttribute("data-index"))] : null;
    result.highlighted = svg.querySelectorAll("circle.pt.nb").length;
    result.colourings = Object.keys(ATLAS.colourings);
    result.errors = PAGE_ERRORS.slice();
    var out = document.getElementById("selftest");
    out.textContent = JSON.stringify(result);
    out.style.display = "block";
  }

  var pick = document.getElementById("colour-by");
  Object.keys(ATLAS.colourings).forEach(function (name) {
    var o = document.createElement("option");
    o.value = name;
    o.textContent = name;
    pick.appendChild(o);
  });
  pick.addEventListener("change", recolour);
  draw();
  recolour();
  if (location.hash === "#selftest") selftest();
  var m = /^#select=(\d+)$/.exec(location.hash);
  if (m && Number(m[1]) < n) select(Number(m[1]));
})();
</script>
</body>
</html>
"""
