/* cryo-cds console: sortable tables, charts from data attributes, CSRF header for htmx. */
(function () {
  "use strict";
  function cellValue(cell) {
    var raw = cell.getAttribute("data-sort");
    if (raw === null) raw = cell.textContent.trim();
    var num = parseFloat(raw);
    return raw !== "" && !isNaN(num) && /^-?[\d.]+/.test(raw) ? num : raw.toLowerCase();
  }
  function makeSortable(table) {
    var heads = table.querySelectorAll("th.sortable");
    heads.forEach(function (th) {
      th.addEventListener("click", function () {
        var index = Array.prototype.indexOf.call(th.parentNode.children, th);
        var asc = !th.classList.contains("asc");
        heads.forEach(function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(asc ? "asc" : "desc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a.cells[index]), y = cellValue(b.cells[index]);
          if (x === y) return 0;
          if (typeof x !== typeof y) return (typeof x === "number" ? -1 : 1) * (asc ? 1 : -1);
          return (x < y ? -1 : 1) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }
  var COLORS = ["#1f5f99", "#c98a00", "#c0392b", "#2e7d4f"];
  function drawChart(canvas) {
    if (!window.Chart || canvas.dataset.drawn) return;
    var spec = JSON.parse(canvas.getAttribute("data-chart"));
    canvas.dataset.drawn = "1";
    var datasets = spec.series.map(function (s, i) {
      return { label: s.label, data: s.values, backgroundColor: COLORS[i % COLORS.length],
               borderColor: COLORS[i % COLORS.length], borderWidth: spec.type === "line" ? 2 : 0,
               pointRadius: spec.type === "line" ? 2 : 0, tension: 0.2, maxBarThickness: 28 };
    });
    new window.Chart(canvas, {
      type: spec.type, data: { labels: spec.labels, datasets: datasets },
      options: { responsive: true, maintainAspectRatio: false, animation: false,
        indexAxis: spec.horizontal ? "y" : "x",
        plugins: { legend: { display: datasets.length > 1, position: "bottom" } },
        scales: { x: { ticks: { autoSkip: true, maxRotation: 0 }, grid: { display: false } },
                  y: { beginAtZero: true, ticks: { precision: 0 } } } }
    });
  }
  function init(root) {
    root.querySelectorAll("table.sortable-table").forEach(makeSortable);
    root.querySelectorAll("canvas[data-chart]").forEach(drawChart);
  }
  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSwap", function (e) { init(e.target); });
  document.addEventListener("htmx:configRequest", function (e) {
    var meta = document.querySelector("meta[name=csrf-token]");
    if (meta) e.detail.headers["X-CSRF-Token"] = meta.content;
  });
})();
